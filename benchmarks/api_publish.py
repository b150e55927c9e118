#!/usr/bin/env python3
"""Publishes a second through `POST /api/publish`: one kept-alive connection against a new
connection per publish, and the server's CPU per publish in each case.

    benchmarks/api_publish.py BIN [BIN_B] [--count 5000] [--runs 3] [--port 19600]

Each run starts `serve --workers 1 --api-key bench` pinned to core 0 and sends `--count`
publishes (64-byte `data`, one topic, no subscribers) from this script pinned to core 1, one
at a time (each waits for its answer), first all on one connection (HTTP/1.1 keep-alive),
then each on a connection of its own (what a backend pays when the server closes after every
answer), with and without `Connection: close` in the request. With two binaries they take turns, run by run. A server that closes after every
answer (before issue 27) makes the keep-alive mode reconnect when the connection is closed;
the script counts those reconnects and prints them.
"""
import argparse, os, socket, statistics, subprocess, time

ap = argparse.ArgumentParser()
ap.add_argument("bins", nargs="+")
ap.add_argument("--count", type=int, default=5000)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--port", type=int, default=19600)
args = ap.parse_args()
TCK = os.sysconf("SC_CLK_TCK")
BODY = b'{"topic":"bench","data":"' + b"x" * 64 + b'"}'
REQ = (b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer bench\r\n"
       b"Content-Type: application/json\r\nContent-Length: " + str(len(BODY)).encode()
       + b"\r\n\r\n" + BODY)
REQ_CLOSE = REQ.replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nConnection: close\r\n")


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


def answer(sock, buf):
    """Reads one response; returns (status, keep_open, rest of the buffer)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
        if k.strip().lower() == "connection" and "close" in v.lower():
            close = True
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in a body")
        rest += chunk
    if status != 200:
        raise SystemExit(f"publish answered {status}: {rest[:length]!r}")
    return status, not close, rest[length:]


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def keepalive(port, n):
    s, buf, reconnects = connect(port), b"", 0
    for _ in range(n):
        s.sendall(REQ)
        _, keep, buf = answer(s, buf)
        if not keep:
            s.close()
            s, buf, reconnects = connect(port), b"", reconnects + 1
    s.close()
    return reconnects


def fresh(port, n, req=REQ):
    for _ in range(n):
        s = connect(port)
        s.sendall(req)
        answer(s, b"")
        s.close()
    return n


def fresh_close(port, n):
    return fresh(port, n, REQ_CLOSE)


def one(binary, port, mode):
    srv = subprocess.Popen(["taskset", "-c", "0", binary, "serve", "--listen",
                            f"127.0.0.1:{port}", "--workers", "1", "--api-key", "bench",
                            "--max-connections-per-ip", "1000000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                connect(port).close()
                break
            except OSError:
                time.sleep(0.1)
        keepalive(port, 50)  # warm up
        c0, t0 = cpu(srv.pid), time.perf_counter()
        conns = mode(port, args.count)
        dt, dc = time.perf_counter() - t0, cpu(srv.pid) - c0
        return args.count / dt, dc / args.count * 1e6, conns
    finally:
        srv.terminate()
        srv.wait()


os.sched_setaffinity(0, {1})
MODES = (("keep-alive", keepalive), ("new connection", fresh),
         ("new connection, Connection: close", fresh_close))
results = {(b, m): [] for b in args.bins for m, _ in MODES}
for run in range(args.runs):
    for i, b in enumerate(args.bins):
        for name, mode in MODES:
            rate, us, conns = one(b, args.port + i, mode)
            results[(b, name)].append((rate, us))
            extra = f", {conns} reconnects" if name == "keep-alive" and conns else ""
            print(f"run {run + 1} {b} {name}: {rate:,.0f} publishes/s, "
                  f"server {us:.1f} us CPU per publish{extra}", flush=True)
print("\nmedians:")
for (b, m), xs in results.items():
    print(f"  {b} {m}: {statistics.median(x[0] for x in xs):,.0f} publishes/s, "
          f"{statistics.median(x[1] for x in xs):.1f} us server CPU per publish")

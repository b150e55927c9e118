#!/usr/bin/env python3
"""Server CPU per broadcast delivery, A/B of two switchboard binaries taking turns.

    benchmarks/broadcast_cpu.py BIN_A BIN_B [--subs 10000] [--rate 20] [--payload 64] [--runs 3]

Each run: `serve --workers 1` pinned to core 0 (io_uring, the default), `bench broadcast`
pinned to core 1. The server's CPU (utime+stime from /proc) and its delivery counter
(switchboard_messages_sent_total from /metrics) are sampled every 0.5 s; CPU per delivery is
taken over the window where deliveries rise (publishing), so connection setup is left out.
"""
import argparse, os, re, subprocess, time, urllib.request, statistics, signal

ap = argparse.ArgumentParser()
ap.add_argument("a"); ap.add_argument("b")
ap.add_argument("--subs", type=int, default=10000)
ap.add_argument("--rate", type=float, default=20)
ap.add_argument("--payload", type=int, default=64)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--duration", default="12s")
ap.add_argument("--port", type=int, default=19500)
args = ap.parse_args()
TCK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK

def delivered(port):
    t = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    for name in ("switchboard_messages_sent_total", "switchboard_messages_out_total"):
        m = re.search(rf"^{name}\s+(\d+)", t, re.M)
        if m:
            return int(m.group(1))
    raise SystemExit("no sent-messages counter in /metrics:\n" + t[:2000])

def one(binary, port):
    srv = subprocess.Popen(["taskset", "-c", "0", binary, "serve", "--listen", f"127.0.0.1:{port}",
                            "--workers", "1", "--max-connections-per-ip", "1000000",
                            "--outbox-max-messages", "100000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                delivered(port); break
            except Exception:
                time.sleep(0.1)
        bench = subprocess.Popen(["taskset", "-c", "1", binary, "bench", "broadcast",
                                  f"ws://127.0.0.1:{port}/ws", "--subscribers", str(args.subs),
                                  "--rate", str(args.rate), "--payload", str(args.payload),
                                  "--duration", args.duration, "--quiet", "--json"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        samples = []
        while bench.poll() is None:
            samples.append((cpu(srv.pid), delivered(port)))
            time.sleep(0.5)
        out = bench.stdout.read().strip().splitlines()
        # Window: from the first sample after deliveries started to the last rising one.
        rising = [i for i in range(1, len(samples)) if samples[i][1] > samples[i-1][1]]
        if len(rising) < 3:
            return None, out[-1] if out else ""
        i0, i1 = rising[1], rising[-1]   # skip the first partial interval
        dc = samples[i1][0] - samples[i0][0]
        dd = samples[i1][1] - samples[i0][1]
        return (dc / dd * 1e9 if dd else None), dd
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=20)
        except subprocess.TimeoutExpired:
            srv.kill(); srv.wait()

res = {"A": [], "B": []}
port = args.port
for r in range(args.runs):
    for tag, binary in (("A", args.a), ("B", args.b)) if r % 2 == 0 else (("B", args.b), ("A", args.a)):
        port += 1
        ns, dd = one(binary, port)
        print(f"run {r+1} {tag}: {ns:.0f} ns CPU per delivery over {dd} deliveries" if ns else f"run {r+1} {tag}: no window ({dd})", flush=True)
        if ns:
            res[tag].append(ns)
for tag in "AB":
    v = res[tag]
    if v:
        print(f"{tag}: median {statistics.median(v):.0f} ns/delivery (min {min(v):.0f}, max {max(v):.0f}, {len(v)} runs)")
if res["A"] and res["B"]:
    print(f"B/A: {statistics.median(res['B'])/statistics.median(res['A']):.3f}")

#!/usr/bin/env python3
"""Three nodes on Redis against one node in memory, the same load, in one run.

    benchmarks/cluster.py [--bin target/release/switchboard] [--subs 3000] [--rate 200]
                          [--payload 64] [--duration 10s] [--runs 2]

Each run, for each setup, starts fresh processes (127.0.0.1 only, all stopped at the end):

  memory   one `serve --workers 1` (the in-memory engine); subscribers and publisher on it
  redis-3  a redis-server and three `serve --workers 1 --engine redis` nodes; subscribers
           spread over the three (`bench broadcast --subscribe-url`), publishing on the first

and runs `switchboard bench broadcast` against it: deliveries/s and fan-out time (until the
last subscriber had a publish). Then publishes through the engine: one /ws publisher at
--pub-rate (10,000/s) to one subscriber on another node; the fan-out time says whether the
engine keeps up (it grows with the backlog when it does not).
Setups take turns (memory, redis-3, memory, ...) so a drift of the host hits both.
Prints one line per run and the medians; the host has 2 cores, which every process shares
(three nodes, Redis and the load generator): the numbers compare the engines on one
machine, not what three machines would do.
"""
import argparse, json, os, signal, socket, statistics, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release/switchboard"))
ap.add_argument("--subs", type=int, default=3000)
ap.add_argument("--rate", type=float, default=200)
ap.add_argument("--payload", type=int, default=64)
ap.add_argument("--duration", default="10s")
ap.add_argument("--runs", type=int, default=2)
ap.add_argument("--pub-rate", type=float, default=10000)
ap.add_argument("--base-port", type=int, default=19600)
args = ap.parse_args()

procs = []

def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(p)
    return p

def stop_all():
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    procs.clear()

def wait_port(port, what):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} on :{port} did not come up")

def serve(port, extra):
    start([args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--workers", "1",
           "--max-connections-per-ip", "1000000", "--outbox-max-messages", "100000", *extra])
    wait_port(port, "serve")

def setup(kind):
    b = args.base_port
    if kind == "memory":
        serve(b, [])
        return f"ws://127.0.0.1:{b}/ws", []
    redis_port = b + 9
    start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--loglevel", "warning"])
    wait_port(redis_port, "redis-server")
    url = f"redis://127.0.0.1:{redis_port}/0"
    for i in range(1, 4):
        serve(b + i, ["--engine", "redis", "--redis-url", url])
    urls = [f"ws://127.0.0.1:{b + i}/ws" for i in range(1, 4)]
    return urls[0], urls

def bench(pub_url, sub_urls, subs, rate, duration):
    cmd = [args.bin, "bench", "broadcast", pub_url, "-n", str(subs), "--rate", str(rate),
           "--payload", str(args.payload), "--duration", duration, "--json", "--quiet"]
    if sub_urls:
        cmd += ["--subscribe-url", ",".join(sub_urls)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not line:
        raise SystemExit(f"bench printed no JSON (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(line[-1])

results = {"memory": [], "redis-3": []}
try:
    for run in range(args.runs):
        for kind in ("memory", "redis-3"):
            pub, subs = setup(kind)
            fan = bench(pub, subs, args.subs, args.rate, args.duration)
            thr = bench(pub, subs[1:2], 1, args.pub_rate, "5s")
            stop_all()
            r = {
                "deliveries_per_s": fan["deliveries_per_sec"],
                "complete": fan["deliveries"] == fan["expected_deliveries"],
                "fanout_p50_ms": fan["fanout_us"]["p50"] / 1000,
                "fanout_p99_ms": fan["fanout_us"]["p99"] / 1000,
                "fanout_max_ms": fan["fanout_us"]["max"] / 1000,
                "pub_complete": thr["deliveries"] == thr["expected_deliveries"],
                "pub_fanout_p50_ms": thr["fanout_us"]["p50"] / 1000,
                "pub_fanout_p99_ms": thr["fanout_us"]["p99"] / 1000,
                "errors": fan["errors"] + thr["errors"],
            }
            results[kind].append(r)
            print(f"run {run + 1} {kind:8} " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
finally:
    stop_all()

print()
print(f"medians over {args.runs} runs: {args.subs} subscribers, {args.rate:g} publishes/s of {args.payload} B, {args.duration}")
for kind, rs in results.items():
    med = {k: statistics.median(r[k] for r in rs) for k in ("deliveries_per_s", "fanout_p50_ms", "fanout_p99_ms", "fanout_max_ms", "pub_fanout_p50_ms", "pub_fanout_p99_ms")}
    print(f"  {kind:8} " + "  ".join(f"{k} {v:.1f}" for k, v in med.items()))
print(f"  (pub_fanout: {args.pub_rate:g} publishes/s from one client to one subscriber)")

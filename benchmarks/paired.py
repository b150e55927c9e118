#!/usr/bin/env python3
"""Paired echo benchmark: two servers measured at the same time, so the machine's speed
(which drifts by 10-30 % between runs on a shared VM) is the same for both.

    benchmarks/paired.py                      # switchboard vs fastwebsockets, 4 scenarios
    ROUNDS=3 DURATION=6 benchmarks/paired.py  # quicker

Both servers are pinned to core $SERVER_CORE (0); each has its own load driver, both
pinned to core $DRIVER_CORE (1), with the same connections, payload and one message in
flight per connection. The drivers take turns: every ALTERNATE (200) ms the running one is
stopped (SIGSTOP) and the other continued, so each server has the core to itself while it
works (its idle time costs nothing), and the machine's drift, which moves every server's
CPU per echo by 10-30 % within minutes, falls on both alike. Each driver reads its
server's CPU time from /proc. A round's ratio is switchboard's CPU per echo over the
peer's; the table gives the median of the rounds and their range. Run benchmarks/run.sh
first (it builds the binaries), or set SKIP_BUILD=0 to build here.

ALTERNATE=0 runs both at once instead, each on about half a core: more work waits for a
server each time it runs, and a server that batches more per wake-up (io_uring) gains more
from that than one that makes two system calls per message, so against fastwebsockets it
flatters switchboard (twelfth pass in benchmarks/log/: 500 x 20 B 0.85x-0.88x at once,
0.88x-0.92x taking turns, 0.79x with a third process on the core). Keep it for A/B of two
switchboard builds, which batch alike.

Environment: ROUNDS (5), DURATION (8 s measured per round, after 1 s warm-up; with turns each
driver runs half of it),
SCENARIOS ("100x20 100x1024 10x16384 500x20"), PEER (fastwebsockets | tokio-tungstenite |
uring-echo | uring-echo-eager), BASE (switchboard, or another of those: the server whose
ratio is reported),
SB_ARGS (more `switchboard serve` flags, e.g. "--io-uring"), SB_BIN (the switchboard binary;
default target/release/switchboard), SB_PEER_BIN (the binary of PEER=switchboard-b: an A/B of
two builds measured over the same seconds, e.g. `SB_PEER_BIN=/tmp/old-switchboard PEER=switchboard-b`),
SERVER_CORE (0), DRIVER_CORE (1), BASE_PORT (19300), SKIP_BUILD (1), ALTERNATE (200: the
drivers take turns of that many ms, kept under the ring's 500 ms idle timer; 0: both at once).
Before the rounds, `driver host` measures what this host's kernel charges per system call
and per io_uring entry (about 10 s); its line heads the table and it is in the JSON.
Only 127.0.0.1 is used; only the processes started here are stopped, by PID.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ROUNDS = int(os.environ.get("ROUNDS", "5"))
DURATION = os.environ.get("DURATION", "8")
SCENARIOS = os.environ.get("SCENARIOS", "100x20 100x1024 10x16384 500x20").split()
PEER = os.environ.get("PEER", "fastwebsockets")
BASE = os.environ.get("BASE", "switchboard")
SB_ARGS = os.environ.get("SB_ARGS", "").split()
SERVER_CORE = os.environ.get("SERVER_CORE", "0")
DRIVER_CORE = os.environ.get("DRIVER_CORE", "1")
port = int(os.environ.get("BASE_PORT", "19300"))
ALTERNATE_MS = int(os.environ.get("ALTERNATE", "200"))

# SB_BIN: another switchboard build (a copy of an older one, for an A/B of the same host).
SB = Path(os.environ["SB_BIN"]) if os.environ.get("SB_BIN") else ROOT / "target/release/switchboard"
BT = HERE / "target/release"
DRIVER = BT / "driver"
PEERS = {
    "fastwebsockets": BT / "fastwebsockets-echo",
    "tokio-tungstenite": BT / "tungstenite-echo",
    # An experiment, not a peer: our protocol core on io_uring (peers/uring-echo).
    "uring-echo": BT / "uring-echo",
    # The same, with each receive queued beside its send (`--eager-recv`).
    "uring-echo-eager": BT / "uring-echo",
    # Another switchboard build (SB_PEER_BIN), for an A/B of two builds at once.
    "switchboard-b": Path(os.environ.get("SB_PEER_BIN", str(SB))),
}


def server_cmd(name, p):
    if name in ("switchboard", "switchboard-b"):
        exe = SB if name == "switchboard" else PEERS[name]
        return [str(exe), "serve", "--listen", f"127.0.0.1:{p}", "--workers", "1", *SB_ARGS]
    extra = ["--eager-recv"] if name == "uring-echo-eager" else []
    return [str(PEERS[name]), "--listen", f"127.0.0.1:{p}", *extra]


class Turns:
    """Lets the drivers run one at a time, switching every ALTERNATE_MS: the others are
    stopped with SIGSTOP (their servers go idle) until their turn comes."""

    def __init__(self, procs):
        self.procs = procs
        self.done = threading.Event()
        for p in procs[1:]:
            p.send_signal(signal.SIGSTOP)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        while not self.done.wait(ALTERNATE_MS / 1000):
            nxt = (i + 1) % len(self.procs)
            self.procs[i].send_signal(signal.SIGSTOP)
            self.procs[nxt].send_signal(signal.SIGCONT)
            i = nxt

    def end(self):
        self.done.set()
        self.thread.join()
        for p in self.procs:
            p.send_signal(signal.SIGCONT)


def main():
    global port
    if PEER not in PEERS or BASE not in ["switchboard", *PEERS] or BASE == PEER:
        sys.exit(f"paired.py: PEER and BASE must differ, from switchboard, {', '.join(PEERS)}")
    if os.environ.get("SKIP_BUILD", "1") != "1":
        subprocess.run(["cargo", "build", "--release", "-p", "switchboard"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release"], cwd=HERE, check=True)
    for b in (SB, DRIVER, PEERS[PEER], PEERS.get(BASE, SB)):
        if not b.exists():
            sys.exit(f"paired.py: missing {b}; run benchmarks/run.sh (or SKIP_BUILD=0) first")
    # What this host charges per system call and per io_uring entry: the ratios moved
    # between hosts of the same kind (benchmarks/log/), so each run says which it had.
    probe = subprocess.run(["taskset", "-c", SERVER_CORE, str(DRIVER), "host"],
                           capture_output=True, text=True)
    lines = probe.stdout.splitlines() if probe.returncode == 0 else []
    host_line = lines[0] if lines else f"host probe failed: {probe.stderr.strip()}"
    host = json.loads(lines[-1]) if lines else None
    print(host_line, file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}  # default logging, as users run it
    names = [BASE, PEER]
    rows = []
    errors = 0
    for sc in SCENARIOS:
        conns, payload = sc.split("x")
        ratios, per = [], {n: [] for n in names}
        for r in range(ROUNDS):
            servers = []
            try:
                for n in names:
                    port += 1
                    cmd = ["taskset", "-c", SERVER_CORE] + server_cmd(n, port)
                    servers.append((n, port, subprocess.Popen(
                        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
                time.sleep(0.5)
                drivers = []
                for n, p, proc in servers:
                    cmd = ["taskset", "-c", DRIVER_CORE, str(DRIVER), "load",
                           "--url", f"ws://127.0.0.1:{p}/echo", "--connections", conns,
                           "--inflight", "1", "--payload", payload, "--duration", DURATION,
                           "--warmup", "1", "--server-pid", str(proc.pid), "--server-name", n]
                    drivers.append((n, subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)))
                turns = Turns([d for _, d in drivers]) if ALTERNATE_MS else None
                out = {}
                try:
                    for n, d in drivers:
                        text = d.communicate(timeout=2 * int(DURATION) + 120)[0]
                        out[n] = json.loads(text.strip().splitlines()[-1])
                finally:
                    if turns:
                        turns.end()
            finally:
                for _, _, proc in servers:
                    proc.kill()
                    proc.wait()
            # Connections served unevenly (under a quarter of the median echoes, or none,
            # in the measured window) count as errors: a server that serves fewer
            # connections at once than asked looks cheaper per echo.
            bad = {n: out[n]["bad_echoes"] + out[n]["conn_errors"] + out[n].get("uneven_conns", 0)
                   for n in names}
            errors += sum(bad.values())
            a, b = (out[n]["server_us_per_echo"] for n in names)
            for n in names:
                per[n].append(out[n]["server_us_per_echo"])
            ratios.append(a / b)
            print(f"{sc} round {r + 1}/{ROUNDS}: {BASE} {a:.3f} us/echo, {PEER} {b:.3f}"
                  f" -> {a / b:.3f}x  (errors {bad})", file=sys.stderr, flush=True)
        rows.append({
            "scenario": sc,
            "base_us": statistics.median(per[BASE]),
            "peer_us": statistics.median(per[PEER]),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ratios": ratios,
        })
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    how = f"taking turns of {ALTERNATE_MS} ms" if ALTERNATE_MS else "at once"
    print(f"\nPaired run at git {git}: {ROUNDS} rounds x {DURATION} s, both servers {how} on"
          f" core {SERVER_CORE}, drivers on core {DRIVER_CORE}, 1 message in flight.")
    print(f"{host_line}\n")
    print("(met/missed compares the unrounded median with 0.95.)\n")
    print(f"| scenario | {BASE} CPU us/echo | {PEER} CPU us/echo | ratio, median (min-max) | target <=0.95x |")
    print("|---|--:|--:|--:|---|")
    for row in rows:
        c, p = row["scenario"].split("x")
        met = "met" if row["ratio_median"] <= 0.95 else "**missed**"
        print(f"| {c} x {p} B | {row['base_us']:.2f} | {row['peer_us']:.2f} |"
              f" {row['ratio_median']:.3f}x ({row['ratio_min']:.3f}-{row['ratio_max']:.3f}) | {met} |")
    if ALTERNATE_MS:
        print(f"\nThe drivers took turns of {ALTERNATE_MS} ms: each server had the core to itself while it worked.")
    elif {BASE, PEER} & {"fastwebsockets", "tokio-tungstenite"}:
        print("\nBoth servers shared one core (ALTERNATE=0): each ran on about half of it, which favours"
              " the one that batches more per wake-up (see the docstring); the default takes turns.")
    if errors:
        print(f"\n**{errors} bad echoes, connection errors or unevenly served connections** in these rounds"
              " (see the per-round lines): the ratios above do not describe a full load.")
    print(json.dumps({"git": git, "base": BASE, "peer": PEER, "rounds": ROUNDS, "duration_s": DURATION,
                      "alternate_ms": ALTERNATE_MS, "host": host, "errors": errors, "rows": rows}))


if __name__ == "__main__":
    main()

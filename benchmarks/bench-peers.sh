#!/usr/bin/env bash
# Switchboard vs fastwebsockets vs tokio-tungstenite under the same `switchboard bench` load.
#
#   benchmarks/bench-peers.sh                   # ~5 min; prints a markdown table
#   DURATION=3 REPEATS=1 benchmarks/bench-peers.sh   # quick look
#
# Per repeat, scenario and server: start the server pinned to $SERVER_CORE (one worker
# thread), run `switchboard bench echo ... --json` pinned to $BENCH_CORE, read the server's
# CPU time from /proc/PID/stat around the run, stop the server. Reports, per cell, the
# median msgs/s, latency p50/p99 and server CPU µs per echo, and the ratio to fastwebsockets
# from the same run. Results: benchmarks/results/peers-<timestamp>.{jsonl,md}.
#
# Environment: DURATION [8] REPEATS [3] SCENARIOS ["100x20x1 100x1024x1 10x16384x1 500x20x1 100x20x16"]
#   (CONNECTIONSxPAYLOADxINFLIGHT) SERVERS ["switchboard fastwebsockets tokio-tungstenite"]
#   SERVER_CORE [0] BENCH_CORE [1] BASE_PORT [19300] SKIP_BUILD [0]
# Only 127.0.0.1 is used; only processes this script started are stopped, by PID.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DURATION=${DURATION:-8}
REPEATS=${REPEATS:-3}
SCENARIOS=${SCENARIOS:-"100x20x1 100x1024x1 10x16384x1 500x20x1 100x20x16"}
SERVERS=${SERVERS:-"switchboard fastwebsockets tokio-tungstenite"}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
PORT=${BASE_PORT:-19300}
SB_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SB_BIN="$SB_TARGET/release/switchboard"
BT="$HERE/target/release"

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release -p switchboard)
    (cd "$HERE" && CARGO_TARGET_DIR="$HERE/target" cargo build --release -p fastwebsockets-echo -p tungstenite-echo)
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# shellcheck source=lib.sh
source "$HERE/lib.sh"
results_file peers
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_server() { # NAME PORT
    case $1 in
    switchboard) start_pinned "$2" "$SB_BIN" serve --listen "127.0.0.1:$2" --workers 1 --max-connections-per-ip 100000 ;;
    fastwebsockets) start_pinned "$2" "$BT/fastwebsockets-echo" --listen "127.0.0.1:$2" ;;
    tokio-tungstenite) start_pinned "$2" "$BT/tungstenite-echo" --listen "127.0.0.1:$2" ;;
    esac
}

read -ra SRV <<<"$SERVERS"
for ((rep = 1; rep <= REPEATS; rep++)); do
    for sc in $SCENARIOS; do
        IFS=x read -r conns payload inflight <<<"$sc"
        for ((j = 0; j < ${#SRV[@]}; j++)); do
            name=${SRV[$(((j + rep - 1) % ${#SRV[@]}))]}
            PORT=$((PORT + 1))
            start_server "$name" "$PORT"
            t0=$(cpu_ticks "$SPID")
            json=$(taskset -c "$BENCH_CORE" "$SB_BIN" bench echo "ws://127.0.0.1:$PORT/echo" \
                --connections "$conns" --payload "$payload" --inflight "$inflight" \
                --duration "$DURATION" --binary --json --quiet | tail -n1)
            t1=$(cpu_ticks "$SPID")
            kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
            echo "$json" | python3 -c "
import json,sys
j=json.load(sys.stdin)
ticks=$t1-$t0; hz=$(getconf CLK_TCK)
j.update(server='$name', scenario='$sc', repeat=$rep, server_cpu_us_per_msg=ticks/hz*1e6/max(j['received'],1))
print(json.dumps(j))" >>"$OUT"
            tail -n1 "$OUT" | python3 -c "import json,sys; j=json.load(sys.stdin); print(f\"-- [{j['repeat']}] {j['scenario']:>12} {j['server']:<18} {j['msgs_per_sec']:>9.0f} msg/s  p50 {j['latency_us']['p50']} µs  p99 {j['latency_us']['p99']} µs  server {j['server_cpu_us_per_msg']:.2f} µs/msg  errors {j['errors']}\")" >&2
        done
    done
done

python3 - "$OUT" >"${OUT%.jsonl}.md" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
scen = list(dict.fromkeys(r["scenario"] for r in rows))
servers = list(dict.fromkeys(r["server"] for r in rows))
def med(sc, sv, f):
    v = [f(r) for r in rows if r["scenario"] == sc and r["server"] == sv]
    return st.median(v) if v else float("nan")
print("| scenario (conns×bytes×in flight) | server | msgs/s | p50 µs | p99 µs | server CPU µs/msg | msgs/s vs fws | CPU vs fws |")
print("|---|---|--:|--:|--:|--:|--:|--:|")
for sc in scen:
    base_r = med(sc, "fastwebsockets", lambda r: r["msgs_per_sec"])
    base_c = med(sc, "fastwebsockets", lambda r: r["server_cpu_us_per_msg"])
    for sv in servers:
        r = med(sc, sv, lambda r: r["msgs_per_sec"])
        c = med(sc, sv, lambda r: r["server_cpu_us_per_msg"])
        p50 = med(sc, sv, lambda r: r["latency_us"]["p50"])
        p99 = med(sc, sv, lambda r: r["latency_us"]["p99"])
        print(f"| {sc} | {sv} | {r:,.0f} | {p50:.0f} | {p99:.0f} | {c:.2f} | {r/base_r:.2f}x | {c/base_c:.2f}x |")
PY
cat "${OUT%.jsonl}.md"
echo "raw: $OUT"

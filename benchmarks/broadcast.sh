#!/usr/bin/env bash
# Broadcast on one node: N subscribers on one topic of `switchboard serve`'s /ws, one
# publisher, measured by `switchboard bench broadcast`.
#
#   benchmarks/broadcast.sh            # 10,000 subscribers; rates 1, 20, 50, 100 publishes/s
#   SUBSCRIBERS=1000 RATES="10" benchmarks/broadcast.sh
#
# For every rate: start the server pinned to $SERVER_CORE, run the bench pinned to
# $BENCH_CORE with --server-pid (server RSS per subscribed connection), stop the server.
# Reports deliveries/s, delivery latency, the fan-out time (per publish, until the last
# subscriber had it) and memory per connection. Results: benchmarks/results/broadcast-*.jsonl
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
SUBSCRIBERS=${SUBSCRIBERS:-10000}
RATES=${RATES:-"1 20 50 100"}
DURATION=${DURATION:-10}
PAYLOAD=${PAYLOAD:-64}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
PORT=${BASE_PORT:-19400}
SB_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/switchboard"
[[ ${SKIP_BUILD:-0} == 1 ]] || (cd "$ROOT" && cargo build --release -p switchboard)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
results_file broadcast
for rate in $RATES; do
    PORT=$((PORT + 1))
    start_pinned "$PORT" "$SB_BIN" serve --listen "127.0.0.1:$PORT" \
        --workers 1 --max-connections-per-ip 1000000 --outbox-max-messages 100000
    echo "-- $SUBSCRIBERS subscribers, $rate publishes/s, $DURATION s" >&2
    taskset -c "$BENCH_CORE" "$SB_BIN" bench broadcast "ws://127.0.0.1:$PORT/ws" \
        --subscribers "$SUBSCRIBERS" --rate "$rate" --duration "$DURATION" --payload "$PAYLOAD" \
        --server-pid "$SPID" --json --quiet | tee /dev/stderr | tail -n1 >>"$OUT"
    kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
done
python3 - "$OUT" <<'PY'
import json, sys
print("| subscribers | publishes/s | deliveries/s | delivered | delivery p50 / p99 / max µs | fan-out (last subscriber) p50 / p99 / max µs | server RSS per connection |")
print("|--:|--:|--:|--:|--:|--:|--:|")
for l in open(sys.argv[1]):
    j = json.loads(l); d = j["latency_us"]; f = j["fanout_us"]
    rss = j.get("server_rss_bytes_per_connection")
    print(f"| {j['subscribers']:,} | {j['rate']:g} | {j['deliveries_per_sec']:,.0f} | {j['deliveries']:,} of {j['expected_deliveries']:,} | {d['p50']:,} / {d['p99']:,} / {d['max']:,} | {f['p50']:,} / {f['p99']:,} / {f['max']:,} | {rss:,.0f} B |" if rss else "")
PY
echo "raw: $OUT"

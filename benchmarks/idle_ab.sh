#!/usr/bin/env bash
# Idle memory per /echo connection, A/B of two switchboard binaries, alternating.
#   idle_ab.sh BIN_A BIN_B [REPEATS] [extra serve args...]
set -euo pipefail
A=$1; B=$2; REPS=${3:-2}; shift 3 || true
DRV="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/target/release/driver"   # cargo build --release -p driver in benchmarks/
ulimit -n "$(ulimit -Hn)"
port=19700
for ((r=1; r<=REPS; r++)); do
  for tag in A B; do
    bin=$A; [[ $tag == B ]] && bin=$B
    port=$((port+1))
    taskset -c 0 "$bin" serve --listen 127.0.0.1:$port --workers 1 --max-connections-per-ip 1000000 "$@" >/dev/null 2>&1 &
    spid=$!
    for i in $(seq 50); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
    out=$(taskset -c 1 "$DRV" idle --url ws://127.0.0.1:$port/echo --connections 10000 --server-pid $spid --server-name $tag 2>&1 | grep -i "per connection" | tail -1)
    echo "rep $r $tag: $out"
    kill -TERM $spid; wait $spid 2>/dev/null || true
  done
done

# Shared by run.sh, bench-peers.sh and broadcast.sh (sourced, not run; HERE is this folder):
# the results file, starting a pinned server and waiting for its port, and stopping what was
# started on exit.
#
#   results_file PREFIX        sets TS and OUT (benchmarks/results/PREFIX-TS.jsonl, empty)
#   listening PORT             whether something listens on 127.0.0.1:PORT (reads
#                              /proc/net/tcp; no probe connection)
#   start_pinned PORT CMD...   runs CMD on core $SERVER_CORE (default logging), sets SPID,
#                              returns once 127.0.0.1:PORT listens (1 after 10 s without)
#
# Every process in STARTED (start_pinned adds its own) is killed, by PID, when the script
# exits.

STARTED=()
trap 'for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null || true; done' EXIT

results_file() {
    TS=$(date -u +%Y%m%dT%H%M%SZ)
    mkdir -p "$HERE/results"
    OUT="$HERE/results/$1-$TS.jsonl"
    : >"$OUT"
}

listening() { grep -qE "^ *[0-9]+: 0100007F:$(printf '%04X' "$1") 00000000:0000 0A" /proc/net/tcp; }

start_pinned() {
    local port=$1
    shift
    (exec taskset -c "$SERVER_CORE" "$@") >/dev/null 2>&1 &
    SPID=$!
    STARTED+=("$SPID")
    for _ in $(seq 100); do listening "$port" && return 0; sleep 0.1; done
    echo "$(basename "$0"): $1 did not start listening on 127.0.0.1:$port" >&2
    return 1
}

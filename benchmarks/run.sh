#!/usr/bin/env bash
# Switchboard echo benchmarks against fastwebsockets and tokio-tungstenite.
#
#   benchmarks/run.sh                         # full run (~14 min), see benchmarks/README.md
#   DURATION=2 WARMUP=1 REPEATS=1 IDLE_CONNS=1000 benchmarks/run.sh   # quick smoke run
#
# For every repeat, scenario (connections x payload) and server: start the server pinned to
# core $SERVER_CORE with one tokio worker, run the closed-loop driver pinned to core
# $DRIVER_CORE, record msgs/s and the server's CPU per echo (/proc/PID/stat), stop the server.
# Then, per server, the idle-memory test: $IDLE_CONNS idle WebSocket connections, server
# VmRSS delta per connection (after the server settled), both when they arrive in batches
# ($IDLE_BATCH at a time) and all at once (a reconnect storm), switchboard on io_uring
# (`switchboard`) and on epoll (`switchboard-epoll`). Prints a markdown table (ratios vs fastwebsockets) and writes
# benchmarks/results/<timestamp>.json (plus .md and a folder of logs).
#
# Environment (defaults in brackets):
#   DURATION [10]  measured seconds per run      WARMUP [2]   warm-up seconds before it
#   INFLIGHT [1]   messages in flight per conn   REPEATS [5]  runs per cell (median reported)
#   SCENARIOS ["100x20 100x1024 10x16384 500x20"]  CONNECTIONSxPAYLOAD_BYTES; empty: idle test only
#   SERVERS ["switchboard fastwebsockets tokio-tungstenite"]
#   IDLE_CONNS [10000]  0 skips the idle test
#   IDLE_ARRIVALS ["batch storm"]  batch: $IDLE_BATCH [64] at a time; storm: all at once
#   IDLE_REPEATS [3]  idle runs per server and arrival (median reported; storms vary)
#   IDLE_SERVERS [$SERVERS, with switchboard-epoll after switchboard]
#   SB_ARGS []  extra arguments to `switchboard serve` (e.g. "--io-uring false")
#   SERVER_CORE [0]  DRIVER_CORE [1]  BASE_PORT [19100]
#   HOLD_LOCK [1]  hold the cargo lock ($CARGO_LOCK, /tmp/switchboard-cargo.lock) for the
#                  whole run, so no cargo build on this machine competes for the cores
#                  while we measure (builds by others wait until the run is over)
#   SKIP_BUILD [0] use the binaries already built
#
# Only loopback (127.0.0.1) is used; only processes this script started are stopped, by PID.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
LOCK=${CARGO_LOCK:-/tmp/switchboard-cargo.lock}
HOLD_LOCK=${HOLD_LOCK:-1}

if [[ $HOLD_LOCK == 1 && -z ${SB_BENCH_LOCKED:-} ]]; then
    echo "run.sh: waiting for the cargo lock $LOCK (held for the whole run; HOLD_LOCK=0 to not)" >&2
    exec flock "$LOCK" env SB_BENCH_LOCKED=1 bash "${BASH_SOURCE[0]}" "$@"
fi

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
INFLIGHT=${INFLIGHT:-1}
REPEATS=${REPEATS:-5}
SCENARIOS=${SCENARIOS-"100x20 100x1024 10x16384 500x20"}
SERVERS=${SERVERS:-"switchboard fastwebsockets tokio-tungstenite"}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_ARRIVALS=${IDLE_ARRIVALS:-"batch storm"}
IDLE_BATCH=${IDLE_BATCH:-64}
IDLE_REPEATS=${IDLE_REPEATS:-3}
IDLE_SERVERS=${IDLE_SERVERS:-$(for s in $SERVERS; do
    echo -n "$s "
    if [[ $s == switchboard ]]; then echo -n "switchboard-epoll "; fi
done)}
read -ra SB_EXTRA <<<"${SB_ARGS:-}"
SERVER_CORE=${SERVER_CORE:-0}
DRIVER_CORE=${DRIVER_CORE:-1}
PORT=${BASE_PORT:-19100}
SKIP_BUILD=${SKIP_BUILD:-0}

BT="$HERE/target/release"
SB_BIN="$ROOT/target/release/switchboard"
DRIVER="$BT/driver"

# 10,000 idle connections need > 10,000 descriptors in the server and in the driver.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < IDLE_CONNS + 100)); then
    echo "run.sh: warning: open-file limit $(ulimit -n) is below IDLE_CONNS=$IDLE_CONNS" >&2
fi
if (($(nproc) < 2)); then
    echo "run.sh: warning: $(nproc) CPU(s); server and driver will share a core" >&2
fi

cargo_() {
    if [[ -n ${SB_BENCH_LOCKED:-} ]]; then
        cargo "$@" # this whole script already runs under flock "$LOCK"
    else
        flock "$LOCK" cargo "$@"
    fi
}

if [[ $SKIP_BUILD != 1 ]]; then
    echo "== building (release)" >&2
    (cd "$ROOT" && unset CARGO_TARGET_DIR && cargo_ build --release -p switchboard)
    (cd "$HERE" && CARGO_TARGET_DIR="$HERE/target" cargo_ build --release)
fi
for b in "$SB_BIN" "$BT/fastwebsockets-echo" "$BT/tungstenite-echo" "$DRIVER"; do
    [[ -x $b ]] || { echo "run.sh: missing $b (build first)" >&2; exit 1; }
done

TS=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$HERE/results"
LOGS="$RESULTS/$TS"
mkdir -p "$LOGS"
JSONL="$LOGS/runs.jsonl"
: >"$JSONL"

# STARTED (killed by PID on exit) and `listening PORT`.
# shellcheck source=lib.sh
source "$HERE/lib.sh"
trap 'exit 130' INT TERM

SPID=
start_server() { # NAME PORT
    local name=$1 port=$2 cmd
    case $name in
    # The per-IP limit (1,000 by default) would stop the 10,000-connection idle test.
    switchboard) cmd=("$SB_BIN" serve --listen "127.0.0.1:$port" --workers 1 --max-connections-per-ip 1000000 "${SB_EXTRA[@]}") ;;
    switchboard-epoll) cmd=("$SB_BIN" serve --listen "127.0.0.1:$port" --workers 1 --max-connections-per-ip 1000000 "${SB_EXTRA[@]}" --io-uring false) ;;
    fastwebsockets) cmd=("$BT/fastwebsockets-echo" --listen "127.0.0.1:$port") ;;
    tokio-tungstenite) cmd=("$BT/tungstenite-echo" --listen "127.0.0.1:$port") ;;
    *) echo "run.sh: unknown server $name" >&2; exit 1 ;;
    esac
    (exec taskset -c "$SERVER_CORE" "${cmd[@]}") 2>>"$LOGS/$name.stderr" >/dev/null &
    SPID=$!
    STARTED+=("$SPID")

    for _ in $(seq 100); do
        listening "$port" && return 0
        kill -0 "$SPID" 2>/dev/null || { echo "run.sh: $name exited at start (see $LOGS/$name.stderr)" >&2; return 1; }
        sleep 0.1
    done
    echo "run.sh: $name not listening on $port after 10 s" >&2
    return 1
}

stop_server() {
    local pid=$SPID
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

label() { # CONNS PAYLOAD
    if (($2 >= 1024 && $2 % 1024 == 0)); then echo "$1 × $(($2 / 1024)) KiB"; else echo "$1 × $2 B"; fi
}

FAILED=0
record() { # LOGFILE
    local line
    line=$(grep '^{' "$1" | tail -n1 || true)
    if [[ -n $line ]]; then echo "$line" >>"$JSONL"; else FAILED=$((FAILED + 1)); fi
}

# Runs the driver pinned to $DRIVER_CORE, its output in LOG; shows the lines of it that
# match PATTERN, records its JSON line and stops the server.
drive() { # WHAT LOG SECONDS PATTERN DRIVER-ARGS...
    local what=$1 log=$2 secs=$3 pattern=$4
    shift 4
    timeout "$secs" taskset -c "$DRIVER_CORE" "$DRIVER" "$@" >"$log" 2>&1 ||
        echo "run.sh: $what failed (see $log)" >&2
    grep -E "$pattern" "$log" | sed 's/^/   /' >&2 || true
    record "$log"
    stop_server
}

read -ra SRV <<<"$SERVERS"
read -ra SCN <<<"$SCENARIOS"
NS=${#SRV[@]}
echo "== load: ${SCN[*]} | servers: ${SRV[*]} | ${REPEATS} repeat(s) of ${WARMUP}+${DURATION} s, ${INFLIGHT} in flight" >&2
for ((rep = 1; rep <= REPEATS; rep++)); do
    for sc in "${SCN[@]}"; do
        conns=${sc%x*}
        payload=${sc#*x}
        lbl=$(label "$conns" "$payload")
        # Rotate the server order each repeat so no server always runs first.
        for ((j = 0; j < NS; j++)); do
            name=${SRV[$(((j + rep - 1) % NS))]}
            PORT=$((PORT + 1))
            start_server "$name" "$PORT" || { FAILED=$((FAILED + 1)); continue; }
            log="$LOGS/load-$rep-$conns-$payload-$name.txt"
            echo "-- [$rep/$REPEATS] $lbl $name (pid $SPID, port $PORT)" >&2
            drive driver "$log" $((WARMUP + DURATION + 90)) 'msgs/s|per echo|driver CPU|other load|errors' \
                --url "ws://127.0.0.1:$PORT/echo" --connections "$conns" --inflight "$INFLIGHT" \
                --payload "$payload" --duration "$DURATION" --warmup "$WARMUP" \
                --server-pid "$SPID" --server-name "$name" --scenario "$lbl" --repeat "$rep"
        done
    done
done

if ((IDLE_CONNS > 0)); then
    read -ra ISRV <<<"$IDLE_SERVERS"
    echo "== idle memory: $IDLE_CONNS connections per server, arriving: $IDLE_ARRIVALS; $IDLE_REPEATS repeat(s)" >&2
    for ((rep = 1; rep <= IDLE_REPEATS; rep++)); do
        for arrival in $IDLE_ARRIVALS; do
            case $arrival in
            batch) how=(--concurrency "$IDLE_BATCH") ;;
            storm) how=(--storm) ;;
            *) echo "run.sh: unknown arrival $arrival (batch or storm)" >&2; exit 1 ;;
            esac
            for name in "${ISRV[@]}"; do
                PORT=$((PORT + 1))
                start_server "$name" "$PORT" || { FAILED=$((FAILED + 1)); continue; }
                log="$LOGS/idle-$arrival-$rep-$name.txt"
                echo "-- [$rep/$IDLE_REPEATS] idle $arrival $name (pid $SPID, port $PORT)" >&2
                drive "idle driver" "$log" 180 'open \(|VmRSS|per connection|probe' \
                    idle --url "ws://127.0.0.1:$PORT/echo" --connections "$IDLE_CONNS" "${how[@]}" \
                    --server-pid "$SPID" --server-name "$name"
            done
        done
    done
fi

# What this host charges per system call and per io_uring entry (benchmarks/log/: the
# ratios moved between hosts of the same kind); about 10 s, on the servers' core.
if HOST_PROBE=$(taskset -c "$SERVER_CORE" "$DRIVER" host 2>&1); then
    HOST_LINE=$(printf '%s\n' "$HOST_PROBE" | head -1)
    HOST_JSON=$(printf '%s\n' "$HOST_PROBE" | tail -1)
else
    HOST_LINE="host probe failed: $HOST_PROBE"
    HOST_JSON=""
    echo "run.sh: driver host failed: $HOST_PROBE" >&2
fi

SB_SHA=$(sha256sum "$SB_BIN" | cut -c1-16)
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
"$DRIVER" report --input "$JSONL" --json-out "$RESULTS/$TS.json" \
    --meta "timestamp=$TS" --meta "git_rev=$GIT_REV" --meta "switchboard_bin_sha256=$SB_SHA" --meta "git_dirty_files=$GIT_DIRTY" \
    --meta "nproc=$(nproc)" --meta "cpu_model=$CPU_MODEL" --meta "kernel=$(uname -r)" \
    --meta "rustc=$(rustc --version 2>/dev/null || echo unknown)" \
    --meta "duration_s=$DURATION" --meta "warmup_s=$WARMUP" --meta "inflight=$INFLIGHT" \
    --meta "repeats=$REPEATS" --meta "idle_conns=$IDLE_CONNS" \
    --meta "idle_arrivals=$IDLE_ARRIVALS" --meta "idle_batch=$IDLE_BATCH" --meta "idle_repeats=$IDLE_REPEATS" \
    --meta "sb_args=${SB_ARGS:-}" \
    --meta "server_core=$SERVER_CORE" --meta "driver_core=$DRIVER_CORE" \
    --meta "host_probe=$HOST_JSON" >"$RESULTS/$TS.md"

echo
echo "Switchboard benchmarks $TS (git $GIT_REV, $GIT_DIRTY uncommitted files in crates/), $(nproc) cores: $CPU_MODEL, kernel $(uname -r)"
echo "$HOST_LINE"
echo "$REPEATS repeat(s) x ${WARMUP}+${DURATION} s, $INFLIGHT message(s) in flight per connection; medians; server on core $SERVER_CORE, driver on core $DRIVER_CORE"
echo
cat "$RESULTS/$TS.md"
echo
echo "raw results: $RESULTS/$TS.json (logs in $LOGS/)"
if ((FAILED > 0)); then
    echo "run.sh: $FAILED run(s) failed; see the logs" >&2
    exit 1
fi

#!/usr/bin/env bash
# Runs the Autobahn TestSuite against Switchboard and fails if any case is not OK/INFORMATIONAL.
#
#   run.sh server|client [--cases PRESET_OR_LIST] [--outdir DIR]
#
# server: starts `$SWITCHBOARD_BIN serve --listen 127.0.0.1:PORT` and runs
#         `wstest -m fuzzingclient` against ws://127.0.0.1:PORT/echo.
# client: starts `wstest -m fuzzingserver` on ws://127.0.0.1:PORT and runs
#         `$AUTOBAHN_CLIENT_CMD ws://127.0.0.1:PORT switchboard`.
#
# Case presets: core (1.* - 10.*, the default), ci (core + a permessage-deflate sample),
# full (*), or a comma-separated list of case ids / patterns such as 1.*,2.*,7.5.1.
#
# Environment:
#   SWITCHBOARD_BIN       server command (default: <repo>/target/release/switchboard)
#   AUTOBAHN_CLIENT_CMD   client command (default: <repo>/target/release/examples/autobahn_client)
#   AUTOBAHN_CASES        case preset or list when --cases is not given
#   AUTOBAHN_TIMEOUT      overall timeout in seconds (default 1800; 7200 for full)
#   AUTOBAHN_STARTUP_TIMEOUT  seconds to wait for the peer's port (default 30)
#   SWITCHBOARD_CACHE     where setup.sh caches wstest (default: $HOME/.cache/switchboard)
set -euo pipefail

readonly AGENT=switchboard
readonly PROGRESS_INTERVAL=10
# 1.* through 10.* (there is no 8.x group in the suite).
readonly CORE_CASES="1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"
# First, middle and last case of every permessage-deflate group.
readonly COMPRESSION_SAMPLE="12.*.1,12.*.9,12.*.18,13.*.1,13.*.9,13.*.18"

log() { printf 'autobahn: %s\n' "$*" >&2; }
die() { printf 'autobahn: error: %s\n' "$*" >&2; exit 1; }
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit "${1:-2}"
}

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))"

# --- arguments -------------------------------------------------------------------------------
role=""
cases="${AUTOBAHN_CASES:-}"
outdir=""
while (($#)); do
  case "$1" in
    server | client)
      [[ -z "$role" ]] || die "role given twice ($role, $1)"
      role="$1" ;;
    --cases) (($# >= 2)) || die "--cases needs a value"; cases="$2"; shift ;;
    --cases=*) cases="${1#*=}" ;;
    --outdir) (($# >= 2)) || die "--outdir needs a value"; outdir="$2"; shift ;;
    --outdir=*) outdir="${1#*=}" ;;
    -h | --help) usage 0 ;;
    *) log "unknown argument: $1"; usage ;;
  esac
  shift
done
[[ -n "$role" ]] || { log "missing role (server or client)"; usage; }

preset="${cases:-core}"
case "$preset" in
  core) case_list="$CORE_CASES" ;;
  ci) case_list="$CORE_CASES,$COMPRESSION_SAMPLE" ;;
  full) case_list="*" ;;
  *) case_list="$preset" ;;
esac
case_list="${case_list// /}"
IFS=',' read -r -a case_patterns <<<"$case_list"
((${#case_patterns[@]})) || die "empty case list"
for p in "${case_patterns[@]}"; do
  [[ "$p" =~ ^[0-9*]+(\.[0-9*]+)*$ ]] \
    || die "invalid case pattern '$p': use core, ci, full or a comma-separated list like 1.*,7.5.1"
done

if [[ "$preset" == full ]]; then
  timeout_s="${AUTOBAHN_TIMEOUT:-7200}"
else
  timeout_s="${AUTOBAHN_TIMEOUT:-1800}"
fi
startup_timeout="${AUTOBAHN_STARTUP_TIMEOUT:-30}"
[[ "$timeout_s" =~ ^[0-9]+$ && "$startup_timeout" =~ ^[0-9]+$ ]] \
  || die "AUTOBAHN_TIMEOUT and AUTOBAHN_STARTUP_TIMEOUT must be whole seconds"

outdir="${outdir:-$repo_root/target/autobahn/$role}"
mkdir -p "$outdir" || die "cannot create output directory $outdir"
outdir="$(cd "$outdir" && pwd)"

command -v python3 >/dev/null 2>&1 || die "python3 not found; install it with: sudo apt-get install -y python3"

# Command words (split on whitespace; no quoting). The first word must be runnable.
check_cmd() { # what build_hint word...
  local what="$1" hint="$2" exe="$3"
  if [[ "$exe" == */* ]]; then
    [[ -f "$exe" && -x "$exe" ]] || die "$what not found or not executable: $exe; $hint"
  else
    command -v "$exe" >/dev/null 2>&1 || die "$what not found on PATH: $exe; $hint"
  fi
}

if [[ "$role" == server ]]; then
  read -r -a peer_cmd <<<"${SWITCHBOARD_BIN:-$repo_root/target/release/switchboard}"
  ((${#peer_cmd[@]})) || die "SWITCHBOARD_BIN is empty"
  check_cmd "server binary" "build it with: cargo build --release (or set SWITCHBOARD_BIN)" "${peer_cmd[0]}"
else
  read -r -a peer_cmd <<<"${AUTOBAHN_CLIENT_CMD:-$repo_root/target/release/examples/autobahn_client}"
  ((${#peer_cmd[@]})) || die "AUTOBAHN_CLIENT_CMD is empty"
  check_cmd "Autobahn client" "build it with: cargo build --release --example autobahn_client (or set AUTOBAHN_CLIENT_CMD)" "${peer_cmd[0]}"
fi

wstest="$("$script_dir/setup.sh")" || die "wstest setup failed (see above); rerun scripts/autobahn/setup.sh"
[[ -x "$wstest" ]] || die "setup.sh did not produce an executable wstest (got '$wstest')"

# --- process handling ------------------------------------------------------------------------
# Every process we start runs in its own session (setsid without fork keeps the PID), so it and
# its children are stopped as one process group, and nothing else is touched.
started_pids=()
start_bg() { # logfile cmd... ; sets bg_pid
  local logfile="$1"; shift
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" </dev/null >"$logfile" 2>&1 &
  else
    "$@" </dev/null >"$logfile" 2>&1 &
  fi
  bg_pid=$!
  started_pids+=("$bg_pid")
}

# Once a PID has been reaped it may be reused by an unrelated process: never signal it again.
forget_pid() { # pid
  local p keep=()
  for p in "${started_pids[@]}"; do
    [[ "$p" == "$1" ]] || keep+=("$p")
  done
  started_pids=("${keep[@]}")
}

stop_pid() { # pid
  local pid="$1" i
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "process $pid did not stop on SIGTERM; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

cleanup() {
  local pid
  for pid in "${started_pids[@]}"; do
    stop_pid "$pid"
  done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() { # port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() { # port pid what logfile
  local port="$1" pid="$2" what="$3" logfile="$4" deadline=$((SECONDS + startup_timeout))
  until port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      local rc=0
      wait "$pid" || rc=$?
      forget_pid "$pid"
      log "$what exited (status $rc) before listening on 127.0.0.1:$port; last lines of $logfile:"
      tail -n 20 "$logfile" >&2 || true
      die "$what failed to start"
    fi
    if ((SECONDS >= deadline)); then
      log "last lines of $logfile:"
      tail -n 20 "$logfile" >&2 || true
      die "$what did not accept TCP connections on 127.0.0.1:$port within ${startup_timeout}s (AUTOBAHN_STARTUP_TIMEOUT)"
    fi
    sleep 0.2
  done
}

cases_started() { grep -c '^Running test case ID' "$wstest_log" 2>/dev/null || true; }
cases_total() { sed -n 's/^Ok, will run \([0-9]*\) test cases.*/\1/p' "$wstest_log" 2>/dev/null | head -n1; }

# Waits for pid, printing progress every PROGRESS_INTERVAL seconds; enforces the overall
# deadline. Sets wait_rc (124 on timeout).
wait_with_progress() { # pid what
  local pid="$1" what="$2" next=$((SECONDS + PROGRESS_INTERVAL)) total
  wait_rc=0
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "timeout: $what still running after ${timeout_s}s; stopping it (raise AUTOBAHN_TIMEOUT if the run is just slow)"
      stop_pid "$pid"
      wait_rc=124
      return 0
    fi
    if ((SECONDS >= next)); then
      total="$(cases_total)"
      log "[$role] $(cases_started)/${total:-?} cases started, $((SECONDS - run_start))s elapsed"
      next=$((SECONDS + PROGRESS_INTERVAL))
    fi
    sleep 1
  done
  wait "$pid" || wait_rc=$?
  forget_pid "$pid"
}

write_spec() { # file key=value... (via python3 so the JSON is always well-formed)
  python3 - "$@" <<'PY'
import json, sys
path, role, url, outdir, agent, cases = sys.argv[1:7]
# wstest turns a pattern into a regex ('*' -> '.*') and uses re.match, which is anchored only at
# the start: "12.*.1" would also select 12.1.10-12.1.18. A trailing '$' makes it a whole-id match.
patterns = [c + "$" if "*" in c else c for c in cases.split(",") if c]
spec = {"outdir": outdir, "cases": patterns, "exclude-cases": [], "exclude-agent-cases": {}}
if role == "server":
    spec["servers"] = [{"agent": agent, "url": url}]
else:
    spec["url"] = url
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
PY
}

# --- run -------------------------------------------------------------------------------------
port="$(free_port)"
spec="$outdir/spec.json"
wstest_log="$outdir/wstest.log"
peer_log="$outdir/$role-under-test.log"
rm -f "$outdir/index.json" "$outdir/index.html"

log "$role role: cases '$preset', timeout ${timeout_s}s, reports in $outdir"
run_start=$SECONDS
deadline=$((SECONDS + timeout_s))
status=0

if [[ "$role" == server ]]; then
  url="ws://127.0.0.1:$port/echo"
  write_spec "$spec" server "$url" "$outdir" "$AGENT" "$case_list"

  log "starting server: ${peer_cmd[*]} serve --listen 127.0.0.1:$port (log: $peer_log)"
  start_bg "$peer_log" "${peer_cmd[@]}" serve --listen "127.0.0.1:$port"
  server_pid=$bg_pid
  wait_for_port "$port" "$server_pid" "server under test" "$peer_log"

  log "running wstest -m fuzzingclient against $url (log: $wstest_log)"
  start_bg "$wstest_log" "$wstest" -m fuzzingclient -s "$spec"
  wait_with_progress "$bg_pid" "wstest fuzzingclient"
  if ((wait_rc != 0)); then
    log "wstest fuzzingclient exited with status $wait_rc; last lines of $wstest_log:"
    tail -n 15 "$wstest_log" >&2 || true
    status=1
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "warning: the server under test exited during the run; last lines of $peer_log:"
    tail -n 15 "$peer_log" >&2 || true
  fi
  stop_pid "$server_pid"
else
  url="ws://127.0.0.1:$port"
  write_spec "$spec" client "$url" "$outdir" "$AGENT" "$case_list"

  # --webport 0: no embedded web UI (it would serve the working directory over HTTP).
  log "starting wstest -m fuzzingserver on $url (log: $wstest_log)"
  start_bg "$wstest_log" "$wstest" -m fuzzingserver -s "$spec" --webport 0
  fuzzer_pid=$bg_pid
  wait_for_port "$port" "$fuzzer_pid" "wstest fuzzingserver" "$wstest_log"

  log "running client: ${peer_cmd[*]} $url $AGENT (log: $peer_log)"
  start_bg "$peer_log" "${peer_cmd[@]}" "$url" "$AGENT"
  wait_with_progress "$bg_pid" "the client under test"
  if ((wait_rc != 0)); then
    log "client exited with status $wait_rc; last lines of $peer_log:"
    tail -n 15 "$peer_log" >&2 || true
    status=1
  fi
  # The report is written while /updateReports is served; allow a moment for the file to land.
  for ((i = 0; i < 50; i++)); do
    [[ -s "$outdir/index.json" ]] && break
    kill -0 "$fuzzer_pid" 2>/dev/null || break
    sleep 0.2
  done
  stop_pid "$fuzzer_pid"
fi
cleanup

total="$(cases_total)"
report_note=""
[[ -s "$outdir/index.json" ]] && report_note="; report: $outdir/index.html"
log "[$role] done: $(cases_started)/${total:-?} cases run in $((SECONDS - run_start))s$report_note"

report_rc=0
python3 "$script_dir/report.py" "$outdir/index.json" "$role" "$AGENT" || report_rc=$?
if ((status != 0 || report_rc != 0)); then
  exit 1
fi

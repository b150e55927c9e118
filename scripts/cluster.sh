#!/usr/bin/env bash
# Starts a Switchboard cluster on this machine: one redis-server and three `switchboard serve`
# nodes joined through it (--engine redis), prints their URLs, and stops everything on Ctrl-C.
#
#   scripts/cluster.sh                 nodes on 127.0.0.1:8081, :8082, :8083; Redis on :6390
#   NODES=5 BASE_PORT=9001 scripts/cluster.sh
#   REDIS_URL=redis://10.0.0.5:6379/0 scripts/cluster.sh   use that Redis, start none
#
# Environment: NODES (3), BASE_PORT (8081), REDIS_PORT (6390), SWITCHBOARD_BIN (default: the
# release build, built when missing), SWITCHBOARD_API_KEY (default "cluster-demo", so the
# publish API works on every node). Extra arguments go to every `serve`.
set -euo pipefail
PROG=cluster
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

nodes="${NODES:-3}"
base="${BASE_PORT:-8081}"
redis_port="${REDIS_PORT:-6390}"
export SWITCHBOARD_API_KEY="${SWITCHBOARD_API_KEY:-cluster-demo}"

if [[ -z "${SWITCHBOARD_BIN:-}" && ! -x "$target/release/switchboard" ]]; then
  log "building the release binary (cargo build --release -p switchboard)"
  (cd "$root" && cargo build --release -p switchboard)
fi
server_binary

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

if [[ -z "${REDIS_URL:-}" ]]; then
  command -v redis-server >/dev/null || die "redis-server not found: sudo apt-get install redis-server (scripts/test.sh installs it too)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --loglevel warning >/dev/null &
  pids+=($!)
  REDIS_URL="redis://127.0.0.1:$redis_port/0"
  for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; then break; fi
    sleep 0.1
  done
fi

for i in $(seq 0 $((nodes - 1))); do
  port=$((base + i))
  "$SWITCHBOARD_BIN" serve --listen "127.0.0.1:$port" --engine redis --redis-url "$REDIS_URL" \
    --workers 1 "$@" &
  pids+=($!)
done

for i in $(seq 0 $((nodes - 1))); do
  port=$((base + i))
  up=0
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  ((up)) || die "node on :$port did not come up (see its log above)"
done

echo
echo "Redis: $REDIS_URL"
for i in $(seq 0 $((nodes - 1))); do
  echo "node $((i + 1)): http://127.0.0.1:$((base + i))/   (chat page; WebSockets at /chat, /ws)"
done
echo
echo "Chat on one node, read on another: every node sees every message, members and history."
echo "Publish through any node:"
echo "  curl -H 'Authorization: Bearer $SWITCHBOARD_API_KEY' -d '{\"topic\":\"news\",\"data\":1}' http://127.0.0.1:$base/api/publish"
echo "Ctrl-C stops the cluster."
wait

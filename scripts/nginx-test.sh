#!/usr/bin/env bash
# Debian's nginx in front of a real `switchboard serve`, configured as docs/deploy.md says.
#
#   scripts/nginx-test.sh
#
# Installs nginx (and openssl) with apt-get when missing, then runs tests/nginx/nginx_test.py:
# a self-signed certificate, nginx as the current user on a free 127.0.0.1 port with its
# files in a temporary directory, Python `websockets` clients chatting through it. The last
# line is `nginx: N passed, M failed`. It does not build the server: run
# `cargo build --release -p switchboard` first.
#
# Environment:
#   SWITCHBOARD_BIN     server binary (default: $CARGO_TARGET_DIR/release/switchboard, or
#                       <repo>/target/release/switchboard)
#   SWITCHBOARD_PYTHON  a Python with websockets 15 (scripts/test.sh makes one; default: python3)
#   NGINX               nginx binary (default: nginx on PATH, or /usr/sbin/nginx)
#   ARTIFACTS_DIR       the generated nginx.conf and the logs (default: <target>/nginx-artifacts)
set -euo pipefail

PROG=nginx-test
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
server_binary

find_nginx() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
export NGINX="${NGINX:-$(find_nginx)}"
missing=()
[[ -n "$NGINX" && -x "$NGINX" ]] || missing+=(nginx)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]} with apt-get"
  apt-get update -qq >&2
  # Debian's package may try to start the system nginx; the test runs its own either way.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  NGINX="$(find_nginx)"
  [[ -n "$NGINX" ]] || die "apt-get installed nginx but there is no nginx binary"
fi

python="${SWITCHBOARD_PYTHON:-python3}"
"$python" -c 'import websockets' 2>/dev/null || die "$python has no websockets module (scripts/test.sh makes a virtualenv with it; or set SWITCHBOARD_PYTHON)"
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-$target/nginx-artifacts}"
log "server: $SWITCHBOARD_BIN; $("$NGINX" -v 2>&1)"
exec "$python" "$root/tests/nginx/nginx_test.py"

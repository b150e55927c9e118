#!/usr/bin/env bash
# Headless-browser test of the chat page (GET /) against a real `switchboard serve`.
#
#   scripts/browser-test.sh
#
# Installs what is missing (Debian's chromium with apt-get, playwright-core with npm) and runs
# tests/browser/chat.test.mjs, whose last line is `browser: N passed, M failed`. It does not
# build the server: run `cargo build --release -p switchboard` first. The TLS check needs openssl.
#
# Environment:
#   SWITCHBOARD_BIN   server binary (default: $CARGO_TARGET_DIR/release/switchboard, or
#                     <repo>/target/release/switchboard)
#   CHROMIUM          browser executable (default: /usr/bin/chromium)
#   ARTIFACTS_DIR     screenshots and logs (default: <repo>/target/browser-artifacts)
set -euo pipefail

PROG=browser-test
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tests="$root/tests/browser"
server_binary

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  [[ "$CHROMIUM" == /usr/bin/chromium ]] || die "CHROMIUM=$CHROMIUM is not an executable"
  command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and there is no apt-get to install it"
  log "installing chromium with apt-get"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  [[ -x "$CHROMIUM" ]] || die "apt-get installed chromium but $CHROMIUM is still missing"
fi

command -v openssl >/dev/null || die "openssl not found: the TLS check makes its certificate with it (apt-get install openssl)"
command -v node >/dev/null || die "node not found: install Node.js 20 or newer (apt-get install nodejs npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "node $(node --version) is too old: the test needs Node.js 20 or newer"
if [[ ! -f "$tests/node_modules/playwright-core/package.json" ]]; then
  command -v npm >/dev/null || die "npm not found: install it (apt-get install npm)"
  log "installing playwright-core with npm"
  if [[ -f "$tests/package-lock.json" ]]; then
    (cd "$tests" && npm ci --no-audit --no-fund --loglevel=error) >&2
  else
    (cd "$tests" && npm install --no-audit --no-fund --loglevel=error) >&2
  fi
fi

log "server: $SWITCHBOARD_BIN; browser: $("$CHROMIUM" --version 2>/dev/null | tail -n1 || echo "$CHROMIUM")"
set +e
node "$tests/chat.test.mjs"
rc=$?
set -e
exit "$rc"

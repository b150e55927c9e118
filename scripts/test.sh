#!/usr/bin/env bash
# Runs every test of Switchboard, installing what it needs when missing.
#
#   scripts/test.sh            # everything: lint, unit/integration/doc tests, interop,
#                              # fuzz smoke run, browser test of the chat page,
#                              # cargo install of the binary into a temporary root,
#                              # nginx (docs/deploy.md's config) in front of the server,
#                              # Autobahn server and client suites (the server suite
#                              # twice: serve's default transport, io_uring where it
#                              # works, and serve --io-uring false, epoll)
#
# Environment:
#   AUTOBAHN_CASES     case preset for both Autobahn roles (default: ci = 1.x-10.x plus a fixed sample of 12.x/13.x; see autobahn/README.md)
#   AUTOBAHN_EPOLL_CASES  preset for the server suite against serve --io-uring false (default: core = 1.x-10.x)
#   FUZZ_SECONDS       seconds per fuzz target (default 10; 0 skips the fuzz smoke run)
#   CARGO_TARGET_DIR   cargo's build directory (a persistent one makes reruns fast)
#   SWITCHBOARD_CACHE  where installed test tools live (default ~/.cache/switchboard)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
cache="${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}"
target="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
logs="$target/test-logs"
mkdir -p "$cache" "$logs"

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }
summary=()

# --- what the tests need -----------------------------------------------------------------------
step "checking prerequisites"
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs), then rerun"
apt_missing=()
command -v cc >/dev/null || apt_missing+=(gcc)
command -v python3 >/dev/null || apt_missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_missing+=(python3-venv)
command -v git >/dev/null || apt_missing+=(git)
command -v node >/dev/null || apt_missing+=(nodejs)
command -v npm >/dev/null || apt_missing+=(npm)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt_missing+=(nginx)
command -v openssl >/dev/null || apt_missing+=(openssl)
command -v redis-server >/dev/null || [[ -x /usr/bin/redis-server ]] || apt_missing+=(redis-server)
# Real proxies for the client's proxy tests (HTTP CONNECT and SOCKS5).
command -v tinyproxy >/dev/null || [[ -x /usr/bin/tinyproxy ]] || apt_missing+=(tinyproxy)
command -v microsocks >/dev/null || [[ -x /usr/bin/microsocks ]] || apt_missing+=(microsocks)
if ((${#apt_missing[@]})); then
  command -v apt-get >/dev/null || die "missing ${apt_missing[*]} and no apt-get to install them"
  step "installing ${apt_missing[*]} with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

# Python `websockets` for the interop tests, in a private virtualenv.
venv="$cache/venv-py"
if ! "$venv/bin/python" -c 'import websockets, sys; sys.exit(websockets.__version__ != "15.0.1")' 2>/dev/null; then
  step "installing Python websockets 15.0.1 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check 'websockets==15.0.1'
fi
export SWITCHBOARD_PYTHON="$venv/bin/python"

# --- lint --------------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check || die "code is not formatted: run 'cargo fmt --all'"
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# --- unit, integration, doc tests ----------------------------------------------------------------
step "cargo test"
set +e
cargo test --workspace --all-features --locked 2>&1 | tee "$logs/cargo-test.log"
rc=${PIPESTATUS[0]}
set -e
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p+0, f+0 }' "$logs/cargo-test.log")
summary+=("cargo-test: $passed passed, $failed failed")
((rc == 0)) || { printf '%s\n' "${summary[@]}"; die "cargo test failed"; }

# --- fuzz smoke run -------------------------------------------------------------------------------
if [[ -x scripts/fuzz.sh && "${FUZZ_SECONDS:-10}" != 0 ]]; then
  step "fuzz smoke run (${FUZZ_SECONDS:-10}s per target)"
  scripts/fuzz.sh "${FUZZ_SECONDS:-10}" 2>&1 | tee "$logs/fuzz.log"
  summary+=("$(grep -E '^fuzz: [0-9]+ passed, [0-9]+ failed' "$logs/fuzz.log" | tail -n1)")
fi

# --- Autobahn TestSuite, both roles ---------------------------------------------------------------
step "building release binaries (browser test, Autobahn)"
cargo build --release --locked -p switchboard -p switchboard-tokio --bins --example autobahn_client
export SWITCHBOARD_BIN="$target/release/switchboard"

# The README's install command, into a throwaway root (reuses the release build above).
step "cargo install --locked --path crates/switchboard"
install_failed=0
install_root="$(mktemp -d)"
if cargo install --locked --quiet --path crates/switchboard --root "$install_root" --target-dir "$target" \
  && "$install_root/bin/switchboard" --version; then
  summary+=("cargo-install: 1 passed, 0 failed")
else
  summary+=("cargo-install: 0 passed, 1 failed")
  install_failed=1
fi
rm -rf "$install_root"

# --- the chat page in a real browser (headless Chromium + playwright-core) ---------------------
step "browser test of the chat page"
browser_failed=0
ARTIFACTS_DIR="$target/browser-artifacts" scripts/browser-test.sh 2>&1 | tee "$logs/browser.log" || browser_failed=1
line="$(grep -E '^browser: [0-9]+ passed, [0-9]+ failed' "$logs/browser.log" | tail -n1 || true)"
summary+=("${line:-browser: 0 passed, 1 failed}")

# --- nginx in front of the server, configured as docs/deploy.md says ---------------------------
step "nginx reverse proxy (docs/deploy.md) in front of the server"
nginx_failed=0
ARTIFACTS_DIR="$target/nginx-artifacts" scripts/nginx-test.sh 2>&1 | tee "$logs/nginx.log" || nginx_failed=1
line="$(grep -E '^nginx: [0-9]+ passed, [0-9]+ failed' "$logs/nginx.log" | tail -n1 || true)"
summary+=("${line:-nginx: 0 passed, 1 failed}")
export AUTOBAHN_CLIENT_CMD="$target/release/examples/autobahn_client"
cases="${AUTOBAHN_CASES:-ci}"
ab_failed=0
for role in server client; do
  step "Autobahn $role suite (cases: $cases)"
  if scripts/autobahn/run.sh "$role" --cases "$cases" --outdir "$target/autobahn/$role" 2>&1 | tee "$logs/autobahn-$role.log"; then :; else ab_failed=1; fi
  summary+=("$(grep -E "^autobahn-$role: [0-9]+ passed, [0-9]+ failed" "$logs/autobahn-$role.log" | tail -n1)")
done

# The server suite once more with every socket on epoll (serve --io-uring false; the run
# above used serve's default, io_uring where it works): the core cases (1.x-10.x), since
# compression does not depend on the transport and its cases are the suite's slowest.
epoll_cases="${AUTOBAHN_EPOLL_CASES:-core}"
step "Autobahn server suite over epoll (serve --io-uring false; cases: $epoll_cases)"
if SWITCHBOARD_IO_URING=false scripts/autobahn/run.sh server --cases "$epoll_cases" --outdir "$target/autobahn/server-epoll" 2>&1 | tee "$logs/autobahn-server-epoll.log"; then :; else ab_failed=1; fi
summary+=("$(grep -E "^autobahn-server: [0-9]+ passed, [0-9]+ failed" "$logs/autobahn-server-epoll.log" | tail -n1 | sed 's/^autobahn-server:/autobahn-server-epoll:/')")

step "summary"
printf '%s\n' "${summary[@]}"
((browser_failed == 0)) || die "the browser test failed (screenshots and logs in $target/browser-artifacts/)"
((install_failed == 0)) || die "cargo install --path crates/switchboard failed"
((nginx_failed == 0)) || die "the nginx test failed (its nginx.conf and logs in $target/nginx-artifacts/)"
((ab_failed == 0)) || die "Autobahn reported failures (reports in $target/autobahn/)"

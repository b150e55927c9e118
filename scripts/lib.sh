# Shared by browser-test.sh and nginx-test.sh (sourced, not run): their log lines, and the
# server binary they test.
#
#   PROG=NAME; source lib.sh   sets root (the repository) and target (cargo's build folder,
#                              absolute); log and die print "NAME: ..." on stderr
#   server_binary              exports SWITCHBOARD_BIN (default: $target/release/switchboard),
#                              absolute; dies if it is not there (these scripts do not build)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-$root/target}"
[[ "$target" = /* ]] || target="$PWD/$target"

server_binary() {
  local bin="${SWITCHBOARD_BIN:-$target/release/switchboard}"
  [[ "$bin" = /* ]] || bin="$PWD/$bin"
  [[ -x "$bin" ]] || die "server binary $bin not found: run 'cargo build --release -p switchboard' first (or set SWITCHBOARD_BIN)"
  export SWITCHBOARD_BIN="$bin"
}

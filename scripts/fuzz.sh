#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target in fuzz/ for a short, bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    # default: 10 s, every target
#
# Prints one line per target and finally `fuzz: N passed, M failed`. Exits non-zero when a
# target crashed or broke an invariant (the artifact's path, its bytes in hex and the command
# that reproduces it are printed), or when the targets could not be built.
#
# Environment:
#   FUZZ_SANITIZER          address (default) or none; see the RUSTC_BOOTSTRAP note below
#   CARGO_TARGET_DIR        when set, fuzz builds go to $CARGO_TARGET_DIR/fuzz (persistent,
#                           and apart from the workspace's own builds); else fuzz/target
#   SWITCHBOARD_CARGO_LOCK  lock file that serialises cargo runs on a shared machine
#                           (default /tmp/switchboard-cargo.lock; empty: no locking)
#
# Needs: a Rust toolchain (stable is enough, see below), a C++ compiler (libFuzzer is C++),
# and crates.io to install cargo-fuzz the first time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
fuzz_dir="$root/fuzz"
seconds="${1:-10}"
shift || true
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || {
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
}
sanitizer="${FUZZ_SANITIZER:-address}"
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$fuzz_dir/target}"
logs="$target_dir/fuzz-logs"
mkdir -p "$logs"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf 'fuzz.sh: %s\n' "$*" >&2; }

# --- cargo serialisation ---------------------------------------------------------------------
# Only one cargo build at a time on this machine: every cargo call takes the shared lock,
# unless an ancestor process (say `flock LOCK scripts/test.sh`) already holds it, where
# waiting for it would deadlock.
lock="${SWITCHBOARD_CARGO_LOCK-/tmp/switchboard-cargo.lock}"
lock_held_by_ancestor() {
  [[ -e "$lock" && -r /proc/locks ]] || return 1
  local ino holders p
  ino=$(stat -c %i "$lock")
  # /proc/locks: "1: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<inode> 0 EOF" (waiters: "1: -> FLOCK ...")
  holders=" $(awk -v ino="$ino" '$2 == "FLOCK" { n = split($6, a, ":"); if (a[n] == ino) printf "%s ", $5 }' /proc/locks)"
  p=$$
  while [[ -n "$p" && "$p" -gt 1 ]]; do
    [[ "$holders" == *" $p "* ]] && return 0
    p=$(awk '/^PPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
  done
  return 1
}
locked_cargo() {
  if [[ -n "$lock" ]] && command -v flock >/dev/null && ! lock_held_by_ancestor; then
    flock "$lock" cargo "$@"
  else
    cargo "$@"
  fi
}

# --- cargo-fuzz --------------------------------------------------------------------------------
command -v cargo >/dev/null || { say "cargo not found: install Rust (https://rustup.rs)"; exit 1; }
if ! command -v cargo-fuzz >/dev/null && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]]; then
  say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  locked_cargo install cargo-fuzz --locked
fi

# The targets are the [[bin]] entries of fuzz/Cargo.toml (what `cargo fuzz list` prints).
all_targets=$(awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 }
  bin && /^name *=/ { gsub(/^name *= *"|".*$/, ""); print }' "$fuzz_dir/Cargo.toml")
targets=("$@")
((${#targets[@]})) || mapfile -t targets <<<"$all_targets"

# --- build -------------------------------------------------------------------------------------
# cargo-fuzz instruments the code with stable `-C` flags (SanitizerCoverage passes), which
# work on a stable toolchain as they are. Only the sanitizers need an unstable flag,
# `-Zsanitizer=address`; RUSTC_BOOTSTRAP=1 lets the stable compiler accept it (stable rustup
# toolchains ship the sanitizer runtimes, so nothing else is missing). We cannot install a
# nightly toolchain here, so this is how AddressSanitizer runs at all. switchboard-proto
# forbids `unsafe`, so ASan mainly guards the dependencies' unsafe code (bytes, httparse,
# sha1); if the ASan build fails on some toolchain we fall back to `--sanitizer none`, which
# needs no unstable flag and still catches every panic and broken assertion.
triple=$(rustc -vV | sed -n 's/^host: //p')
build() { # sanitizer
  (
    cd "$fuzz_dir"
    [[ "$1" == none ]] || export RUSTC_BOOTSTRAP=1
    locked_cargo fuzz build --sanitizer "$1" --target "$triple" --target-dir "$target_dir"
  )
}
started=$(date +%s)
say "building the fuzz targets (sanitizer: $sanitizer, target dir: $target_dir)"
if ! build "$sanitizer" >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log" >&2
  # A Rust error (error[E...]) is a broken target or API change: retrying cannot help.
  if [[ "$sanitizer" != none && -z "${FUZZ_SANITIZER:-}" ]] && ! grep -q 'error\[E[0-9]' "$logs/build.log"; then
    say "build with --sanitizer $sanitizer failed; retrying with --sanitizer none"
    sanitizer=none
    build none >"$logs/build.log" 2>&1 || { tail -n 40 "$logs/build.log" >&2; sanitizer=failed; }
  else
    sanitizer=failed
  fi
fi
if [[ "$sanitizer" == failed ]]; then
  say "the fuzz targets do not build (log: $logs/build.log)"
  echo "fuzz: 0 passed, ${#targets[@]} failed"
  exit 1
fi
say "built in $(($(date +%s) - started)) s"

# --- run ---------------------------------------------------------------------------------------
# The binaries are run directly, as `cargo fuzz run` would (same corpus and artifact
# folders), so the cargo lock is not held while fuzzing.
san_flag=""
[[ "$sanitizer" == none ]] && san_flag=" --sanitizer none"
boot=""
[[ "$sanitizer" == none ]] || boot="RUSTC_BOOTSTRAP=1 "
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
passed=0
failed=0
for t in "${targets[@]}"; do
  bin="$target_dir/$triple/release/$t"
  log="$logs/$t.log"
  if [[ ! -x "$bin" ]]; then
    printf '  FAIL  %-20s no binary at %s (unknown target? known: %s)\n' "$t" "$bin" "${all_targets//$'\n'/ }"
    failed=$((failed + 1))
    continue
  fi
  corpus="$fuzz_dir/corpus/$t"
  artifacts="$fuzz_dir/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  # -timeout: one input taking over 10 s is a hang. The outer `timeout` is a backstop only.
  rc=0
  timeout --kill-after=10 $((seconds + 120)) \
    "$bin" -artifact_prefix="$artifacts/" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 "$corpus" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n1)
  if ((rc == 0)) && [[ -n "$runs" ]]; then
    printf '  ok    %-20s %s, corpus %s inputs\n' "$t" "$runs" "$(find "$corpus" -type f | wc -l)"
    passed=$((passed + 1))
    continue
  fi
  failed=$((failed + 1))
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
  printf '  FAIL  %-20s exit %s (log: %s)\n' "$t" "$rc" "$log"
  grep -E "panicked at|^thread '|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY" "$log" | head -n 8 | sed 's/^/        /'
  if [[ -n "$artifact" && -f "$artifact" ]]; then
    rel="${artifact#"$fuzz_dir"/}"
    printf '        artifact: %s\n' "$artifact"
    printf '        input (hex, first 512 bytes): %s\n' "$(head -c 512 "$artifact" | od -An -tx1 -v | tr -d ' \n')"
    printf '        reproduce: cd fuzz && %scargo fuzz run%s %s %s\n' "$boot" "$san_flag" "$t" "$rel"
  else
    tail -n 20 "$log" | sed 's/^/        /'
  fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))

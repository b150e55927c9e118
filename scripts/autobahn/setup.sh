#!/usr/bin/env bash
# Installs the Autobahn TestSuite (wstest) into a private cache prefix and prints the path of a
# `wstest` wrapper as its only stdout line. Idempotent: a second run returns immediately.
#
# wstest (autobahntestsuite 0.8.2) is Python 2.7 code and Debian 12 has no Python 2, so this
# downloads Debian 11 (bullseye) python2.7 packages with a private apt configuration, unpacks them
# with `dpkg -x` into the prefix (nothing is installed system wide), and pip-installs a pinned set.
# See /work/shared/docs/autobahn.md and autobahn/README.md.
#
# Environment:
#   SWITCHBOARD_CACHE        cache root (default: $HOME/.cache/switchboard)
#   AUTOBAHN_DEBIAN_MIRROR   Debian mirror URL (default: read from the system's apt sources)
set -euo pipefail

# Bump when the install procedure changes: it is part of the prefix name, so a new version
# installs into a fresh prefix instead of reusing an old one.
readonly SCRIPT_VERSION=1
readonly DEBIAN_SUITE=bullseye
readonly DEB_PACKAGES=(
  python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libpython2.7
  libpython2.7-dev python2.7-dev libssl1.1 libffi7 python-pip-whl
)
readonly BOOTSTRAP_PINS=(pip==20.3.4 setuptools==44.1.1 wheel==0.37.1)
# ujson 1.35 builds with GCC >= 5 but fails to load unless built with -fgnu89-inline.
readonly UJSON_PIN=ujson==1.35
readonly PINS=(
  autobahntestsuite==0.8.2 'autobahn[twisted,accelerate]==0.10.9' txaio==2.1.0 six==1.16.0
  Twisted==20.3.0 zope.interface==5.5.2 constantly==15.1.0 incremental==21.3.0 Automat==20.2.0
  hyperlink==21.0.0 idna==2.10 typing==3.10.0.0 PyHamcrest==1.9.0 attrs==21.4.0 wsaccel==0.6.3
  "$UJSON_PIN" Jinja2==2.11.3 MarkupSafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 pyOpenSSL==20.0.1
  cryptography==3.3.2 cffi==1.15.1 pycparser==2.21 enum34==1.1.10 ipaddress==1.0.23
  service-identity==21.1.0 pyasn1==0.4.8 pyasn1-modules==0.2.8 unittest2==1.1.0
  traceback2==1.4.0 linecache2==1.0.0
)
# System (bookworm) packages needed: a C compiler for the extensions, CA certificates for PyPI,
# python3 for run.sh/report.py. Installed only if missing.
readonly SYSTEM_PACKAGES=(gcc libc6-dev ca-certificates python3)

log() { printf 'autobahn-setup: %s\n' "$*" >&2; }
die() { printf 'autobahn-setup: error: %s\n' "$*" >&2; exit 1; }

# Everything except the final wrapper path goes to stderr.
exec 3>&1 1>&2

# --- prefix location -------------------------------------------------------------------------
[[ -n "${HOME:-}" || -n "${SWITCHBOARD_CACHE:-}" ]] || die "neither HOME nor SWITCHBOARD_CACHE is set"
cache_root="${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}"
key="$(printf '%s\n' "version=$SCRIPT_VERSION" "suite=$DEBIAN_SUITE" "${DEB_PACKAGES[@]}" \
  "${BOOTSTRAP_PINS[@]}" "${PINS[@]}" | sha256sum | cut -c1-12)"
prefix="$cache_root/autobahn-$key"
wrapper="$prefix/bin/wstest"
marker="$prefix/.installed"

if [[ -f "$marker" && -x "$wrapper" ]]; then
  printf '%s\n' "$wrapper" >&3
  exit 0
fi

mkdir -p "$cache_root" || die "cannot create cache directory $cache_root (set SWITCHBOARD_CACHE to a writable directory)"

# Serialize concurrent installs of the same prefix.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$prefix.lock"
  if ! flock -n 9; then
    log "another setup.sh is installing $prefix; waiting for it"
    flock 9
  fi
  if [[ -f "$marker" && -x "$wrapper" ]]; then
    printf '%s\n' "$wrapper" >&3
    exit 0
  fi
fi

start=$SECONDS
log "installing wstest into $prefix (one-time, ~1 minute, ~150 MB)"

# --- system packages -------------------------------------------------------------------------
if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  die "dpkg/apt-get not found: this script supports Debian 12 (bookworm) only"
fi

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if ((EUID == 0)); then
    sudo_cmd=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo_cmd=(sudo -n)
  else
    die "missing system packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}"
  fi
  log "installing missing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -q >&2 || die "apt-get update failed (check network / apt sources)"
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
fi

# --- Debian mirror ---------------------------------------------------------------------------
find_mirror() {
  local f
  # deb822 sources: first enabled "deb" stanza that is not a security archive.
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk '
      function flush() {
        if (!found && types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && uris != "" &&
            uris !~ /security/ && suites !~ /-security/) {
          split(uris, u, /[ \t]+/); print u[1]; found = 1
        }
        types = ""; uris = ""; suites = ""; enabled = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { field = tolower($1); $1 = ""; sub(/^[ \t]+/, "") }
      field == "types:" { types = $0 }
      field == "uris:" { uris = $0 }
      field == "suites:" { suites = $0 }
      field == "enabled:" { enabled = tolower($0) }
      END { flush() }
    ' "$f" | head -n1
  done
  # One-line format.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    awk '
      $1 == "deb" {
        line = $0; sub(/\[[^]]*\]/, "", line); split(line, w, /[ \t]+/)
        if (w[2] !~ /security/ && w[3] !~ /-security/) { print w[2]; exit }
      }
    ' "$f"
  done
}

mirror="${AUTOBAHN_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  mirror="$(find_mirror | grep -E '^(https?|file|ftp)://' | head -n1 || true)"
fi
[[ -n "$mirror" ]] || die "could not find a Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set AUTOBAHN_DEBIAN_MIRROR, e.g. AUTOBAHN_DEBIAN_MIRROR=http://deb.debian.org/debian"
mirror="${mirror%/}"
log "using Debian mirror $mirror ($DEBIAN_SUITE)"

# --- download and unpack the bullseye python2.7 packages ---------------------------------------
# A previous attempt that did not finish (no marker) is discarded.
rm -rf "$prefix"
mkdir -p "$prefix"
setup_log="$prefix/setup.log"
: >"$setup_log"

apt_dir="$prefix/.apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ -f "$keyring" ]]; then
  printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$DEBIAN_SUITE" >"$apt_dir/sources.list"
else
  printf 'deb %s %s main\n' "$mirror" "$DEBIAN_SUITE" >"$apt_dir/sources.list"
fi
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::Etc::preferences=/dev/null"
  -o "Dir::Etc::preferencesparts=-"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
)
if ((EUID == 0)); then
  # The _apt sandbox user could not write into a private directory under root's home.
  apt_opts+=(-o "APT::Sandbox::User=root")
fi

log "fetching the $DEBIAN_SUITE package index (private apt config, system sources untouched)"
apt-get "${apt_opts[@]}" -q update >>"$setup_log" 2>&1 \
  || { tail -n 20 "$setup_log" >&2; die "apt-get update for $DEBIAN_SUITE from $mirror failed (log: $setup_log); check network access or set AUTOBAHN_DEBIAN_MIRROR"; }

log "downloading ${#DEB_PACKAGES[@]} packages: ${DEB_PACKAGES[*]}"
(cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -q download "${DEB_PACKAGES[@]/%//$DEBIAN_SUITE}") >>"$setup_log" 2>&1 \
  || { tail -n 20 "$setup_log" >&2; die "apt-get download failed (log: $setup_log)"; }

for deb in "$apt_dir"/debs/*.deb; do
  dpkg -x "$deb" "$prefix" || die "dpkg -x $deb failed"
done
rm -rf "$apt_dir"

python="$prefix/usr/bin/python2.7"
[[ -x "$python" ]] || die "unpacked packages do not contain $python"
multiarch="$(gcc -print-multiarch 2>/dev/null || true)"
libdir="$prefix/usr/lib/$multiarch"
if [[ -z "$multiarch" || ! -e "$libdir/libssl.so.1.1" ]]; then
  ssl_lib="$(find "$prefix/usr/lib" -name 'libssl.so.1.1' -print -quit)"
  [[ -n "$ssl_lib" ]] || die "libssl.so.1.1 not found in $prefix/usr/lib"
  libdir="$(dirname "$ssl_lib")"
fi

# --- pip install the pinned set --------------------------------------------------------------
export PYTHONHOME="$prefix/usr"
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONNOUSERSITE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1
export PIP_CACHE_DIR="$cache_root/pip-cache-py27"
unset PYTHONPATH PYTHONSTARTUP PIP_USER PIP_TARGET PIP_PREFIX PIP_REQUIRE_VIRTUALENV PIP_NO_BINARY PIP_ONLY_BINARY
base_cflags="-I$prefix/usr/include/python2.7 -I$prefix/usr/include"

"$python" -c 'import ssl, zlib, ctypes' 2>>"$setup_log" \
  || { tail -n 20 "$setup_log" >&2; die "the unpacked python2.7 does not start (log: $setup_log)"; }

pip_install() {
  local what="$1"; shift
  log "pip: installing $what"
  if ! "$@" >>"$setup_log" 2>&1; then
    grep -v -e '^DEPRECATION: Python 2.7' "$setup_log" | tail -n 25 >&2
    die "pip install of $what failed (full log: $setup_log); check access to PyPI (PIP_INDEX_URL) and that gcc works, then rerun"
  fi
}

pip_wheel="$(find "$prefix/usr/share/python-wheels" -name 'pip-*.whl' -print -quit 2>/dev/null || true)"
[[ -n "$pip_wheel" ]] || die "no pip wheel found in $prefix/usr/share/python-wheels (python-pip-whl)"

pip_install "${BOOTSTRAP_PINS[*]}" \
  "$python" "$pip_wheel/pip" install --no-warn-script-location "${BOOTSTRAP_PINS[@]}"
pip_install "$UJSON_PIN" \
  env CFLAGS="$base_cflags -fgnu89-inline" "$python" -m pip install --no-warn-script-location "$UJSON_PIN"
pip_install "${#PINS[@]} pinned packages (autobahntestsuite, Twisted, ...)" \
  env CFLAGS="$base_cflags" "$python" -m pip install --no-warn-script-location "${PINS[@]}"
"$python" -m pip check >>"$setup_log" 2>&1 \
  || { tail -n 20 "$setup_log" >&2; die "pip check found broken requirements (log: $setup_log)"; }

# --- launcher and wrapper --------------------------------------------------------------------
mkdir -p "$prefix/libexec" "$prefix/bin"
cat >"$prefix/libexec/wstest_launcher.py" <<'PY'
# Generated by scripts/autobahn/setup.sh: starts wstest with its listeners bound to one interface.
#
# wstest's listeners (fuzzingserver, echoserver, their web UIs) bind to all interfaces by default.
# This makes Twisted's listenTCP/listenSSL default to WSTEST_LISTEN_INTERFACE (127.0.0.1 unless
# set; set it to the empty string for wstest's own all-interfaces behaviour). It patches the
# reactor base class, so no reactor is installed before wstest installs its own (epoll).
import os
import sys
import warnings

warnings.filterwarnings("ignore", message=".*Python 2 is no longer supported.*")

INTERFACE = os.environ.get("WSTEST_LISTEN_INTERFACE", "127.0.0.1")

if INTERFACE:
    from twisted.internet import posixbase

    _listen_tcp = posixbase.PosixReactorBase.listenTCP
    _listen_ssl = posixbase.PosixReactorBase.listenSSL

    def listenTCP(self, port, factory, backlog=50, interface=''):
        return _listen_tcp(self, port, factory, backlog, interface or INTERFACE)

    def listenSSL(self, port, factory, contextFactory, backlog=50, interface=''):
        return _listen_ssl(self, port, factory, contextFactory, backlog, interface or INTERFACE)

    posixbase.PosixReactorBase.listenTCP = listenTCP
    posixbase.PosixReactorBase.listenSSL = listenSSL

sys.argv[0] = "wstest"
from autobahntestsuite.wstest import run  # noqa: E402

sys.exit(run())
PY

sh_quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
cat >"$wrapper" <<EOF
#!/bin/sh
# Generated by scripts/autobahn/setup.sh: runs the Autobahn TestSuite (wstest $SCRIPT_VERSION/$key)
# from a private Python 2.7 prefix. Listeners bind to \$WSTEST_LISTEN_INTERFACE (default 127.0.0.1;
# empty = all interfaces, wstest's own default).
prefix=$(sh_quote "$prefix")
libdir=$(sh_quote "$libdir")
PYTHONHOME="\$prefix/usr"
LD_LIBRARY_PATH="\$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
PYTHONNOUSERSITE=1
export PYTHONHOME LD_LIBRARY_PATH PYTHONNOUSERSITE
unset PYTHONPATH PYTHONSTARTUP
exec "\$prefix/usr/bin/python2.7" -u "\$prefix/libexec/wstest_launcher.py" "\$@"
EOF
chmod +x "$wrapper"

# --- verify, then mark as installed (last) ---------------------------------------------------
"$python" -c 'import autobahntestsuite, autobahn, twisted, ujson, wsaccel, OpenSSL, klein, jinja2' >>"$setup_log" 2>&1 \
  || { tail -n 20 "$setup_log" >&2; die "installed packages do not import (log: $setup_log)"; }
"$wrapper" --help >>"$setup_log" 2>&1 \
  || { tail -n 20 "$setup_log" >&2; die "$wrapper --help failed (log: $setup_log)"; }

printf 'key=%s\nscript_version=%s\nmirror=%s\ninstalled=%s\n' "$key" "$SCRIPT_VERSION" "$mirror" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$marker"
log "done in $((SECONDS - start)) s: $wrapper"
printf '%s\n' "$wrapper" >&3

#!/usr/bin/env bash
# Prepare a machine for twinlink's tests: system packages (as root, with apt-get) and .venv with
# twinlink installed in editable mode (C extension built in place) plus extras.
#
#   TWINLINK_EXTRAS  which extras to install (default "test"; CI uses "dev" = test + lint)
#   PYTHON           the interpreter for .venv (default python3)
#
# Idempotent: a second run installs nothing new. It never stops, restarts or kills a service:
# the tests start their own brokers and servers on free ports, so a system mosquitto (or anyone
# else's) on 1883 is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the suite needs from the system, and why:
#   mosquitto                      MQTT tests start their own broker binary on a free port
#   libsodium-dev clang make       the C core's sanitizer runner and fuzzer, the C firmware example
#   gcc python3-dev python3-venv   building the cffi extension; venvs on Debian's python3
#   openssl                        key files are checked with `openssl pkey`
#   rsyslog rsyslog-openssl        a real syslog collector (TCP, UDP, TLS) for event forwarding
#   prometheus                     promtool: metric, alert-rule checks and rule unit tests
#   chromium postgresql            dashboard browser tests, the PostgreSQL store
#   zsh                            the zsh completion script is loaded by a real zsh
APT_PACKAGES="mosquitto libsodium-dev clang make gcc python3-dev python3-venv openssl
  rsyslog rsyslog-openssl prometheus chromium postgresql zsh"

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

if command -v dpkg-query >/dev/null; then
  missing=""
  for pkg in $APT_PACKAGES; do
    installed "$pkg" || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "== installing system packages:$missing"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      # shellcheck disable=SC2086  # one word per package
      apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
      echo "== not root: cannot install:$missing"
      echo "   (as root: apt-get update && apt-get install$missing);" \
           "tests that need them are skipped with a reason"
    fi
  fi
else
  echo "== no dpkg: install by hand what the list in scripts/setup.sh names" \
       "(tests that need a missing one are skipped with a reason)"
fi

PY=${PYTHON:-python3}
EXTRAS=${TWINLINK_EXTRAS:-test}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing twinlink and its [$EXTRAS] extras into .venv"
.venv/bin/python -m pip install -q -e ".[$EXTRAS]"
.venv/bin/python -m twinlink doctor

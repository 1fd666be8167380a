#!/usr/bin/env bash
# Prepare a machine for twinlink's tests: system packages (as root, with apt-get) and .venv with
# twinlink installed in editable mode (C extension built in place) plus the test extras.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="mosquitto libsodium-dev clang openssl make rsyslog rsyslog-openssl prometheus"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # Debian starts a system-wide broker on install; the tests start their own on free ports.
    (service mosquitto stop || pkill -x mosquitto || true) >/dev/null 2>&1
  else
    echo "== not root: cannot install$missing; tests that need them will be skipped with a reason"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing twinlink and its test extras into .venv"
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -m twinlink doctor


#!/usr/bin/env bash
# Set up and run the whole test suite, as README.md tells a new user (and as CI does):
# scripts/setup.sh (system packages: mosquitto, libsodium-dev, clang, openssl; .venv with
# twinlink and its test extras), then pytest over tests/ (extra arguments are passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is not a pass" >&2
  exit 1
fi
exit "$rc"

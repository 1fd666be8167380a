#!/usr/bin/env bash
# CI for the native C core. Idempotent: installs only what is missing, then
#   1. rebuilds twinlink._native in place with -Werror (TWINLINK_WERROR=1: a warning or a failed
#      build fails CI instead of falling back to pure) and checks the native backend loads,
#   2. runs the native and differential tests with the native backend required,
#   3. make -C native test   (C runner under ASan + UBSan against libsodium),
#   4. make -C native fuzz   (libFuzzer on the frame parser/open, FUZZ_SECONDS, default 60).
# Environment: PYTHON (default: .venv/bin/python if present, else python3), FUZZ_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
export TWINLINK_WERROR=1
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

fuzzer_works() {
    local dir
    dir="$(mktemp -d)"
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' > "$dir/f.c"
    clang -fsanitize=fuzzer "$dir/f.c" -o "$dir/f" >/dev/null 2>&1
    local rc=$?
    rm -rf "$dir"
    return $rc
}

apt_install() {
    echo "ci-native: installing $*"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
[ -f /usr/include/sodium.h ] || missing+=(libsodium-dev)
command -v clang >/dev/null || missing+=(clang)
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
if ! fuzzer_works; then
    # Debian ships libFuzzer in clang's runtime package (bookworm: libclang-rt-14-dev).
    major="$(clang -dumpversion | cut -d. -f1)"
    apt_install "libclang-rt-${major}-dev"
fi

"$PYTHON" setup.py -q build_ext --inplace --force
TWINLINK_BACKEND=native "$PYTHON" -c "import twinlink.backends as b; print('ci-native: backend', b.explain())"

TWINLINK_REQUIRE_NATIVE=1 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_native.py tests/test_differential.py

make -s -C native test
mkdir -p native/build
if ! make -s -C native fuzz FUZZ_SECONDS="$FUZZ_SECONDS" > native/build/fuzz.log 2>&1; then
    tail -n 60 native/build/fuzz.log
    echo "ci-native: FUZZ FAILURE (crash input saved as native/crash-*)" >&2
    exit 1
fi
grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" native/build/fuzz.log
# The update-manifest verifier in C (native/tl_update.c) gets its own bounded fuzz run.
if ! make -s -C native fuzz-update FUZZ_SECONDS="$FUZZ_SECONDS" > native/build/fuzz-update.log 2>&1; then
    tail -n 60 native/build/fuzz-update.log
    echo "ci-native: UPDATE FUZZ FAILURE (crash input saved as native/crash-*)" >&2
    exit 1
fi
grep -E "^(Done|stat::number_of_executed_units)" native/build/fuzz-update.log

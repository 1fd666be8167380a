#!/usr/bin/env bash
# Release check: build the sdist, prove it carries every tracked file, install it (C extension
# compiled from the sdist's own sources) into a fresh venv, and run the suite from the unpacked
# sdist against that install. Extra arguments go to pytest.
#
#   SDIST_PYTHON  interpreter for the fresh venv; default: the oldest supported Python (3.9)
#                 when pyenv has one, else python3
#   KEEP_SDIST_TMP=1 keeps the scratch directory for a post-mortem
#
# Needs .venv (scripts/setup.sh) for the build frontend. Uses only the package index pip is
# configured with (the build runs isolated, as a user's pip would).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

tmp=$(mktemp -d "${TMPDIR:-/tmp}/twinlink-sdist.XXXXXX")
if [ "${KEEP_SDIST_TMP:-}" != 1 ]; then trap 'rm -rf "$tmp"' EXIT; fi

echo "== sdist: build"
.venv/bin/python -m pip install -q "build>=1"
.venv/bin/python -m build --sdist --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 \
  || { tail -40 "$tmp/build.log"; exit 1; }
sdist=$(ls "$tmp"/dist/twinlink-*.tar.gz)
echo "   $(basename "$sdist"): $(du -k "$sdist" | cut -f1) KiB"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "== sdist: every tracked file is in it (MANIFEST.in)"
  top=$(basename "$sdist" .tar.gz)
  tar tzf "$sdist" | sed "s|^$top/||" | sort >"$tmp/in-sdist"
  git ls-files | grep -v -x -e .gitignore | sort >"$tmp/tracked"
  if ! comm -23 "$tmp/tracked" "$tmp/in-sdist" >"$tmp/missing" || [ -s "$tmp/missing" ]; then
    echo "tracked files missing from the sdist (add them to MANIFEST.in):" >&2
    cat "$tmp/missing" >&2
    exit 1
  fi
fi

py=${SDIST_PYTHON:-}
if [ -z "$py" ]; then
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3; do
    [ -x "$cand" ] && py=$cand
  done
  py=${py:-python3}
fi
echo "== sdist: fresh venv on $("$py" -c 'import sys; print(sys.version.split()[0])'),"\
     "pip install <sdist>[test]"
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install "$sdist[test]" >"$tmp/install.log" 2>&1 \
  || { tail -40 "$tmp/install.log"; exit 1; }
grep -i "warning: twinlink" "$tmp/install.log" || true  # the native build's one-line verdict
"$tmp/venv/bin/python" -m twinlink doctor

echo "== sdist: unpack; the tests import the installed package, not the unpacked source"
mkdir "$tmp/src"
tar xzf "$sdist" -C "$tmp/src" --strip-components=1
# Without its __init__.py the unpacked twinlink/ is only a namespace-package candidate, so the
# installed (regular) package wins for the tests and for every subprocess they start with the
# tree on PYTHONPATH; the tree's other files stay where tests read them (e.g. _native_build.py).
rm "$tmp/src/twinlink/__init__.py"
(
  cd "$tmp/src"
  PYTHONPATH=$PWD "$tmp/venv/bin/python" - "$tmp/venv" <<'EOF'
import sys
from pathlib import Path

import twinlink

where = Path(twinlink.__file__).resolve()
assert Path(sys.argv[1]).resolve() in where.parents, f"tests would import {where}"
print(f"   twinlink {twinlink.__version__} from {where.parent}, backend {twinlink.backend()}")
EOF
  echo "== sdist: pytest"
  set +e
  "$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
  rc=$?
  set -e
  [ "$rc" = 5 ] && { echo "pytest ran no tests from the sdist: nothing was verified" >&2; rc=1; }
  exit "$rc"
)
cd "$ROOT"

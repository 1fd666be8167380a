#!/usr/bin/env bash
# Write a CycloneDX SBOM (JSON) of the twinlink package and its runtime dependencies, as a user's
# `pip install twinlink` gets them: the package is installed alone into a scratch environment
# (no test or lint tools in it) and cyclonedx-py (from the `lint` extra) describes that
# environment, with twinlink itself as the root component.
#
#   usage: bash scripts/sbom.sh OUT.json      (needs .venv with the lint extra: scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/sbom.sh OUT.json}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/twinlink-sbom.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m venv --without-pip "$tmp/env"
.venv/bin/python -m pip --python "$tmp/env/bin/python" install . >"$tmp/install.log" 2>&1 \
  || { tail -30 "$tmp/install.log"; exit 1; }
.venv/bin/cyclonedx-py environment --pyproject pyproject.toml --mc-type library \
  --output-reproducible --of JSON -o "$out" "$tmp/env/bin/python"
.venv/bin/python - "$out" <<'PY'
import json
import sys

bom = json.load(open(sys.argv[1]))
root = bom["metadata"]["component"]
deps = sorted(bom.get("components", []), key=lambda c: c["name"].lower())
print(f"   {sys.argv[1]}: CycloneDX {bom['specVersion']}, {root['name']} {root['version']} and "
      f"{len(deps)} runtime dependencies: " + ", ".join(f"{c['name']} {c['version']}"
                                                       for c in deps))
PY

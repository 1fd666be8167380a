"""The update golden vectors: the committed files are what scripts/make_update_vectors.py
writes, and twinlink reaches every verdict they state. (The C core checks the same verdicts
in native/tests/test_update.c; tests/test_update_independent.py re-verifies the signatures.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from twinlink import update
from twinlink.update import manifest as mf

ROOT = Path(__file__).resolve().parents[1]
VEC = json.loads((ROOT / "tests" / "vectors" / "update-golden.json").read_text())
TRUST = update.Trust(tuple(bytes.fromhex(k) for k in VEC["device"]["update_keys"]),
                     VEC["device"]["vendor"], VEC["device"]["class"],
                     bytes.fromhex(VEC["device"]["vendor_id"]),
                     bytes.fromhex(VEC["device"]["class_id"]))


def test_committed_vectors_are_current():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_update_vectors.py"),
                          "--check"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("vec", VEC["manifests"], ids=[m["name"] for m in VEC["manifests"]])
def test_verdict(vec: dict):
    raw = bytes.fromhex(vec["manifest"])
    if vec["expect"] == "ok":
        m, same = update.check_manifest(TRUST, None, raw)
        assert not same and m.raw == raw and len(raw) == vec["bytes"]
    else:
        with pytest.raises(update.UpdateRefused) as info:
            update.check_manifest(TRUST, None, raw)
        assert info.value.reason == vec["expect"]
    if "to_be_signed" in vec:
        m = update.parse(raw)
        assert mf.sig_structure(m.protected, m.payload).hex() == vec["to_be_signed"]


def test_documented_sizes():
    sizes = {m["name"]: m["bytes"] for m in VEC["manifests"]}
    assert sizes["basic"] <= sizes["largest-basic"] == 183 <= 256
    assert sizes["uri-and-rotation"] <= 256

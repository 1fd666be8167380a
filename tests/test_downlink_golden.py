"""The downlink golden vectors (tests/vectors/downlink-golden.json, docs/PROTOCOL.md §20):
the committed file is what scripts/make_downlink_vectors.py writes today; a device built from
the golden keys opens each frame; an independent AEAD (``cryptography``) and CBOR decoder
(cbor2) given the vector's key, nonce and AAD read the same plaintext."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from twinlink import downlink, keys
from twinlink.downlink import DownlinkReceiver, DownlinkState

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "downlink-golden.json").read_text())
GOLDEN = json.loads((ROOT / "tests" / "vectors" / "twinlink-golden.json").read_text())
CASES = VECTORS["downlinks"]


def test_committed_json_is_the_scripts_output() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_downlink", ROOT / "scripts" / "make_downlink_vectors.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.render() == (ROOT / "tests" / "vectors" / "downlink-golden.json").read_text()


def test_a_command_vector_is_included() -> None:
    kinds = {cbor2.loads(bytes.fromhex(v["plaintext"]))[1] for v in CASES}
    assert kinds == {"desired", "command"}
    assert any(v["kid_context"] for v in CASES) and any(not v["kid_context"] for v in CASES)


@pytest.mark.parametrize("v", CASES, ids=[v["name"] for v in CASES])
def test_independent_decryption(v: dict) -> None:
    # Key from the PROTOCOL text alone: HKDF-SHA256(salt, secret, info) with the golden secret.
    ctx = GOLDEN["contexts"][v["context"]]
    salt = bytes.fromhex(ctx["master_salt"]) or bytes(32)
    key = HKDF(SHA256(), 32, salt, bytes.fromhex(v["info_downlink_key"])).derive(
        bytes.fromhex(GOLDEN["keys"]["master_secret"]))
    assert key.hex() == v["downlink_key"]
    pt = ChaCha20Poly1305(key).decrypt(bytes.fromhex(v["nonce"]), bytes.fromhex(v["ciphertext"]),
                                       bytes.fromhex(v["aead_aad"]))
    assert pt.hex() == v["plaintext"]
    frame = cbor2.loads(bytes.fromhex(v["frame"]))
    assert frame.tag == 16 and frame.value[2].hex() == v["ciphertext"]
    assert frame.value[1][4] == b"" and frame.value[1][6].hex() == v["partial_iv"]
    assert frame.value[1].get(10) == (bytes.fromhex(v["kid_context"]) if v["kid_context"]
                                      else None)


@pytest.mark.parametrize("v", CASES, ids=[v["name"] for v in CASES])
def test_device_opens_the_vector(v: dict, tmp_path: Path) -> None:
    k = GOLDEN["keys"]
    ctx = GOLDEN["contexts"][v["context"]]
    settings: dict = {"master_salt": ctx["master_salt"]}
    bundle = keys.Bundle("golden", bytes.fromhex(ctx["kid"]),
                         keys.TwinKey(bytes.fromhex(k["twin_x25519_secret"])).public,
                         keys.DeviceKey(bytes.fromhex(k["device_ed25519_seed"])), settings)
    idc = bytes.fromhex(v["kid_context"]) if v["kid_context"] else None
    dctx = bundle.ack_context(idc, downlink.DOWNLINK_SID)
    rx = DownlinkReceiver(bundle.kid, DownlinkState(tmp_path / "s"), lambda: (dctx, idc))
    got: list = []
    rx.desired_handler = got.append
    rx.commands["relay"] = lambda a: got.append(a) or "done"
    # Far in the past relative to the command's deadline (2030): not expired.
    reports = rx.handle(bytes.fromhex(v["frame"]), now=1_800_000_000)
    msg = downlink.decode(bytes.fromhex(v["plaintext"]))
    if isinstance(msg, downlink.Desired):
        assert got == [msg.values] and reports == {"tl:desired": msg.version}
    else:
        assert got == [msg.args] and reports == {f"tl:cmd:{msg.id}": "ok",
                                                 f"tl:cmd:{msg.id}:result": "done"}


def test_c_header_is_generated_from_the_vectors() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_downlink_golden", ROOT / "native" / "tests" / "gen_downlink_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.render() == (ROOT / "native" / "tests" / "downlink_golden.h").read_text()

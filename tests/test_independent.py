"""twinlink/1 against an implementation that shares no code with it (tests/independent_cose.py).

(a) The independent checker is itself validated on the cose-wg vectors.
(b) Frames sealed by twinlink (both backends) verify and decrypt with it, given only the device
    public key, the twin key, the kid and the stream; the golden vectors re-derive with it.
(c) Frames it builds are opened by ``twinlink.Twin``, and equal twinlink's bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import cbor2
import independent_cose as ic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519

import twinlink
from twinlink import backends, frame, keys, oscore

VECTORS = Path(__file__).resolve().parent / "vectors"
COSE_WG = VECTORS / "cose-wg"
GOLDEN = json.loads((VECTORS / "twinlink-golden.json").read_text())

DEV = keys.DeviceKey(bytes(range(100, 132)))
TWIN = keys.TwinKey(bytes(range(200, 232)))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(params=["python", "native"])
def backend(request: pytest.FixtureRequest):
    previous = backends.name()
    try:
        backends.use(request.param)
    except ImportError:
        pytest.skip(f"native backend not built: {backends.native_error()}")
    yield request.param
    backends.use(previous)


# -- (a) the checker against the COSE working group's examples --------------------------------

SIGN1 = sorted((COSE_WG / "sign1-tests").glob("*.json"))


@pytest.mark.parametrize("path", SIGN1, ids=[p.stem for p in SIGN1])
def test_checker_on_cose_wg_sign1_tests(path: Path):
    vec = _load(path)
    sign0 = vec["input"]["sign0"]
    key = ic.public_key_from_jwk(sign0["key"])
    tagged = "RemoveCBORTag" not in vec["input"].get("failures", {})
    msg = bytes.fromhex(vec["output"]["cbor"])
    ext = bytes.fromhex(sign0.get("external", ""))
    if vec.get("fail"):
        with pytest.raises(ic.CheckFailed):
            ic.verify_sign1(msg, key, ext, tagged=tagged)
    else:
        assert ic.verify_sign1(msg, key, ext, tagged=tagged) == vec["input"]["plaintext"].encode()


def test_checker_sign1_tests_cover_pass_and_fail():
    assert {p.stem.split("-")[1] for p in SIGN1} == {"pass", "fail"}


EDDSA = sorted((COSE_WG / "eddsa-examples").glob("*.json"))


@pytest.mark.parametrize("path", EDDSA, ids=[p.stem for p in EDDSA])
def test_checker_on_cose_wg_eddsa_examples(path: Path):
    vec = _load(path)
    msg = bytes.fromhex(vec["output"]["cbor"])
    if "sign0" in vec["input"]:
        key = ic.public_key_from_jwk(vec["input"]["sign0"]["key"])
        payload = ic.verify_sign1(msg, key)
        with pytest.raises(ic.CheckFailed):  # one flipped signature bit must be refused
            ic.verify_sign1(msg[:-1] + bytes([msg[-1] ^ 1]), key)
    else:
        key = ic.public_key_from_jwk(vec["input"]["sign"]["signers"][0]["key"])
        payload = ic.verify_sign(msg, key)
    assert payload == vec["input"]["plaintext"].encode()


CHACHA = sorted((COSE_WG / "chacha-poly-examples").glob("*.json"))


@pytest.mark.parametrize("path", CHACHA, ids=[p.stem for p in CHACHA])
def test_checker_on_cose_wg_chacha_poly_examples(path: Path):
    vec = _load(path)
    body = vec["input"].get("encrypted") or vec["input"]["enveloped"]
    key = ic._b64url(body["recipients"][0]["key"]["k"])
    msg = bytes.fromhex(vec["output"]["cbor"])
    if "encrypted" in vec["input"]:
        nonce = bytes.fromhex(vec["input"]["rng_stream"][0])
        assert ic.decrypt_encrypt0(msg, key, nonce) == vec["input"]["plaintext"].encode()
        with pytest.raises(ic.CheckFailed):
            ic.decrypt_encrypt0(msg, key, nonce, external_aad=b"x")
    else:
        assert ic.decrypt_encrypt_direct(msg, key) == vec["input"]["plaintext"].encode()


def test_checker_edwards_to_montgomery_matches_libsodium():
    # RFC 8032 §7.1 test 1 key. The independent RFC 7748 §4.1 map must give libsodium's
    # crypto_sign_ed25519_pk_to_curve25519 and the X25519 public key of the device's scalar.
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    x = ic.ed25519_public_to_x25519(pub)
    assert x == crypto_sign_ed25519_pk_to_curve25519(pub)
    scalar = x25519.X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])
    assert x == scalar.public_key().public_bytes_raw()
    with pytest.raises(ic.CheckFailed):
        ic.ed25519_public_to_x25519((1).to_bytes(32, "little"))  # y = 1: the neutral element
    with pytest.raises(ic.CheckFailed):
        ic.ed25519_public_to_x25519((2).to_bytes(32, "little"))  # y = 2 is not on the curve


# -- (b) twinlink's frames, opened independently ----------------------------------------------

def _bundle(kid: bytes, settings: dict | None = None, device: keys.DeviceKey = DEV) -> keys.Bundle:
    return keys.Bundle("indep", kid, TWIN.public, device, settings or {})


@pytest.mark.parametrize("settings", [{}, {"master_salt": "5a17", "id_context": "c0ffee"}],
                         ids=["default", "rekeyed"])
def test_device_frames_open_independently(backend: str, tmp_path: Path, settings: dict):
    kid = b"\x2a\x07"
    dev = twinlink.Device(_bundle(kid, settings), tmp_path, chunk=4)
    frames = [dev.seal({"temp": 21.5, "rh": 40}, time=1700000000),
              dev.seal_raw(b"\xa1\x61k\x18\x2a"),
              *dev.seal_many([{"n": i} for i in range(6)], time=False)]
    # A fresh state starts a fresh context: its ID Context is the device's, named in the header.
    idc = dev.id_context
    assert idc is not None and idc != bytes.fromhex(settings.get("id_context", "00"))
    dev.close()
    salt = bytes.fromhex(settings.get("master_salt", ""))
    for seq, fr in enumerate(frames):
        opened = ic.open_twinlink(fr, DEV.public, TWIN.secret, kid, b"t", salt, idc)
        assert opened.seq == seq
        # any conformant COSE_Sign1 verifier: the device key and the external_aad suffice
        assert ic.verify_sign1(fr, DEV.public, opened.external_aad)
    raw = ic.open_twinlink(frames[1], DEV.public, TWIN.secret, kid, b"t", salt, idc)
    assert raw.plaintext == b"\xa1\x61k\x18\x2a"


@pytest.mark.parametrize("kid", [b"\x00", b"\x01", b"\xff" * 3, bytes(range(1, 7))],
                         ids=lambda k: k.hex())
@pytest.mark.parametrize("seq", [0, 1, 23, 24, 255, 256, 65535, 65536, (1 << 40) - 1])
def test_frame_seal_opens_independently(backend: str, kid: bytes, seq: int):
    ctx = oscore.derive_context(keys.master_secret_device(DEV, TWIN.public), kid)
    pt = bytes(range(seq % 50))  # any bytes: the frame layer does not parse the plaintext
    fr = frame.seal(DEV.secret64, ctx, seq, pt)
    opened = ic.open_twinlink(fr, DEV.public, TWIN.secret, kid)
    assert (opened.seq, opened.plaintext) == (seq, pt)
    with pytest.raises(ic.CheckFailed):  # bound to the stream name
        ic.open_twinlink(fr, DEV.public, TWIN.secret, kid, stream=b"a")
    # and the independent builder produces exactly the same bytes
    assert ic.seal_twinlink(DEV.seed, TWIN.public, kid, seq, pt) == fr


@pytest.mark.parametrize("salt", [b"", b"\x5a\x17"], ids=["base-salt", "salt"])
def test_kid_context_frames_open_independently(backend: str, salt: bytes):
    kid, idc = b"\x2a", bytes.fromhex("5c9e2a7b01d84f36")
    ctx = oscore.derive_context(keys.master_secret_device(DEV, TWIN.public), kid, salt, idc)
    for seq in (0, 1, 300):
        fr = frame.seal(DEV.secret64, ctx, seq, b"\xa1\x00\x01", kid_context=idc)
        opened = ic.open_twinlink(fr, DEV.public, TWIN.secret, kid, b"t", salt)
        assert (opened.seq, opened.kid_context, opened.plaintext) == (seq, idc, b"\xa1\x00\x01")
        assert ic.verify_sign1(fr, DEV.public, opened.external_aad)
        assert ic.seal_twinlink(DEV.seed, TWIN.public, kid, seq, b"\xa1\x00\x01", b"t", salt,
                                idc, kid_context=True) == fr
    # the signature covers the kid context: another context in its place does not verify
    fr = frame.seal(DEV.secret64, ctx, 2, b"", kid_context=idc)
    forged = fr.replace(idc, bytes(8))
    with pytest.raises(ic.CheckFailed):
        ic.verify_sign1(forged, DEV.public, ic.external_aad(kid, b"\x02", b"t"))


def test_lite_frame_decrypts_independently(backend: str):
    kid = b"\x09"
    ctx = oscore.derive_context(keys.master_secret_device(DEV, TWIN.public), kid)
    fr = frame.seal_lite(ctx, 300, b"\x81\x01")
    ictx = ic.derive(ic.twin_master_secret(TWIN.secret, DEV.public), kid)
    piv = ic.piv_of(300)
    pt = ic.decrypt_encrypt0(fr, ictx.key, ic.nonce(ictx.common_iv, kid, piv),
                             ic.external_aad(kid, piv, b"t"))
    assert pt == b"\x81\x01"


@pytest.mark.parametrize("vec", GOLDEN["frames"], ids=[f["name"] for f in GOLDEN["frames"]])
def test_golden_vectors_rederive_independently(vec: dict):
    k = GOLDEN["keys"]
    pub, twin_sk = bytes.fromhex(k["device_ed25519_public"]), bytes.fromhex(k["twin_x25519_secret"])
    assert ic.ed25519_public_to_x25519(pub).hex() == k["device_x25519_public"]
    secret = ic.twin_master_secret(twin_sk, pub)
    assert secret.hex() == k["master_secret"]
    c = GOLDEN["contexts"][vec["context"]]
    kid = bytes.fromhex(c["kid"])
    idc = None if c["id_context"] is None else bytes.fromhex(c["id_context"])
    ctx = ic.derive(secret, kid, bytes.fromhex(c["master_salt"]), idc)
    assert (ctx.info_key.hex(), ctx.info_iv.hex()) == (c["info_sender_key"], c["info_common_iv"])
    assert (ctx.key.hex(), ctx.common_iv.hex()) == (c["sender_key"], c["common_iv"])
    assert ic.derive(secret, b"", bytes.fromhex(c["master_salt"]), idc).key.hex() == \
        c["twin_sender_key"]
    piv = ic.piv_of(vec["seq"])
    aad = ic.external_aad(kid, piv, bytes.fromhex(vec["stream"]))
    assert (piv.hex(), aad.hex()) == (vec["partial_iv"], vec["external_aad"])
    assert ic.nonce(ctx.common_iv, kid, piv).hex() == vec["nonce"]
    fr = bytes.fromhex(vec["frame"])
    kc = bytes.fromhex(vec["kid_context"]) if "kid_context" in vec else None
    if vec["profile"] != "lite":
        prot = cbor2.loads(bytes.fromhex(vec["sign1_protected"]))
        assert list(prot) == ([1, 4] if kc is None else [1, 4, 10])
        assert prot.get(10) == kc
    if vec["profile"] == "lite":
        pt = ic.decrypt_encrypt0(fr, ctx.key, ic.nonce(ctx.common_iv, kid, piv), aad)
    else:
        enc0 = bytes.fromhex(vec["encrypt0"])
        tbs = ic.sign1_to_be_signed(bytes.fromhex(vec["sign1_protected"]), aad, enc0)
        assert tbs.hex() == vec["to_be_signed"]
        opened = ic.open_twinlink(fr, pub, twin_sk, kid, b"t", bytes.fromhex(c["master_salt"]),
                                  idc)
        assert opened.kid_context == kc
        pt = opened.plaintext
        if kc is not None:  # the frame alone names its context: no id_context needed
            assert ic.open_twinlink(fr, pub, twin_sk, kid, b"t",
                                    bytes.fromhex(c["master_salt"])).plaintext == pt
            with pytest.raises(ic.CheckFailed):
                ic.open_twinlink(fr, pub, twin_sk, kid, b"t", bytes.fromhex(c["master_salt"]),
                                 b"another")
    assert pt.hex() == vec["plaintext"]


def test_key_files_read_by_cryptography(tmp_path: Path):
    k = GOLDEN["keys"]
    dsk = serialization.load_pem_private_key(k["device_private_pem"].encode(), None)
    assert dsk.public_key().public_bytes_raw().hex() == k["device_ed25519_public"]
    tsk = serialization.load_pem_private_key(k["twin_private_pem"].encode(), None)
    assert tsk.public_key().public_bytes_raw().hex() == k["twin_x25519_public"]
    for name in ("device_public_pem", "twin_public_pem"):
        pk = serialization.load_pem_public_key(k[name].encode())
        spki = pk.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        assert spki.decode() == k[name]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_key_files_read_by_openssl(tmp_path: Path):
    k = GOLDEN["keys"]
    for priv, pub in (("device_private_pem", "device_public_pem"),
                      ("twin_private_pem", "twin_public_pem")):
        path = tmp_path / f"{priv}.pem"
        path.write_text(k[priv])
        out = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout"], check=True,
                             capture_output=True, text=True, timeout=30).stdout
        assert out == k[pub]


# -- (c) independent frames, opened by twinlink -----------------------------------------------

@pytest.mark.parametrize("rekeyed", [False, True], ids=["default", "rekeyed"])
def test_twin_opens_independent_frames(backend: str, tmp_path: Path, rekeyed: bool):
    kid = b"\x11\x22\x33"
    salt, idc = (b"\x01\x02", b"ep") if rekeyed else (b"", None)
    twin = twinlink.Twin(tmp_path / "twin.db", TWIN)
    twin.register("pump", DEV.public, kid=kid, master_salt=salt, id_context=idc)
    pt = bytes.fromhex("81a300647465" "6d7002f94d6006fa4ecaa7e2")  # [{0:"temp", 2:21.5, 6:1.7e9}]
    named = idc is not None  # a context with an ID Context names it (label 10, PROTOCOL §7)
    for seq in (5, 3, 60):
        fr = ic.seal_twinlink(DEV.seed, TWIN.public, kid, seq, pt, b"t", salt, idc, named)
        reading = twin.open(fr)
        assert (reading.device, reading.seq, reading.payload) == ("pump", seq, {"temp": 21.5})
    with pytest.raises(twinlink.Replay):
        twin.open(ic.seal_twinlink(DEV.seed, TWIN.public, kid, 3, pt, b"t", salt, idc, named))
    forged = bytearray(ic.seal_twinlink(DEV.seed, TWIN.public, kid, 7, pt, b"t", salt, idc,
                                        named))
    forged[-1] ^= 0x80
    with pytest.raises(twinlink.BadSignature):
        twin.open(bytes(forged))
    other = keys.DeviceKey(bytes(32))  # signed by someone else: refused before decryption
    with pytest.raises(twinlink.BadSignature):
        twin.open(ic.seal_twinlink(other.seed, TWIN.public, kid, 8, pt, b"t", salt, idc, named))
    twin.close()

"""Third-party check of update manifests: cbor2 and ``cryptography`` only, no twinlink code.

The checker below is written from docs/UPDATES.md and RFC 9052: decode the tagged COSE_Sign1,
rebuild the Sig_structure with cbor2, verify Ed25519 with ``cryptography``, read the SUIT-shaped
payload. It must accept what twinlink signs (and the golden vectors twinlink accepts), and
twinlink must accept a manifest this checker's side builds and signs by itself.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VECTORS = Path(__file__).parent / "vectors" / "update-golden.json"


class Refused(Exception):
    pass


def independent_verify(raw: bytes, public: bytes) -> dict[str, Any]:
    """Verify a manifest under ``public`` (raw Ed25519); return the payload's fields."""
    obj = cbor2.loads(raw)
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != 18 or len(obj.value) != 4:
        raise Refused("not a tagged COSE_Sign1")
    protected, unprotected, payload, signature = obj.value
    header = cbor2.loads(protected)
    if header.get(1) not in (-8, -19) or dict(unprotected):
        raise Refused("alg is not EdDSA, or unprotected headers present")
    if header.get(4) != hashlib.sha256(public).digest()[:8]:
        raise Refused("key id names another key")
    tbs = cbor2.dumps(["Signature1", protected, b"", payload])
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, tbs)
    except InvalidSignature:
        raise Refused("signature") from None
    body = cbor2.loads(payload)
    image = body[3]
    alg, digest = image[3]
    if body[1] != 1 or alg != -16:
        raise Refused("version or digest algorithm")
    return {"seq": body[2], "vendor_id": image[1], "class_id": image[2], "digest": digest,
            "size": image[14], "uri": image.get(21), "next_keys": list(body.get(4, []))}


def _vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())  # type: ignore[no-any-return]


def test_golden_manifests_verify_independently():
    vec = _vectors()
    public = bytes.fromhex(vec["update_key"]["public"])
    device = vec["device"]
    img = bytes.fromhex(vec["image"]["hex"])
    checked = 0
    for m in vec["manifests"]:
        raw = bytes.fromhex(m["manifest"])
        if m["expect"] in ("ok", "wrong_vendor", "wrong_class"):
            f = independent_verify(raw, public)
            assert f["digest"] == hashlib.sha256(img).digest() and f["size"] in (len(img),
                                                                                 2**64 - 1)
            same_vendor = f["vendor_id"].hex() == device["vendor_id"]
            same_class = f["class_id"].hex() == device["class_id"]
            assert (same_vendor, same_class) == {"ok": (True, True),
                                                 "wrong_vendor": (False, False),
                                                 "wrong_class": (True, False)}[m["expect"]]
            checked += 1
        if m["expect"] in ("bad_signature", "untrusted_key"):
            with pytest.raises(Refused):
                independent_verify(raw, public)
        if "to_be_signed" in m:
            protected = bytes.fromhex(m["protected"])
            payload = bytes.fromhex(m["payload"])
            assert cbor2.dumps(["Signature1", protected, b"", payload]).hex() == m["to_be_signed"]
    assert checked == 7


def test_twinlink_manifests_verify_independently(tmp_path: Path):
    from update_kit import make_kit, pub

    kit = make_kit(tmp_path / "d")
    img = kit.image(3)
    nxt = bytes(range(1, 33))
    nxt_pub = pub(nxt)
    raw = kit.manifest(3, img, uri="https://fw.example/3", next_keys=[nxt_pub])
    f = independent_verify(raw, pub(kit.seed))
    assert f == {"seq": 3, "vendor_id": kit.vendor_id, "class_id": kit.class_id,
                 "digest": hashlib.sha256(img.read_bytes()).digest(), "size": 5000,
                 "uri": "https://fw.example/3", "next_keys": [nxt_pub]}
    # SUIT identifiers, independently: UUIDv5(DNS, vendor) and UUIDv5(vendor-id, class).
    vid = uuid.uuid5(uuid.NAMESPACE_DNS, "example.com")
    assert f["vendor_id"] == vid.bytes and f["class_id"] == uuid.uuid5(vid, "pump-v2").bytes


def test_twinlink_accepts_an_independently_built_manifest(tmp_path: Path):
    from update_kit import make_kit


    sk = Ed25519PrivateKey.generate()
    public = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    seed = sk.private_bytes_raw()
    kit = make_kit(tmp_path / "d", seed=seed)
    img = kit.image(4)
    vid = uuid.uuid5(uuid.NAMESPACE_DNS, "example.com")
    payload = cbor2.dumps({1: 1, 2: 4, 3: {1: vid.bytes, 2: uuid.uuid5(vid, "pump-v2").bytes,
                                            3: [-16, hashlib.sha256(img.read_bytes()).digest()],
                                            14: 5000}}, canonical=True)
    protected = cbor2.dumps({1: -8, 4: hashlib.sha256(public).digest()[:8]}, canonical=True)
    sig = sk.sign(cbor2.dumps(["Signature1", protected, b"", payload]))
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))
    assert kit.verify(raw, img).seq == 4

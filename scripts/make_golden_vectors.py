#!/usr/bin/env python3
"""Generate the twinlink/1 golden vectors (tests/vectors/twinlink-golden.json).

Deterministic: fixed keys, fixed plaintexts, fixed sequence numbers, and Ed25519 signatures are
deterministic, so every run writes the same bytes. Every intermediate value is computed with
twinlink's pure-Python reference backend. ``tests/test_golden.py`` regenerates each value with
both backends and checks that this script's output equals the committed file;
``tests/test_independent.py`` re-derives every value with an implementation that shares no code
with twinlink.

    python scripts/make_golden_vectors.py            # rewrite the committed file
    python scripts/make_golden_vectors.py --check    # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cbor2  # noqa: E402
from nacl import bindings as nacl  # noqa: E402

from twinlink import _backend_pure as pure  # noqa: E402
from twinlink import ack, backends, cbor, keys, oscore, senml  # noqa: E402
from twinlink import frametypes as ft  # noqa: E402
from twinlink.transport import framing  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "twinlink-golden.json"


def _label(text: str) -> bytes:
    """A 32-byte fixed value named by a label, so the vectors need no random input."""
    return hashlib.sha256(text.encode()).digest()


DEVICE_SEED = _label("twinlink/1 golden vectors: device Ed25519 seed")
TWIN_SECRET = _label("twinlink/1 golden vectors: twin X25519 secret")

CONTEXTS: dict[str, dict[str, Any]] = {
    "kid1": {"kid": "01", "master_salt": "", "id_context": None},
    "kid6": {"kid": "0a0b0c0d0e0f", "master_salt": "", "id_context": None},
    "kid6-rekeyed": {"kid": "0a0b0c0d0e0f", "master_salt": "9e7ca92223786340",
                     "id_context": "37cbf3210017a2d3"},
    "kid1-renewed": {"kid": "01", "master_salt": "", "id_context": "5c9e2a7b01d84f36"},
}

#: Acks (docs/PROTOCOL.md section 15.1): a fixed twin Sender ID (an ingest picks a random one);
#: (name, context, PIV, stored frames, refused (frame, reason)). Entries name golden frames.
TWIN_SENDER_ID = bytes.fromhex("7477696e2d31")  # "twin-1"
ACKS: list[tuple[Any, ...]] = [
    ("ack-kid1-base", "kid1", 0, ["kid1-seq0", "kid1-seq1"],
     [("kid1-seq256-raw", "bad_payload")]),
    ("ack-kid1-renewed", "kid1-renewed", 5, ["kid1-renewed-kidctx-seq0"], []),
]

SENML_READING = {"temp": 21.5, "rh": 48.25, "door": "open"}
SENML_TIME = 1700000000.0
RAW_PAYLOAD = {"fw": "1.4.2", "boot": 7}

# (name, context, profile, alg, seq, plaintext kind[, carries the context's ID Context as
# kid context, COSE label 10]); frames before the kid-context extension carry none.
FRAMES: list[tuple[Any, ...]] = [
    ("kid1-seq0", "kid1", "twinlink/1", -8, 0, "senml"),
    ("kid1-seq1", "kid1", "twinlink/1", -8, 1, "senml"),
    ("kid1-seq255", "kid1", "twinlink/1", -8, 255, "senml"),
    ("kid1-seq256-raw", "kid1", "twinlink/1", -8, 256, "raw"),
    ("kid6-seqmax", "kid6", "twinlink/1", -8, (1 << 40) - 1, "senml"),
    ("kid6-rekeyed-seq0", "kid6-rekeyed", "twinlink/1", -8, 0, "senml"),
    ("kid1-seq2-lite", "kid1", "lite", None, 2, "senml"),
    ("kid1-seq3-alg-19", "kid1", "twinlink/1", -19, 3, "senml"),
    ("kid1-renewed-kidctx-seq0", "kid1-renewed", "twinlink/1", -8, 0, "senml", True),
    ("kid6-rekeyed-kidctx-seq1", "kid6-rekeyed", "twinlink/1", -8, 1, "senml", True),
]


def _plaintexts() -> dict[str, bytes]:
    return {
        "senml": senml.encode(SENML_READING, SENML_TIME),
        "raw": cbor2.dumps(RAW_PAYLOAD, canonical=True),
    }


def _context(spec: dict[str, Any], secret: bytes) -> dict[str, Any]:
    kid = bytes.fromhex(spec["kid"])
    salt = bytes.fromhex(spec["master_salt"])
    idc = None if spec["id_context"] is None else bytes.fromhex(spec["id_context"])
    dev = oscore.derive_context(secret, kid, salt, idc)
    twin = oscore.derive_context(secret, b"", salt, idc)
    return {
        **spec,
        "info_sender_key": oscore.hkdf_info(kid, idc, 24, "Key", 32).hex(),
        "sender_key": dev.key.hex(),
        "info_common_iv": oscore.hkdf_info(b"", idc, 24, "IV", 12).hex(),
        "common_iv": dev.common_iv.hex(),
        "info_twin_sender_key": oscore.hkdf_info(b"", idc, 24, "Key", 32).hex(),
        "twin_sender_key": twin.key.hex(),
    }


def _frame(name: str, ctx_name: str, profile: str, alg: int | None, seq: int, kind: str,
           ctx: dict[str, Any], plaintext: bytes, sign_sk: bytes,
           with_kid_context: bool = False) -> dict[str, Any]:
    kid = bytes.fromhex(ctx["kid"])
    kid_context = bytes.fromhex(ctx["id_context"]) if with_kid_context else None
    key, iv = bytes.fromhex(ctx["sender_key"]), bytes.fromhex(ctx["common_iv"])
    stream = oscore.STREAM_TELEMETRY
    piv = oscore.piv_bytes(seq)
    aad_ext = oscore.external_aad(kid, piv, stream)
    aead_aad = ft.enc_structure(ft.ENC0_PROTECTED, aad_ext)
    nonce = oscore.nonce(iv, kid, piv)
    ct = nacl.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aead_aad, nonce, key)
    out: dict[str, Any] = {
        "name": name, "context": ctx_name, "profile": profile, "kid": kid.hex(),
        **({"kid_context": kid_context.hex()} if kid_context is not None else {}), "seq": seq,
        "stream": stream.hex(), "payload_kind": kind, "plaintext": plaintext.hex(),
        "partial_iv": piv.hex(), "nonce": nonce.hex(), "external_aad": aad_ext.hex(),
        "aead_aad": aead_aad.hex(), "ciphertext": ct.hex(),
    }
    if profile == "lite":
        frame = pure.seal_lite(kid, key, iv, stream, seq, plaintext)
        out["frame"] = frame.hex()
        return out
    enc0 = b"\xd0\x83" + cbor.bstr(ft.ENC0_PROTECTED) + b"\xa1\x06" + \
        cbor.bstr(piv) + cbor.bstr(ct)
    prot = pure.outer_protected(kid, alg if alg is not None else -8, kid_context)
    tbs = ft.sig_structure(prot, aad_ext, enc0)
    sig = nacl.crypto_sign(tbs, sign_sk)[:64]
    frame = b"\xd2\x84" + cbor.bstr(prot) + b"\xa0" + cbor.bstr(enc0) + \
        cbor.bstr(sig)
    if alg == -8:  # what twinlink senders emit; the -19 vector is receive-only
        assert frame == pure.seal(sign_sk, kid, key, iv, stream, seq, plaintext, kid_context)
    out.update({"alg": alg, "encrypt0": enc0.hex(), "sign1_protected": prot.hex(),
                "to_be_signed": tbs.hex(), "signature": sig.hex(), "frame": frame.hex()})
    return out


def _ack(name: str, ctx_name: str, piv_seq: int, stored: list[str],
         refused: list[tuple[str, str]], spec: dict[str, Any], secret: bytes,
         frames: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One ack v2 with every intermediate, built from the primitives and checked against
    twinlink.ack.seal_ack."""
    kid = bytes.fromhex(spec["kid"])
    salt = bytes.fromhex(spec["master_salt"])
    idc = None if spec["id_context"] is None else bytes.fromhex(spec["id_context"])
    sid = TWIN_SENDER_ID
    info = oscore.hkdf_info(sid, idc, 24, "Key", 32)
    key = oscore.hkdf_sha256(salt, secret, info, 32)
    iv = bytes.fromhex(spec["common_iv"])
    piv = oscore.piv_bytes(piv_seq)
    nonce = oscore.nonce(iv, sid, piv)
    aad_ext = oscore.external_aad(kid, piv, oscore.STREAM_ACK)
    aead_aad = ft.enc_structure(ft.ENC0_PROTECTED, aad_ext)

    def entry(frame_name: str) -> tuple[int, bytes]:
        f = frames[frame_name]
        assert f["context"] == ctx_name  # an ack names frames of one context
        return f["seq"], hashlib.sha256(bytes.fromhex(f["frame"])).digest()[:8]

    st = [entry(n) for n in stored]
    rf = [(*entry(n), reason) for n, reason in refused]
    body: dict[int, Any] = {}
    if st:
        body[1] = [[s, d] for s, d in st]
    if rf:
        body[2] = [[s, d, r] for s, d, r in rf]
    plaintext = cbor2.dumps(body, canonical=True)
    ct = nacl.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aead_aad, nonce, key)
    unprot = ((b"\xa3" if idc is not None else b"\xa2") + b"\x04" + cbor.bstr(sid) + b"\x06"
              + cbor.bstr(piv) + (b"\x0a" + cbor.bstr(idc) if idc is not None else b""))
    data = b"\xd0\x83" + cbor.bstr(ft.ENC0_PROTECTED) + unprot + cbor.bstr(ct)
    ctx = oscore.Context(sid, key, iv)
    assert data == ack.seal_ack(ctx, kid, piv_seq, st, rf, idc)
    return {
        "name": name, "context": ctx_name, "kid": kid.hex(),
        **({"kid_context": idc.hex()} if idc is not None else {}),
        "twin_sender_id": sid.hex(), "seq": piv_seq, "partial_iv": piv.hex(),
        "info_ack_key": info.hex(), "ack_key": key.hex(), "common_iv": iv.hex(),
        "nonce": nonce.hex(), "external_aad": aad_ext.hex(), "aead_aad": aead_aad.hex(),
        "stored": [{"frame": n, "seq": s, "digest": d.hex()} for n, (s, d) in zip(stored, st)],
        "refused": [{"frame": n, "seq": s, "digest": d.hex(), "reason": r}
                    for (n, _), (s, d, r) in zip(refused, rf)],
        "plaintext": plaintext.hex(), "ciphertext": ct.hex(), "ack": data.hex(),
    }


def build() -> dict[str, Any]:
    """The whole vector set as a JSON-ready dict (computed on the pure backend)."""
    previous = backends.name()
    backends.use("python")
    try:
        return _build()
    finally:
        backends.use(previous)


def _build() -> dict[str, Any]:
    dev = keys.DeviceKey(DEVICE_SEED)
    twin = keys.TwinKey(TWIN_SECRET)
    secret = keys.master_secret_device(dev, twin.public)
    assert secret == keys.master_secret_twin(twin, dev.public)
    contexts = {n: _context(spec, secret) for n, spec in CONTEXTS.items()}
    plaintexts = _plaintexts()
    frames = [_frame(n, c, p, a, s, k, contexts[c], plaintexts[k], dev.secret64, *kc)
              for n, c, p, a, s, k, *kc in FRAMES]
    first = bytes.fromhex(frames[0]["frame"])
    return {
        "title": "twinlink/1 golden vectors",
        "generator": "scripts/make_golden_vectors.py",
        "spec": "docs/PROTOCOL.md",
        "note": "All byte strings in lowercase hex. 'ciphertext' is the ChaCha20-Poly1305 output "
                "including its 16-byte tag. 'kid1-seq3-alg-19' uses alg -19 (RFC 9864 Ed25519), "
                "which receivers MUST accept and twinlink senders never emit. Frames with a "
                "'kid_context' carry their context's ID Context in the outer protected header "
                "(label 10, docs/PROTOCOL.md section 7).",
        "keys": {
            "device_ed25519_seed": DEVICE_SEED.hex(),
            "device_ed25519_public": dev.public.hex(),
            "device_x25519_secret": dev.x25519_secret.hex(),
            "device_x25519_public": nacl.crypto_sign_ed25519_pk_to_curve25519(dev.public).hex(),
            "device_private_pem": dev.to_pem(),
            "device_public_pem": dev.public_pem(),
            "twin_x25519_secret": TWIN_SECRET.hex(),
            "twin_x25519_public": twin.public.hex(),
            "twin_private_pem": twin.to_pem(),
            "twin_public_pem": twin.public_pem(),
            "master_secret": secret.hex(),
        },
        "plaintexts": {
            "senml": {"reading": SENML_READING, "time": SENML_TIME,
                      "cbor": plaintexts["senml"].hex()},
            "raw": {"value": RAW_PAYLOAD, "cbor": plaintexts["raw"].hex()},
        },
        "contexts": contexts,
        "frames": frames,
        "serial": {
            "frame": frames[0]["name"],
            "crc16": f"{framing.crc16(first):04x}",
            "record": framing.encode_record(first).hex(),
        },
        "mqtt": {"data_topic": "twinlink/01/t", "ack_topic": "twinlink/01/a"},
        "acks": [_ack(n, c, p, st, rf, contexts[c], secret, {f["name"]: f for f in frames})
                 for n, c, p, st, rf in ACKS],
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is stale: run scripts/make_golden_vectors.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

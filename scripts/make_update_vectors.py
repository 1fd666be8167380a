#!/usr/bin/env python3
"""Generate the update-manifest golden vectors: tests/vectors/update-golden.json, its C form
native/tests/update_golden.h, and the fuzz seeds native/fuzz/corpus-update/.

Deterministic: keys derived from labels, a fixed image, Ed25519 is deterministic. Each
manifest carries its intermediates (protected header, payload, ToBeSigned, signature) and the
verdict a device with the vectors' trust settings must reach: "ok" or a twinlink.update
reason. The script asserts that twinlink's Python code reaches every stated verdict;
tests/test_update_golden.py checks that the committed files equal this script's output and
re-checks every verdict with twinlink, the C core and an independent COSE implementation.

    python scripts/make_update_vectors.py            # rewrite both files
    python scripts/make_update_vectors.py --check    # exit 1 if either is stale
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

from nacl import bindings as nacl  # noqa: E402

from twinlink import keys  # noqa: E402
from twinlink import update as up  # noqa: E402
from twinlink.update import manifest as mf  # noqa: E402

JSON_OUT = ROOT / "tests" / "vectors" / "update-golden.json"
C_OUT = ROOT / "native" / "tests" / "update_golden.h"
CORPUS = ROOT / "native" / "fuzz" / "corpus-update"


def _label(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


UPDATE_SEED = _label("twinlink update vectors: update key seed")
NEXT_SEED = _label("twinlink update vectors: next update key seed")
DEVICE_SEED = _label("twinlink update vectors: device key seed")
TWIN_SECRET = _label("twinlink update vectors: twin X25519 secret")
VENDOR, CLASS = "example.com", "pump-v2"
IMAGE = b"".join(_label(f"twinlink update vectors: image block {i}") for i in range(32))


def _pub(seed: bytes) -> bytes:
    return nacl.crypto_sign_seed_keypair(seed)[0]


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def _manifests() -> list[tuple[str, bytes, str, str]]:
    """(name, manifest, expected verdict, what it shows)."""
    vid = up.vendor_uuid(VENDOR)
    cid = up.class_uuid(vid, CLASS)
    digest, size = hashlib.sha256(IMAGE).digest(), len(IMAGE)

    def fields(**kw: Any) -> dict[int, Any]:
        f = mf.payload_fields(kw.pop("seq", 1), vid, cid, digest, size)
        for path, value in kw.items():
            where, label = path.split("_")
            (f if where == "m" else f[mf.M_IMAGE])[int(label.replace("n", "-"))] = value
        return f

    def signed(f: dict[int, Any], seed: bytes = UPDATE_SEED, alg: int = -8) -> bytes:
        return mf.sign_payload(seed, mf.encode(f), alg)

    basic = up.make_manifest(UPDATE_SEED, seq=1, vendor_id=vid, class_id=cid, digest=digest,
                             size=size)
    deep: Any = 0
    for _ in range(7):  # 7 arrays around a 0: an extension value 8 levels deep
        deep = [deep]
    tagged = mf.encode(fields(m_n1=0))
    assert tagged.endswith(b"\x20\x00")  # label -1 sorts last: its value is the last byte
    tagged = tagged[:-1] + b"\xc1\x00"  # 1(0): a tag
    no_size = fields()
    del no_size[mf.M_IMAGE][mf.P_SIZE]
    ooo = mf.encode(fields()).replace(bytes.fromhex("0101" "0201"), bytes.fromhex("0201" "0101"))
    return [
        ("basic", basic, "ok", "vendor, class, seq, digest and size: the common case"),
        ("uri-and-rotation", up.make_manifest(
            UPDATE_SEED, seq=2, vendor_id=vid, class_id=cid, digest=digest, size=size,
            uri="https://updates.example.com/pump-v2/2.bin", next_keys=[_pub(NEXT_SEED)]),
         "ok", "an image URI, and the next update key devices trust afterwards"),
        ("largest-basic", up.make_manifest(
            UPDATE_SEED, seq=mf.MAX_UINT, vendor_id=vid, class_id=cid, digest=digest,
            size=mf.MAX_UINT), "ok",
         "9-byte seq and size: the largest manifest without URI or keys (device refuses "
         "the size only against its capacity)"),
        ("alg-19", signed(fields(), alg=-19), "ok", "alg -19 (Ed25519, RFC 9864) accepted"),
        ("extensions", signed(fields(m_n1="build 42", i_n2={1: [True, None, b"x"]}, m_n3=deep)),
         "ok", "negative labels are non-critical: skipped (nesting 8 deep allowed)"),
        ("critical-field", signed(fields(m_99=1)), "unknown_critical",
         "an unknown non-negative manifest label"),
        ("critical-parameter", signed(fields(i_19=b"slot")), "unknown_critical",
         "an unknown non-negative image parameter"),
        ("version-2", signed({**fields(), 1: 2}), "unknown_critical", "manifest version 2"),
        ("digest-sha512", signed(fields(i_3=[-44, bytes(64)])), "unknown_critical",
         "a digest algorithm other than SHA-256"),
        ("extension-too-deep", signed(fields(m_n3=[deep])), "malformed_manifest",
         "extension nested 9 deep"),
        ("extension-tag", mf.sign_payload(UPDATE_SEED, tagged), "malformed_manifest",
         "a tag inside an extension value"),
        ("labels-out-of-order", mf.sign_payload(UPDATE_SEED, ooo), "malformed_manifest",
         "map labels not in deterministic order"),
        ("non-shortest-seq", mf.sign_payload(UPDATE_SEED, mf.encode(fields(seq=5)).replace(
            b"\x02\x05", b"\x02\x18\x05", 1)), "malformed_manifest", "seq 5 encoded as 18 05"),
        ("missing-size", signed(no_size), "malformed_manifest",
         "image parameters without a size"),
        ("uri-not-utf8", mf.sign_payload(UPDATE_SEED, mf.encode(fields(i_21="ab")).replace(
            b"\x62ab", b"\x62\xc0\xaf", 1)), "malformed_manifest", "an overlong UTF-8 URI"),
        ("trailing-byte", basic + b"\x00", "malformed_manifest", "a byte after the manifest"),
        ("untagged", basic[1:], "malformed_manifest", "no COSE_Sign1 tag"),
        ("signed-by-device-key", signed(fields(), seed=DEVICE_SEED), "untrusted_key",
         "a valid signature by the device's own key"),
        ("signed-by-twin-key", signed(fields(), seed=TWIN_SECRET), "untrusted_key",
         "the twin's X25519 secret used as an Ed25519 seed"),
        ("bad-signature", _flip(basic, len(basic) - 1), "bad_signature",
         "one signature bit flipped"),
        ("altered-seq", basic.replace(b"\x02\x01\x03", b"\x02\x07\x03", 1), "bad_signature",
         "seq changed after signing"),
        ("wrong-vendor", up.make_manifest(
            UPDATE_SEED, seq=3, vendor_id=up.vendor_uuid("other.example"),
            class_id=up.class_uuid(up.vendor_uuid("other.example"), CLASS), digest=digest,
            size=size), "wrong_vendor", "another vendor's manifest"),
        ("wrong-class", up.make_manifest(
            UPDATE_SEED, seq=3, vendor_id=vid, class_id=up.class_uuid(vid, "valve-v1"),
            digest=digest, size=size), "wrong_class",
         "a manifest for another device class of the same vendor, replayed to this one"),
    ]


def _verdict(raw: bytes, trust: up.Trust) -> str:
    try:
        up.check_manifest(trust, None, raw)
    except up.UpdateRefused as exc:
        return exc.reason
    return "ok"


def build() -> dict[str, Any]:
    vid = up.vendor_uuid(VENDOR)
    trust = up.Trust((_pub(UPDATE_SEED),), VENDOR, CLASS, vid, up.class_uuid(vid, CLASS))
    entries = []
    for name, raw, expect, note in _manifests():
        got = _verdict(raw, trust)
        assert got == expect, f"{name}: twinlink says {got}, the vector says {expect}"
        entry: dict[str, Any] = {"name": name, "note": note, "expect": expect,
                                 "manifest": raw.hex(), "bytes": len(raw)}
        try:
            m = mf.parse(raw)
        except up.MalformedManifest:
            m = None
        if m is not None:
            entry.update({"protected": m.protected.hex(), "payload": m.payload.hex(),
                          "to_be_signed": mf.sig_structure(m.protected, m.payload).hex(),
                          "signature": m.signature.hex(), "seq": str(m.seq)})
        entries.append(entry)
    dev = keys.DeviceKey(DEVICE_SEED)
    return {
        "description": "twinlink update-manifest golden vectors (docs/UPDATES.md); "
                       "written by scripts/make_update_vectors.py",
        "update_key": {"seed": UPDATE_SEED.hex(), "public": _pub(UPDATE_SEED).hex(),
                       "key_id": up.key_id(_pub(UPDATE_SEED)).hex(),
                       "private_pem": keys.DeviceKey(UPDATE_SEED).to_pem(),
                       "public_pem": keys.ed25519_public_pem(_pub(UPDATE_SEED))},
        "next_key": {"public": _pub(NEXT_SEED).hex(), "key_id": up.key_id(_pub(NEXT_SEED)).hex()},
        "device_key_public": dev.public.hex(),
        "device": {"vendor": VENDOR, "class": CLASS, "vendor_id": vid.hex(),
                   "class_id": up.class_uuid(vid, CLASS).hex(),
                   "update_keys": [_pub(UPDATE_SEED).hex()], "installed": None},
        "image": {"hex": IMAGE.hex(), "sha256": hashlib.sha256(IMAGE).hexdigest(),
                  "size": len(IMAGE)},
        "manifests": entries,
    }


def _c_array(name: str, data: bytes) -> str:
    body = ",".join(f"0x{b:02x}" for b in data)
    return f"static const uint8_t {name}[{len(data)}] = {{{body}}};\n"


def c_header(vec: dict[str, Any]) -> str:
    codes = {"ok": "TL_OK", **{r: str(c) for r, c in up.C_CODES.items()}}
    out = ["/* Generated by scripts/make_update_vectors.py from tests/vectors/"
           "update-golden.json. */\n",
           _c_array("ug_update_pk", bytes.fromhex(vec["update_key"]["public"])),
           _c_array("ug_next_pk", bytes.fromhex(vec["next_key"]["public"])),
           _c_array("ug_vendor_id", bytes.fromhex(vec["device"]["vendor_id"])),
           _c_array("ug_class_id", bytes.fromhex(vec["device"]["class_id"])),
           _c_array("ug_image", bytes.fromhex(vec["image"]["hex"]))]
    rows = []
    for i, m in enumerate(vec["manifests"]):
        out.append(_c_array(f"ug_m{i}", bytes.fromhex(m["manifest"])))
        rows.append(f'    {{"{m["name"]}", ug_m{i}, sizeof ug_m{i}, {codes[m["expect"]]}}},\n')
    out.append("static const struct {\n    const char *name;\n    const uint8_t *data;\n"
               "    size_t len;\n    int expect;\n} ug_manifests[] = {\n" + "".join(rows)
               + "};\n")
    return "".join(out)


def render() -> tuple[str, str]:
    vec = build()
    return json.dumps(vec, indent=1) + "\n", c_header(vec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale")
    args = ap.parse_args(argv)
    text, header = render()
    if args.check:
        stale = [str(p) for p, t in ((JSON_OUT, text), (C_OUT, header))
                 if not p.exists() or p.read_text() != t]
        if stale:
            print("stale: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    JSON_OUT.write_text(text)
    C_OUT.write_text(header)
    CORPUS.mkdir(parents=True, exist_ok=True)
    for m in json.loads(text)["manifests"]:
        (CORPUS / m["name"]).write_bytes(bytes.fromhex(m["manifest"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

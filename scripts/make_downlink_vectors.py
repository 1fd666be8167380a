#!/usr/bin/env python3
"""Generate the downlink golden vectors (tests/vectors/downlink-golden.json): a desired state
under the base context and a command under a renewed context (with a kid context), with every
intermediate of docs/PROTOCOL.md §20, built from the keys and contexts of
``tests/vectors/twinlink-golden.json``. Deterministic: fixed PIVs, versions, ids and deadlines.

    python scripts/make_downlink_vectors.py            # rewrite the committed file
    python scripts/make_downlink_vectors.py --check    # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nacl import bindings as nacl  # noqa: E402

from twinlink import downlink, frametypes, keys, oscore  # noqa: E402

GOLDEN = ROOT / "tests" / "vectors" / "twinlink-golden.json"
OUT = ROOT / "tests" / "vectors" / "downlink-golden.json"

#: (name, golden context, PIV, plaintext builder arguments)
CASES: list[tuple[str, str, int, dict[str, Any]]] = [
    ("desired-kid1-base", "kid1", 60_000_000_000,
     {"desired": (60_000_000_000, {"interval": 30, "mode": "eco"})}),
    ("command-kid1-renewed", "kid1-renewed", 60_000_000_123,
     {"command": (42, "relay", {"on": True}, 1_900_000_000)}),
]


def build() -> dict[str, Any]:
    g = json.loads(GOLDEN.read_text())
    twin = keys.TwinKey(bytes.fromhex(g["keys"]["twin_x25519_secret"]))
    dev = keys.DeviceKey(bytes.fromhex(g["keys"]["device_ed25519_seed"]))
    secret = keys.master_secret_twin(twin, dev.public)
    out: list[dict[str, Any]] = []
    for name, ctx_name, piv_seq, spec in CASES:
        c = g["contexts"][ctx_name]
        kid = bytes.fromhex(c["kid"])
        salt = bytes.fromhex(c["master_salt"])
        idc = bytes.fromhex(c["id_context"]) if c["id_context"] is not None else None
        ctx = oscore.derive_context(secret, downlink.DOWNLINK_SID, salt, idc)
        if "desired" in spec:
            plaintext = downlink.encode_desired(*spec["desired"])
        else:
            plaintext = downlink.encode_command(*spec["command"])
        piv = oscore.piv_bytes(piv_seq)
        aad = oscore.external_aad(kid, piv, downlink.STREAM_DOWNLINK)
        enc = frametypes.enc_structure(frametypes.ENC0_PROTECTED, aad)
        nonce = oscore.nonce(ctx.common_iv, downlink.DOWNLINK_SID, piv)
        ct = nacl.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, enc, nonce, ctx.key)
        frame = downlink.seal_downlink(ctx, kid, piv_seq, plaintext, idc)
        out.append({
            "name": name, "context": ctx_name, "kid": kid.hex(), "seq": piv_seq,
            "partial_iv": piv.hex(), "kid_context": idc.hex() if idc is not None else None,
            "info_downlink_key": oscore.hkdf_info(b"", idc, 24, "Key", 32).hex(),
            "downlink_key": ctx.key.hex(), "common_iv": ctx.common_iv.hex(),
            "nonce": nonce.hex(), "external_aad": aad.hex(), "aead_aad": enc.hex(),
            "plaintext": plaintext.hex(), "ciphertext": ct.hex(), "frame": frame.hex(),
        })
    return {
        "title": "twinlink downlink golden vectors (desired state and commands)",
        "generator": "scripts/make_downlink_vectors.py",
        "spec": "docs/PROTOCOL.md section 20",
        "keys_and_contexts": "tests/vectors/twinlink-golden.json",
        "downlinks": out,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        stale = not OUT.exists() or OUT.read_text() != text
        print("stale" if stale else "up to date")
        return 1 if stale else 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

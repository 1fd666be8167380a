#!/usr/bin/env python3
"""Interleaved comparison at the application level, robust on a noisy shared machine.

Each round times every contender on a fresh chunk of 200 frames, in shuffled order; the report
gives per frame the median over rounds and the minimum, and ratios to the raw libsodium floor
from the same rounds:

  seal: raw sign + AEAD encrypt | Device.seal (native, pure) | Device.seal_many (native, pure)
  open: raw verify + AEAD decrypt of the same frames | Twin.open_many, storage included, one
        transaction per 200 frames (native with 1 worker, native with 2, pure with 1)

    python benchmarks/compare_twin.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacl import bindings as sodium

import twinlink
from twinlink import _backend_pure as P
from twinlink import backends, keys, oscore
from twinlink import frametypes as ft
from twinlink.provision import provision

FRAMES = 200
READING = {"temp": 21.5, "hum": 40.25, "pressure": 1013.2, "tag": "ab"}
TIME = 1764000000.125


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="twinlink-cmp-"))
    tk = keys.TwinKey.generate()
    keys.write_private(root / "twin.key", tk.to_pem())
    keys.write_public(root / "twin.pub", tk.public_pem())

    def rig(name: str, backend: str, workers: int):
        db = str(root / f"{name}.db")
        provision(name, root / "twin.pub", root / "keys", db=db)
        backends.use(backend)
        dev = twinlink.Device.load(root / "keys" / f"{name}.device", root / "st", chunk=1 << 20)
        chunks = iter(
            [dev.seal_many([READING] * FRAMES, time=TIME) for _ in range(args.rounds + 1)]
        )
        twin = twinlink.Twin(db, root / "twin.key", workers=workers)
        twin.open_many(next(chunks))  # warm: context derivation, prepared statements

        def run() -> None:
            backends.use(backend)
            out = twin.open_many(next(chunks))
            assert not isinstance(out[-1], Exception), out[-1]

        return run, dev

    open_native1, _ = rig("n1", "native", 1)
    open_native2, _ = rig("n2", "native", 2)
    open_pure, _ = rig("p1", "python", 1)
    backends.use("native")
    provision("seal", root / "twin.pub", root / "keys")
    devs = {}
    for b in ("native", "python"):
        backends.use(b)
        devs[b] = twinlink.Device.load(
            root / "keys" / "seal.device", root / f"st-{b}", chunk=1 << 20
        )

    # Raw floor on the same frames: one Ed25519 verify and one AEAD decrypt each.
    sctx = devs["native"]._ctx
    sample = devs["native"].seal_many([READING] * FRAMES, time=TIME)
    raw_inputs = []
    sk = devs["native"].bundle.device_key.secret64  # type: ignore[union-attr]
    pk = devs["native"].bundle.device_key.public  # type: ignore[union-attr]
    for f in sample:
        p = P.parse(f)
        aad_ext = oscore.external_aad(p.kid, p.piv, b"t")
        raw_inputs.append(
            (
                p.sig + ft.sig_structure(p.prot, aad_ext, p.enc0),
                p.ct,
                ft.enc_structure(ft.ENC0_PROTECTED, aad_ext),
                oscore.nonce(sctx.common_iv, p.kid, p.piv),
            )
        )

    def raw_open() -> None:
        for signed, ct, aad, nonce in raw_inputs:
            sodium.crypto_sign_open(signed, pk)
            sodium.crypto_aead_chacha20poly1305_ietf_decrypt(ct, aad, nonce, sctx.key)

    pt = twinlink.Device.encode(READING, TIME)
    tbs = raw_inputs[0][0][64:]

    def raw_seal() -> None:
        for _ in range(FRAMES):
            sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
                pt, tbs[:40], raw_inputs[0][3], sctx.key
            )
            sodium.crypto_sign(tbs, sk)

    def seal(b: str):
        def run() -> None:
            backends.use(b)
            d = devs[b]
            for _ in range(FRAMES):
                d.seal(READING, time=TIME)

        return run

    def seal_many(b: str):
        def run() -> None:
            backends.use(b)
            devs[b].seal_many([READING] * FRAMES, time=TIME)

        return run

    cs = {
        "seal raw": raw_seal,
        "Device.seal native": seal("native"),
        "Device.seal pure": seal("python"),
        "seal_many native": seal_many("native"),
        "seal_many pure": seal_many("python"),
        "open raw": raw_open,
        "open_many native x1": open_native1,
        "open_many native x2": open_native2,
        "open_many pure x1": open_pure,
    }
    times: dict[str, list[float]] = {k: [] for k in cs}
    order = list(cs)
    for _ in range(args.rounds):
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            cs[k]()
            times[k].append((time.perf_counter() - t0) / FRAMES)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    print(
        f"per frame, 64-byte SenML reading, median over {args.rounds} rounds (min); "
        f"ratio to the raw floor of the same rounds"
    )
    for k in cs:
        base = "seal raw" if "seal" in k else "open raw"
        print(
            f"  {k:22s} {med[k] * 1e6:8.2f} us ({low[k] * 1e6:7.2f})   "
            f"x raw: {med[k] / med[base]:.3f} (min {low[k] / low[base]:.3f})"
        )


if __name__ == "__main__":
    main()

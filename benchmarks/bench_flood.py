#!/usr/bin/env python3
"""Ingest under a flood of forged and unknown-kid frames, with and without event aggregation.

Each round opens the same mix (forged frames under one victim's kid, frames of unknown kids, a
few genuine ones) through ``Twin.open_many`` in batches of 1 000, once with a store that
aggregates repeats of one refusal and once with one that writes a row per refusal; rounds are
interleaved so machine load hits both alike. Reports frames/s (median and best over rounds) and
event rows written per round.

    python benchmarks/bench_flood.py [--rounds 5] [--frames 20000]
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

import twinlink
from twinlink import keys
from twinlink.provision import provision
from twinlink.store import SQLiteStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=20_000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="twinlink-flood-"))
    tk = keys.TwinKey.generate()
    keys.write_private(root / "twin.key", tk.to_pem())
    keys.write_public(root / "twin.pub", tk.public_pem())

    def forged(kid: bytes, n: int, name: str) -> list[bytes]:
        b = keys.Bundle(name, kid, tk.public, keys.DeviceKey.generate(), {})
        with twinlink.Device(b, root / f"{name}-st", chunk=1 << 20) as d:
            return d.seal_many([{"temp": -1.0}] * n, time=False)

    n_forged = args.frames * 5 // 6
    rigs = {}
    for mode in ("aggregate", "per-row"):
        db = root / f"{mode}.db"
        provision("victim", root / "twin.pub", root / "keys", db=str(db), force=True)
        victim = twinlink.Device.load(root / "keys" / "victim.device", root / f"{mode}-st",
                                      chunk=1 << 20)
        rigs[mode] = (db, victim)
    rounds: dict[str, list[float]] = {m: [] for m in rigs}
    rows: dict[str, int] = {}
    for r in range(args.rounds):
        order = list(rigs)
        random.shuffle(order)
        for mode in order:
            db, victim = rigs[mode]
            mix = (forged(victim.kid, n_forged, f"f{mode}{r}")
                   + forged(b"\xee\x01", args.frames - n_forged, f"u{mode}{r}"))
            mix += victim.seal_many([{"ok": 1}] * 50)
            random.shuffle(mix)
            store = SQLiteStore(str(db), aggregate=(mode == "aggregate"))
            twin = twinlink.Twin(store, root / "twin.key", workers=1)
            before = store.count_events()
            t0 = time.perf_counter()
            for at in range(0, len(mix), 1000):
                twin.open_many(mix[at:at + 1000], source="mqtt:twinlink/flood")
            rounds[mode].append(len(mix) / (time.perf_counter() - t0))
            rows[mode] = store.count_events() - before
            twin.close()
    for mode, v in rounds.items():
        print(f"{mode:10s} {statistics.median(v):9.0f} frames/s (best {max(v):.0f}), "
              f"{rows[mode]} event rows for {args.frames + 50} frames in the last round")


if __name__ == "__main__":
    main()

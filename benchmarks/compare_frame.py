#!/usr/bin/env python3
"""Interleaved comparison of the bench_frame.py contenders, robust on a loaded machine.

pytest-benchmark times one contender after another, so load from other processes that comes and
goes between them skews the ratios. This script runs every contender for a short chunk in each
round, in a shuffled order, and reports per frame the median over rounds and the minimum (the
least-disturbed estimate), with ratios to the raw libsodium floor computed from the same rounds.

    python benchmarks/compare_frame.py [--rounds 40] [--sizes 16 64 256 1024]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_frame as B

from twinlink import _backend_native as N
from twinlink import _backend_pure as P


def contenders(n: int) -> dict[str, tuple[object, int]]:
    """name -> (callable, frames per call)."""
    raw, pt, seq = B.Raw(n), B._pt(n), itertools.count()
    frame = P.seal(B.SK, B.KID, B.KEY, B.IV, B.STREAM, 300, pt)
    pts = [pt] * B.BATCH
    a = (B.SK, B.KID, B.KEY, B.IV, B.STREAM)
    return {
        "seal raw": (raw.seal, 1),
        "seal native": (lambda: N.seal(*a, next(seq), pt), 1),
        "seal pure": (lambda: P.seal(*a, next(seq), pt), 1),
        "seal_many native": (lambda: N.seal_many(*a, 0, pts), B.BATCH),
        "seal_many pure": (lambda: P.seal_many(*a, 0, pts), B.BATCH),
        "open raw": (raw.open, 1),
        "open native": (lambda: N.open_frame(frame, B.PK, B.KEY, B.IV, B.STREAM), 1),
        "open pure": (lambda: P.open_frame(frame, B.PK, B.KEY, B.IV, B.STREAM), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--sizes", type=int, nargs="+", default=B.SIZES)
    ap.add_argument("--frames", type=int, default=200, help="frames per contender per round")
    args = ap.parse_args()
    for n in args.sizes:
        cs = contenders(n)
        times: dict[str, list[float]] = {k: [] for k in cs}
        order = list(cs)
        for _ in range(args.rounds):
            random.shuffle(order)
            for k in order:
                fn, per = cs[k]
                calls = max(1, args.frames // per)
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()  # type: ignore[operator]
                times[k].append((time.perf_counter() - t0) / (calls * per))
        med = {k: statistics.median(v) for k, v in times.items()}
        low = {k: min(v) for k, v in times.items()}
        print(f"plaintext {n} bytes: per frame, median over {args.rounds} rounds (min)")
        for k in cs:
            base = "seal raw" if k.startswith("seal") else "open raw"
            print(f"  {k:18s} {med[k] * 1e6:8.2f} us ({low[k] * 1e6:7.2f})   "
                  f"x raw: {med[k] / med[base]:.3f} (min {low[k] / low[base]:.3f})")


if __name__ == "__main__":
    main()

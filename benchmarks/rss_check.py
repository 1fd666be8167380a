#!/usr/bin/env python3
"""RSS after ``import twinlink`` and after sealing 100 000 frames: memory must not grow.

    python benchmarks/rss_check.py [--backend native|python] [--frames 100000] [--json]

Prints resident set sizes (kB) after import, after a 10 000-frame warm-up and after the
measured frames; ``growth_kb`` is the difference over the measured frames (should be ~0).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout


def rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes, Linux: kB
    return peak // 1024 if sys.platform == "darwin" else peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["native", "python"], default="native")
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["TWINLINK_BACKEND"] = args.backend
    before_import = rss_kb()
    import twinlink  # noqa: F401  - what an application pays for importing
    from twinlink import backends

    after_import = rss_kb()
    from nacl import bindings as sodium

    be = backends.current()
    _, sk = sodium.crypto_sign_seed_keypair(bytes(32))
    key, iv, kid, pt = bytes(32), bytes(12), b"\x01", bytes(64)
    for seq in range(10_000):
        be.seal(sk, kid, key, iv, b"t", seq, pt)
    warm = rss_kb()
    for seq in range(10_000, 10_000 + args.frames):
        be.seal(sk, kid, key, iv, b"t", seq, pt)
    done = rss_kb()
    r = {"backend": backends.name(), "frames": args.frames, "rss_start_kb": before_import,
         "rss_after_import_kb": after_import, "rss_after_warmup_kb": warm,
         "rss_after_frames_kb": done, "growth_kb": done - warm}
    print(json.dumps(r) if args.json else "\n".join(f"{k}: {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Interleaved comparison of frame seal/open: this tree, optionally an older tree of twinlink,
and the libsodium floors, in ONE run, robust on a loaded machine.

pytest-benchmark times one contender after another, so load that comes and goes between them
skews the ratios. Here every contender runs a short chunk in each round, in a shuffled order,
and the report gives per frame the median over rounds (and the minimum, the least-disturbed
estimate) with ratios computed from the same rounds. By default each chunk is timed with the
thread's CPU clock (``--clock cpu``): on a shared machine a wall clock also counts the time
other processes hold the core (``--clock wall`` to see it anyway). Each tree runs in its own
worker process (two versions of the package cannot share one interpreter); the main process
only schedules.

Contenders, per plaintext size (both trees unless noted):
  seal Device path   what Device.seal calls: the backend directly before the frame-layer
                     refactor (adc6cdf), frame.seal after it (arguments checked there)
  seal frame.seal    the public function, native backend
  seal_many Device   Device.seal_many's call, 100 frames per call
  open frame.open    frame.open_frame, native backend
  open Twin path     what Twin.open_many calls per frame: parse, verify, decrypt
  seal/open pure     frame.seal / frame.open_frame on the pure-Python backend
  C floor            (this tree) benchmarks/floor.c: the libsodium calls of one frame looped in
                     C, on PyNaCl's libsodium (what the native backend calls); "sys" = the
                     system libsodium-dev it is compiled against
  raw                (this tree) the same calls from Python through PyNaCl's cffi lib

    python benchmarks/compare_frame.py [--rounds 40] [--sizes 16 64 256 1024]
        [--baseline-rev adc6cdf | --baseline DIR]

``--baseline-rev`` exports that commit with ``git archive`` to a temporary directory and builds
its C extension in place (once; reused by later runs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 100
SIZES = [16, 64, 256, 1024]
KID = b"\x0a\x0b"
KEY = bytes(range(100, 132))
IV = bytes(range(200, 212))
STREAM = b"t"

Contender = tuple[str, Callable[[int], float]]  # backend to select, run(frames) -> s/frame


def _pt(n: int) -> bytes:
    return bytes((i * 7 + 1) & 0xFF for i in range(n))


CLOCK = time.thread_time


def _timed(fn: Callable[[], object], per: int) -> Callable[[int], float]:
    def run(frames: int) -> float:
        calls = max(1, frames // per)
        clock = CLOCK
        t0 = clock()
        for _ in range(calls):
            fn()
        return (clock() - t0) / (calls * per)

    return run


def contenders(n: int, extras: bool) -> dict[str, Contender]:
    """The contenders for plaintexts of ``n`` bytes, on whatever twinlink is importable.

    Uses only what every twinlink version has (frame.seal / open_frame, backends, the backend
    module's seal / seal_many / parse / verify / decrypt); ``extras``: floors (this tree)."""
    from nacl.bindings import crypto_sign_seed_keypair

    from twinlink import backends, frame, oscore

    pk, sk = crypto_sign_seed_keypair(bytes(range(32)))
    ctx = oscore.Context(KID, KEY, IV)
    pt, seq = _pt(n), itertools.count()
    pts = [pt] * BATCH
    backends.use("native")
    be = backends.current()
    sealed = frame.seal(sk, ctx, 300, pt)
    new_frame_layer = hasattr(frame, "seal_many")  # the refactored frame.py
    if new_frame_layer:
        def device_seal() -> object:
            return frame.seal(sk, ctx, next(seq), pt)

        def device_seal_many() -> object:
            return frame.seal_many(sk, ctx, 0, pts)

        def twin_open() -> object:
            p = frame.parse(sealed)
            frame.verify(p, pk, STREAM)
            return frame.decrypt(p, ctx, STREAM)
    else:
        def device_seal() -> object:
            return be.seal(sk, KID, KEY, IV, STREAM, next(seq), pt)

        def device_seal_many() -> object:
            return be.seal_many(sk, KID, KEY, IV, STREAM, 0, pts)

        def twin_open() -> object:
            p = be.parse(sealed)
            be.verify(p, pk, STREAM)
            return be.decrypt(p, KEY, IV, STREAM)

    out: dict[str, Contender] = {
        "seal Device path": ("native", _timed(device_seal, 1)),
        "seal frame.seal": ("native", _timed(lambda: frame.seal(sk, ctx, next(seq), pt), 1)),
        "seal_many Device": ("native", _timed(device_seal_many, BATCH)),
        "seal pure": ("python", _timed(lambda: frame.seal(sk, ctx, next(seq), pt), 1)),
        "open frame.open": ("native", _timed(lambda: frame.open_frame(sealed, pk, ctx), 1)),
        "open Twin path": ("native", _timed(twin_open, 1)),
        "open pure": ("python", _timed(lambda: frame.open_frame(sealed, pk, ctx), 1)),
    }
    if extras:
        sys.path.insert(0, str(HERE))
        import bench_frame as B

        raw = B.Raw(n)
        cpu = CLOCK is time.thread_time
        floor, sys_floor = B.CFloor(n, "pynacl", cpu), B.CFloor(n, "system", cpu)
        out.update({
            "seal C floor": ("native", floor.seal),
            "seal C floor sys": ("native", sys_floor.seal),
            "seal raw": ("native", _timed(raw.seal, 1)),
            "open C floor": ("native", floor.open),
            "open C floor sys": ("native", sys_floor.open),
            "open raw": ("native", _timed(raw.open, 1)),
        })
    return out


def worker(tree: str, sizes: list[int], extras: bool, clock: str) -> None:
    """Serve ``run|<n>|<name>|<frames>`` lines on stdin with seconds per frame on stdout."""
    global CLOCK
    CLOCK = time.thread_time if clock == "cpu" else time.perf_counter
    sys.path.insert(0, tree)
    import twinlink
    from twinlink import backends

    assert Path(twinlink.__file__).resolve().is_relative_to(Path(tree).resolve()), tree
    table = {(n, k): c for n in sizes for k, c in contenders(n, extras).items()}
    print(json.dumps([[n, k] for n, k in table]), flush=True)
    for line in sys.stdin:
        _, n, name, frames = line.rstrip("\n").split("|")
        backend, run = table[int(n), name]
        if backends.name() != backend:
            backends.use(backend)
        run(int(frames))  # warm-up: caches and allocator after a switch
        print(run(int(frames)), flush=True)


class Worker:
    def __init__(self, label: str, tree: Path, sizes: list[int], extras: bool,
                 clock: str) -> None:
        self.label = label
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree),
               "--clock", clock, "--sizes", *map(str, sizes)] + (["--extras"] if extras else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=tree)
        assert self.proc.stdout is not None
        self.keys = [(int(n), k) for n, k in json.loads(self.proc.stdout.readline())]

    def run(self, n: int, name: str, frames: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"run|{n}|{name}|{frames}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def baseline_tree(rev: str) -> Path:
    """A built copy of commit ``rev`` (git archive + in-place build), made once."""
    sha = subprocess.run(["git", "rev-parse", "--short=12", rev], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"twinlink-baseline-{sha}"
    if not list(tree.glob("twinlink/_native*.so")):
        tree.mkdir(exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                       check=True, capture_output=True)
    return tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    ap.add_argument("--frames", type=int, default=200, help="frames per contender per round")
    ap.add_argument("--baseline", type=Path, help="an older twinlink source tree, built")
    ap.add_argument("--baseline-rev", help="git revision to export and build as the baseline")
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                    help="thread CPU time (default; robust to other load) or wall time")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--extras", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.sizes, args.extras, args.clock)
        return
    base = args.baseline or (baseline_tree(args.baseline_rev) if args.baseline_rev else None)
    workers = [Worker("new", ROOT, args.sizes, True, args.clock)]
    if base is not None:
        workers.append(Worker("old", base, args.sizes, False, args.clock))
    try:
        for n in args.sizes:
            report(n, workers, args.rounds, args.frames, base)
    finally:
        for w in workers:
            w.close()


def report(n: int, workers: list[Worker], rounds: int, frames: int, base: Path | None) -> None:
    pairs = [(w, k) for w in workers for (m, k) in w.keys if m == n]
    times: dict[tuple[str, str], list[float]] = {(w.label, k): [] for w, k in pairs}
    for _ in range(rounds):
        random.shuffle(pairs)
        for w, k in pairs:
            times[w.label, k].append(w.run(n, k, frames))
    med = {key: statistics.median(v) for key, v in times.items()}
    low = {key: min(v) for key, v in times.items()}

    def us(key: tuple[str, str]) -> str:
        return f"{med[key] * 1e6:8.2f} ({low[key] * 1e6:6.2f})" if key in med else " " * 17

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> str:
        return f"{med[a] / med[b]:6.3f}" if a in med and b in med else "     -"

    print(f"\nplaintext {n} bytes: us per frame, median over {rounds} rounds (min); "
          f"old = {base or 'none'}; clock: {'thread CPU' if CLOCK is time.thread_time else 'wall'}")
    print(f"  {'contender':18s} {'old':>17s} {'new':>17s}  old/new  new/floor old/floor "
          f"new/raw")
    names = dict.fromkeys(k for _, k in sorted(pairs, key=lambda p: p[1]))
    for k in names:
        op = k.split()[0].split("_")[0]
        floor, raw = ("new", f"{op} C floor"), ("new", f"{op} raw")
        old, new = ("old", k), ("new", k)
        print(f"  {k:18s} {us(old)} {us(new)}  {ratio(old, new)}   {ratio(new, floor)}    "
              f"{ratio(old, floor)}  {ratio(new, raw)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

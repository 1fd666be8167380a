"""Frame level: seal and open per frame against the libsodium floor, in one run.

Groups (compare within a group):
  seal-<n>:        raw sign+AEAD | frame.seal native | native seal | pure seal   (one frame)
  seal-batch-<n>:  C floor x BATCH | raw x BATCH | native seal x BATCH | seal_many(BATCH)
  open-<n>:        raw verify+decrypt | frame.open_frame native | native | pure open_frame
  open-batch-<n>:  C floor x BATCH | raw x BATCH | native open_frame x BATCH
for plaintexts of n = 16, 64, 256, 1024 bytes.

Two floors make only the libsodium calls a frame needs -- one Ed25519 signature over a message
as long as the frame's ToBeSigned and one ChaCha20-Poly1305 encryption with an AAD as long as
its Enc_structure (verify + decrypt to open):
  C floor  benchmarks/floor.c, compiled here with gcc against libsodium-dev, looping the calls
           in C and bound to PyNaCl's libsodium (the code the native backend runs): the real
           floor, no Python at all (:class:`CFloor`);
  raw      the same calls from Python through PyNaCl's cffi ``lib`` with preallocated buffers;
           its 1-2 us of call overhead per frame flatters ratios taken against it.
Run:

    python -m pytest benchmarks/bench_frame.py --benchmark-only --benchmark-columns=median,ops
    python benchmarks/rss_check.py      # RSS after import and after 100 000 seals
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from nacl import bindings as sodium
from nacl._sodium import ffi as nacl_ffi
from nacl._sodium import lib as nacl_lib

from twinlink import _backend_pure as pure
from twinlink import backends, oscore, senml
from twinlink import frametypes as ft

SIZES = [16, 64, 256, 1024]
BATCH = 100
PK, SK = sodium.crypto_sign_seed_keypair(bytes(range(32)))
KEY = bytes(range(100, 132))
IV = bytes(range(200, 212))
KID = b"\x0a\x0b"
STREAM = oscore.STREAM_TELEMETRY


def _native():
    try:
        from twinlink import _backend_native
    except ImportError:
        pytest.skip(f"native backend not built: {backends.native_error()}")
    return _backend_native


def _pt(n: int) -> bytes:
    return bytes((i * 7 + 1) & 0xFF for i in range(n))


FLOOR_SRC = Path(__file__).with_name("floor.c")
_SODIUM_FUNCS = ("crypto_aead_chacha20poly1305_ietf_encrypt",
                 "crypto_aead_chacha20poly1305_ietf_decrypt", "crypto_sign_detached",
                 "crypto_sign_verify_detached")


def build_floor() -> ctypes.CDLL:
    """Compile benchmarks/floor.c (gcc, libsodium-dev) once per source version; load it.

    Raises RuntimeError with the reason when there is no compiler or no libsodium-dev."""
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler for benchmarks/floor.c")
    src = FLOOR_SRC.read_bytes()
    out = Path(tempfile.gettempdir()) / f"twinlink-floor-{hashlib.sha256(src).hexdigest()[:12]}.so"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        res = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC",
                              str(FLOOR_SRC), "-o", str(tmp), "-lsodium"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"cannot build benchmarks/floor.c (apt: libsodium-dev): "
                               f"{res.stderr.strip()[-500:]}")
        os.replace(tmp, out)
    lib = ctypes.CDLL(str(out))
    for fn in ("floor_seal", "floor_open"):
        getattr(lib, fn).restype = ctypes.c_double
    lib.floor_bind.argtypes = [ctypes.c_void_p] * 4
    lib.floor_cpu_clock.argtypes = [ctypes.c_int]
    lib.floor_version.restype = ctypes.c_char_p
    return lib


class CFloor:
    """The C-loop floor on the bytes of a real frame with an ``n``-byte plaintext, on PyNaCl's
    libsodium (``"pynacl"``, what the native backend calls) or the system's (``"system"``)."""

    def __init__(self, n: int, sodium: str = "pynacl", cpu_clock: bool = False) -> None:
        self.lib = build_floor()
        self.cpu_clock = cpu_clock
        r = self.raw = Raw(n)
        sz, b = ctypes.c_size_t, ctypes.c_char_p
        self.seal_args = (b(r.pt), sz(len(r.pt)), b(r.aad), sz(len(r.aad)), b(r.nonce), b(KEY),
                          b(r.tbs), sz(len(r.tbs)), b(SK))
        self.open_args = (b(r.sig), b(r.tbs), sz(len(r.tbs)), b(PK), b(r.ct), sz(len(r.ct)),
                          b(r.aad), sz(len(r.aad)), b(r.nonce), b(KEY))
        if sodium == "pynacl":
            from nacl import _sodium

            dll = ctypes.CDLL(_sodium.__file__)
        else:
            dll = ctypes.CDLL(ctypes.util.find_library("sodium"))
        self.addrs = [ctypes.cast(getattr(dll, f), ctypes.c_void_p).value for f in _SODIUM_FUNCS]

    def _run(self, fn: str, frames: int, args: tuple) -> float:
        """Seconds per frame over ``frames`` frames, timed inside C (wall or thread CPU)."""
        if self.lib.floor_bind(*self.addrs) != 0:
            raise RuntimeError("floor_bind failed")
        self.lib.floor_cpu_clock(int(self.cpu_clock))
        ns = getattr(self.lib, fn)(ctypes.c_size_t(frames), *args)
        if ns < 0:
            raise RuntimeError(f"{fn} failed")
        return float(ns) * 1e-9

    def seal(self, frames: int) -> float:
        return self._run("floor_seal", frames, self.seal_args)

    def open(self, frames: int) -> float:
        return self._run("floor_open", frames, self.open_args)


def _floor(n: int) -> CFloor:
    try:
        return CFloor(n)
    except RuntimeError as exc:
        pytest.skip(str(exc))


class Raw:
    """The libsodium calls one frame costs, with buffers sized like a real frame's."""

    def __init__(self, n: int) -> None:
        frame = pure.seal(SK, KID, KEY, IV, STREAM, 300, _pt(n))
        p = pure.parse(frame)
        aad_ext = oscore.external_aad(p.kid, p.piv, STREAM)
        self.tbs = ft.sig_structure(p.prot, aad_ext, p.enc0)
        self.aad = ft.enc_structure(ft.ENC0_PROTECTED, aad_ext)
        self.nonce = oscore.nonce(IV, p.kid, p.piv)
        self.pt = _pt(n)
        self.signed = p.sig + self.tbs
        self.sig = p.sig
        self.ct = p.ct
        self.sm = nacl_ffi.new("unsigned char[]", len(self.tbs) + 64)
        self.m = nacl_ffi.new("unsigned char[]", len(self.signed))
        self.c = nacl_ffi.new("unsigned char[]", n + 16)
        self.d = nacl_ffi.new("unsigned char[]", max(n, 1))
        self.null = nacl_ffi.NULL

    def seal(self) -> None:
        lib, null = nacl_lib, self.null
        lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            self.c, null, self.pt, len(self.pt), self.aad, len(self.aad), null, self.nonce, KEY)
        lib.crypto_sign(self.sm, null, self.tbs, len(self.tbs), SK)

    def open(self) -> None:
        lib, null = nacl_lib, self.null
        assert lib.crypto_sign_open(self.m, null, self.signed, len(self.signed), PK) == 0
        assert lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            self.d, null, null, self.ct, len(self.ct), self.aad, len(self.aad), self.nonce,
            KEY) == 0


# ---------------------------------------------------------------------------------------------
# seal, one frame per round

@pytest.mark.parametrize("n", SIZES)
def test_seal_raw(benchmark, n):
    benchmark.group = f"seal-{n}"
    benchmark(Raw(n).seal)


@pytest.mark.parametrize("n", SIZES)
def test_seal_frame_native(benchmark, n):
    from twinlink import frame

    _native()
    previous = backends.name()
    backends.use("native")
    benchmark.group = f"seal-{n}"
    ctx = oscore.Context(KID, KEY, IV)
    seq, pt = itertools.count(), _pt(n)
    try:
        benchmark(lambda: frame.seal(SK, ctx, next(seq), pt))
    finally:
        backends.use(previous)


@pytest.mark.parametrize("n", SIZES)
def test_seal_native(benchmark, n):
    native = _native()
    benchmark.group = f"seal-{n}"
    seq, pt = itertools.count(), _pt(n)
    benchmark(lambda: native.seal(SK, KID, KEY, IV, STREAM, next(seq), pt))


@pytest.mark.parametrize("n", SIZES)
def test_seal_pure(benchmark, n):
    benchmark.group = f"seal-{n}"
    seq, pt = itertools.count(), _pt(n)
    benchmark(lambda: pure.seal(SK, KID, KEY, IV, STREAM, next(seq), pt))


# ---------------------------------------------------------------------------------------------
# BATCH frames per round (divide by BATCH for per-frame): the floors, then the contenders

@pytest.mark.parametrize("op", ["seal", "open"])
@pytest.mark.parametrize("n", SIZES)
def test_batch_c_floor(benchmark, op, n):
    benchmark.group = f"{op}-batch{BATCH}-{n}"
    benchmark(getattr(_floor(n), op), BATCH)


@pytest.mark.parametrize("op", ["seal", "open"])
@pytest.mark.parametrize("n", SIZES)
def test_batch_raw(benchmark, op, n):
    benchmark.group = f"{op}-batch{BATCH}-{n}"
    step = getattr(Raw(n), op)

    def run() -> None:
        for _ in range(BATCH):
            step()

    benchmark(run)


@pytest.mark.parametrize("n", SIZES)
def test_seal_batch_native_loop(benchmark, n):
    native = _native()
    benchmark.group = f"seal-batch{BATCH}-{n}"
    pt = _pt(n)
    benchmark(lambda: [native.seal(SK, KID, KEY, IV, STREAM, s, pt) for s in range(BATCH)])


@pytest.mark.parametrize("n", SIZES)
def test_seal_batch_native_seal_many(benchmark, n):
    native = _native()
    benchmark.group = f"seal-batch{BATCH}-{n}"
    pts = [_pt(n)] * BATCH
    benchmark(lambda: native.seal_many(SK, KID, KEY, IV, STREAM, 0, pts))


@pytest.mark.parametrize("n", SIZES)
def test_seal_batch_pure_seal_many(benchmark, n):
    benchmark.group = f"seal-batch{BATCH}-{n}"
    pts = [_pt(n)] * BATCH
    benchmark(lambda: pure.seal_many(SK, KID, KEY, IV, STREAM, 0, pts))


# ---------------------------------------------------------------------------------------------
# open

@pytest.mark.parametrize("n", SIZES)
def test_open_raw(benchmark, n):
    benchmark.group = f"open-{n}"
    benchmark(Raw(n).open)


@pytest.mark.parametrize("n", SIZES)
def test_open_native(benchmark, n):
    native = _native()
    benchmark.group = f"open-{n}"
    frame = pure.seal(SK, KID, KEY, IV, STREAM, 300, _pt(n))
    benchmark(native.open_frame, frame, PK, KEY, IV, STREAM)


@pytest.mark.parametrize("n", SIZES)
def test_open_batch_native(benchmark, n):
    native = _native()
    benchmark.group = f"open-batch{BATCH}-{n}"
    frame = pure.seal(SK, KID, KEY, IV, STREAM, 300, _pt(n))
    benchmark(lambda: [native.open_frame(frame, PK, KEY, IV, STREAM) for _ in range(BATCH)])


@pytest.mark.parametrize("n", SIZES)
def test_open_pure(benchmark, n):
    benchmark.group = f"open-{n}"
    frame = pure.seal(SK, KID, KEY, IV, STREAM, 300, _pt(n))
    benchmark(pure.open_frame, frame, PK, KEY, IV, STREAM)


# ---------------------------------------------------------------------------------------------
# memory: RSS after import and after 100 000 seals, in a fresh interpreter per backend

@pytest.mark.parametrize("backend", ["native", "python"])
def test_rss_no_growth(backend):
    if backend == "native":
        _native()
    script = Path(__file__).with_name("rss_check.py")
    out = subprocess.run([sys.executable, str(script), "--backend", backend, "--json"],
                         capture_output=True, text=True, check=True, timeout=900,
                         env=dict(os.environ, PYTHONPATH=str(script.parent.parent)))
    import json

    r = json.loads(out.stdout)
    print(r)
    # Growth over the 100 000 measured seals, after a warm-up: a leak of even 1 byte per
    # frame would show as 100 kB; allow allocator noise well below that.
    assert r["growth_kb"] < 64, r


# ---------------------------------------------------------------------------------------------
# payload validation (frame.check_payload) of a typical 40-byte SenML pack, per backend, next
# to decoding it with cbor2 (what senml.loads does after the check)

PACK = senml.encode({"temp": 21.5, "rh": 48.25, "door": "open"}, 1700000000.0)  # 40 bytes


@pytest.mark.parametrize("backend", ["native", "python", "cbor2-decode"])
def test_check_payload(benchmark, backend):
    benchmark.group = "check-payload-40"
    assert len(PACK) == 40
    if backend == "cbor2-decode":
        import cbor2

        benchmark(cbor2.loads, PACK)
        return
    be = _native() if backend == "native" else pure
    benchmark(be.check_payload, PACK)

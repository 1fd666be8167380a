"""Frame level: seal and open per frame against the raw libsodium floor, in one run.

Groups (compare within a group):
  seal-<n>:        raw sign+AEAD | native seal | pure seal                  (one frame per round)
  seal-batch-<n>:  raw x BATCH   | native seal x BATCH | native seal_many(BATCH)
  open-<n>:        raw verify+decrypt | native open_frame | pure open_frame
for plaintexts of n = 16, 64, 256, 1024 bytes.

The raw baseline makes only the libsodium calls a frame needs -- one Ed25519 signature over a
message as long as the frame's ToBeSigned and one ChaCha20-Poly1305 encryption with an AAD as
long as its Enc_structure (verify + decrypt to open) -- through PyNaCl's own cffi ``lib`` with
preallocated buffers: the same libsodium the native backend calls, with the least Python around
it. Run:

    python -m pytest benchmarks/bench_frame.py --benchmark-only --benchmark-columns=median,ops
    python benchmarks/rss_check.py      # RSS after import and after 100 000 seals
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nacl import bindings as sodium
from nacl._sodium import ffi as nacl_ffi
from nacl._sodium import lib as nacl_lib

from twinlink import _backend_pure as pure
from twinlink import backends, oscore

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


class Raw:
    """The libsodium calls one frame costs, with buffers sized like a real frame's."""

    def __init__(self, n: int) -> None:
        frame = pure.seal(SK, KID, KEY, IV, STREAM, 300, _pt(n))
        p = pure.parse(frame)
        aad_ext = oscore.external_aad(p.kid, p.piv, STREAM)
        self.tbs = pure.sig_structure(p.prot, aad_ext, p.enc0)
        self.aad = pure.enc_structure(pure.ENC0_PROTECTED, aad_ext)
        self.nonce = oscore.nonce(IV, p.kid, p.piv)
        self.pt = _pt(n)
        self.signed = p.sig + self.tbs
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
# seal, BATCH frames per round (divide by BATCH for per-frame)

@pytest.mark.parametrize("n", SIZES)
def test_seal_batch_raw(benchmark, n):
    benchmark.group = f"seal-batch{BATCH}-{n}"
    raw = Raw(n)

    def run() -> None:
        for _ in range(BATCH):
            raw.seal()

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

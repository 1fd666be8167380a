"""Device and Twin level: what an application pays per frame, next to the raw libsodium floor.

Groups (compare within a group, in one run):
  seal-64:  raw sign+AEAD  |  Device.seal (python, native)  |  Device.seal_many per frame
  open-64:  raw verify+decrypt  |  Twin.open_many per frame, storage included (python, native)
Run: pytest benchmarks/bench_twin.py --benchmark-only --benchmark-columns=median,ops
"""

from __future__ import annotations

import os

import pytest
from nacl import bindings as sodium

import twinlink
from twinlink import backends, keys, senml
from twinlink.provision import provision

BATCH = 200
READING = {"temp": 21.5, "hum": 40.25, "pressure": 1013.2, "tag": "ab"}  # 64-byte-ish plaintext


def _use(name: str) -> None:
    try:
        backends.use(name)
    except ImportError:
        pytest.skip(f"native backend not built: {backends.native_error()}")


@pytest.fixture
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    tk = keys.TwinKey.generate()
    keys.write_private(root / "twin.key", tk.to_pem())
    keys.write_public(root / "twin.pub", tk.public_pem())
    provision("bench", root / "twin.pub", root / "keys", db=str(root / "twin.db"))
    return root


def _plaintext() -> bytes:
    pt = senml.encode(READING, 1764000000.125)
    return pt


def test_plaintext_is_about_64_bytes():
    assert 55 <= len(_plaintext()) <= 70


@pytest.mark.benchmark(group="seal-64")
def test_seal_raw_libsodium(benchmark):
    dk = keys.DeviceKey.generate()
    sk = dk.secret64
    key, nonce, aad = os.urandom(32), os.urandom(12), os.urandom(40)
    pt = _plaintext()
    tbs = os.urandom(len(pt) + 16 + 60)

    def raw():
        ct = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(pt, aad, nonce, key)
        return ct, sodium.crypto_sign(tbs, sk)[:64]

    benchmark(raw)


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.benchmark(group="seal-64")
def test_device_seal(benchmark, rig, tmp_path, backend):
    _use(backend)
    dev = twinlink.Device.load(rig / "keys" / "bench.device", tmp_path, chunk=1 << 20)
    pt = _plaintext()
    benchmark(dev.seal_raw, pt)
    dev.close()


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.benchmark(group="seal-64")
def test_device_seal_many_per_frame(benchmark, rig, tmp_path, backend):
    _use(backend)
    dev = twinlink.Device.load(rig / "keys" / "bench.device", tmp_path, chunk=1 << 20)
    readings = [READING] * BATCH
    benchmark.extra_info["frames_per_round"] = BATCH
    benchmark.pedantic(lambda: dev.seal_many(readings, time=1764000000.125), rounds=30)
    dev.close()


@pytest.mark.benchmark(group="open-64")
def test_open_raw_libsodium(benchmark):
    dk = keys.DeviceKey.generate()
    key, nonce, aad = os.urandom(32), os.urandom(12), os.urandom(40)
    pt = _plaintext()
    ct = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(pt, aad, nonce, key)
    tbs = os.urandom(len(pt) + 16 + 60)
    signed = sodium.crypto_sign(tbs, dk.secret64)
    pk = dk.public

    def raw():
        sodium.crypto_sign_open(signed, pk)
        return sodium.crypto_aead_chacha20poly1305_ietf_decrypt(ct, aad, nonce, key)

    benchmark(raw)


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.benchmark(group="open-64")
def test_twin_open_many_per_batch(benchmark, rig, tmp_path, backend):
    """One round = BATCH frames opened and stored in one transaction (divide by BATCH)."""
    _use(backend)
    dev = twinlink.Device.load(rig / "keys" / "bench.device", tmp_path, chunk=1 << 20)
    twin = twinlink.Twin(rig / "twin.db", rig / "twin.key")
    batches = iter([dev.seal_many([READING] * BATCH, time=1764000000.125) for _ in range(40)])
    benchmark.extra_info["frames_per_round"] = BATCH

    def run():
        out = twin.open_many(next(batches))
        assert not isinstance(out[-1], Exception), out[-1]

    benchmark.pedantic(run, rounds=30)
    twin.close()
    dev.close()


def test_frame_size_three_value_senml(rig, tmp_path, record_property):
    """Frame size for a 3-value SenML reading (with base time), recorded for the notes."""
    dev = twinlink.Device.load(rig / "keys" / "bench.device", tmp_path)
    f = dev.seal({"temp": 21.5, "hum": 40, "door": "open"}, time=1764000000.125)
    g = dev.seal({"temp": 21.5, "hum": 40, "door": "open"}, time=False)
    record_property("frame_bytes_with_time", len(f))
    record_property("frame_bytes_without_time", len(g))
    print(f"\n3-value SenML frame: {len(f)} bytes with base time, {len(g)} without")
    pt = senml.encode({"temp": 21.5, "hum": 40, "door": "open"}, 1764000000.125)
    # d2 84 | 46 <prot 6> | a0 | 58 <len> | d0 83 44 a1011818 a1 06 41 <piv> 58 <len> <ct+tag>
    # | 58 40 <sig 64>: 107 bytes around the plaintext for a 1-byte kid and 1-byte PIV.
    assert len(dev.kid) == 1 and len(f) - len(pt) == 2 + 7 + 1 + 2 + 2 + 5 + 4 + 2 + 16 + 66
    dev.close()


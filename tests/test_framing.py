"""Serial framing: COBS, CRC-16/CCITT-FALSE and the incremental decoder."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinlink.errors import LineError, RecordTooLong
from twinlink.transport import framing


def test_crc_is_ccitt_false_check_value():
    # The catalogue check value of CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740).
    assert framing.crc16(b"123456789") == 0x29B1


def test_record_layout_is_cobs_of_frame_and_big_endian_crc():
    frame = b"\x12\x00\x34"
    rec = framing.encode_record(frame)
    assert rec.endswith(b"\x00") and b"\x00" not in rec[:-1]
    crc = framing.crc16(frame).to_bytes(2, "big")
    assert framing.cobs_decode(rec[:-1]) == frame + crc
    assert framing.wire(frame, flush_prefix=True) == b"\x00" + rec


@pytest.mark.parametrize("data, encoded", [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),  # full final block: no 01 after
    (bytes(range(1, 255)) + b"\x00", b"\xff" + bytes(range(1, 255)) + b"\x01\x01"),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
])
def test_cobs_wikipedia_examples(data, encoded):
    assert framing.cobs_encode(data) == encoded
    assert framing.cobs_decode(encoded) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_round_trip(data):
    enc = framing.cobs_encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert framing.cobs_decode(enc) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_matches_the_pypi_cobs_package(data):
    cobs = pytest.importorskip("cobs.cobs")
    assert framing.cobs_encode(data) == cobs.encode(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.integers(1, 64))
def test_decoder_any_chunking(frames, chunk):
    wire = b"".join(framing.wire(f, flush_prefix=True) for f in frames)
    dec = framing.Decoder()
    out = []
    for i in range(0, len(wire), chunk):
        out += list(dec.feed(wire[i:i + chunk]))
    assert out == frames


def test_empty_records_are_ignored():
    dec = framing.Decoder()
    assert list(dec.feed(b"\x00\x00\x00" + framing.encode_record(b"x") + b"\x00\x00")) == [b"x"]
    assert dec.line_errors == 0


@pytest.mark.parametrize("damage", ["flip", "drop", "cut"])
def test_damaged_record_is_one_line_error_and_decoder_resyncs(damage):
    rng = random.Random(damage)
    for _ in range(300):
        frame = rng.randbytes(rng.randrange(3, 200))
        rec = bytearray(framing.encode_record(frame)[:-1])
        i = rng.randrange(len(rec))
        if damage == "flip":
            bit = next(b for b in rng.sample(range(8), 8) if rec[i] ^ (1 << b))
            rec[i] ^= 1 << bit
        elif damage == "drop":
            del rec[i]
        else:
            del rec[max(1, len(rec) // 2):]
        dec = framing.Decoder()
        items = list(dec.feed(bytes(rec) + b"\x00" + framing.encode_record(b"next")))
        assert len(items) == 2 and isinstance(items[0], LineError), items
        assert items[1] == b"next"


def test_short_and_zero_code_records_are_line_errors():
    for rec in (b"\x02\x01", b"\x05\x01", b"\x01"):
        with pytest.raises(LineError):
            framing.decode_record(rec)


def test_oversized_record_is_bounded_and_reported_once():
    dec = framing.Decoder(max_frame=64)
    items = list(dec.feed(b"\x01" * 100_000))
    assert items == [] and len(dec._buf) <= dec.max_record
    items = list(dec.feed(b"\x01" * 1000 + b"\x00" + framing.encode_record(b"ok")))
    assert [type(i) for i in items] == [RecordTooLong, bytes] and items[1] == b"ok"
    assert dec.line_errors == 1


def test_frame_over_max_frame_is_a_line_error():
    dec = framing.Decoder(max_frame=16)
    items = list(dec.feed(framing.encode_record(bytes(17)) + framing.encode_record(bytes(16))))
    assert isinstance(items[0], LineError) and items[1] == bytes(16)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_never_crashes_and_every_item_is_typed(garbage):
    dec = framing.Decoder()
    for item in dec.feed(garbage):
        assert isinstance(item, (bytes, LineError))
    assert len(dec._buf) <= dec.max_record


def test_golden_vector_record():
    """The serial record of the golden frame in tests/vectors/twinlink-golden.json."""
    import json
    from pathlib import Path

    golden = json.loads((Path(__file__).parent / "vectors" / "twinlink-golden.json").read_text())
    ser = golden["serial"]
    frame = next(bytes.fromhex(f["frame"]) for f in golden["frames"] if f["name"] == ser["frame"])
    assert framing.crc16(frame).to_bytes(2, "big").hex() == ser["crc16"]
    assert framing.encode_record(frame).hex() == ser["record"]
    assert list(framing.Decoder().feed(bytes.fromhex(ser["record"]))) == [frame]

"""SenML encoding and bounded, typed decoding of authenticated-but-untrusted payloads."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinlink import senml
from twinlink.errors import MalformedPayload

names = st.text(min_size=1, max_size=12)
values = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.booleans(),
    st.binary(max_size=20),
)


@given(
    st.dictionaries(names, values, min_size=1, max_size=8), st.one_of(st.none(), st.floats(0, 2e9))
)
@settings(max_examples=150, deadline=None)
def test_round_trip(reading, t):
    recs = senml.resolve(senml.loads(senml.encode(reading, t)))
    assert {r.name: r.value for r in recs} == reading
    assert all(r.time == t for r in recs)


def test_labels_are_rfc8428_integers():
    pack = cbor2.loads(senml.encode({"temp": 21.5}, 10.0))
    assert pack == [{0: "temp", 2: 21.5, -3: 10.0}]


def test_base_values_resolve():
    pack = [{-2: "urn:dev:", -3: 100, 0: "a", 2: 1, 6: 5}, {0: "b", 3: "x"}, {0: "c", -5: 10, 2: 1}]
    recs = senml.resolve(pack)
    assert [(r.name, r.value, r.time) for r in recs] == [
        ("urn:dev:a", 1, 105),
        ("urn:dev:b", "x", 100),
        ("urn:dev:c", 11, 100),
    ]


@pytest.mark.parametrize(
    "pack",
    [
        [{2: 1}],  # no name
        [{0: "a"}],  # no value
        [{0: "a", 2: "text"}],  # wrong type
        [{0: "a", 2: 1, 3: "x"}],  # two values
        [{0: "a", 2: 1, 99: 0}],  # unknown integer label
        [{0: "a", 2: 1, "x_": 0}],  # must-understand label
        [{0: "a", 2: True}],  # bool is not a number
    ],
)
def test_bad_packs_are_refused(pack):
    with pytest.raises(MalformedPayload):
        senml.resolve(pack)


def test_bounded_decoding():
    with pytest.raises(MalformedPayload):
        senml.loads(b"\x81" * 100 + b"\x00")  # nesting deeper than allowed
    with pytest.raises(MalformedPayload):
        senml.loads(b"\x9f\x01\xff")  # indefinite length
    with pytest.raises(MalformedPayload):
        senml.loads(bytes(senml.MAX_PLAINTEXT + 1))
    with pytest.raises(MalformedPayload):
        senml.loads(b"\x5a\xff\xff\xff\xff")  # claims 4 GiB


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError):
        senml.encode({})
    with pytest.raises(ValueError):
        senml.encode({"x": float("nan")})
    with pytest.raises(TypeError):
        senml.encode({"x": [1, 2]})


@given(
    st.dictionaries(names, values, min_size=1, max_size=8),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
)
@settings(max_examples=300, deadline=None)
def test_encoding_matches_cbor2_canonical(reading, t):
    pack = []
    for i, (name, value) in enumerate(reading.items()):
        label = {bool: 4, str: 3, bytes: 8}.get(type(value), 2)
        rec = {0: name, label: value}
        if i == 0 and t is not None:
            rec[-3] = t
        pack.append(rec)
    got = senml.encode(reading, t)
    if senml._STRICT:  # cbor2 >= 6: the reference for preferred serialization
        assert got == cbor2.dumps(pack, canonical=True)
    else:  # cbor2 5.x (Python 3.9) picks single over half at the edge (65504.0): same values
        assert cbor2.loads(got) == cbor2.loads(cbor2.dumps(pack, canonical=True))


def test_base_name_matches_cbor2_canonical():
    got = senml.encode({"temp": 1.5, "ok": True}, 10.25, {"temp": "Cel"}, base_name="boiler:")
    want = [{0: "temp", 1: "Cel", 2: 1.5, -2: "boiler:", -3: 10.25}, {0: "ok", 4: True}]
    assert got == cbor2.dumps(want, canonical=True)
    assert [r.name for r in senml.resolve(senml.loads(got))] == ["boiler:temp", "boiler:ok"]


def test_float_forms_are_shortest():
    for value, form in ((1.5, "f93e00"), (100000.0, "fa47c35000"), (0.1, "fb3fb999999999999a")):
        assert senml.encode({"x": value})[-len(form) // 2 :].hex() == form


@pytest.mark.parametrize(
    "data",
    [
        b"\x81" * 20 + b"\x00",  # nesting deeper than 16
        b"\x9f\x01\xff",  # indefinite-length array
        b"\x5f\x41\x00\xff",  # indefinite-length byte string
        b"\xa2\x01\x02\x01\x03",  # duplicate map key
        b"\x82\x01",  # truncated array
        b"\x5a\xff\xff\xff\xff",  # claims 4 GiB
        b"\x01\x02",  # two items
        b"\x9b" + b"\xff" * 8,  # array claiming 2^64 - 1 items
    ],
)
@pytest.mark.parametrize("decoder", ["cbor2 limits", "cbor2 5.x fallback"])
def test_structural_check_refuses_what_cbor2_6_refuses(data, decoder, monkeypatch):
    """cbor.check_item stands in for cbor2 6's limits on cbor2 5.x (Python 3.9)."""
    from twinlink import cbor

    with pytest.raises(MalformedPayload):
        cbor.check_item(data, 16)
    if decoder != "cbor2 limits":
        monkeypatch.setattr(senml, "_STRICT", {})
    with pytest.raises(MalformedPayload):
        senml.loads(data)
    assert senml.loads(senml.encode({"x": 1})) == [{0: "x", 2: 1}]


@given(
    st.recursive(
        # what a reading may hold (docs/PROTOCOL.md §13): 64-bit integers, finite floats
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text() | st.binary(),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=4),
        max_leaves=20,
    )
)
@settings(max_examples=200, deadline=None)
def test_structural_check_accepts_what_cbor2_writes(obj):
    from twinlink import cbor

    data = cbor2.dumps(obj)
    cbor.check_item(data, 16)

"""Containment: one hostile frame never stops the batch, whatever its authenticated payload.

A compromised device signs its lies, so every property here uses frames sealed with the
device's *real* key under its *real* context (``frame.seal`` with ``twin.device_context``): the
signature and the AEAD tag verify, and only the payload is hostile. Faults the real thing
cannot produce on demand (a decoder or store bug) are injected with monkeypatch.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
from dataclasses import dataclass

import cbor2
import pytest
from conftest import CLI, cli_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import twinlink
from twinlink import frame, keys, oscore, senml
from twinlink.errors import TwinlinkError
from twinlink.twin import Reading, Twin

#: How a hostile payload may be refused. With the payload validator in place, a payload never
#: reaches an unexpected failure: internal_error here would mean the validator has a gap.
CONTAINED = {"bad_payload"}


@dataclass
class Sealer:
    """Seals plaintexts as the registered device ``pump`` would, with increasing seqs."""

    twin: Twin
    sk: bytes
    ctx: oscore.Context
    seq: itertools.count

    def seal(self, plaintext: bytes) -> bytes:
        return frame.seal(self.sk, self.ctx, next(self.seq), plaintext)

    def genuine(self, value: float) -> bytes:
        return self.seal(senml.encode({"g": value}))


@pytest.fixture
def sealer(rig, backend_name):
    bundle = keys.Bundle.load(rig.provision("pump"))
    twin = rig.twin()
    assert bundle.device_key is not None
    yield Sealer(twin, bundle.device_key.secret64, twin.device_context("pump"),
                 itertools.count())
    twin.close()


def _stored(twin: Twin, n: int = 3) -> dict[int, dict]:
    return {r["seq"]: r for r in twin.store.readings("pump", limit=n)}


def assert_contained(s: Sealer, hostile_plaintext: bytes) -> TwinlinkError | Reading:
    """Seal the plaintext between two genuine frames, open the batch, check the promise."""
    g1, h, g2 = s.genuine(1.0), s.seal(hostile_plaintext), s.genuine(2.0)
    res = s.twin.open_many([g1, h, g2])  # never raises
    assert isinstance(res[0], Reading) and isinstance(res[2], Reading), res
    stored = _stored(s.twin)
    assert stored[res[0].seq]["payload"] == {"g": 1.0}
    assert stored[res[2].seq]["payload"] == {"g": 2.0}
    hostile = res[1]
    if isinstance(hostile, TwinlinkError):
        assert hostile.reason in CONTAINED, (hostile.reason, hostile)
        assert hostile.frame.seq not in stored  # type: ignore[attr-defined]
        json.dumps(twinlink.twin.refusal_json(hostile), allow_nan=False)
    else:
        assert isinstance(hostile, Reading)
        row = stored[hostile.seq]
        json.dumps(row, allow_nan=False)  # RFC 8259: no NaN/Infinity in what the store returns
        json.dumps(hostile.to_json(), allow_nan=False)  # nor in what `twinlink open` prints
        json.dumps(s.twin.store.status("pump"), allow_nan=False)
    return hostile


# -- strategies: any CBOR the generator can build ---------------------------------------------

_bignums = st.builds(lambda bits, sign, low: sign * ((1 << bits) + low),
                     st.integers(64, 20000), st.sampled_from([1, -1]), st.integers(0, 2**64))
_tags = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 32,
                                   33, 34, 35, 36, 37, 256, 258, 260, 261, 55799]),
                  st.integers(0, 2**64 - 1))
_leaves = st.one_of(
    st.none(), st.booleans(), st.just(cbor2.undefined),
    st.integers(), st.integers(-(2**64), 2**64 - 1), _bignums,
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=16), st.floats(width=32),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 5e-324,
                     1.7976931348623157e308]),
    st.binary(max_size=40), st.text(max_size=20),
    st.builds(cbor2.CBORSimpleValue, st.integers(0, 19) | st.integers(32, 255)),
)
_keys = st.one_of(st.integers(-10, 10), st.text(max_size=4), st.binary(max_size=4),
                  st.booleans(), st.none(), st.floats(), _bignums)


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(_keys, children, max_size=5),
        st.builds(cbor2.CBORTag, _tags, children),
    )


cbor_values = st.recursive(_leaves, _containers, max_leaves=40)

# SenML-shaped: a pack of records with real and invented labels and any values.
_labels = st.sampled_from([-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 23,
                           "x_", "ok", "n"])
_records = st.one_of(
    st.dictionaries(_labels, cbor_values, max_size=6),
    st.fixed_dictionaries({0: st.text(min_size=1, max_size=8), 2: _leaves},
                          optional={-3: _leaves, 6: _leaves, 1: _leaves, -2: st.text(max_size=4),
                                    -5: _leaves, 5: _leaves}),
)
# Numbers at the edges of what the store holds: a base value plus a value, or a base time
# plus a time, can overflow int64 or round to infinity once resolved.
_edges = st.sampled_from([2**63 - 1, -(2**63), 2**62, 1.7976931348623157e308,
                          -1.7976931348623157e308, 1e308, 0, 1, 0.5])
_edge_records = st.fixed_dictionaries(
    {0: st.sampled_from(["t", "p"]), 2: _edges},
    optional={-3: _edges, 6: _edges, -5: _edges, 5: _edges, -6: _edges})
senml_packs = st.lists(_records | _edge_records, min_size=1, max_size=6)


def _shared(value) -> bytes:
    """The same container twice, and a container holding itself: tags 28/29."""
    twice = [value, value, {"again": value}]
    loop: list = [value]
    loop.append(loop)
    return cbor2.dumps([twice, loop], value_sharing=True)


def _encoded(value) -> bytes | None:
    try:
        return cbor2.dumps(value)
    except Exception:  # not every generated tree is encodable (e.g. a bad simple value)
        return None


def _mutated(data: bytes, at: int, byte: int, cut: int) -> bytes:
    if not data:
        return bytes([byte])
    b = bytearray(data)
    b[at % len(b)] = byte
    return bytes(b[: max(1, len(b) - cut)])


hostile_plaintexts = st.one_of(
    cbor_values.map(_encoded),
    senml_packs.map(_encoded),
    st.lists(cbor_values, max_size=3).map(_shared),
    st.binary(max_size=300),
    st.builds(_mutated, senml_packs.map(_encoded).filter(bool), st.integers(0, 1000),
              st.integers(0, 255), st.integers(0, 3)),
).filter(lambda b: b is not None and len(b) <= senml.MAX_PLAINTEXT)


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(plaintext=hostile_plaintexts)
def test_authenticated_hostile_payloads_are_contained(sealer: Sealer, plaintext: bytes):
    assert_contained(sealer, plaintext)


@pytest.mark.parametrize("name,plaintext", [
    ("self-referencing list", bytes.fromhex("d81c81d81d00")),
    ("shared list twice", cbor2.dumps([[1, 2]] * 2, value_sharing=True)),
    ("bignum of 5000 digits", cbor2.dumps(10**5000)),
    ("bignum SenML value", cbor2.dumps([{0: "t", 2: 10**5000}])),
    ("bignum SenML base time", cbor2.dumps([{0: "t", 2: 1, -3: 2**70}])),
    ("uint64 SenML time", cbor2.dumps([{0: "t", 2: 1, 6: 2**64 - 1}])),
    ("NaN", cbor2.dumps(float("nan"))),
    ("infinity in a map", cbor2.dumps({"x": float("inf")})),
    ("tag 0 with an int", cbor2.dumps(cbor2.CBORTag(0, 5))),
    ("tag 1 huge", cbor2.dumps(cbor2.CBORTag(1, 10**30))),
    ("tag 258 set of a list", bytes.fromhex("d9010281" "80")),
    ("deep nesting", b"\x81" * 300 + b"\x00"),
    ("undefined key", bytes.fromhex("a1f700")),
    ("list key", bytes.fromhex("a1810100")),
    ("empty", b""),
    ("truncated", senml.encode({"t": 1.5})[:-1]),
    ("trailing bytes", senml.encode({"t": 1.5}) + b"\x00"),
])
def test_known_poison_payloads_are_contained(sealer: Sealer, name: str, plaintext: bytes):
    assert_contained(sealer, plaintext)


STRICT = [
    ("tag", cbor2.dumps(cbor2.CBORTag(1000, 1))),
    ("tag in SenML value", cbor2.dumps([{0: "t", 2: cbor2.CBORTag(1, 5)}])),
    ("bignum", cbor2.dumps(2**64)),
    ("bignum SenML value", cbor2.dumps([{0: "t", 2: 2**70}])),
    ("uint64 beyond int64", cbor2.dumps([{0: "t", 2: 2**63}])),
    ("NaN", cbor2.dumps(float("nan"))),
    ("NaN in a raw map", cbor2.dumps({"x": float("nan")})),
    ("infinity", cbor2.dumps(float("-inf"))),
    ("shared reference", bytes.fromhex("d81c81d81d00")),
    ("depth 9", b"\x81" * 9 + b"\x00"),
    ("base time + time beyond int64", cbor2.dumps([{0: "t", 2: 1, -3: 2**63 - 1, 6: 1}])),
    ("base time + time to infinity", cbor2.dumps([{0: "t", 2: 1, -3: 1.7e308, 6: 1.7e308}])),
    ("base value + value to infinity", cbor2.dumps([{0: "t", 2: 1.7e308, -5: 1.7e308}])),
    ("base value + value beyond int64", cbor2.dumps([{0: "t", 2: -(2**63), -5: -1}])),
    ("base sum + sum beyond int64", cbor2.dumps([{0: "t", 5: 2**63 - 1, -6: 2**63 - 1}])),
]


@pytest.mark.parametrize("name,plaintext", STRICT, ids=[n for n, _ in STRICT])
def test_payload_validator_refuses_what_senml_does_not_need(sealer: Sealer, name: str,
                                                            plaintext: bytes):
    hostile = assert_contained(sealer, plaintext)
    assert isinstance(hostile, TwinlinkError) and hostile.reason == "bad_payload"


def test_depth_8_is_still_accepted(sealer: Sealer):
    ok = assert_contained(sealer, b"\x81" * 7 + b"\x00")  # 8 levels: the documented limit
    assert isinstance(ok, Reading)


# -- injected faults --------------------------------------------------------------------------


def _internal_error_checks(twin: Twin, res, bad: int, caplog) -> None:
    err = res[bad]
    assert isinstance(err, TwinlinkError) and err.reason == "internal_error"
    assert "RuntimeError" in str(err) and "poison" not in str(err)  # no payload in the message
    good = [r for i, r in enumerate(res) if i != bad]
    assert all(isinstance(r, Reading) for r in good), res
    stored = {(r["device"], r["seq"]) for r in twin.store.readings(limit=100)}
    assert {(r.device, r.seq) for r in good} <= stored
    assert (err.frame.device, err.frame.seq) not in stored  # type: ignore[attr-defined]
    ev = [e for e in twin.store.events(audit=False) if e["reason"] == "internal_error"]
    assert [(e["kid"], e["seq"]) for e in ev] == [(err.frame.kid.hex(),  # type: ignore[attr-defined]
                                                   err.frame.seq)]  # type: ignore[attr-defined]
    logged = [r for r in caplog.records if r.name == "twinlink.twin" and r.levelno >= logging.ERROR]
    assert logged and logged[-1].exc_info is not None
    assert logged[-1].exc_info[0] is RuntimeError and "Traceback" in caplog.text
    assert twin.counts["internal_error"] >= 1


def test_decoder_fault_refuses_one_frame(rig, backend_name, monkeypatch, caplog):
    real = twinlink.twin.decode_payload

    def flaky(plaintext: bytes):
        if b"poison" in plaintext:
            raise RuntimeError("decoder bug")
        return real(plaintext)

    monkeypatch.setattr(twinlink.twin, "decode_payload", flaky)
    dev = rig.device("pump")
    frames = dev.seal_many([{"v": 1}, {"s": "poison"}, {"v": 3}, {"v": 4}])
    with rig.twin() as twin, caplog.at_level(logging.ERROR, "twinlink.twin"):
        res = twin.open_many(frames)
        _internal_error_checks(twin, res, 1, caplog)
        assert twin.store.count_readings() == 3


def test_store_fault_for_one_device_refuses_its_frames_only(rig, backend_name, monkeypatch,
                                                            caplog):
    pump, valve = rig.device("pump"), rig.device("valve")
    with rig.twin() as twin, caplog.at_level(logging.ERROR, "twinlink.twin"):
        real = twin.store.lookup

        def flaky(kid: bytes):
            if kid == valve.kid:
                raise RuntimeError("store bug")
            return real(kid)

        monkeypatch.setattr(twin.store, "lookup", flaky)
        res = twin.open_many([pump.seal({"v": 1}), valve.seal({"v": 2}), pump.seal({"v": 3})])
        _internal_error_checks(twin, res, 1, caplog)


def test_commit_fault_for_one_reading_is_isolated_by_bisection(rig, backend_name, monkeypatch,
                                                               caplog):
    import twinlink.store.sqlite as sqlite_store

    real = sqlite_store.dumps_json

    def flaky(value):
        if value == "poison":
            raise RuntimeError("cannot store this")
        return real(value)

    monkeypatch.setattr(sqlite_store, "dumps_json", flaky)
    dev = rig.device("pump")
    readings = [{"v": i} for i in range(7)]
    readings[4] = {"s": "poison"}
    with rig.twin() as twin, caplog.at_level(logging.ERROR, "twinlink.twin"):
        res = twin.open_many(dev.seal_many(readings))
        _internal_error_checks(twin, res, 4, caplog)
        assert twin.store.count_readings() == 6
        assert twin.store.lookup(dev.kid).window.top == 6
        # The refused number stays open: the same frame is not a "replay" of something unstored.
        assert 4 not in {r["seq"] for r in twin.store.readings()}


def test_storage_down_raises_and_stores_nothing(rig, backend_name, monkeypatch):
    """The one failure that is not contained: a database that stores nothing makes
    open_many raise StorageError, so the caller does not acknowledge the batch."""
    dev = rig.device("pump")
    with rig.twin() as twin:
        def down(*a, **kw):
            raise twinlink.store.StorageError("disk I/O error (injected)")

        monkeypatch.setattr(twin.store, "commit", down)
        with pytest.raises(twinlink.store.StorageError):
            twin.open_many(dev.seal_many([{"v": 1}, {"v": 2}]))
        monkeypatch.undo()
        assert twin.store.count_readings() == 0


def test_twinlink_open_keeps_reading_after_a_poison_frame(rig, backend_name):
    bundle = keys.Bundle.load(rig.provision("pump"))
    assert bundle.device_key is not None
    ctx, sk = bundle.context(), bundle.device_key.secret64
    lines = [frame.seal(sk, ctx, 0, senml.encode({"v": 1})),
             frame.seal(sk, ctx, 1, bytes.fromhex("d81c81d81d00")),
             frame.seal(sk, ctx, 2, cbor2.dumps([{0: "t", 2: 10**5000}])),
             frame.seal(sk, ctx, 3, b"\xff\xff"),
             frame.seal(sk, ctx, 4, senml.encode({"v": 5}))]
    p = subprocess.run([*CLI, "open", "--db", str(rig.db), "--twin-key", str(rig.twin_key_path)],
                       input="".join(f.hex() + "\n" for f in lines), capture_output=True,
                       text=True, env={**cli_env(), "TWINLINK_BACKEND": backend_name},
                       timeout=60)
    assert p.returncode == 0, p.stderr
    out = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(out) == 5
    assert out[0]["ok"] and out[4]["ok"] and out[4]["payload"] == {"v": 5}
    assert out[3] == {**out[3], "ok": False, "error": "bad_payload"}
    for o in out[1:3]:
        assert o["ok"] or o["error"] in CONTAINED

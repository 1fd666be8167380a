"""The TwinStore contract, tested through the interface only.

Every test takes the ``store`` fixture (or ``make_store`` to reopen one), parametrized over the
store implementations: a PostgreSQL store is one more entry in :data:`STORES` (and, for the
fault-injection tests, one more entry in :data:`FAULTS`). Only the tests under "SQLite files"
at the end know that the store is a file.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Any, Callable, ClassVar

import pytest
from conftest import CLI, cli_env
from pg import pg_server, pg_url, requires_postgres  # noqa: F401 - fixtures

import twinlink
from twinlink import frame, keys, senml
from twinlink.errors import (
    Conflict,
    Replay,
    ReplayError,
    TwinlinkError,
    UnknownDevice,
)
from twinlink.keys import InvalidPublicKey
from twinlink.naming import InvalidName
from twinlink.oscore import MAX_SEQ
from twinlink.store import (
    AUDIT_REASONS,
    SCHEMA_VERSION,
    Accepted,
    Event,
    RegistryError,
    SQLiteStore,
    StorageError,
    TwinStore,
)
from twinlink.store.postgres import PostgresStore
from twinlink.twin import Twin, frame_digest

STORES = ["sqlite", pytest.param("postgres", marks=requires_postgres)]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    """Open (or reopen) the test's store; every store opened is closed at the end."""
    opened: list[TwinStore] = []
    url = request.getfixturevalue("pg_url") if store_kind == "postgres" else None

    def make(**kw) -> TwinStore:
        if store_kind == "sqlite":
            s: TwinStore = SQLiteStore(str(tmp_path / "twin.db"), **kw)
        elif store_kind == "postgres":
            s = PostgresStore(url, **kw)
        else:  # pragma: no cover - a new implementation adds its branch here
            raise AssertionError(store_kind)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store) -> TwinStore:
    return make_store()


@pytest.fixture
def twin_key() -> keys.TwinKey:
    return keys.TwinKey.generate()


@pytest.fixture
def make_twin(make_store, twin_key):
    """A Twin on its own connection to the test's store (as an ingest process has)."""
    twins: list[Twin] = []

    def make() -> Twin:
        twins.append(Twin(make_store(), twin_key))
        return twins[-1]

    yield make
    for t in twins:
        t.close()


# -- fault injection: a failing statement the real database cannot produce on demand --------


class _FaultyConnection:
    """A sqlite3 connection whose statements starting with ``prefix`` fail like a dying disk."""

    def __init__(self, db: sqlite3.Connection, prefix: str) -> None:
        self._db, self.prefix, self.armed, self.tripped = db, prefix.upper(), True, 0

    def _trip(self, sql: str) -> None:
        if self.armed and " ".join(sql.split()).upper().startswith(self.prefix):
            self.tripped += 1
            raise sqlite3.OperationalError("disk I/O error (injected)")

    def execute(self, sql: str, *args):
        self._trip(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        self._trip(sql)
        return self._db.executemany(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._db, name)


def _sqlite_fault(store: TwinStore, prefix: str) -> _FaultyConnection:
    assert isinstance(store, SQLiteStore)
    conn = _FaultyConnection(store._db, prefix)
    store._db = conn  # type: ignore[assignment]
    return conn


class _PgFault:
    """The real PostgreSQL refusing a statement: a trigger that raises disk_full (53100), or,
    for COMMIT, a deferred constraint trigger that fires at commit. Trips are counted in a
    sequence (sequences ignore rollbacks)."""

    TRIGGERS: ClassVar[dict[str, str]] = {
        "INSERT INTO readings": "BEFORE INSERT ON readings FOR EACH STATEMENT",
        "INSERT INTO state": "BEFORE INSERT ON state FOR EACH STATEMENT",
        "INSERT INTO events": "BEFORE INSERT ON events FOR EACH STATEMENT",
        "UPDATE devices SET win_top": "BEFORE UPDATE OF win_top ON devices FOR EACH STATEMENT",
        "UPDATE devices SET accepted": "BEFORE UPDATE OF accepted ON devices FOR EACH STATEMENT",
        "COMMIT": "AFTER INSERT ON readings DEFERRABLE INITIALLY DEFERRED FOR EACH ROW",
    }

    def __init__(self, store: PostgresStore, prefix: str) -> None:
        import psycopg

        self.conn = psycopg.connect(store._conninfo, autocommit=True)
        constraint = "CONSTRAINT " if prefix == "COMMIT" else ""
        self.table = self.TRIGGERS[prefix].split(" ON ")[1].split()[0]
        self.conn.execute("CREATE SEQUENCE IF NOT EXISTS fault_trips")
        self.conn.execute("""CREATE OR REPLACE FUNCTION fault() RETURNS trigger AS $$
            BEGIN PERFORM nextval('fault_trips');
            RAISE EXCEPTION 'could not extend file (injected)' USING ERRCODE = '53100';
            END $$ LANGUAGE plpgsql""")
        self.conn.execute(f"CREATE {constraint}TRIGGER fault {self.TRIGGERS[prefix]} "
                          "EXECUTE FUNCTION fault()")
        self._armed = True

    @property
    def tripped(self) -> int:
        row = self.conn.execute("SELECT last_value, is_called FROM fault_trips").fetchone()
        return int(row[0]) if row[1] else 0

    @property
    def armed(self) -> bool:
        return self._armed

    @armed.setter
    def armed(self, on: bool) -> None:
        if self._armed and not on:
            self.conn.execute(f"DROP TRIGGER fault ON {self.table}")
            self.conn.close()
        self._armed = on


def _pg_fault(store: TwinStore, prefix: str) -> _PgFault:
    assert isinstance(store, PostgresStore)
    return _PgFault(store, prefix)


#: store kind -> function(store, statement prefix) arming a fault; returns an object with
#: ``armed`` (set False to disarm) and ``tripped`` (how often it fired).
FAULTS: dict[str, Callable[[TwinStore, str], Any]] = {"sqlite": _sqlite_fault,
                                                      "postgres": _pg_fault}


@pytest.fixture
def fault(store_kind: str):
    return FAULTS[store_kind]


# -- helpers ---------------------------------------------------------------------------------


def _device(store: TwinStore, tk: keys.TwinKey, name: str, state: Path, *,
            salt: bytes = b"", **kw) -> twinlink.Device:
    """Register a fresh device key as ``name`` and return a Device sealing under ``salt``."""
    dk = keys.DeviceKey.generate()
    rec = store.register(name, dk.public, **kw)
    return _bundle_device(rec.name, rec.kid, tk, dk, state, salt)


def _bundle_device(name: str, kid: bytes, tk: keys.TwinKey, dk: keys.DeviceKey, state: Path,
                   salt: bytes) -> twinlink.Device:
    settings = {"stream": "t", "master_salt": salt.hex(), "id_context": None}
    return twinlink.Device(keys.Bundle(name, kid, tk.public, dk, settings), state)


def _seal_as(dev: twinlink.Device, seq: int, reading: dict, *, salt: bytes | None = None
             ) -> bytes:
    """A frame ``dev`` could have sealed with sequence number ``seq``: under its own security
    context (the ID Context it is using, named in the header), or the same ID Context with
    another Master Salt (a sender that keeps its context and restarts its counter)."""
    b = dev.bundle
    if salt is not None:
        b = keys.Bundle(b.name, b.kid, b.twin_public, b.device_key,
                        {**b.settings, "master_salt": salt.hex()})
    assert b.device_key is not None
    return frame.seal(b.device_key.secret64, b.context(dev.id_context), seq,
                      senml.encode(reading), kid_context=dev.id_context)


def _snapshot(store: TwinStore, name: str) -> tuple:
    """Everything the interface shows about one device (to prove nothing changed)."""
    st = store.status(name)
    win = store.lookup(store.device(name).kid)
    return (store.device(name), st, win.window.top, win.window.bits, win.lost,
            store.count_readings(), store.count_events(), store.events(limit=1000))


def _accepted(kid: bytes, seq: int, value: float, *, received_at: float | None = None,
              epoch: int = 0) -> Accepted:
    pt = senml.encode({"temp": value})
    recs = tuple(senml.resolve(senml.loads(pt)))
    extra = {} if received_at is None else {"received_at": received_at}
    return Accepted(kid, seq, epoch, pt, {"temp": value}, recs, None, "signed",
                    digest=frame_digest(pt + seq.to_bytes(8, "big")), **extra)


# -- registry --------------------------------------------------------------------------------


def test_register_device_devices_next_kid(store: TwinStore):
    assert store.devices() == [] and store.next_kid() == b"\x01"
    pk_a, pk_b, pk_c = (keys.DeviceKey.generate().public for _ in range(3))
    a = store.register("alpha", pk_a)
    assert (a.name, a.kid, a.public_key, a.status, a.epoch) == ("alpha", b"\x01", pk_a,
                                                                  "active", 0)
    assert a.master_salt == b"" and a.id_context is None and a.pending_salt is None
    assert store.next_kid() == b"\x02"
    b = store.register("bravo", pk_b, kid=b"\x05", profile="lite", window=128)
    assert (b.kid, b.profile, b.window_size) == (b"\x05", "lite", 128)
    assert store.next_kid() == b"\x02"  # the smallest free one, not max + 1
    c = store.register("charlie", pk_c)
    assert c.kid == b"\x02" and store.next_kid() == b"\x03"
    assert store.device("bravo") == b and store.device(b"\x05") == b
    assert store.device("alpha").fingerprint == keys.fingerprint(pk_a)
    assert [d.name for d in store.devices()] == ["alpha", "bravo", "charlie"]
    with pytest.raises(UnknownDevice):
        store.device("delta")
    with pytest.raises(UnknownDevice):
        store.device(b"\x09")


def test_register_refusals_leave_the_registry_unchanged(store: TwinStore):
    pk = keys.DeviceKey.generate().public
    store.register("alpha", pk, kid=b"\x07")
    before = (store.devices(), store.count_events())
    other = keys.DeviceKey.generate().public
    cases = [
        (RegistryError, dict(name="alpha", public_key=other)),  # name taken
        (RegistryError, dict(name="beta", public_key=other, kid=b"\x07")),  # kid taken
        (ValueError, dict(name="beta", public_key=other, profile="twinlink/9")),
        (ValueError, dict(name="beta", public_key=other, kid=b"")),
        (ValueError, dict(name="beta", public_key=other, kid=bytes(7))),
        (ValueError, dict(name="beta", public_key=other, window=7)),
        (InvalidName, dict(name="../beta", public_key=other)),
        (InvalidPublicKey, dict(name="beta", public_key=bytes(32))),
        (InvalidPublicKey, dict(name="beta", public_key=other[:31])),
    ]
    for exc, kw in cases:
        with pytest.raises(exc):
            store.register(**kw)
    assert (store.devices(), store.count_events()) == before


def test_registration_event_is_committed_with_it(store: TwinStore, fault):
    pk = keys.DeviceKey.generate().public
    rec = store.register("alpha", pk)
    ev = store.events("alpha")
    assert [e["reason"] for e in ev] == ["registered"]
    assert ev[0]["kid"] == rec.kid.hex() and keys.fingerprint(pk) in ev[0]["detail"]
    # The event insert fails: the registration must not be there either.
    f = fault(store, "INSERT INTO events")
    with pytest.raises(StorageError):
        store.register("bravo", keys.DeviceKey.generate().public)
    assert f.tripped == 1
    f.armed = False
    with pytest.raises(UnknownDevice):
        store.device("bravo")
    assert [d.name for d in store.devices()] == ["alpha"]
    assert store.register("bravo", keys.DeviceKey.generate().public).kid == b"\x02"


ACTIONS = {
    "revoke": lambda s: s.revoke("alpha", "stolen"),
    "reanchor": lambda s: s.reanchor("alpha", 100),
    "mark_window_lost": lambda s: s.mark_window_lost("alpha"),
    "announce_rekey": lambda s: s.announce_rekey("alpha", b"\x01\x02"),
    "rekey": lambda s: s.rekey("alpha", b"\x01\x02", None),
}
ACTION_EVENTS = {"revoke": "revoked_by_operator", "reanchor": "reanchored",
                 "mark_window_lost": "window_marked_lost", "announce_rekey": "rekey_announced",
                 "rekey": "rekeyed"}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_operator_action_is_atomic_with_its_audit_event(store: TwinStore, twin_key, make_twin,
                                                         tmp_path, fault, action: str):
    dev = _device(store, twin_key, "alpha", tmp_path / "st")
    twin = make_twin()
    assert all(not isinstance(r, TwinlinkError) for r in twin.open_many(dev.seal_many(
        [{"v": i} for i in range(5)])))
    before = _snapshot(store, "alpha")
    f = fault(store, "INSERT INTO events")
    with pytest.raises(StorageError):
        ACTIONS[action](store)
    assert f.tripped == 1
    f.armed = False
    assert _snapshot(store, "alpha") == before  # nothing of the action happened
    ACTIONS[action](store)  # the same action goes through once the disk is back
    reasons = [e["reason"] for e in store.events("alpha")]
    assert reasons[-1] == ACTION_EVENTS[action] and reasons[-1] in AUDIT_REASONS
    assert _snapshot(store, "alpha") != before


def test_revoke(store: TwinStore, twin_key, make_twin, tmp_path):
    dev = _device(store, twin_key, "alpha", tmp_path / "st")
    store.revoke("alpha", "stolen from the pump house")
    assert store.device("alpha").status == "revoked"
    assert store.events("alpha")[-1]["detail"] == "stolen from the pump house"
    res = make_twin().open_many([dev.seal({"v": 1})])[0]
    assert isinstance(res, TwinlinkError) and res.reason == "revoked"
    with pytest.raises(UnknownDevice):
        store.revoke("nobody")


def test_qc_config_audit_event_names_the_device_or_stores_nothing(store: TwinStore):
    store.register("alpha", keys.DeviceKey.generate().public)
    cfg = {"series": {"alpha": {"temp": {"min": 0.0, "max": 100.0}}}}
    store.set_qc_config(cfg, why="bounds by alice", device="alpha")
    assert store.qc_config() == cfg
    ev = store.events("alpha")[-1]
    assert (ev["reason"], ev["detail"]) == ("qc_configured", "bounds by alice")
    with pytest.raises(UnknownDevice):
        store.set_qc_config({}, why="x", device="nobody")
    assert store.qc_config() == cfg
    assert [e["detail"] for e in store.events(None) if e["reason"] == "qc_configured"] == [
        "bounds by alice"]


# -- reanchor --------------------------------------------------------------------------------


@pytest.mark.parametrize("floor", [-1, MAX_SEQ + 1, 2**64, 1.5, 5.0, "5", True, None])
def test_reanchor_refuses_an_invalid_floor(store: TwinStore, floor):
    store.register("alpha", keys.DeviceKey.generate().public)
    before = _snapshot(store, "alpha")
    with pytest.raises(RegistryError):
        store.reanchor("alpha", floor)  # type: ignore[arg-type]
    with pytest.raises(RegistryError):
        store.reanchor("alpha", floor, force=True)  # type: ignore[arg-type]
    assert _snapshot(store, "alpha") == before


def test_reanchor_floor_against_what_is_stored(store: TwinStore, twin_key, make_twin, tmp_path,
                                               backend_name):
    dev = _device(store, twin_key, "alpha", tmp_path / "st")
    twin = make_twin()
    frames = dev.seal_many([{"v": i} for i in range(10)])  # seq 0..9
    assert all(r.seq == i for i, r in enumerate(twin.open_many(frames)))  # type: ignore[union-attr]
    assert store.reanchor("alpha", MAX_SEQ - 5) == 9  # the previous window top
    # Not below what the context already used (stored readings count, not only the window).
    for low in (0, 5, 9, MAX_SEQ - 6):
        with pytest.raises(RegistryError):
            store.reanchor("alpha", low)
    store.reanchor("alpha", 3, force=True)
    assert store.events("alpha")[-1]["reason"] == "reanchored"
    assert "forced" in store.events("alpha")[-1]["detail"]
    assert store.reanchor("alpha", 0, force=True) == 2


def test_replay_after_a_forced_reanchor_is_a_replay_never_an_integrity_error(
        store: TwinStore, twin_key, make_twin, tmp_path, backend_name):
    dev = _device(store, twin_key, "alpha", tmp_path / "st")
    twin = make_twin()
    frames = dev.seal_many([{"v": i} for i in range(10)])
    twin.open_many(frames)
    store.reanchor("alpha", 3, force=True)  # numbers 3..9 are stored but the window is open
    different = _seal_as(dev, 7, {"v": 700})
    fresh = dev.seal({"v": 10})
    batch = [frames[5], different, fresh, frames[9], frames[5]]
    res = twin.open_many(batch)
    assert type(res[0]) is Replay and res[0].frame.duplicate  # type: ignore[union-attr]
    assert type(res[1]) is Conflict and not res[1].frame.duplicate  # type: ignore[union-attr]
    assert isinstance(res[2], twinlink.Reading) and res[2].payload == {"v": 10}
    assert type(res[3]) is Replay
    assert isinstance(res[4], ReplayError)
    assert store.count_readings("alpha") == 11
    assert [r["payload"] for r in store.readings("alpha")] == [{"v": i} for i in range(11)]
    # Alone (the store's careful path without the fresh frame's company) and via open():
    with pytest.raises(Replay):
        twin.open(frames[8])
    with pytest.raises(Conflict):
        twin.open(different)
    reasons = [e["reason"] for e in store.events("alpha", audit=False)]
    assert "conflict" in reasons and "replay" in reasons


# -- rekey -----------------------------------------------------------------------------------


def test_rekey_refuses_a_reused_context(store: TwinStore):
    store.register("alpha", keys.DeviceKey.generate().public)
    rec = store.rekey("alpha", b"s1", None)
    assert (rec.master_salt, rec.id_context, rec.epoch) == (b"s1", None, 1)
    for salt, idc in ((b"s1", None), (b"", None)):  # current, then the retired original
        with pytest.raises(RegistryError):
            store.rekey("alpha", salt, idc)
    rec = store.rekey("alpha", b"s1", b"ctx")  # same salt, another ID Context: a new context
    assert (rec.epoch, rec.id_context) == (2, b"ctx")
    for salt, idc in ((b"s1", None), (b"s1", b"ctx"), (b"", None)):
        with pytest.raises(RegistryError):
            store.rekey("alpha", salt, idc)
    for salt in (b"", b"s1"):
        with pytest.raises(RegistryError):
            store.announce_rekey("alpha", salt)
    assert store.device("alpha").epoch == 2
    with pytest.raises(UnknownDevice):
        store.rekey("nobody", b"s9", None)


def test_announced_then_completed_rekey(store: TwinStore, twin_key, make_twin, tmp_path,
                                        backend_name):
    dev = _device(store, twin_key, "alpha", tmp_path / "old")
    twin = make_twin()
    twin.open_many(dev.seal_many([{"v": i} for i in range(3)]))
    e0, idc = store.device("alpha").epoch, store.device("alpha").id_context
    rec = store.announce_rekey("alpha", b"\xaa\xbb")
    assert (rec.master_salt, rec.pending_salt, rec.epoch) == (b"", b"\xaa\xbb", e0)
    assert store.context_status(rec.kid, b"\xaa\xbb", idc) == "pending"
    rec = store.rekey("alpha", b"\xaa\xbb", None)
    assert (rec.master_salt, rec.pending_salt, rec.epoch) == (b"\xaa\xbb", None, e0 + 1)
    assert store.context_status(rec.kid, b"", idc) == "retired"
    assert store.context_status(rec.kid, b"\xaa\xbb", None) == "current"
    reasons = [e["reason"] for e in store.events("alpha")]
    assert reasons[-2:] == ["rekey_announced", "rekeyed"]
    new = _bundle_device("alpha", rec.kid, twin_key, dev.bundle.device_key, tmp_path / "new",
                         b"\xaa\xbb")
    assert twin.open(new.seal({"v": 100})).seq == 0
    old = twin.open_many([dev.seal({"v": 3})])[0]
    assert isinstance(old, TwinlinkError)  # the retired context is refused
    assert store.count_readings("alpha") == 4  # history kept across the re-key


@pytest.mark.parametrize("restart", ["fresh state", "same ID Context"])
def test_announced_rekey_then_crash_leaves_a_pending_salt_that_opens(
        store: TwinStore, twin_key, make_twin, tmp_path, backend_name, restart: str):
    """``twin rekey`` killed after the bundle was rewritten but before the store switched:
    the device (new bundle, new counter from 0) must still get through, and its first frame
    completes the re-key; the old context is retired from then on."""
    old = _device(store, twin_key, "alpha", tmp_path / "old")
    twin = make_twin()
    old_frames = old.seal_many([{"v": i} for i in range(70)])  # top 69: seq 0 is too old
    twin.open_many(old_frames)
    e0 = store.device("alpha").epoch
    store.announce_rekey("alpha", b"\x5a\x17")
    # The device has not restarted yet: its old context still works while the salt is pending.
    assert twin.open(old.seal({"v": 70})).seq == 70
    if restart == "fresh state":  # the device restarts from its new bundle: a new counter
        new = _bundle_device("alpha", old.kid, twin_key, old.bundle.device_key,  # type: ignore[arg-type]
                             tmp_path / "new", b"\x5a\x17")
        frames = new.seal_many([{"n": i} for i in range(3)])
    else:  # a sender that keeps its ID Context and restarts its counter at 0 (no renewal)
        frames = [_seal_as(old, i, {"n": i}, salt=b"\x5a\x17") for i in range(3)]
    assert twin.check(frames[0]).seq == 0  # type: ignore[union-attr]  # the dry run agrees
    assert store.device("alpha").epoch == e0  # ... and changed nothing
    r = twin.open(frames[0])
    assert (r.seq, r.payload, r.epoch) == (0, {"n": 0}, e0 + 1)
    rec = store.device("alpha")
    assert (rec.master_salt, rec.pending_salt, rec.epoch) == (b"\x5a\x17", None, e0 + 1)
    assert [x.seq for x in twin.open_many(frames[1:])] == [1, 2]  # type: ignore[union-attr]
    with pytest.raises(Replay):
        twin.open(frames[1])
    stale = twin.open_many([old.seal({"v": 71})])[0]
    assert isinstance(stale, TwinlinkError) and not isinstance(stale, ReplayError)
    assert store.count_readings("alpha") == 74
    assert store.status("alpha")["state"]["n"]["value"] == 2
    assert "context_renewed" in [e["reason"] for e in store.events("alpha")]


def test_completing_an_announced_rekey_keeps_the_context_the_device_chose(
        store: TwinStore, twin_key, make_twin, tmp_path, backend_name):
    """The device restarted with its new bundle and renewed under the announced salt (with an
    ID Context of its own) before the operator's command completed the re-key: completing it
    must not retire the context the device is using."""
    old = _device(store, twin_key, "alpha", tmp_path / "old")
    twin = make_twin()
    twin.open(old.seal({"v": 0}))
    store.announce_rekey("alpha", b"\x0b")
    new = _bundle_device("alpha", old.kid, twin_key, old.bundle.device_key,  # type: ignore[arg-type]
                         tmp_path / "new", b"\x0b")
    twin.open(new.seal({"v": 1}))
    chosen = store.device("alpha")
    assert (chosen.master_salt, chosen.id_context) == (b"\x0b", new.id_context)
    assert store.rekey("alpha", b"\x0b", None, announced=True) == chosen
    assert twin.open(new.seal({"v": 2})).payload == {"v": 2}
    with pytest.raises(RegistryError):  # without announced it is an ordinary, refused re-key
        store.rekey("alpha", b"\x0b", new.id_context)


# -- commit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "INSERT INTO readings", "INSERT INTO state", "UPDATE devices SET win_top",
    "UPDATE devices SET accepted", "INSERT INTO events", "COMMIT"])
def test_commit_is_atomic(store: TwinStore, fault, statement: str):
    a = store.register("alpha", keys.DeviceKey.generate().public)
    b = store.register("bravo", keys.DeviceKey.generate().public)
    assert store.commit([_accepted(a.kid, 0, 1.0)], []) == [None]
    before = (_snapshot(store, "alpha"), _snapshot(store, "bravo"))
    batch = [_accepted(a.kid, 1, 2.0), _accepted(b.kid, 0, 3.0), _accepted(a.kid, 5, 4.0)]
    events = [Event("bad_signature", "forged", a.kid, 9)]
    f = fault(store, statement)
    with pytest.raises(StorageError):
        store.commit(batch, events)
    assert f.tripped == 1
    f.armed = False
    assert (_snapshot(store, "alpha"), _snapshot(store, "bravo")) == before
    assert store.commit(batch, events) == [None, None, None]
    assert store.count_readings() == 4 and store.lookup(a.kid).window.top == 5
    assert store.status("alpha")["state"]["temp"]["value"] == 4.0


def test_commit_refuses_what_is_stored_as_a_replay(store: TwinStore):
    a = store.register("alpha", keys.DeviceKey.generate().public)
    assert store.commit([_accepted(a.kid, 0, 1.0), _accepted(a.kid, 1, 1.5)], []) == [None,
                                                                                       None]
    res = store.commit([_accepted(a.kid, 1, 1.5), _accepted(a.kid, 2, 2.0),
                        _accepted(a.kid, 2, 2.0)], [])
    assert isinstance(res[0], ReplayError) and res[1] is None and isinstance(res[2], ReplayError)
    store.reanchor("alpha", 0, force=True)  # the window forgets; the readings do not
    res = store.commit([_accepted(a.kid, 0, 1.0), _accepted(a.kid, 1, 9.0),
                        _accepted(a.kid, 3, 3.0)], [])
    assert type(res[0]) is Replay and type(res[1]) is Conflict and res[2] is None
    assert store.count_readings() == 4


# -- queries ---------------------------------------------------------------------------------


def test_readings_paging_and_time_range(store: TwinStore):
    a = store.register("alpha", keys.DeviceKey.generate().public)
    b = store.register("bravo", keys.DeviceKey.generate().public)
    batch = []
    for i in range(30):
        kid = a.kid if i % 3 else b.kid
        batch.append(_accepted(kid, i, float(i), received_at=1000.0 + i))
    assert store.commit(batch, []) == [None] * 30
    newest = store.readings(limit=10)
    assert [r["payload"]["temp"] for r in newest] == [float(i) for i in range(20, 30)]
    assert [r["id"] for r in newest] == sorted(r["id"] for r in newest)
    seen, after = [], 0
    while True:
        page = store.readings(limit=7, after_id=after)
        if not page:
            break
        seen += page
        after = page[-1]["id"]
    assert [r["seq"] for r in seen] == list(range(30))
    assert len({r["id"] for r in seen}) == 30
    alpha = store.readings("alpha", limit=100)
    assert [r["seq"] for r in alpha] == [i for i in range(30) if i % 3]
    assert all(r["device"] == "alpha" for r in alpha)
    assert store.count_readings("alpha") == 20 and store.count_readings() == 30
    window = store.readings(since=1005.0, until=1010.0)
    assert [r["seq"] for r in window] == [5, 6, 7, 8, 9]  # [since, until)
    assert [r["seq"] for r in store.readings("bravo", since=1010.0)] == [12, 15, 18, 21, 24,
                                                                          27]
    assert [r["seq"] for r in store.readings(until=1002.0)] == [0, 1]
    assert store.readings(since=2000.0) == [] and store.readings("nobody") == []


def test_events_filters_audit_and_pages(store: TwinStore):
    a = store.register("alpha", keys.DeviceKey.generate().public)
    store.record_events([Event("bad_signature", f"forged {i}", a.kid, i) for i in range(5)],
                        aggregate=False)
    store.record_events([Event("malformed", "not a frame")], aggregate=False)
    store.revoke("alpha", "lost")
    everything = store.events()
    assert [e["reason"] for e in everything] == (
        ["registered"] + ["bad_signature"] * 5 + ["malformed", "revoked_by_operator"])
    refusals = store.events(audit=False)
    assert [e["reason"] for e in refusals] == ["bad_signature"] * 5 + ["malformed"]
    assert [e["reason"] for e in store.events("alpha", audit=False)] == ["bad_signature"] * 5
    assert refusals[-1]["device"] is None and refusals[0]["device"] == "alpha"
    page = store.events(limit=2, after_id=everything[2]["id"], audit=False)
    assert [e["seq"] for e in page] == [2, 3]
    assert [e["seq"] for e in store.events(limit=2, audit=False)] == [4, None]
    assert store.count_events() == 8 and store.count_events("alpha") == 7
    assert store.status("alpha")["refused"] == 5  # audit events are not refusals


def test_twin_key_binding(store: TwinStore, twin_key):
    assert store.twin_fingerprint() is None
    fp = keys.fingerprint(twin_key.public)
    store.bind_twin_key(fp)
    store.bind_twin_key(fp)
    assert store.twin_fingerprint() == fp
    with pytest.raises(twinlink.store.TwinKeyMismatch) as e:
        store.bind_twin_key("0" * 16)
    assert fp in str(e.value)


def test_closed_store_raises_storage_error(store: TwinStore):
    store.register("alpha", keys.DeviceKey.generate().public)
    store.close()
    for call in (store.devices, lambda: store.device("alpha"), store.next_kid,
                 lambda: store.readings(), lambda: store.revoke("alpha")):
        with pytest.raises(StorageError):
            call()
    store.close()  # idempotent


# -- SQLite files ----------------------------------------------------------------------------


def test_corrupt_database_file_is_a_storage_error(tmp_path: Path):
    db = tmp_path / "twin.db"
    db.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(StorageError) as e:
        SQLiteStore(str(db))
    assert str(db) in str(e.value)
    with pytest.raises(StorageError):
        twinlink.store.open_store(db)
    p = subprocess.run([*CLI, "twin", "list", "--db", str(db)], capture_output=True, text=True,
                       env=cli_env(), timeout=60)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("twinlink: ")


def test_truncated_database_is_a_storage_error(tmp_path: Path):
    db = tmp_path / "twin.db"
    with SQLiteStore(str(db)) as s:
        s.register("alpha", keys.DeviceKey.generate().public)
    raw = db.read_bytes()
    db.write_bytes(raw[:100] + bytes(len(raw) - 100))  # header kept, pages zeroed
    with pytest.raises(StorageError):
        s2 = SQLiteStore(str(db))
        try:
            s2.devices()
        finally:
            s2.close()


def test_read_only_database_is_a_storage_error(tmp_path: Path):
    db = tmp_path / "twin.db"
    with SQLiteStore(str(db)) as s:
        s.register("alpha", keys.DeviceKey.generate().public)
    with SQLiteStore(str(db), readonly=True) as ro:
        assert [d.name for d in ro.devices()] == ["alpha"]
        with pytest.raises(StorageError):
            ro.register("bravo", keys.DeviceKey.generate().public)
        with pytest.raises(StorageError):
            ro.revoke("alpha")
    # A file the process cannot write (immutable: even root cannot).
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    try:
        with pytest.raises(StorageError):
            s = SQLiteStore(str(db))
            try:
                s.register("bravo", keys.DeviceKey.generate().public)
            finally:
                s.close()
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


def test_database_files_are_private(tmp_path: Path, twin_key):
    old = os.umask(0)  # the files must be private by construction, not by the umask
    try:
        db = tmp_path / "twin.db"
        with Twin(str(db), twin_key) as twin:
            dk = keys.DeviceKey.generate()
            twin.register("alpha", dk.public)
            dev = _bundle_device("alpha", b"\x01", twin_key, dk, tmp_path / "st", b"")
            twin.open(dev.seal({"v": 1}))
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert all(f.exists() for f in files)
            for f in files:
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        os.umask(old)
    os.chmod(db, 0o644)  # an existing database we own is tightened when opened
    SQLiteStore(str(db)).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_a_newer_schema_is_refused_clearly(tmp_path: Path):
    db = tmp_path / "twin.db"
    SQLiteStore(str(db)).close()
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    for ro in (False, True):
        with pytest.raises(StorageError) as e:
            SQLiteStore(str(db), readonly=ro)
        msg = str(e.value)
        assert "newer" in msg and str(SCHEMA_VERSION + 1) in msg and "upgrade" in msg
    with sqlite3.connect(db) as c:  # refused without touching it
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


# The schema twinlink 0.1 wrote (git show adc6cdf:twinlink/store.py), copied verbatim.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    kid BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key BLOB NOT NULL,
    profile TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    master_salt BLOB NOT NULL DEFAULT x'',
    id_context BLOB,
    epoch INTEGER NOT NULL DEFAULT 0,
    registered_at REAL NOT NULL,
    revoked_at REAL,
    win_size INTEGER NOT NULL,
    win_top INTEGER NOT NULL DEFAULT -1,
    win_bits BLOB NOT NULL,
    win_lost INTEGER NOT NULL DEFAULT 0,
    ack_seq INTEGER NOT NULL DEFAULT 0,
    last_seen REAL,
    last_seq INTEGER,
    accepted INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    kid BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    received_at REAL NOT NULL,
    time REAL,
    provenance TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL,
    plaintext BLOB NOT NULL,
    UNIQUE (kid, epoch, seq)
);
CREATE TABLE IF NOT EXISTS state (
    kid BLOB NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    unit TEXT,
    time REAL,
    seq INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kid, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kid BLOB,
    seq INTEGER,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_kid ON events (kid, at);
CREATE TABLE IF NOT EXISTS retired_contexts (
    kid BLOB NOT NULL,
    context TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    retired_at REAL NOT NULL,
    PRIMARY KEY (kid, context)
);
"""


def test_the_0_1_schema_migrates_with_its_data(tmp_path: Path, twin_key, backend_name):
    db = tmp_path / "twin.db"
    dk = keys.DeviceKey.generate()
    pt = senml.encode({"temp": 21.5})
    with sqlite3.connect(db) as c:
        c.executescript(V1_SCHEMA)
        c.execute("INSERT OR IGNORE INTO meta VALUES ('schema', '1')")
        c.execute("INSERT INTO devices (kid, name, public_key, profile, registered_at, win_size,"
                  " win_top, win_bits, accepted, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (b"\x01", "pump", dk.public, "twinlink/1", 1700000000.0, 64, 0,
                   (1 << 63).to_bytes(8, "big"), 1, 0))
        c.execute("INSERT INTO readings (kid, epoch, seq, received_at, time, provenance, payload,"
                  " plaintext) VALUES (?,?,?,?,?,?,?,?)",
                  (b"\x01", 0, 0, 1700000001.0, None, "signed", '{"temp":21.5}', pt))
        c.execute("INSERT INTO state VALUES (?,?,?,?,?,?,?)",
                  (b"\x01", "temp", "21.5", None, None, 0, 1700000001.0))
        c.execute("INSERT INTO events (at, kid, seq, reason, detail) VALUES (?,?,?,?,?)",
                  (1700000002.0, b"\x01", 0, "replay", "seq 0 again"))
    with SQLiteStore(str(db)) as s:
        rec = s.device("pump")
        assert (rec.kid, rec.public_key, rec.pending_salt, rec.epoch) == (b"\x01", dk.public,
                                                                           None, 0)
        rows = s.readings("pump")
        assert [(r["seq"], r["payload"]) for r in rows] == [(0, {"temp": 21.5})]
        assert s.status("pump")["state"]["temp"]["value"] == 21.5
        assert [e["reason"] for e in s.events("pump")] == ["replay"]
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # The migrated store ingests: seq 0 is stored (a replay), seq 1 is new.
    dev = _bundle_device("pump", b"\x01", twin_key, dk, tmp_path / "st", b"")
    with Twin(str(db), twin_key) as twin:
        ctx, sk = dev.bundle.context(), dk.secret64
        res = twin.open_many([frame.seal(sk, ctx, 0, pt), frame.seal(sk, ctx, 1, pt)])
        assert isinstance(res[0], ReplayError)
        assert isinstance(res[1], twinlink.Reading) and res[1].seq == 1
        assert twin.store.count_readings("pump") == 2
    SQLiteStore(str(db)).close()  # reopening a migrated database is a no-op

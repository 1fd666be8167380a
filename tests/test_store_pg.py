"""The PostgreSQL store against a real server, and what both stores share beyond the basic
contract: the commit race between two ingest connections, schema migrations, retention, ingest
client-id claims, and how database failures surface (StorageError, exit code 5, no secrets).

Tests taking ``db_url`` run once per store: a SQLite file and a fresh PostgreSQL database.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import CLI, cli_env
from pg import PASSWORD, PgServer, pg_factory, pg_server, pg_url, requires_postgres

import twinlink
from twinlink import keys
from twinlink.errors import Replay, ReplayError
from twinlink.provision import provision
from twinlink.store import (
    SCHEMA_VERSION,
    ClientIdInUse,
    StorageError,
    StoreUnavailable,
    TwinStore,
    open_store,
)
from twinlink.store.postgres import PostgresStore, redact_url

__all__ = ["pg_factory", "pg_server", "pg_url"]  # fixtures used by name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=requires_postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ``--db`` value naming a new, empty twin database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "twin.db")
    return str(request.getfixturevalue("pg_url"))


class Fleet:
    """A twin key and devices registered in ``db``, with their bundles on disk."""

    def __init__(self, root: Path, db: str, names: tuple[str, ...] = ("pump",),
                 window: int = 64) -> None:
        self.root, self.db = root, db
        self.tk = keys.TwinKey.generate()
        keys.write_private(root / "twin.key", self.tk.to_pem())
        keys.write_public(root / "twin.pub", self.tk.public_pem())
        with open_store(db) as store:
            for i, name in enumerate(names, 1):
                provision(name, root / "twin.pub", root / "keys", db=store, kid=bytes([i]))
                if window != 64:
                    # provision registers with the default window; re-register wider
                    pass
        self.devices: dict[str, twinlink.Device] = {}

    def device(self, name: str) -> twinlink.Device:
        if name not in self.devices:
            self.devices[name] = twinlink.Device.load(self.root / "keys" / f"{name}.device",
                                                      self.root / "state")
        return self.devices[name]

    def twin(self, store: TwinStore | None = None) -> twinlink.Twin:
        return twinlink.Twin(store if store is not None else self.db, self.tk)

    def close(self) -> None:
        for d in self.devices.values():
            d.close()


@pytest.fixture
def fleet(tmp_path: Path, db_url: str):
    f = Fleet(tmp_path, db_url, ("pump", "valve"))
    yield f
    f.close()


# -- the twin on both stores ------------------------------------------------------------------


def test_ingest_state_events_and_audit(fleet: Fleet) -> None:
    pump = fleet.device("pump")
    frames = pump.seal_many([{"t": 20.0 + i} for i in range(10)])
    with fleet.twin() as twin:
        results = twin.open_many(frames + frames[:2])
        assert [getattr(r, "seq", None) for r in results[:10]] == list(range(10))
        assert all(isinstance(r, Replay) for r in results[10:])
        st = twin.store.status("pump")
        assert st["accepted"] == 10 and st["refused"] == 2 and st["last_seq"] == 9
        assert st["state"]["t"]["value"] == 29.0
        rows = twin.store.readings("pump", limit=3)
        assert [r["seq"] for r in rows] == [7, 8, 9] and rows[-1]["payload"] == {"t": 29.0}
        assert [r["seq"] for r in twin.store.readings(after_id=rows[0]["id"])] == [8, 9]
        assert twin.store.count_readings() == 10 and twin.store.count_readings("valve") == 0
        # the first refusal stands alone, the repeat is aggregated into a counted row
        ev = twin.store.events("pump", audit=False)
        assert sum(e["count"] for e in ev) == 2 and {e["type"] for e in ev} == {"frame.replay"}
        twin.store.revoke("valve", "stolen")
        audit = [e["reason"] for e in twin.store.events("valve")]
        assert audit == ["registered", "revoked_by_operator"]
        assert twin.store.count_events("valve") == 2


def test_reanchor_rekey_and_context_renewal(fleet: Fleet) -> None:
    pump = fleet.device("pump")
    with fleet.twin() as twin:
        twin.open_many(pump.seal_many([{"i": i} for i in range(3)]))
        twin.store.mark_window_lost("pump")
        assert twin.store.status("pump")["window_lost"]
        with pytest.raises(ReplayError):
            twin.open(pump.seal({"i": 3}))
        assert twin.store.reanchor("pump", 10) == 2
        assert twin.open(pump.seal_many([{"i": i} for i in range(8)])[-1]).seq == 11
        old = twin.store.device("pump")
        new = twin.store.rekey("pump", b"salt-2", b"ctx")
        assert new.epoch == old.epoch + 1
        assert twin.store.context_status(new.kid, old.master_salt, old.id_context) == "retired"
        assert twin.store.context_status(new.kid, b"salt-2", b"ctx") == "current"
        reasons = [e["reason"] for e in twin.store.events("pump")]
        assert [r for r in reasons if r != "window_lost"][-3:] == [
            "window_marked_lost", "reanchored", "rekeyed"]


def test_twin_key_binding(fleet: Fleet) -> None:
    with fleet.twin():
        pass
    other = keys.TwinKey.generate()
    with pytest.raises(twinlink.store.TwinKeyMismatch):
        twinlink.Twin(fleet.db, other)


# -- two ingest connections racing on one device --------------------------------------------


class _Gate:
    """Holds every caller of ``lookup`` until ``parties`` have looked up: all of them then
    commit with the same, stale window (the interleaving the row lock must make safe)."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    def wrap(self, store: TwinStore) -> TwinStore:
        lookup = store.lookup

        def gated(kid: bytes):  # type: ignore[no-untyped-def]
            st = lookup(kid)
            self.barrier.wait()
            return st

        store.lookup = gated  # type: ignore[method-assign]
        return store


@pytest.mark.parametrize("parties", [2, 3])
def test_racing_workers_store_each_frame_once(fleet: Fleet, parties: int) -> None:
    """Deterministic race, many rounds: every worker has read the window before any commits,
    so every worker verifies the frame and asks to store it; exactly one commit stores it and
    the others are refused as duplicates (authenticated, safe to acknowledge)."""
    gate = _Gate(parties)
    twins = [fleet.twin(gate.wrap(open_store(fleet.db))) for _ in range(parties)]
    pump = fleet.device("pump")
    rounds = 60
    frames = pump.seal_many([{"i": i} for i in range(rounds)])
    outcomes: list[list[object]] = [[] for _ in range(parties)]

    def run(k: int) -> None:
        for f in frames:
            outcomes[k].append(twins[k].open_many([f])[0])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(parties)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        for i in range(rounds):
            got = [outcomes[k][i] for k in range(parties)]
            stored = [r for r in got if isinstance(r, twinlink.Reading)]
            assert len(stored) == 1, got
            for r in got:
                if not isinstance(r, twinlink.Reading):
                    assert isinstance(r, Replay) and r.frame.duplicate, r
        with open_store(fleet.db) as s:
            seqs = [r["seq"] for r in s.readings("pump", limit=10 * rounds)]
            assert seqs == list(range(rounds))
            assert s.status("pump")["accepted"] == rounds
    finally:
        for t in twins:
            t.close()


# -- retention ---------------------------------------------------------------------------------


def test_retention_prunes_old_readings_and_refusals_but_keeps_audit(fleet: Fleet) -> None:
    pump = fleet.device("pump")
    with fleet.twin() as twin:
        store = twin.store
        assert store.retention() == {"readings_days": None, "events_days": None}
        frames = pump.seal_many([{"i": i} for i in range(6)])
        twin.open_many(frames)
        twin.open_many(frames[:1])  # one replay event
        assert store.prune() == (0, 0)  # no limits: nothing goes
        store.set_retention(1.0, 2.0)
        assert store.retention() == {"readings_days": 1.0, "events_days": 2.0}
        with pytest.raises(ValueError):
            store.set_retention(0, None)
        assert store.prune() == (0, 0)  # everything is younger than a day
        n_readings, n_events = store.prune(now=store.readings(limit=1)[0]["received_at"]
                                           + 1.5 * 86400)
        assert (n_readings, n_events) == (6, 0)
        assert store.count_readings() == 0
        assert store.status("pump")["state"]["i"]["value"] == 5  # latest values stay
        later = store.events(limit=1000)[-1]["at"] + 3 * 86400
        assert store.prune(now=later) == (0, 1)
        reasons = [e["reason"] for e in store.events(limit=1000)]
        assert "replay" not in reasons and reasons.count("registered") == 2
        store.set_retention(None, None)
        assert store.retention() == {"readings_days": None, "events_days": None}


# -- ingest client-id claims ---------------------------------------------------------------


def test_client_id_claim_is_exclusive_until_close(db_url: str, tmp_path: Path) -> None:
    Fleet(tmp_path, db_url)
    a, b = open_store(db_url), open_store(db_url)
    try:
        a.claim_ingest("worker-1")
        a.claim_ingest("worker-1")  # again by the holder: fine
        with pytest.raises(ClientIdInUse, match="worker-1"):
            b.claim_ingest("worker-1")
        b.claim_ingest("worker-2")
        a.close()
        b.claim_ingest("worker-1")
    finally:
        a.close()
        b.close()


# -- schema versions -----------------------------------------------------------------------


@requires_postgres
def test_pg_schema_is_versioned_and_migrated_once(pg_server: PgServer) -> None:
    url = pg_server.new_database()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            open_store(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    rows = pg_server.sql(url, "SELECT version FROM twinlink_migrations")
    assert sorted(rows) == [(v,) for v in range(3, SCHEMA_VERSION + 1)]
    with PostgresStore(url) as s:
        assert s.schema_version() == SCHEMA_VERSION
    pg_server.sql(url, "INSERT INTO twinlink_migrations VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match="newer than this twinlink"):
        open_store(url)


@requires_postgres
def test_pg_must_exist_and_readonly_refuse_an_empty_database(pg_server: PgServer) -> None:
    url = pg_server.new_database()
    for kw in ({"must_exist": True}, {"readonly": True}):
        with pytest.raises(StorageError, match="no twin database"):
            open_store(url, **kw)  # type: ignore[arg-type]
    assert pg_server.sql(url, "SELECT to_regclass('devices') IS NULL") == [(True,)]
    open_store(url).close()
    with open_store(url, readonly=True) as ro:
        assert ro.devices() == []
        with pytest.raises(StorageError, match="read-only"):
            ro.set_retention(1, 1)


def test_sqlite_version_2_database_migrates_to_current(tmp_path: Path) -> None:
    """A schema-2 file (before the event catalogue columns) opens and is migrated in place."""
    db = tmp_path / "old.db"
    with open_store(str(db)):
        pass
    con = sqlite3.connect(db)
    with con:
        con.execute("DROP TABLE events")
        con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at REAL NOT NULL, kid BLOB,"
                    " seq INTEGER, reason TEXT NOT NULL, detail TEXT NOT NULL,"
                    " source TEXT NOT NULL DEFAULT '')")
        con.execute("INSERT INTO events (at, reason, detail) VALUES (1.0, 'replay', 'old')")
        con.execute("ALTER TABLE readings DROP COLUMN flags")
        con.execute("PRAGMA user_version=2")
    con.close()
    with open_store(str(db)) as s:
        [e] = s.events()
        assert (e["type"], e["count"]) == ("frame.replay", 1)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_sqlite_version_3_database_gets_the_device_page_indexes(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    open_store(str(db)).close()
    con = sqlite3.connect(db)
    with con:
        con.execute("DROP INDEX readings_kid_id")
        con.execute("DROP INDEX events_kid_id")
        con.execute("PRAGMA user_version=3")
    con.close()
    open_store(str(db)).close()
    con = sqlite3.connect(db)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"readings_kid_id", "events_kid_id"} <= names
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


# -- failures: unreachable, wrong credentials, refused writes, restarts ---------------------


@requires_postgres
def test_wrong_password_and_unreachable_server_are_one_line_exit_5(
        pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.new_database()
    open_store(url).close()
    bad_pw = url.replace(PASSWORD, "not-the-password")
    with pytest.raises(StoreUnavailable) as info:
        open_store(bad_pw)
    assert "not-the-password" not in str(info.value) and "password authentication" in str(
        info.value)
    assert isinstance(info.value, StorageError) and isinstance(info.value, OSError)
    dead = f"postgresql://twinlink:{PASSWORD}@127.0.0.1:9/x?connect_timeout=2"
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        open_store(dead)
    for db in (bad_pw, dead):
        r = subprocess.run([*CLI, "twin", "list", "--db", db], capture_output=True, text=True,
                           env=cli_env(), timeout=60)
        assert r.returncode == 5, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("twinlink: cannot connect"), r.stderr
        assert PASSWORD not in r.stderr and "not-the-password" not in r.stderr
        assert "Traceback" not in r.stderr


@requires_postgres
def test_redacted_url_never_shows_a_password() -> None:
    assert redact_url("postgresql://u:secret@h:5/db?sslmode=require&password=x") == \
        "postgresql://u@h:5/db"
    assert redact_url("postgresql:///db?host=/run/pg") == "postgresql://[/run/pg]/db"
    assert "secret" not in repr(redact_url("postgres://u:secret@h/db"))


@requires_postgres
def test_a_database_that_refuses_writes_raises_storage_error_and_recovers(
        pg_server: PgServer, tmp_path: Path) -> None:
    """A role that lost its write permission: the commit raises StorageError, nothing is
    stored and the window does not move; granted again, the same frames go in."""
    url = pg_server.new_database()
    f = Fleet(tmp_path, url)
    pg_server.sql(url, "CREATE ROLE ingest LOGIN PASSWORD 'ingest-pw'")
    pg_server.sql(url, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                       "TO ingest")
    ingest_url = url.replace(f"twinlink:{PASSWORD}", "ingest:ingest-pw")
    frames = f.device("pump").seal_many([{"i": i} for i in range(5)])
    try:
        with f.twin(open_store(ingest_url)) as twin:
            twin.open_many(frames[:1])
            pg_server.sql(url, "REVOKE INSERT ON readings FROM ingest")
            with pytest.raises(StorageError, match="permission denied"):
                twin.open_many(frames[1:])
            assert twin.store.count_readings() == 1
            assert twin.store.status("pump")["last_seq"] == 0
            pg_server.sql(url, "GRANT INSERT ON readings TO ingest")
            assert [r.seq for r in twin.open_many(frames[1:])] == [1, 2, 3, 4]  # type: ignore[union-attr]
    finally:
        f.close()


@requires_postgres
@pytest.mark.parametrize("how", ["restart", "kill"])
def test_store_reconnects_after_a_server_restart(pg_factory, tmp_path: Path, how: str) -> None:
    server = pg_factory()
    url = server.new_database()
    f = Fleet(tmp_path, url)
    frames = f.device("pump").seal_many([{"i": i} for i in range(4)])
    try:
        with f.twin() as twin:
            twin.open_many(frames[:2])
            twin.store.claim_ingest("w1")
            if how == "kill":
                server.kill()
                server.start()
            else:
                server.restart()
            # The first call after the restart may meet the dead connection (StorageError,
            # nothing stored); the store reconnects on the next call.
            try:
                res = twin.open_many(frames[2:])
            except StorageError:
                res = twin.open_many(frames[2:])
            assert [r.seq for r in res] == [2, 3]  # type: ignore[union-attr]
            assert [r["seq"] for r in twin.store.readings()] == [0, 1, 2, 3]
            with open_store(url) as other, pytest.raises(ClientIdInUse):
                other.claim_ingest("w1")  # re-claimed on reconnect
    finally:
        f.close()


def test_a_value_postgres_cannot_hold_refuses_only_its_reading(fleet: Fleet) -> None:
    """A SenML name with a NUL character: SQLite stores it; PostgreSQL text cannot hold it, and
    the twin refuses only that reading (internal_error), never the batch or the database."""
    pump = fleet.device("pump")
    frames = pump.seal_many([{"ok": 1}, {"bad\x00name": 2}, {"ok": 3}])
    with fleet.twin() as twin:
        res = twin.open_many(frames)
        assert isinstance(res[0], twinlink.Reading) and isinstance(res[2], twinlink.Reading)
        if fleet.db.startswith("postgresql://"):
            assert getattr(res[1], "reason", None) == "internal_error"
            assert twin.store.count_readings() == 2
        else:
            assert isinstance(res[1], twinlink.Reading)
        assert twin.open(pump.seal({"ok": 4})).seq == 3


def test_acks_of_several_ingests_sharing_a_store_never_collide(db_url: str,
                                                                tmp_path: Path) -> None:
    """Four ingest workers on one store each acknowledge a share of one device's frames. Acks
    v2 keep no counter in the database: each process seals under its own random twin Sender
    ID, so no (Sender ID, Partial IV) pair repeats and the device opens every ack (a repeat
    would be refused as a replayed ack, and the frames it names would wait for a resend)."""
    from twinlink.delivery import AckOpener
    from twinlink.ingest.acks import Acknowledger

    f = Fleet(tmp_path, db_url)
    dev = f.device("pump")
    twins = [f.twin() for _ in range(4)]
    try:
        frames = dev.seal_many([{"i": i} for i in range(40)])
        acks: list[bytes] = []
        for k, twin in enumerate(twins):
            ack_ = Acknowledger(twin)
            answer = ack_.answer(twin.open_many(frames[k::4]))
            assert answer.stored == 10
            acks += [a for _, a in answer.acks]
        opener = AckOpener(dev.bundle)
        named: set[int] = set()
        seen: set[tuple[bytes, int]] = set()
        for data in acks:
            a = opener.open(data)
            assert (a.sender_id, a.seq) not in seen
            seen.add((a.sender_id, a.seq))
            named.update(seq for seq, _ in a.stored)
        assert named == set(range(40))
        assert len({s for s, _ in seen}) == 4
    finally:
        for t in twins:
            t.close()
        f.close()

"""``twinlink twin migrate --from twin.db --to postgresql://…``: the whole twin moves, the twin
goes on where it stopped, and the copy is refused while anything writes the source."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import CLI, cli_env
from pg import PASSWORD, PgServer, pg_server, requires_postgres
from test_store_pg import Fleet

import twinlink
from twinlink.errors import Replay
from twinlink.store import SQLiteStore, open_store

pytestmark = requires_postgres
__all__ = ["pg_server"]


def _migrate(src: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "twin", "migrate", "--from", str(src), "--to", url, *extra],
                          capture_output=True, text=True, env=cli_env(), timeout=120)


def _snapshot(store) -> dict:
    """Everything a user can read through the interface."""
    return {
        "devices": store.devices(),
        "status": {d.name: store.status(d.name) for d in store.devices()},
        "readings": store.readings(limit=10**6),
        "events": store.events(limit=10**6),
        "retention": store.retention(),
        "fingerprint": store.twin_fingerprint(),
    }


def test_migrate_moves_the_whole_twin_and_ingest_goes_on(tmp_path: Path,
                                                          pg_server: PgServer) -> None:
    db = tmp_path / "twin.db"
    fleet = Fleet(tmp_path, str(db), ("pump", "valve", "gate"))
    pump, valve = fleet.device("pump"), fleet.device("valve")
    old_frames = pump.seal_many([{"t": float(i)} for i in range(30)])
    with fleet.twin() as twin:
        twin.open_many(old_frames)
        twin.open_many(valve.seal_many([{"open": i % 2 == 0} for i in range(5)]))
        twin.open_many(old_frames[:3])  # replays: events, one aggregated
        twin.store.rekey("valve", b"new-salt", None)
        twin.store.revoke("gate", "decommissioned")
        twin.store.set_retention(30, 400)
    with SQLiteStore(str(db), readonly=True) as src:  # after the twin saved its detect state
        before = _snapshot(src)
    url = pg_server.new_database()
    r = _migrate(db, url, "--json")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)
    assert counts["devices"] == 3 and counts["readings"] == 35
    assert counts["events"] == len(before["events"])
    assert PASSWORD not in r.stdout + r.stderr
    with open_store(url) as pg:
        assert _snapshot(pg) == before
    # The twin goes on where it stopped: old frames are replays, new ones are stored after
    # the migrated rows (ids continue).
    with fleet.twin(open_store(url)) as twin:
        assert isinstance(twin.open_many(old_frames[-1:])[0], Replay)
        r30 = twin.open(pump.seal({"t": 30.0}))
        assert r30.seq == 30
        rows = twin.store.readings("pump", limit=2)
        assert rows[-1]["seq"] == 30 and rows[-1]["id"] > max(
            x["id"] for x in before["readings"])
        assert twin.store.status("pump")["accepted"] == 31
    # the source is left as it was
    with SQLiteStore(str(db), readonly=True) as src:
        assert src.count_readings() == 35
    fleet.close()


def test_migrate_refuses_a_source_being_written_and_a_non_empty_target(
        tmp_path: Path, pg_server: PgServer) -> None:
    db = tmp_path / "twin.db"
    fleet = Fleet(tmp_path, str(db))
    url = pg_server.new_database()
    # an ingest running on the source holds its client-id lock
    ingest = SQLiteStore(str(db))
    ingest.claim_ingest("twinlink-ingest")
    r = _migrate(db, url)
    assert r.returncode == 4 and "ingest is running" in r.stderr, r.stderr
    ingest.close()
    # another writer holding the write lock
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    r = _migrate(db, url)
    assert r.returncode == 4 and "writing" in r.stderr, r.stderr
    blocker.execute("ROLLBACK")
    blocker.close()
    assert pg_server.sql(url, "SELECT to_regclass('devices') IS NULL") == [(True,)] or \
        pg_server.sql(url, "SELECT COUNT(*) FROM devices") == [(0,)]
    r = _migrate(db, url)
    assert r.returncode == 0, r.stderr
    r = _migrate(db, url)  # again: the target holds a twin now
    assert r.returncode == 1 and "already holds a twin" in r.stderr
    assert pg_server.sql(url, "SELECT COUNT(*) FROM devices") == [(1,)]
    # a missing source, an unreachable target
    r = _migrate(tmp_path / "nope.db", url)
    assert r.returncode == 1 and "no twin database" in r.stderr
    r = _migrate(db, f"postgresql://twinlink:{PASSWORD}@127.0.0.1:9/x?connect_timeout=2")
    assert r.returncode == 5 and PASSWORD not in r.stderr
    fleet.close()


@pytest.mark.parametrize("bad", ["twin2.db", "mysql://x/y"])
def test_migrate_wants_a_file_and_a_postgres_url(tmp_path: Path, bad: str) -> None:
    r = _migrate(tmp_path / "twin.db", bad)
    assert r.returncode == 2 and "--to must be a postgresql:// URL" in r.stderr


def test_reading_shapes_survive_the_copy(tmp_path: Path, pg_server: PgServer) -> None:
    """Payload JSON, SenML records with units and times, raw CBOR payloads."""
    db = tmp_path / "twin.db"
    fleet = Fleet(tmp_path, str(db))
    pump = fleet.device("pump")
    with fleet.twin() as twin:
        twin.open(pump.seal({"temp": 21.5, "door": "open", "ok": True, "raw": b"\x00\x01"},
                            time=1700000000.25))
        twin.open(pump.seal_raw(b"\x83\x01\x02\x03"))
    url = pg_server.new_database()
    assert _migrate(db, url).returncode == 0
    with SQLiteStore(str(db)) as a, open_store(url) as b:
        assert a.readings() == b.readings() and a.status("pump") == b.status("pump")
    with twinlink.Twin(url, fleet.tk) as twin:
        assert twin.open(pump.seal({"temp": 1})).seq == 2
    fleet.close()

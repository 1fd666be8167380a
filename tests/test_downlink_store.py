"""The twin store's downlink tables (twinlink.store.downlink) on both stores, a SQLite file and
a fresh PostgreSQL database: desired versions, due frames and PIVs, resends, reports at ingest
(in the commit), command outcomes, and the v4 -> v5 SQLite migration."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from pg import pg_server, pg_url, requires_postgres  # noqa: F401 - fixtures

import twinlink
from twinlink import keys
from twinlink.provision import provision
from twinlink.store import SCHEMA_VERSION, open_store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=requires_postgres)])
def fleet(request: pytest.FixtureRequest, tmp_path: Path):
    db = (str(tmp_path / "twin.db") if request.param == "sqlite"
          else str(request.getfixturevalue("pg_url")))
    tk = keys.TwinKey.generate()
    keys.write_private(tmp_path / "twin.key", tk.to_pem())
    keys.write_public(tmp_path / "twin.pub", tk.public_pem())
    with open_store(db) as store:
        for i, name in enumerate(("pump", "valve"), 1):
            provision(name, tmp_path / "twin.pub", tmp_path / "keys", db=store, kid=bytes([i]))
    twin = twinlink.Twin(db, tk)
    devs = {n: twinlink.Device.load(tmp_path / "keys" / f"{n}.device", tmp_path / "state")
            for n in ("pump", "valve")}
    yield twin, devs
    for d in devs.values():
        d.close()
    twin.close()


def test_desired_versions_grow_and_keep_other_keys(fleet) -> None:
    twin, _ = fleet
    s = twin.store
    v1 = s.set_desired("pump", {"interval": 5, "mode": "eco"})
    v2 = s.set_desired("pump", {"interval": 10}, now=0.0)  # a clock set back: still newer
    assert v2 > v1
    view = {r["key"]: r for r in s.desired_view("pump")}
    assert view["interval"]["desired"] == 10 and view["interval"]["version"] == v2
    assert view["mode"]["desired"] == "eco" and view["mode"]["version"] == v1
    assert {r["status"] for r in view.values()} == {"pending"}


def test_due_frames_piv_and_resend(fleet) -> None:
    twin, _ = fleet
    s = twin.store
    now = time.time()
    v = s.set_desired("pump", {"interval": 5}, now=now)
    cid = s.queue_command("valve", "open", {"pct": 50}, int(now) + 60, now=now)
    jobs = s.downlink_due(5.0, now=now)
    assert {(j.kind, j.kid) for j in jobs} == {("desired", b"\x01"), ("command", b"\x02")}
    d = next(j for j in jobs if j.kind == "desired")
    c = next(j for j in jobs if j.kind == "command")
    assert d.version == v and d.values == {"interval": 5}
    assert (c.command_id, c.method, c.args) == (cid, "open", {"pct": 50})
    assert s.downlink_due(5.0, now=now + 1) == []  # just sent: not due yet
    again = s.downlink_due(5.0, now=now + 6)  # unanswered: resent, with new PIVs
    assert len(again) == 2
    assert {j.piv for j in again}.isdisjoint({j.piv for j in jobs})
    assert all(j.piv > i.piv for j in again for i in jobs if i.kid == j.kid)
    # Past the deadline: expired, never sent again.
    assert [j.kind for j in s.downlink_due(5.0, now=now + 70)] == ["desired"]
    assert s.command(cid)["status"] == "expired"


def test_reports_at_ingest_update_the_tables(fleet) -> None:
    twin, devs = fleet
    s = twin.store
    v = s.set_desired("pump", {"interval": 5, "mode": "x"})
    cid = s.queue_command("pump", "reboot", None, int(time.time()) + 60)
    pump = devs["pump"]
    twin.open(pump.seal({"temp": 20.0, "tl:desired": v, "tl:rejected:mode": "unknown mode",
                         f"tl:cmd:{cid}": "ok", f"tl:cmd:{cid}:result": 42}))
    view = {r["key"]: r for r in s.desired_view("pump")}
    assert view["interval"]["status"] == "in sync" and view["interval"]["reported"] == 5
    assert view["mode"]["status"] == "rejected: unknown mode"
    assert s.command(cid)["status"] == "ok" and s.command(cid)["result"] == 42
    # Reports are not telemetry state.
    assert set(s.status("pump")["state"]) == {"temp"}
    # Reported: nothing due any more for the pump.
    assert s.downlink_due(0.0) == []


def test_a_device_cannot_answer_another_devices_command(fleet) -> None:
    twin, devs = fleet
    s = twin.store
    cid = s.queue_command("pump", "reboot", None, int(time.time()) + 60)
    twin.open(devs["valve"].seal({f"tl:cmd:{cid}": "ok"}))
    assert s.command(cid)["status"] == "pending"
    twin.open(devs["pump"].seal({f"tl:cmd:{cid}": "error: busy"}))
    assert s.command(cid)["status"] == "error" and s.command(cid)["result"] == "error: busy"


def test_older_reports_do_not_undo_newer_ones(fleet) -> None:
    twin, devs = fleet
    s = twin.store
    v1 = s.set_desired("pump", {"interval": 5})
    v2 = s.set_desired("pump", {"interval": 6})
    twin.open(devs["pump"].seal({"tl:desired": v2}))
    twin.open(devs["pump"].seal({"tl:desired": v1}))
    (row,) = s.desired_view("pump")
    assert row["status"] == "in sync" and row["reported"] == 6


def test_sqlite_v4_database_migrates(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with open_store(str(db)):
        pass
    con = sqlite3.connect(db)
    for t in ("desired", "reported", "commands", "downlink"):
        con.execute(f"DROP TABLE {t}")
    con.execute("PRAGMA user_version=4")
    con.commit()
    con.close()
    with open_store(str(db)) as store:
        assert store.downlink_due(0.0) == []
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

"""Many ingest workers on one shared subscription and one PostgreSQL: exactly-once storage kept
through a SIGKILLed worker, a broker restart, a database restart, a database refusing writes
and a worker started with another's client id.

Real components throughout: mosquitto started per test, PostgreSQL started by the suite
(tests/pg.py), ``twinlink serve`` processes, devices with their durable outboxes and end-to-end
acknowledgements (in this process), SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mosquitto import (
    Broker,
    Proc,
    broker_factory,
    publish,
    raw_client,
    requires_mosquitto,
    start_serve,
    wait_until,
)
from pg import PASSWORD, PgServer, pg_factory, pg_server, requires_postgres

from twinlink import Device, keys, transport
from twinlink.mqtt_link import MqttLink
from twinlink.provision import provision
from twinlink.store import open_store

pytestmark = [requires_mosquitto, requires_postgres, pytest.mark.mqtt]
__all__ = ["broker_factory", "pg_factory", "pg_server"]


class Fleet:
    """``n`` devices registered in ``db`` with their bundles, and frames sealed for each."""

    def __init__(self, root: Path, db: str, n: int) -> None:
        self.root, self.db = root, db
        tk = keys.TwinKey.generate()
        self.twin_key = root / "twin.key"
        keys.write_private(self.twin_key, tk.to_pem())
        keys.write_public(root / "twin.pub", tk.public_pem())
        self.names = [f"dev{i:03d}" for i in range(1, n + 1)]
        with open_store(db) as store:
            for i, name in enumerate(self.names, 1):
                provision(name, root / "twin.pub", root / "keys", db=store,
                          kid=i.to_bytes(2, "big"))
        self.devices = [Device.load(root / "keys" / f"{n}.device", root / "state")
                        for n in self.names]

    def seal(self, per_device: int) -> list[list[bytes]]:
        return [d.seal_many([{"i": k, "v": k * 0.5} for k in range(per_device)])
                for d in self.devices]

    @property
    def kids(self) -> list[bytes]:
        return [d.kid for d in self.devices]

    def close(self) -> None:
        for d in self.devices:
            d.close()


class Publishers:
    """One durable outbox link per device, all in this process (publishing in parallel)."""

    def __init__(self, fleet: Fleet, url: str, resend_after: float = 3.0) -> None:
        self.links: list[MqttLink] = []
        for d in fleet.devices:
            link = transport.open(url, device=d, window=64, timeout=300,
                                  resend_after=resend_after, capacity=100_000)
            assert isinstance(link, MqttLink)
            self.links.append(link)
        for link in self.links:
            assert link.wait_connected(20) and link.ack_subscribed.wait(20)

    def send(self, frames: list[list[bytes]]) -> None:
        threads = [threading.Thread(target=link.send_many, args=(f,))
                   for link, f in zip(self.links, frames)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    def pending(self) -> int:
        return sum(len(link.outbox) for link in self.links)

    def resent(self) -> int:
        return sum(link.stats.resent for link in self.links)

    def close(self) -> None:
        for link in self.links:
            link.close(5)


def _count(db: str) -> int:
    try:
        with open_store(db, readonly=True) as s:
            return s.count_readings()
    except Exception:  # the database restarting under us: try again
        return -1


def assert_exactly_once(db: str, fleet: Fleet, per_device: int) -> None:
    """Every (device, seq) stored once; counters agree."""
    with open_store(db, readonly=True) as s:
        rows = s.readings(limit=10**7)
        by_dev: dict[str, list[int]] = {}
        for r in rows:
            by_dev.setdefault(r["device"], []).append(r["seq"])
        for name in fleet.names:
            seqs = by_dev.get(name, [])
            assert len(seqs) == len(set(seqs)), f"{name}: duplicates"
            missing = sorted(set(range(per_device)) - set(seqs))
            assert not missing and len(seqs) == per_device, (
                f"{name}: {len(seqs)} stored, missing e.g. {missing[:5]}")
            assert s.status(name)["accepted"] == per_device
        assert len(rows) == per_device * len(fleet.names)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:  # no CONFIG_PROC_CHILDREN: scan
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            out.append(int(d))
                except OSError:
                    continue
        return out


def _serving_lines(p: Proc) -> int:
    return sum(1 for line in p.err if "serving $share" in line)


class Rig:
    """A broker, a database and what a test built on them; closed at the end of the test."""

    def __init__(self, root: Path, broker: Broker, db: str) -> None:
        self.root, self.broker, self.db = root, broker, db
        self._fleets: list[Fleet] = []
        self._pubs: list[Publishers] = []

    def fleet(self, n: int) -> Fleet:
        self._fleets.append(Fleet(self.root, self.db, n))
        return self._fleets[-1]

    def publishers(self, fleet: Fleet) -> Publishers:
        self._pubs.append(Publishers(fleet, self.broker.url))
        return self._pubs[-1]

    def close(self) -> None:
        for p in self._pubs:
            p.close()
        for f in self._fleets:
            f.close()


@pytest.fixture
def rig(tmp_path: Path, broker_factory, pg_server: PgServer) -> Iterator[Rig]:
    """A persistent broker and a fresh database on the session's PostgreSQL server."""
    r = Rig(tmp_path, broker_factory(persistence=True), pg_server.new_database())
    yield r
    r.close()


@contextmanager
def workers(mode: str, n: int, broker: Broker, db: str, key: Path, *extra: str
            ) -> Iterator[dict]:
    """``supervised``: one ``serve --workers n``; ``separate``: n ``serve --share`` processes.
    Yields ``{"kill_one": f, "procs": [...]}``: ``kill_one()`` SIGKILLs one worker and returns
    once it (the supervisor's replacement, or one we start with its client id) serves again."""
    common = ["--reconnect-max", "0.5", *extra]
    procs: list[Proc] = []
    if mode == "supervised":
        sup = Proc(["serve", "--mqtt", broker.url, "--db", db, "--twin-key", str(key),
                    "--workers", str(n), *common])
        procs.append(sup)

        def kill_one() -> None:
            before = _serving_lines(sup)
            os.kill(_children(sup.p.pid)[0], signal.SIGKILL)
            wait_until(lambda: _serving_lines(sup) > before, 60,
                       what="the supervisor to restart the killed worker")

        wait_until(lambda: _serving_lines(sup) >= n or sup.p.poll() is not None, 60,
                   what=f"{n} workers to subscribe")
        assert sup.p.poll() is None, sup.stderr()
    else:
        def start(i: int) -> Proc:
            return start_serve(broker.url, db, key, "--share", "g",  # type: ignore[arg-type]
                               "--client-id", f"w-{i}", *common, ready=60)

        def kill_one() -> None:
            procs[0].p.send_signal(signal.SIGKILL)
            procs[0].wait(10)
            procs[0] = start(0)  # the same client id: its session (and unacked frames) resume

        procs.extend(start(i) for i in range(n))
    try:
        yield {"kill_one": kill_one, "procs": procs}
    finally:
        for p in procs:
            p.terminate(30)
        for p in procs:
            # Failures the ingest expects (the database away) are logged; a bug is not.
            assert "unexpected error" not in p.stderr(), p.stderr()


# -- 20 000 frames from 50 devices, a worker SIGKILLed, the broker restarted ------------------

DEVICES, PER_DEVICE = 50, 400


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "n"), [("separate", 2), ("supervised", 4)])
def test_workers_store_every_frame_once_through_a_killed_worker_and_a_broker_restart(
        rig: Rig, mode: str, n: int) -> None:
    fleet = rig.fleet(DEVICES)
    frames = fleet.seal(PER_DEVICE)
    total = DEVICES * PER_DEVICE
    with workers(mode, n, rig.broker, rig.db, fleet.twin_key) as w:
        pubs = rig.publishers(fleet)
        sender = threading.Thread(target=pubs.send, args=(frames,))
        t0 = time.monotonic()
        sender.start()
        wait_until(lambda: _count(rig.db) >= total // 4, 120, 0.1, "a quarter stored")
        w["kill_one"]()
        wait_until(lambda: _count(rig.db) >= total // 2, 120, 0.1, "half stored")
        rig.broker.restart(kill=True)
        sender.join(120)
        wait_until(lambda: pubs.pending() == 0, 150, 0.2,
                   "every device's outbox to be acknowledged end to end")
        elapsed = time.monotonic() - t0
    assert_exactly_once(rig.db, fleet, PER_DEVICE)
    print(f"{mode} {n} workers: {total} frames in {elapsed:.1f}s "
          f"({total / elapsed:.0f} frames/s), {pubs.resent()} device resends")


# -- what a dying worker had in hand comes back with its session ----------------------------


def test_a_killed_workers_unacknowledged_frames_come_back_with_its_session(
        rig: Rig, pg_server: PgServer) -> None:
    """No device resends here (a raw publisher): the database is held so both workers sit on
    unacknowledged batches; one is SIGKILLed; after its restart (same client id) the broker
    redelivers its share and every frame is stored once. mosquitto 2 keeps a dead member's
    in-flight and newly routed messages in its session until it reconnects (SCALING.md)."""
    import psycopg

    db, fleet = rig.db, rig.fleet(4)
    frames = fleet.seal(50)
    raw = raw_client(rig.broker.port, "raw-publisher")
    blocker = psycopg.connect(db)
    try:
        with workers("separate", 2, rig.broker, db, fleet.twin_key) as w:
            blocker.execute("LOCK TABLE readings IN EXCLUSIVE MODE")  # commits wait
            for d, fs in zip(fleet.devices, frames):
                for f in fs[:25]:
                    publish(raw, f"twinlink/{d.kid.hex()}/t", f)

            def waiting() -> int:
                return int(pg_server.sql(db, "SELECT COUNT(*) FROM pg_stat_activity WHERE "
                                             "wait_event_type = 'Lock' AND application_name = "
                                             "'twinlink'")[0][0])

            wait_until(lambda: waiting() == 2, 60, 0.05, "both workers blocked in a commit")
            w["procs"][0].p.send_signal(signal.SIGKILL)
            w["procs"][0].wait(10)
            for d, fs in zip(fleet.devices, frames):  # routed to the dead member too
                for f in fs[25:]:
                    publish(raw, f"twinlink/{d.kid.hex()}/t", f)
            blocker.rollback()
            wait_until(lambda: _count(db) > 0, 30, 0.05, "the live worker to commit")
            assert _count(db) < 200, "the killed worker's share must still be missing"
            w["procs"][0] = start_serve(rig.broker.url, db, fleet.twin_key,  # type: ignore[arg-type]
                                        "--share", "g", "--client-id", "w-0",
                                        "--reconnect-max", "0.5", ready=60)
            wait_until(lambda: _count(db) == 200, 60, 0.1, "the killed worker's share")
        assert_exactly_once(db, fleet, 50)
    finally:
        raw.loop_stop()
        blocker.close()


# -- the database restarts, or refuses writes, under the workers ----------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fast", "immediate"])
def test_workers_reconnect_after_postgres_restarts_and_lose_nothing(
        tmp_path: Path, broker_factory, pg_factory, how: str) -> None:
    server = pg_factory()
    rig = Rig(tmp_path, broker_factory(persistence=True), server.new_database())
    try:
        fleet = rig.fleet(10)
        frames = fleet.seal(300)
        with workers("separate", 2, rig.broker, rig.db, fleet.twin_key) as w:
            pubs = rig.publishers(fleet)
            sender = threading.Thread(target=pubs.send, args=(frames,))
            sender.start()
            wait_until(lambda: _count(rig.db) >= 900, 120, 0.05, "a third stored")
            server.stop(how)  # immediate: no checkpoint, recovery from WAL on start
            time.sleep(1.0)  # down for a while: workers fail, hold, retry (not an ordering wait)
            server.start()
            sender.join(120)
            wait_until(lambda: pubs.pending() == 0, 150, 0.2, "every outbox acknowledged")
            errs = "".join(p.stderr() for p in w["procs"])
        assert_exactly_once(rig.db, fleet, 300)
        assert "ingest.storage_failure" in errs
        with open_store(rig.db) as s:
            kinds = [e["type"] for e in s.events(limit=1000, audit=False)]
        assert "ingest.storage_failure" in kinds  # recorded once the database was back
    finally:
        rig.close()


@pytest.mark.slow
def test_a_database_refusing_writes_stops_acknowledging_then_recovers(
        rig: Rig, pg_server: PgServer) -> None:
    """The workers' role loses INSERT on readings mid-stream: nothing is acknowledged (no
    device releases a frame not stored), ingest.storage_failure is raised, and when the grant
    comes back every frame is stored once."""
    db, fleet = rig.db, rig.fleet(5)
    pg_server.sql(db, "CREATE ROLE worker LOGIN PASSWORD 'worker-pw'")
    pg_server.sql(db, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                      "TO worker")
    worker_db = db.replace(f"twinlink:{PASSWORD}", "worker:worker-pw")
    frames = fleet.seal(200)
    with workers("separate", 2, rig.broker, worker_db, fleet.twin_key) as w:
        pubs = rig.publishers(fleet)
        pubs.send([f[:100] for f in frames])
        wait_until(lambda: pubs.pending() == 0, 60, 0.1, "the first half acknowledged")
        pg_server.sql(db, "REVOKE INSERT ON readings FROM worker")
        pubs.send([f[100:] for f in frames])
        wait_until(lambda: sum("ingest.storage_failure" in p.stderr()
                               for p in w["procs"]) == 2, 60, 0.1,
                   "both workers to raise ingest.storage_failure")
        assert _count(db) == 500
        # nothing acknowledged that is not stored: every outbox still holds its half
        assert pubs.pending() == 500
        pg_server.sql(db, "GRANT INSERT ON readings TO worker")
        wait_until(lambda: pubs.pending() == 0, 120, 0.2, "recovery")
        assert all("worker-pw" not in p.stderr() for p in w["procs"])
    assert_exactly_once(db, fleet, 200)
    with open_store(db) as s:
        failures = [e for e in s.events(limit=1000, audit=False)
                    if e["type"] == "ingest.storage_failure"]
    assert len(failures) == 2 and all("permission denied" in e["detail"] for e in failures)


# -- two workers with one client id ----------------------------------------------------------


def test_a_second_worker_with_a_taken_client_id_refuses_and_the_first_keeps_working(
        rig: Rig) -> None:
    fleet = rig.fleet(2)
    frames = fleet.seal(40)
    first = start_serve(rig.broker.url, rig.db, fleet.twin_key,  # type: ignore[arg-type]
                        "--share", "g", "--client-id", "same")
    try:
        pubs = rig.publishers(fleet)
        pubs.send([f[:20] for f in frames])
        second = Proc(["serve", "--mqtt", rig.broker.url, "--db", rig.db, "--twin-key",
                       str(fleet.twin_key), "--share", "g", "--client-id", "same"])
        assert second.wait(60) == 4
        err = second.stderr().strip().splitlines()
        assert len(err) == 1 and "client id 'same'" in err[0], err
        pubs.send([f[20:] for f in frames])
        wait_until(lambda: pubs.pending() == 0, 60, 0.1, "the first worker to go on")
        assert first.p.poll() is None
        assert_exactly_once(rig.db, fleet, 40)
    finally:
        first.terminate()


def test_serve_workers_refuses_count_and_reports_a_fatal_worker(rig: Rig) -> None:
    fleet = rig.fleet(1)
    p = Proc(["serve", "--mqtt", rig.broker.url, "--db", rig.db, "--twin-key",
              str(fleet.twin_key), "--workers", "2", "--count", "5"])
    assert p.wait(30) == 2 and "--count cannot be combined" in p.stderr()
    # a worker that cannot start (a missing twin key file) stops the whole group
    p = Proc(["serve", "--mqtt", rig.broker.url, "--db", rig.db, "--twin-key",
              str(rig.root / "missing.key"), "--workers", "2"])
    assert p.wait(60) == 3, p.stderr()
    assert "stopping all workers" in p.stderr()

"""``serve`` never crash-loops on a message (issue 9 §1), on a real mosquitto.

Poison pills (garbage, a valid frame from an unknown kid) on a persistent session; retained
telemetry processed at most once across restarts, reconnects and new sessions; a twin database
that refuses commits (real SQLite lock contention) makes the ingest hold the batch unacknowledged,
retry with backoff and recover; a message that alone makes ``open_many`` raise is set aside;
packets above the Maximum Packet Size never reach the ingest or the device link.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mosquitto import (  # noqa: F401
    assert_exactly_once,
    broker_factory,
    events,
    publish,
    raw_client,
    requires_mosquitto,
    running_ingest,
    start_serve,
    stored,
    stored_count,
    twin_rig,
    wait_until,
)

from twinlink import Device, Twin, ack
from twinlink.frame import parse
from twinlink.mqtt_link import for_device
from twinlink.provision import provision
from twinlink.store import SQLiteStore
from twinlink.transport.mqtt import MAX_PACKET

pytestmark = [pytest.mark.mqtt, requires_mosquitto]

GARBAGE = b"\x00not a frame\xff" * 8


def _frames(rig: Any, n: int, name: str = "pump") -> list[bytes]:
    dev = Device.load(rig.bundle(name), rig.state)
    try:
        return dev.seal_many([{"i": i} for i in range(n)])
    finally:
        dev.close()


def _ghost_frame(rig: Any) -> bytes:
    """A genuine frame from a device this twin has never registered (kid 09)."""
    provision("ghost", rig.root / "twin.pub", rig.root / "keys", kid=b"\x09")
    return _frames(rig, 1, "ghost")[0]


def _reasons(db: Path) -> list[str]:
    return [r for r, _ in events(db)]


def _event_seqs(db: Path) -> list[tuple[str, int | None]]:
    with SQLiteStore(str(db), readonly=True) as store:
        return [(e["reason"], e["seq"]) for e in store.events(limit=1 << 30, audit=False)]


def test_poison_pills_on_a_persistent_session(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    f = _frames(rig, 4)
    ghost = _ghost_frame(rig)
    # Subscribe once and leave: the broker keeps the session and queues for it.
    assert start_serve(broker.url, rig.db, rig.twin_key).terminate() == 0
    raw = raw_client(broker.port)
    try:
        for topic, payload in (("twinlink/01/t", f[0]), ("twinlink/01/t", GARBAGE),
                               ("twinlink/09/t", ghost), ("twinlink/01/t", f[1])):
            publish(raw, topic, payload)
        serve = start_serve(broker.url, rig.db, rig.twin_key)
        wait_until(lambda: stored_count(rig.db) == 2, 20, what="the queued genuine frames")
        assert _reasons(rig.db) == ["malformed", "unknown_device"]
        publish(raw, "twinlink/01/t", f[2])  # still ingesting after the pills
        wait_until(lambda: stored_count(rig.db) == 3, 20, what="a later genuine frame")
        assert serve.terminate() == 0, serve.stderr()
        # The pills were acknowledged after their refusal was recorded: a new run of the same
        # session does not get them again.
        serve = start_serve(broker.url, rig.db, rig.twin_key)
        publish(raw, "twinlink/01/t", f[3])
        wait_until(lambda: stored_count(rig.db) == 4, 20, what="the frame after the restart")
        assert serve.terminate() == 0, serve.stderr()
    finally:
        raw.loop_stop()
    assert _reasons(rig.db) == ["malformed", "unknown_device"]
    assert_exactly_once(rig.db, {0, 1, 2, 3})


def test_retained_telemetry_is_processed_at_most_once(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    f = _frames(rig, 5)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    raw = raw_client(broker.port)
    try:
        publish(raw, "twinlink/01/t", f[0], retain=True)  # forwarded live once: stored
        publish(raw, "twinlink/0a/t", GARBAGE, retain=True)  # forwarded live once: refused
        wait_until(lambda: stored_count(rig.db) == 1 and len(events(rig.db)) == 1, 20,
                   what="the retained messages, live")

        def next_frame(i: int) -> None:
            # Messages of one publisher arrive in order: once frame i is stored, anything the
            # broker sent this ingest before it (a retained copy) has been processed too.
            publish(raw, "twinlink/01/t", f[i])
            wait_until(lambda: stored_count(rig.db) == i + 1, 20, what=f"frame {i}")

        assert serve.terminate() == 0  # the same session again: re-subscribes on connect
        serve = start_serve(broker.url, rig.db, rig.twin_key)
        next_frame(1)
        broker.stop()  # the broker restarts under the ingest: reconnect, re-subscribe
        broker.start()
        raw.loop_stop()
        raw = raw_client(broker.port)
        next_frame(2)
        assert serve.terminate() == 0
        serve = start_serve(broker.url, rig.db, rig.twin_key, "--client-id", "fresh")
        next_frame(3)  # a brand-new session and subscription
        assert serve.terminate() == 0
    finally:
        raw.loop_stop()
    rows = _event_seqs(rig.db)
    assert [r for r in rows if r[0] != "replay"] == [("malformed", None)]  # refused once
    assert ("replay", 0) not in rows  # the retained frame never came back
    # (A frame whose broker ack was in flight when the broker stopped is redelivered and
    # refused as a replay: that is at-least-once delivery, and it is stored once regardless.)
    assert_exactly_once(rig.db, {0, 1, 2, 3})
    # The retained messages are still on the broker, for whoever wants them.
    got: list[mqtt.MQTTMessage] = []
    probe = raw_client(broker.port, "probe")
    probe.on_message = lambda c, u, m: got.append(m)
    try:
        probe.subscribe("twinlink/+/t", qos=1)
        wait_until(lambda: len(got) == 2, 10, what="the retained messages")
    finally:
        probe.loop_stop()
    assert {(m.topic, m.payload, m.retain) for m in got} == {
        ("twinlink/01/t", f[0], True), ("twinlink/0a/t", GARBAGE, True)}


def test_ingest_drops_messages_flagged_retained(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """Should a broker send retained copies anyway, the ingest drops them unprocessed."""
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    f = _frames(rig, 2)
    raw = raw_client(broker.port)
    try:
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            publish(raw, "twinlink/01/t", f[0], retain=True)
            wait_until(lambda: stored_count(rig.db) == 1, 10, what="the live copy")
            # Ask for retained messages: the broker sends f[0] again, flagged retained.
            ing.transport.subscribe(ing.sub_topic, qos=1, retained=True)
            wait_until(lambda: ing.stats.retained == 1, 10, what="the retained copy")
            publish(raw, "twinlink/01/t", f[1])
            wait_until(lambda: ing.stats.stored == 2, 10, what="the next frame")
            assert ing.stats.received == 2 and ing.stats.retained == 1
    finally:
        raw.loop_stop()
    assert events(rig.db) == []  # the dropped copy was never shown to the twin
    assert_exactly_once(rig.db, {0, 1})


def test_database_refusing_commits_holds_the_batch_then_recovers(
        tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    f = _frames(rig, 10)
    # Another process holds the database's write lock (a backup, a migration): every commit
    # of the ingest fails with "database is locked" after the store's busy timeout.
    blocker = sqlite3.connect(rig.db, isolation_level=None)
    raw = raw_client(broker.port)
    try:
        with Twin(SQLiteStore(str(rig.db), timeout=0.05), rig.twin_key) as twin:
            blocker.execute("BEGIN EXCLUSIVE")
            with running_ingest(broker.url, twin, retry_min=0.02, retry_max=0.1) as ing:
                for x in f[:5]:
                    publish(raw, "twinlink/01/t", x)
                wait_until(lambda: ing.stats.failed_batches >= 3, 20, what="retries")
                assert ing.stats.received == 0 and stored_count(rig.db) == 0
            # Stopped while still failing: nothing was acknowledged to the broker.
            assert ing.stats.batches == 0
        blocker.execute("ROLLBACK")
        # The same session again, the database back: the broker redelivers the five held
        # frames (nobody else sends them again), and new traffic flows.
        with Twin(SQLiteStore(str(rig.db), timeout=0.05), rig.twin_key) as twin:
            with running_ingest(broker.url, twin) as ing:
                wait_until(lambda: stored_count(rig.db) == 5, 20, what="the redelivered frames")
                blocker.execute("BEGIN EXCLUSIVE")  # fails again mid-stream...
                for x in f[5:]:
                    publish(raw, "twinlink/01/t", x)
                wait_until(lambda: ing.stats.failed_batches >= 2, 20, what="retries")
                blocker.execute("ROLLBACK")  # ...and recovers without a restart
                wait_until(lambda: stored_count(rig.db) == 10, 20, what="recovery")
                assert ing.stats.stored == 10 and ing.stats.duplicates == 0
    finally:
        raw.loop_stop()
        blocker.close()
    assert_exactly_once(rig.db, set(range(10)))
    # No refusal; the outage itself is recorded once the database stores again.
    assert [r for r, _ in events(rig.db)] == ["storage_failure"]


class _Fragile(Twin):
    """A twin whose batch open raises on one poisonous message (as an uncontained decoder bug
    would): the one fault the real twin, containing per-frame failures, cannot produce."""

    poison = b"\xd2\x84\x40poison"
    calls_with_poison = 0

    def open_many(self, frames: Sequence[bytes], **kw: Any) -> Any:
        if self.poison in frames:
            type(self).calls_with_poison += 1
            raise RecursionError("simulated decoder bug")
        return super().open_many(frames, **kw)


def test_a_message_that_alone_breaks_the_batch_is_set_aside(tmp_path: Path,
                                                            broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    f = _frames(rig, 6)
    raw = raw_client(broker.port)
    try:
        with _Fragile(rig.db, rig.twin_key) as twin:
            with running_ingest(broker.url, twin, retry_min=0.02, retry_max=0.1) as ing:
                for x in (f[0], _Fragile.poison, f[1], f[2]):
                    publish(raw, "twinlink/01/t", x)
                wait_until(lambda: ing.stats.poisoned == 1 and stored_count(rig.db) == 3, 20,
                           what="the poison set aside and the rest stored")
                publish(raw, "twinlink/01/t", f[3])
                wait_until(lambda: stored_count(rig.db) == 4, 20, what="traffic after it")
        calls = _Fragile.calls_with_poison
        assert _reasons(rig.db) == ["internal_error"]
        # Acknowledged: the same session does not get it again.
        with _Fragile(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin):
            publish(raw, "twinlink/01/t", f[4])
            wait_until(lambda: stored_count(rig.db) == 5, 20, what="the next frame")
        assert _Fragile.calls_with_poison == calls
    finally:
        raw.loop_stop()
    assert _reasons(rig.db) == ["internal_error"]
    assert_exactly_once(rig.db, set(range(5)))


def test_packets_above_the_maximum_size_never_arrive(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    f = _frames(rig, 1)
    huge = b"\xd2" * (MAX_PACKET + 1)
    raw = raw_client(broker.port)
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    link = for_device(dev, broker.url, timeout=5)  # no ingest here: only our acks arrive
    try:
        with running_ingest(broker.url, twin) as ing:
            publish(raw, "twinlink/01/t", huge)
            publish(raw, "twinlink/01/t", f[0])
            wait_until(lambda: ing.stats.stored == 1, 10, what="the frame after the big one")
            assert ing.stats.received == 1  # the big one never reached us
        assert events(rig.db) == []
        wait_until(link.ack_subscribed.is_set, 10, what="the device's ack subscription")
        mine = dev.seal({"n": 1})
        seq = parse(mine).seq
        link.send(mine)
        publish(raw, "twinlink/01/a", huge)
        sid = bytes(6)
        publish(raw, "twinlink/01/a", ack.seal_ack(
            twin.ack_context(dev.kid, sid, dev.id_context), dev.kid, 0,
            [(seq, ack.digest(mine))], kid_context=dev.id_context))
        wait_until(lambda: link.pending() == 0, 10, what="the genuine ack")
        assert link.stats.forged_acks == 0 and link.stats.released == 1  # big one never came
    finally:
        raw.loop_stop()
        link.close()
        dev.close()
        twin.close()
    assert stored(rig.db) == [0]


def test_serve_survives_a_store_that_fails_between_commit_and_ack(
        tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """Looking up duplicates and sealing acks use the store after the commit; if that fails,
    the stored frames are still acknowledged to the broker (the device resends for its ack)."""
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    f = _frames(rig, 3)
    failing = threading.Event()

    class FlakyStore(SQLiteStore):
        def device(self, name_or_kid: str | bytes) -> Any:  # what sealing an ack reads
            if failing.is_set():
                raise sqlite3.OperationalError("disk I/O error")
            return super().device(name_or_kid)

    raw = raw_client(broker.port)
    try:
        with Twin(FlakyStore(str(rig.db)), rig.twin_key) as twin:
            with running_ingest(broker.url, twin) as ing:
                failing.set()
                publish(raw, "twinlink/01/t", f[0])
                wait_until(lambda: ing.stats.batches == 1, 10, what="the first batch")
                assert ing.stats.acks == 0 and stored_count(rig.db) == 1
                failing.clear()
                publish(raw, "twinlink/01/t", f[1])
                wait_until(lambda: ing.stats.acks == 1, 10, what="acks again")
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            publish(raw, "twinlink/01/t", f[2])
            wait_until(lambda: ing.stats.stored == 1, 10, what="the next frame")
            assert ing.stats.received == 1  # f[0] was acknowledged to the broker: not redelivered
    finally:
        raw.loop_stop()
    assert_exactly_once(rig.db, {0, 1, 2})

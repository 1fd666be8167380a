"""Fault tests on a real mosquitto: brokers killed and restarted (with and without persistence),
the ingest and the device SIGKILLed, the device offline. Every time: every sealed reading stored
exactly once — the exact seq set, no loss, no duplicate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mosquitto import (  # noqa: F401
    Broker,
    assert_exactly_once,
    broker_factory,
    outbox_count,
    requires_mosquitto,
    start_send,
    start_serve,
    stored_count,
    twin_rig,
    wait_until,
)

pytestmark = [pytest.mark.mqtt, requires_mosquitto]

W = "512"  # frames in flight; the devices are registered with a 512-wide replay window


def _restart_and_time(broker: Broker, db: Path, kill: bool) -> float:
    """Restart the broker; return seconds until 600 more readings are stored."""
    before = stored_count(db)
    t0 = time.monotonic()
    broker.restart(kill=kill)
    # Past the window in flight and the ingest's backlog: new traffic flows end to end again.
    wait_until(lambda: stored_count(db) > before + 600, 30, what="storage to resume")
    return time.monotonic() - t0


@pytest.mark.slow
def test_10k_frames_broker_sigkilled_twice(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    n = 10_000
    send = start_send(broker.url, rig.bundle("pump"), rig.state, n, "--window", W, timeout=150)
    resume = []
    for mark in (3000, 6500):
        wait_until(lambda m=mark: stored_count(rig.db) >= m, 60, what=f"{mark} stored")
        resume.append(_restart_and_time(broker, rig.db, kill=True))
    assert send.wait(150) == 0, send.stderr()
    assert_exactly_once(rig.db, set(range(n)))
    assert outbox_count(rig.outbox("pump")) == 0
    serve.terminate()
    print("\n" + serve.stderr().strip().splitlines()[-1])
    print(f"\nbroker SIGKILL x2: storage resumed after {resume[0]:.2f}s and {resume[1]:.2f}s")


def test_broker_without_persistence_restarted(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    n = 3000
    send = start_send(broker.url, rig.bundle("pump"), rig.state, n, "--window", W, timeout=90)
    wait_until(lambda: stored_count(rig.db) >= 1000, 60, what="1000 stored")
    # A clean stop of a broker without persistence forgets every queued message and session.
    took = _restart_and_time(broker, rig.db, kill=False)
    assert send.wait(90) == 0, send.stderr()
    assert_exactly_once(rig.db, set(range(n)))
    serve.terminate()
    print("\n" + serve.stderr().strip().splitlines()[-1])
    print(f"\nbroker without persistence restarted: storage resumed after {took:.2f}s")


def test_ingest_sigkilled_mid_stream(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    n = 3000
    send = start_send(broker.url, rig.bundle("pump"), rig.state, n, "--window", W, timeout=90)
    wait_until(lambda: stored_count(rig.db) >= 1000, 60, what="1000 stored")
    serve.kill()  # SIGKILL: batches in flight are neither committed nor acknowledged
    at_kill = stored_count(rig.db)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    assert send.wait(90) == 0, send.stderr()
    assert_exactly_once(rig.db, set(range(n)))
    serve.terminate()
    assert at_kill < n


def test_device_sigkilled_with_full_outbox(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    n = 400
    # No ingest yet: nothing is acknowledged, so the outbox fills to its capacity.
    send = start_send(broker.url, rig.bundle("pump"), rig.state, n, "--outbox-capacity", str(n),
                      timeout=60)
    wait_until(lambda: rig.state.exists() and any(rig.state.glob("*.outbox"))
               and outbox_count(rig.outbox("pump")) == n, 30, what="a full outbox")
    send.kill()
    # A full outbox refuses new readings with a typed error, before sealing them.
    more = start_send(broker.url, rig.bundle("pump"), rig.state, 10, "--outbox-capacity", str(n),
                      timeout=5)
    assert more.wait(30) == 5, more.stderr()
    assert "outbox" in more.stderr() and "full" in more.stderr()
    assert outbox_count(rig.outbox("pump")) == n
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    again = start_send(broker.url, rig.bundle("pump"), rig.state, 0, timeout=60)
    assert again.wait(60) == 0, again.stderr()
    assert_exactly_once(rig.db, set(range(n)))
    assert outbox_count(rig.outbox("pump")) == 0
    serve.terminate()


def test_device_offline_then_flushing(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=True)
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    broker.stop()
    n = 1000
    send = start_send(broker.url, rig.bundle("pump"), rig.state, n, "--window", W, timeout=2)
    assert send.wait(30) == 6, send.stderr()  # gives up after its --timeout, keeps the readings
    assert f"{n} reading(s) still awaiting" in send.stderr()
    assert len(send.stderr().strip().splitlines()) == 1
    assert stored_count(rig.db) == 0 and outbox_count(rig.outbox("pump")) == n
    broker.start()
    t1 = time.monotonic()
    flush = start_send(broker.url, rig.bundle("pump"), rig.state, 0, "--window", W, timeout=60)
    assert flush.wait(60) == 0, flush.stderr()
    assert_exactly_once(rig.db, set(range(n)))
    serve.terminate()
    print("\n" + serve.stderr().strip().splitlines()[-1])
    print(f"\noffline device flushed {n} readings in {time.monotonic() - t1:.2f}s")

"""Acks v2 end to end on a real mosquitto (issue 9 §2, §3, §5): no reading is ever released
unstored — across a lost device state, captured acks replayed by an attacker, a clone's frame
under a stored sequence number — permanent refusals reach the device as NACKs and move to its
dead letters while later readings flow, frames of a renewed context's predecessor are delivered
first, two deployments share one broker under their own topic roots, and a second twin on a
taken root refuses to start."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import pytest
from mosquitto import (  # noqa: F401
    AckCapture,
    Proc,
    assert_exactly_once,
    broker_factory,
    events,
    publish,
    raw_client,
    requires_mosquitto,
    running_ingest,
    start_send,
    start_serve,
    stored,
    stored_count,
    twin_rig,
    wait_until,
)

from twinlink import Device, FrameTooLarge, Twin, ack
from twinlink.delivery import AckOpener
from twinlink.frame import MAX_PAYLOAD, parse, seal
from twinlink.ingest.mqtt import MqttIngest, TopicRootTaken
from twinlink.keys import Bundle, TwinKey, fingerprint, write_private, write_public
from twinlink.mqtt_link import for_device
from twinlink.provision import provision
from twinlink.store import SQLiteStore

pytestmark = [pytest.mark.mqtt, requires_mosquitto]

NO_VALUE = cbor2.dumps([{0: "temp"}])  # a SenML record without a value: the twin's bad_payload


def _lose_sequence_state(state: Path) -> None:
    for p in state.glob("*.seq*"):
        p.unlink()


def _reasons(db: Path) -> list[str]:
    """Refusal reasons recorded (frame.* events; detections of the readings' values are not
    this file's subject)."""
    with SQLiteStore(str(db), readonly=True) as store:
        return [e["reason"] for e in store.events(limit=1 << 20, audit=False)
                if e["type"].startswith("frame.")]


def _audit(db: Path) -> list[str]:
    with SQLiteStore(str(db), readonly=True) as store:
        return [e["reason"] for e in store.events(limit=1 << 20)
                if e["reason"].startswith("context_")]


def test_state_loss_and_replayed_acks_release_nothing_unstored(
        tmp_path: Path, broker_factory, backend_name: str) -> None:  # noqa: F811
    """Run 1 is stored and acknowledged while an attacker records every ack. The device's whole
    state directory (sequence state and outbox) is then deleted. Run 2 seals under a fresh
    context; replaying every captured ack releases none of its readings (they were never
    stored); only the twin's own acks do, once it is back."""
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    raw = raw_client(broker.port)
    capture = AckCapture(raw)
    try:
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            dev = Device.load(rig.bundle("pump"), rig.state)
            dev.link = link = for_device(dev, broker.url, timeout=5)
            try:
                for i in range(20):
                    dev.send({"run": 1, "i": i})
                assert link.flush(20) == 0 and link.stats.released == 20
                first_context = dev.id_context
            finally:
                dev.close()
            assert ing.stats.acks == len(capture.got) >= 1
        captured = list(capture.got)
        shutil.rmtree(rig.state)  # state *and* outbox gone: the worst case
        dev = Device.load(rig.bundle("pump"), rig.state)
        dev.link = link = for_device(dev, broker.url, timeout=5)
        try:
            assert dev.renewed and dev.id_context != first_context
            for i in range(20):
                dev.send({"run": 2, "i": i})  # seqs 0..19 again, under the new context
            assert link.ack_subscribed.wait(10)
            for data in captured:  # the attacker replays run 1's acks, while no twin runs
                publish(raw, "twinlink/01/a", data)
            wait_until(lambda: link.stats.acks == len(captured), 10,
                       what="the replayed acks to be opened")
            assert link.pending() == 20 and link.stats.released == 0
            assert link.stats.conflicts == 0  # they name another context: nothing matches
            with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin):
                assert link.flush(30) == 0
            assert link.stats.released == 20 and link.stats.refused == 0
        finally:
            dev.close()
    finally:
        raw.loop_stop()
    # Both runs stored, each reading once, under two contexts.
    with SQLiteStore(str(rig.db), readonly=True) as store:
        rows = store.readings(limit=1000)
    got = sorted((r["epoch"], r["payload"]["run"], r["payload"]["i"]) for r in rows)
    epochs = sorted({e for e, _, _ in got})
    assert len(epochs) == 2 and got == [(epochs[run - 1], run, i)
                                        for run in (1, 2) for i in range(20)]
    assert _audit(rig.db) == ["context_started", "context_renewed"]
    assert _reasons(rig.db) == []
    # No ack nonce was ever used twice: every ack has its own (Sender ID, context, PIV).
    opener = AckOpener(Bundle.load(rig.bundle("pump")))
    envs = [ack.parse_ack(a) for a in captured]
    assert len({(e.sender_id, e.kid_context, e.seq) for e in envs}) == len(envs)
    assert all(opener.open(a).kid_context == first_context for a in captured)


def test_a_clone_frame_is_dead_lettered_never_released(
        tmp_path: Path, broker_factory, backend_name: str) -> None:  # noqa: F811
    """A frame under a stored (context, seq) with other content -- what a cloned device or a
    device that lost its state without renewing would send -- gets a 'conflict' NACK: the
    clone's outbox dead-letters it; nothing of it is ever acknowledged as stored."""
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    dev = Device.load(rig.bundle("pump"), rig.state)
    try:
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            dev.link = link = for_device(dev, broker.url, timeout=5)
            dev.send({"i": 0})
            assert link.flush(10) == 0
            original = dev.seal({"i": 1})
            link.send(original)
            assert link.flush(10) == 0
            p = parse(original)
            assert dev.bundle.device_key is not None
            clone = seal(dev.bundle.device_key.secret64, dev.bundle.context(dev.id_context),
                         p.seq, cbor2.dumps([{0: "cloned", 2: 1}]), kid_context=dev.id_context)
            twin_link = for_device(dev, broker.url, timeout=5,
                                   outbox=tmp_path / "clone.outbox")
            try:
                twin_link.send(clone)
                wait_until(lambda: twin_link.stats.refused == 1, 10, what="the conflict NACK")
                (letter,) = twin_link.outbox.dead_letters()
                assert (letter.seq, letter.reason, letter.frame) == (p.seq, "conflict", clone)
                assert twin_link.stats.released == 0 and twin_link.pending() == 0
            finally:
                twin_link.close()
            assert ing.stats.nacks == 1
    finally:
        dev.close()
    assert stored(rig.db) == [0, 1]
    assert _reasons(rig.db) == ["conflict"]


def test_permanent_refusals_are_dead_lettered_and_later_readings_flow(
        tmp_path: Path, broker_factory, backend_name: str) -> None:  # noqa: F811
    """A frame that fell below the twin's window (too_old) and one whose payload the twin
    refuses (bad_payload) are NACKed: they leave the in-flight set for the dead letters, and
    the readings queued behind them (beyond the flow-control window) are stored."""
    rig = twin_rig(tmp_path, window=64)
    broker = broker_factory(persistence=False)
    raw = raw_client(broker.port)
    dev = Device.load(rig.bundle("pump"), rig.state)
    try:
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            frames = dev.seal_many([{"i": i} for i in range(100)])
            for f in frames[1:]:  # these reach the twin another way: its window moves on
                publish(raw, "twinlink/01/t", f)
            wait_until(lambda: ing.stats.stored == 99, 20, what="99 frames stored")
            dev.link = link = for_device(dev, broker.url, timeout=5, window=64)
            bad = dev.seal_raw(NO_VALUE)
            later = dev.seal_many([{"later": i} for i in range(70)])
            link.send_many([frames[0], bad, *later])
            assert link.flush(30) == 0
            assert (link.stats.refused, link.stats.released) == (2, 70)
            letters = {d.seq: d.reason for d in link.outbox.dead_letters()}
            assert letters == {0: "too_old", parse(bad).seq: "bad_payload"}
            assert ing.stats.nacks == 2
    finally:
        raw.loop_stop()
        dev.close()
    assert sorted(_reasons(rig.db)) == ["bad_payload", "too_old"]
    assert_exactly_once(rig.db, set(range(1, 100)) | {parse(f).seq for f in later})


def test_forgeries_are_never_answered(tmp_path: Path, broker_factory) -> None:  # noqa: F811
    """Frames that do not authenticate get no NACK (nor an ack): a NACK must never move a
    genuine frame out of an outbox, nor tell a forger anything."""
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    raw = raw_client(broker.port)
    capture = AckCapture(raw)
    dev = Device.load(rig.bundle("pump"), rig.state)
    try:
        good = dev.seal({"i": 0})
        forged = bytearray(dev.seal_raw(NO_VALUE))  # would be bad_payload, were it genuine
        forged[-1] ^= 1
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            publish(raw, "twinlink/01/t", bytes(forged))
            publish(raw, "twinlink/01/t", b"\xd2\x84garbage")
            publish(raw, "twinlink/01/t", good)
            wait_until(lambda: ing.stats.received == 3, 10, what="three frames")
            wait_until(lambda: len(capture.got) == 1, 10, what="the ack of the good one")
            assert (ing.stats.nacks, ing.stats.acks) == (0, 1)
        (only,) = [AckOpener(dev.bundle).open(a) for a in capture.got]
        assert only.stored == ((parse(good).seq, ack.digest(good)),) and only.refused == ()
    finally:
        raw.loop_stop()
        dev.close()


def test_oversize_readings_are_refused_before_a_sequence_number(tmp_path: Path,
                                                                 backend_name: str) -> None:
    rig = twin_rig(tmp_path)
    dev = Device.load(rig.bundle("pump"), rig.state)
    try:
        before = parse(dev.seal({"i": 0})).seq
        huge = {"blob": "x" * MAX_PAYLOAD}
        with pytest.raises(FrameTooLarge, match=str(MAX_PAYLOAD)):
            dev.seal(huge)
        with pytest.raises(FrameTooLarge):
            dev.seal_many([{"i": 1}, huge])  # all or none
        with pytest.raises(FrameTooLarge):
            dev.seal_raw(cbor2.dumps(b"\x00" * MAX_PAYLOAD))
        edge = cbor2.dumps(b"\x00" * (MAX_PAYLOAD - 3))  # exactly MAX_PAYLOAD bytes of CBOR
        assert len(edge) == MAX_PAYLOAD
        assert parse(dev.seal_raw(edge)).seq == before + 1  # no number was spent above
        with Twin(rig.db, rig.twin_key) as twin:
            assert twin.open(dev.seal_raw(edge)).seq == before + 2  # the twin takes the limit
    finally:
        dev.close()


def test_send_reports_refused_readings_and_outbox_lists_them(tmp_path: Path,
                                                             broker_factory) -> None:  # noqa: F811
    """``send`` exits 8 and says how many readings the twin refused for good; ``twinlink
    outbox`` lists them with the reason; an oversize line is a skipped bad line."""
    rig = twin_rig(tmp_path, window=64)
    broker = broker_factory(persistence=False)
    # Run 1 without a twin: its readings wait in the outbox.
    assert start_send(broker.url, rig.bundle("pump"), rig.state, 2, timeout=0.5).wait(30) == 6
    # Meanwhile the twin's window moves far past them (frames sealed later, delivered first).
    dev = Device.load(rig.bundle("pump"), rig.state)
    newer = dev.seal_many([{"newer": i} for i in range(100)])
    dev.close()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    raw = raw_client(broker.port)
    try:
        for f in newer:
            publish(raw, "twinlink/01/t", f)
        wait_until(lambda: stored_count(rig.db) == 100, 20, what="the newer frames")
        line = json.dumps({"blob": "x" * MAX_PAYLOAD}) + "\n" + '{"i": 9}\n'
        send = Proc(["send", "--device", str(rig.bundle("pump")), "--state", str(rig.state),
                     "--mqtt", broker.url, "--timeout", "30", "--json"],
                    stdin=line.encode(), stdout=subprocess.PIPE)
        rc = send.wait(60)
        out = json.loads(send.p.stdout.read().decode())
    finally:
        raw.loop_stop()
        serve.terminate()
    assert rc == 8, send.stderr()
    assert out == {"stored": 1, "refused": 2, "pending": 0, "skipped": 1}
    assert "stored 1, refused 2 (see: twinlink outbox --device" in send.stderr()
    assert "line 1 skipped" in send.stderr() and "exceeds the largest payload" in send.stderr()
    listing = subprocess.run(
        [*_cli(), "outbox", "--device", str(rig.bundle("pump")), "--state", str(rig.state),
         "--json"], capture_output=True, env=_env(), timeout=60)
    assert listing.returncode == 0, listing.stderr
    doc = json.loads(listing.stdout)
    assert doc["pending"] == 0 and doc["dead_letters"] == 2
    assert [(d["seq"], d["reason"]) for d in doc["refused"]] == [(0, "too_old"), (1, "too_old")]
    assert parse(bytes.fromhex(doc["refused"][0]["frame"])).seq == 0
    human = subprocess.run(
        [*_cli(), "outbox", "--device", str(rig.bundle("pump")), "--state", str(rig.state)],
        capture_output=True, env=_env(), timeout=60, text=True)
    assert "0 pending, 2 dead letter(s)" in human.stdout and "too_old" in human.stdout


def _cli() -> list[str]:
    from mosquitto import CLI
    return CLI


def _env() -> dict[str, str]:
    from mosquitto import env
    return env()


def test_old_context_frames_are_delivered_before_the_renewed_ones(
        tmp_path: Path, broker_factory, backend_name: str) -> None:  # noqa: F811
    """Frames queued under a context, then the sequence state lost (the outbox kept): the
    renewed device's new-context frames wait until the old ones are stored, so the twin never
    retires a context whose frames are still on their way."""
    rig = twin_rig(tmp_path)
    broker = broker_factory(persistence=False)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = link = for_device(dev, broker.url, timeout=5)
    for i in range(30):
        dev.send({"ctx": 1, "i": i})  # no twin runs: all stay queued
    old_context = dev.id_context
    dev.close()
    _lose_sequence_state(rig.state)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = link = for_device(dev, broker.url, timeout=5, window=8)
    try:
        assert dev.id_context != old_context and link.pending() == 30
        for i in range(30):
            dev.send({"ctx": 2, "i": i})
        assert link.outbox.contexts(dev.kid) == [old_context, dev.id_context]
        with Twin(rig.db, rig.twin_key) as twin, running_ingest(broker.url, twin) as ing:
            assert link.flush(30) == 0
            assert (ing.stats.stored, ing.stats.refused) == (60, 0)
        assert (link.stats.released, link.stats.refused) == (60, 0)
    finally:
        dev.close()
    with SQLiteStore(str(rig.db), readonly=True) as store:
        rows = store.readings(limit=1000)
    assert [r["payload"]["ctx"] for r in rows] == [1] * 30 + [2] * 30  # old context first
    assert _audit(rig.db) == ["context_started", "context_renewed"] and _reasons(rig.db) == []


def _deployment(root: Path, topic_root: str | None) -> Any:
    """A twin key, a database recording ``topic_root`` and one device 'pump' (kid 01, as every
    deployment's first device) provisioned from it."""
    root.mkdir()
    tk = TwinKey.generate()
    write_private(root / "twin.key", tk.to_pem())
    write_public(root / "twin.pub", tk.public_pem())
    provision("pump", root / "twin.pub", root / "keys", db=str(root / "twin.db"), kid=b"\x01",
              topic_root=topic_root)
    return tk


def test_two_twins_with_their_own_roots_share_one_broker(tmp_path: Path,
                                                         broker_factory) -> None:  # noqa: F811
    broker = broker_factory(persistence=False)
    a, b = tmp_path / "a", tmp_path / "b"
    _deployment(a, "plant-a/telemetry")
    _deployment(b, None)  # the default root, recorded by provisioning
    assert Bundle.load(a / "keys" / "pump.device").settings["topic_root"] == "plant-a/telemetry"
    with SQLiteStore(str(b / "twin.db")) as store:
        assert store.topic_root() == "twinlink"
        store.set_topic_root("twinlink")  # the same again: fine
        with pytest.raises(Exception, match="uses MQTT topic root"):
            store.set_topic_root("other")
    # Twin a takes its root from its database, twin b from the command line; devices from
    # their bundles.
    serve_a = start_serve(broker.url, a / "twin.db", a / "twin.key")
    serve_b = start_serve(broker.url, b / "twin.db", b / "twin.key", "--topic-root", "twinlink")
    try:
        assert "plant-a/telemetry/+/t" in serve_a.stderr()
        send_a = start_send(broker.url, a / "keys" / "pump.device", a / "state", 40, timeout=30)
        send_b = start_send(broker.url, b / "keys" / "pump.device", b / "state", 25, timeout=30)
        assert send_a.wait(60) == 0, send_a.stderr()
        assert send_b.wait(60) == 0, send_b.stderr()
    finally:
        serve_a.terminate()
        serve_b.terminate()
    assert_exactly_once(a / "twin.db", set(range(40)))
    assert_exactly_once(b / "twin.db", set(range(25)))
    assert _reasons(a / "twin.db") == [] and _reasons(b / "twin.db") == []  # nothing of the other


def test_a_second_twin_on_a_taken_root_refuses_to_start(tmp_path: Path,
                                                        broker_factory) -> None:  # noqa: F811
    broker = broker_factory(persistence=True)
    a, b = tmp_path / "a", tmp_path / "b"
    key_a = _deployment(a, None)
    key_b = _deployment(b, None)
    serve_a = start_serve(broker.url, a / "twin.db", a / "twin.key")
    try:
        clash = Proc(["serve", "--mqtt", broker.url, "--db", str(b / "twin.db"), "--twin-key",
                      str(b / "twin.key")])
        try:
            rc = clash.wait(60)
        except subprocess.TimeoutExpired:
            clash.kill()
            raise AssertionError(f"the second twin did not refuse: {clash.stderr()}") from None
        err = [x for x in clash.stderr().strip().splitlines() if x.startswith("twinlink")]
        assert rc == 7 and len(err) == 1, clash.stderr()
        assert (f"another twin ({fingerprint(key_a.public)}) serves topic root 'twinlink'"
                in err[0]) and fingerprint(key_b.public) in err[0]
        # The same twin (its key) starting again is itself, not a clash -- in process too.
        with Twin(a / "twin.db", a / "twin.key") as twin, running_ingest(broker.url, twin,
                                                                         client_id="a-2"):
            pass
    finally:
        serve_a.terminate()
    # The presence stays (retained) after twin a stops: b is still refused, in process too.
    with Twin(b / "twin.db", b / "twin.key") as twin:
        import threading
        ing = MqttIngest(broker.url, twin, client_id="b-2")
        with pytest.raises(TopicRootTaken, match=fingerprint(key_a.public)):
            ing.run(threading.Event())
        assert ing.stats.received == 0
    # Under its own root, b serves.
    ok = start_serve(broker.url, b / "twin.db", b / "twin.key", "--topic-root", "site-b")
    assert ok.terminate() == 0

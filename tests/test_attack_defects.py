"""The harness checks itself: a twin with a planted defect must fail the scorecard, on exactly
the scenarios that defence is for, and ``twinlink attack`` must exit 1.

Each defect is planted with ``monkeypatch`` for the duration of one test (the twin the harness
builds is this process's ``Twin``), and ``twinlink attack`` runs in-process through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mosquitto import requires_mosquitto

from twinlink import frame, replay
from twinlink.cli import main
from twinlink.twin import Twin


def scorecard(tmp_path: Path, only: str, transport: str = "inproc") -> tuple[int, dict]:
    out = tmp_path / "score.json"
    rc = main(["attack", "--only", only, "--transport", transport, "--json", str(out)])
    return rc, {r["id"]: (r["mark"], r["detail"])
                for r in json.loads(out.read_text())["results"]}


def missed(marks: dict) -> set[str]:
    return {k for k, (m, _) in marks.items() if m == "MISSED"}


def plant_no_replay_window(monkeypatch) -> None:
    """A window that never refuses (and, so that the rest of the twin keeps working, does not
    try to mark numbers it can no longer represent)."""
    update = replay.ReplayWindow.update

    def lenient(self, seq: int) -> None:
        if seq > self.top - self.size:
            update(self, seq)

    monkeypatch.setattr(replay.ReplayWindow, "check", lambda self, seq: None)
    monkeypatch.setattr(replay.ReplayWindow, "update", lenient)


def test_without_the_replay_window_the_window_scenarios_are_missed(tmp_path, monkeypatch,
                                                                  capsys):
    rc, marks = scorecard(tmp_path, "replay-exact,replay-below-window,replay-delayed-release,"
                                    "flip-signature")
    assert rc == 0 and set(m for m, _ in marks.values()) == {"ok"}  # the sound twin
    plant_no_replay_window(monkeypatch)
    rc, marks = scorecard(tmp_path, "replay-exact,replay-below-window,replay-delayed-release,"
                                    "flip-signature")
    assert rc == 1
    # Held-back frames were never stored: without the window they go in.
    assert "3 of 3 attack frame(s) stored" in marks["replay-delayed-release"][1]
    # A stored frame replayed from below the window hits the store's uniqueness instead: still
    # refused, but as a replay, not as too old: the window is not doing its job.
    assert "expected frame.too_old x3, saw frame.replay x3" in marks["replay-below-window"][1]
    assert missed(marks) == {"replay-below-window", "replay-delayed-release"}
    assert marks["replay-exact"][0] == marks["flip-signature"][0] == "ok"
    assert "FAILED" in capsys.readouterr().out


def test_accepting_any_signature_is_missed(tmp_path, monkeypatch):
    only = "flip-signature,alg-relabel,flip-ciphertext,kid-swap,flood-forgery,replay-exact"
    monkeypatch.setattr(frame, "verify", lambda parsed, pk, stream=b"t": None)
    rc, marks = scorecard(tmp_path, only)
    assert rc == 1
    # The signature was the only thing between these frames and the store.
    assert "1 of 1 attack frame(s) stored" in marks["flip-signature"][1]
    assert "1 of 1 attack frame(s) stored" in marks["alg-relabel"][1]
    # The AEAD still refuses the rest, but as decrypt_failed: the signature layer is gone.
    assert "saw frame.decrypt_failed x1" in marks["flip-ciphertext"][1]
    assert "saw frame.decrypt_failed x1" in marks["kid-swap"][1]
    assert "expected frame.bad_signature x500" in marks["flood-forgery"][1]
    assert missed(marks) == set(only.split(",")) - {"replay-exact"}


@requires_mosquitto
def test_dropping_the_topic_kid_check_is_missed(tmp_path, monkeypatch):
    opened = Twin.open_many

    def no_topic_check(self, frames, **kw):
        kw["expect_kids"] = None
        return opened(self, frames, **kw)

    monkeypatch.setattr(Twin, "open_many", no_topic_check)
    rc, marks = scorecard(tmp_path, "topic-spoof,replay-exact", "mqtt")
    assert rc == 1
    # Both frames went in under their own kids, whatever the topic said: the windows moved.
    mark, detail = marks["topic-spoof"]
    assert mark == "MISSED" and "valve window (1, 19) -> (1, 20)" in detail
    assert "expected frame.topic_mismatch x2" in detail
    assert marks["replay-exact"][0] == "ok"


@requires_mosquitto
def test_a_twin_that_reports_redeliveries_fails_the_control(tmp_path, monkeypatch):
    opened = Twin.open_many

    def ignore_dup(self, frames, **kw):
        kw.pop("redelivered", None)
        return opened(self, frames, **kw)

    monkeypatch.setattr(Twin, "open_many", ignore_dup)
    rc, marks = scorecard(tmp_path, "ctl-qos1-duplicate", "mqtt")
    assert rc == 1
    assert marks["ctl-qos1-duplicate"] == ("FALSE-POSITIVE", "raised frame.replay x1")


def test_blind_stream_detectors_are_missed(tmp_path, monkeypatch):
    from twinlink.detect import Detector
    from twinlink.detect.stream import DeviceStream

    monkeypatch.setattr(Detector, "sweep", lambda self, now=None: [])  # no liveness sweep
    monkeypatch.setattr(DeviceStream, "_sequence", lambda self, *a: None)  # no gaps, no jumps
    rc, marks = scorecard(tmp_path, "silence,selective-drop,seq-jump,value-out-of-range")
    assert rc == 1
    assert missed(marks) == {"silence", "selective-drop", "seq-jump"}
    assert marks["silence"][1] == "expected device.silent x1, saw no event"


@pytest.mark.parametrize("defect", ["window", "signature"])
def test_a_defect_in_one_backend_is_caught_in_the_other_too(tmp_path, monkeypatch, defect,
                                                             backend_name):
    """The scorecard does not depend on the frame backend the twin runs on."""
    if defect == "window":
        plant_no_replay_window(monkeypatch)
        only, want = "replay-delayed-release", "replay-delayed-release"
    else:
        monkeypatch.setattr(frame, "verify", lambda parsed, pk, stream=b"t": None)
        only, want = "flip-signature", "flip-signature"
    rc, marks = scorecard(tmp_path, only)
    assert rc == 1 and missed(marks) == {want}


@requires_mosquitto
def test_a_twin_that_ignores_the_presence_on_its_root_is_missed(tmp_path, monkeypatch):
    """Without the presence check a second twin serves a root another twin key holds (and
    takes the retained presence over): the scenario for it turns MISSED."""
    from twinlink.ingest import mqtt as ingest_mqtt

    run = ingest_mqtt._PresenceCheck.run

    def blind(self, stop):
        run(self, stop)
        return None  # whatever was there, report the root free

    monkeypatch.setattr(ingest_mqtt._PresenceCheck, "run", blind)
    rc, marks = scorecard(tmp_path, "twin-root-taken,replay-exact", "mqtt")
    assert rc == 1
    mark, detail = marks["twin-root-taken"]
    assert mark == "MISSED", detail
    assert "the rival twin served the topic root" in detail
    assert "the presence on the topic root no longer names the serving twin" in detail
    assert marks["replay-exact"][0] == "ok"


@requires_mosquitto
def test_a_device_that_flushes_its_outbox_on_any_authentic_ack_is_missed(tmp_path,
                                                                         monkeypatch):
    """Acks v2 release a frame only by its (seq, digest). A device that takes any authentic ack
    as "the twin is up" and releases its whole queue loses the frames a replayed ack arrives
    with."""
    from twinlink import ack as _ack
    from twinlink.outbox import Outbox

    settle = Outbox.settle

    def flush_all(self, kid, kid_context, stored, refused=()):
        queued = [(q.seq, _ack.digest(q.frame)) for q in self.head(kid, 1 << 20)]
        return settle(self, kid, kid_context, [*stored, *queued], refused)

    monkeypatch.setattr(Outbox, "settle", flush_all)
    rc, marks = scorecard(tmp_path, "ack-replayed", "mqtt")
    assert rc == 1
    mark, detail = marks["ack-replayed"]
    assert mark == "MISSED" and "replayed ack(s) changed the device's state" in detail
    assert "0 of 3 frame(s) pending" in detail

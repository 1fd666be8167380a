"""``twinlink attack``: the catalogue is complete and consistent, the mutations do what they
say, the scorecard renders, the whole catalogue passes in-process, the CLI runs over a real
broker and pty and against an existing twin, and the two defects the harness found stay fixed.
"""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import CLI, cli_env
from mosquitto import broker_factory, requires_mosquitto, start_serve  # noqa: F401

import twinlink
from twinlink import attack, events, frame
from twinlink.attack import actions, mutate, report
from twinlink.attack.model import Result
from twinlink.detect.config import DetectConfig
from twinlink.detect.stream import DeviceStream
from twinlink.errors import MalformedFrame, Replay, TwinlinkError

#: What issue 13 asks the catalogue to cover, by scenario id.
REQUIRED = {
    "ctl-in-order", "ctl-reorder", "ctl-qos1-duplicate", "ctl-line-noise", "replay-exact",
    "replay-below-window", "replay-cross-stream", "replay-after-rekey", "replay-delayed-release",
    "flip-ciphertext", "flip-signature", "truncate-every-offset", "serial-crc-recomputed",
    "alg-substitution", "header-added", "header-removed", "tag-wrong", "tag-missing",
    "downgrade-encrypt0", "downgrade-senml", "downgrade-json", "kid-swap", "unknown-kid",
    "revoked-device", "lite-for-signed", "topic-spoof", "retained-telemetry", "retained-ack",
    "ack-forged", "ack-replayed", "clientid-takeover", "wildcard-eavesdrop", "flood-garbage",
    "flood-forgery", "oversize", "cbor-malformed", "silence", "selective-drop",
    "value-out-of-range", "value-spike", "value-flatline", "value-drift", "timestamp-skew",
    "seq-jump", "rate-burst",
}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=cli_env(),
                          timeout=timeout)


# -- the catalogue ----------------------------------------------------------------------------

def test_the_catalogue_is_complete_and_consistent():
    ids = [sc.id for sc in attack.SCENARIOS]
    assert len(ids) == len(set(ids)) >= 30
    assert REQUIRED <= set(ids), REQUIRED - set(ids)
    catalogued = {t.name for t in events.types()}
    for sc in attack.SCENARIOS:
        assert sc.action in actions.ACTIONS, sc.id
        assert sc.event is None or sc.event in catalogued, (sc.id, sc.event)
        if sc.params.get("mutation"):
            assert sc.params["mutation"] in actions.MUTATIONS, sc.id
        if sc.verdict == attack.BLOCKED and sc.event is None:
            assert sc.transports == ("mqtt",), f"{sc.id}: only passive MQTT abuse has no event"
        if "qc" in sc.params:
            DetectConfig.from_json(sc.params["qc"])  # a valid operator configuration
    techniques = {sc.technique[0] for sc in attack.SCENARIOS if sc.technique}
    assert {"T0856", "T0830", "T0814"} <= techniques
    assert sum(1 for sc in attack.SCENARIOS if sc.verdict == attack.ACCEPTED) >= 4


def test_a_scenario_is_checked_when_it_is_written():
    with pytest.raises(ValueError, match="control expects no event"):
        attack.Scenario("x", "x", "control", attack.ACCEPTED, "frame.replay")
    with pytest.raises(ValueError, match="transports"):
        attack.Scenario("x", "x", "control", attack.ACCEPTED, None, ("carrier-pigeon",))
    with pytest.raises(ValueError, match="technique"):
        attack.Scenario("x", "x", "replay", attack.BLOCKED, "frame.replay", technique=("X", ""))
    with pytest.raises(ValueError, match="unknown scenario"):
        attack.select(attack.SCENARIOS, ["no-such-scenario"])


# -- the attacker's workbench ----------------------------------------------------------------

def test_every_mutation_and_corpus_item_is_refused_before_any_key(rig, backend_name):
    rig.provision("pump")
    dev = rig.device("pump")
    try:
        f = dev.seal({"temp": 21.5})
    finally:
        dev.close()
    lay = mutate.layout(f)
    assert f[lay.signature[0]:lay.signature[1]] == frame.parse(f).sig
    assert f[lay.ciphertext[0]:lay.ciphertext[1]] == frame.parse(f).ct
    structural = ["alg_es256", "header_added", "header_unprotected", "header_removed",
                  "tag_wrong", "tag_missing", "bare_encrypt0", "oversize", "truncations",
                  "malformed_corpus"]
    for name in structural:
        for payload in actions.MUTATIONS[name](f, dev.kid):
            with pytest.raises(MalformedFrame):
                frame.parse(payload)
    corpus = mutate.malformed_corpus(f)
    assert len(corpus) > 180 and all(len(b) <= 2 * 1000 + len(f) + 16 for _, b in corpus)
    # The signature-covered mutations still parse: the signature is what refuses them.
    for name in ("flip_ciphertext", "flip_signature", "alg_ed25519"):
        (payload,) = actions.MUTATIONS[name](f, dev.kid)
        assert frame.parse(payload).kid == dev.kid and payload != f
    lite = frame.parse(mutate.as_lite(f, dev.kid))
    assert lite.kind == frame.KIND_LITE and lite.kid == dev.kid


def test_junit_and_json_carry_every_mark():
    sc = attack.SCENARIOS[0]
    results = [Result(sc, "inproc", attack.OK, attack.ACCEPTED, "fine", 0.1),
               Result(sc, "serial", attack.MISSED, attack.ACCEPTED, "1 attack frame stored"),
               Result(sc, "mqtt", attack.FALSE_POSITIVE, "", "raised frame.replay x1"),
               Result(sc, "mqtt", attack.ERROR, "", "hung"),
               Result(sc, "mqtt", attack.SKIPPED, "", "mosquitto is not installed")]
    summary = attack.Summary.of(results, 1.5)
    assert not summary.passed
    suite = ET.fromstring(report.junit_xml(results, summary))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("5", "2", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["attack.inproc", "attack.serial",
                                                   "attack.mqtt", "attack.mqtt", "attack.mqtt"]
    assert cases[1].find("failure").get("message").startswith("MISSED: 1 attack frame")
    assert cases[3].find("error") is not None and cases[4].find("skipped") is not None
    doc = report.to_json(results, summary)
    assert doc["passed"] is False and doc["counts"]["MISSED"] == 1
    assert json.loads(json.dumps(doc))["results"][0]["mark"] == "ok"
    table = report.table(results, 100)
    assert all(len(line) <= 100 for line in table.splitlines())
    assert attack.Summary.of(results[:1] + results[4:], 1.0).passed


# -- running it --------------------------------------------------------------------------------

def test_the_whole_catalogue_passes_in_process(tmp_path, backend_name):
    runs = attack.select(attack.SCENARIOS, transports=["inproc"])
    results = attack.run(runs, attack.Target(tmp_path / "w"))
    bad = [(r.id, r.mark, r.detail) for r in results if r.mark != attack.OK]
    assert not bad and len(results) == len(runs) >= 35
    by = {r.scenario.id: r for r in results}
    assert by["truncate-every-offset"].events["frame.malformed"] == \
        by["truncate-every-offset"].delivered > 100
    assert by["flood-garbage"].events["frame.malformed"] == 1000


@requires_mosquitto
def test_cli_over_a_real_broker_and_pty_writes_the_scorecard(tmp_path):
    only = ("ctl-in-order,ctl-qos1-duplicate,ctl-line-noise,replay-exact,serial-crc-recomputed,"
            "topic-spoof,retained-telemetry,ack-forged,wildcard-eavesdrop,flood-forgery,"
            "replay-cross-stream,ack-replayed,twin-root-taken")
    p = run_cli("attack", "--only", only, "--transport", "serial,mqtt", "--json",
                str(tmp_path / "s.json"), "--junit-xml", str(tmp_path / "j.xml"))
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    marks = {(r["id"], r["transport"]): r["mark"] for r in doc["results"]}
    assert marks[("ctl-line-noise", "serial")] == "ok" and marks[("topic-spoof", "mqtt")] == "ok"
    assert len(marks) == 17 and set(marks.values()) == {"ok"}
    # The twin's acks were captured off the line and off the ack topic, then injected.
    assert marks[("replay-cross-stream", "serial")] == "ok"
    assert "JUnit report: " in p.stderr and ET.parse(tmp_path / "j.xml").getroot() \
        .get("failures") == "0"
    assert "17 runs: 17 ok, 0 MISSED, 0 FALSE-POSITIVE, 0 ERROR, 0 skipped" in p.stdout
    # Device events the attacks provoke on purpose are scored, not printed.
    assert "ack.forged" not in p.stderr


def test_mqtt_scenarios_are_skipped_with_the_reason_when_mosquitto_is_missing(
        tmp_path, monkeypatch):
    import twinlink.attack.runner as runner

    monkeypatch.setattr(runner, "find_mosquitto", lambda: None)  # the binary is not installed
    runs = attack.select(attack.SCENARIOS, ["replay-exact", "topic-spoof"])
    results = attack.run(runs, attack.Target(tmp_path / "w"))
    marks = {r.id: (r.mark, r.detail) for r in results}
    assert marks["replay-exact@mqtt"] == (attack.SKIPPED,
                                          "mosquitto is not installed (apt-get install "
                                          "mosquitto)")
    assert marks["topic-spoof@mqtt"][0] == attack.SKIPPED
    assert marks["replay-exact@inproc"][0] == marks["replay-exact@serial"][0] == attack.OK
    assert attack.Summary.of(results, 1.0).passed


def _existing(rig, **kw) -> tuple[Path, Path]:
    rig.provision("pump-17", **kw)
    rig.provision("valve-3", **kw)
    return rig.root / "keys" / "pump-17.device", rig.root / "keys" / "valve-3.device"


def test_cli_against_an_existing_twin_in_process(rig):
    pump, valve = _existing(rig)
    only = "replay-exact,kid-swap,unknown-kid,revoked-device,ctl-in-order"
    p = run_cli("attack", "--db", str(rig.db), "--twin-key", str(rig.twin_key_path),
                "--device", str(pump), "--device", str(valve), "--transport", "inproc,serial",
                "--only", only, "--json")
    assert p.returncode == 0, p.stderr
    marks = {(r["id"], r["transport"]): (r["mark"], r["detail"])
             for r in json.loads(p.stdout)["results"]}
    assert marks[("replay-exact", "inproc")][0] == marks[("kid-swap", "inproc")][0] == "ok"
    assert marks[("revoked-device", "inproc")] == (
        "skipped", "needs operator: not available against an existing twin")
    assert marks[("replay-exact", "serial")][0] == "skipped"
    # The attacks went into that twin's own store.
    with twinlink.Twin(rig.db, rig.twin_key_path) as twin:
        types = {e["type"] for e in twin.store.events(limit=1000, audit=False)}
    assert {"frame.replay", "frame.bad_signature", "frame.unknown_device"} <= types
    usage = run_cli("attack", "--device", str(pump))
    assert usage.returncode == 2 and "give its --db too" in usage.stderr
    usage = run_cli("attack", "--keep", str(rig.root), "--transport", "inproc")
    assert usage.returncode == 2 and "is not empty" in usage.stderr


@requires_mosquitto
def test_cli_against_an_existing_twin_over_its_own_ingest(rig, broker_factory):  # noqa: F811
    # A deployment with its own topic root: serve takes it from the database, and so does
    # the attack (a topic-spoof sent under 'twinlink' would never reach this twin).
    pump, valve = _existing(rig, topic_root="plant-7/telemetry")
    broker = broker_factory(persistence=False)
    serve = start_serve(broker.url, rig.db, rig.twin_key_path)
    try:
        p = run_cli("attack", "--db", str(rig.db), "--device", str(pump), "--device",
                    str(valve), "--mqtt", broker.url, "--transport", "mqtt", "--json",
                    "--only", "replay-exact,topic-spoof,flip-signature,ack-forged")
    finally:
        assert serve.terminate() == 0, serve.stderr()
    assert p.returncode == 0, p.stderr
    marks = {r["id"]: r["mark"] for r in json.loads(p.stdout)["results"]}
    assert marks == {"replay-exact": "ok", "topic-spoof": "ok", "flip-signature": "ok",
                     "ack-forged": "skipped"}


def test_the_mqtt_channel_knows_what_reaches_the_ingest_under_any_root():
    from twinlink.attack.rig import _telemetry_shaped

    for root in ("twinlink", "plant-a/telemetry"):
        assert _telemetry_shaped(f"{root}/a70001/t", root)
        assert _telemetry_shaped(f"{root}/zz/t", root)  # names no kid: the twin refuses it
        assert not _telemetry_shaped(f"{root}/_twin/t", root)  # presence, never a frame
        assert not _telemetry_shaped(f"{root}/a70001/a", root)
        assert not _telemetry_shaped(f"{root}/a70001/t/x", root)
        assert not _telemetry_shaped(f"other/{root}/a70001/t", root)
    assert not _telemetry_shaped("twinlink/a70001/t", "plant-a/telemetry")
    assert not _telemetry_shaped("plant-a/a70001/t", "plant-a/telemetry")


def test_list_prints_the_catalogue():
    p = run_cli("attack", "--list", "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0 and [r["id"] for r in rows] == [sc.id for sc in attack.SCENARIOS]


# -- what the harness found ---------------------------------------------------------------------

def test_a_gap_filled_by_late_frames_is_closed_before_the_next_gap():
    """Steady reordering in threes: every frame arrives within the grace, none is missing."""
    stream = DeviceStream("pump", DetectConfig().device_params("pump"))
    found: list = []
    t = 1000.0
    for seq in range(8):  # learn the interval in order
        t += 1.0
        stream.observe(seq, 0, t, 100, None, False, found)
    for base in range(8, 80, 3):
        for seq in (base + 2, base, base + 1):
            t += 1.0
            stream.observe(seq, 0, t, 100, None, False, found)
    stream.sweep(t + 0.5, found)
    assert stream.gap is None  # nothing left open to report later either
    assert [e.type for e in found] == []
    assert stream.counts["reordered"] > 0 and stream.counts["missing"] == 0


def test_a_broker_redelivery_of_a_stored_frame_records_no_event(rig, backend_name):
    rig.provision("pump")
    dev, twin = rig.device("pump"), rig.twin()
    try:
        f = dev.seal({"v": 1})
        twin.open(f)
        (again,) = twin.open_many([f], redelivered=[True])
        assert isinstance(again, Replay) and again.frame.duplicate
        assert twin.store.events(audit=False) == []
        (replayed,) = twin.open_many([f], redelivered=[False])  # an attacker's copy
        assert isinstance(replayed, TwinlinkError)
        assert [e["type"] for e in twin.store.events(audit=False)] == ["frame.replay"]
        # DUP on a frame that is *not* a stored copy changes nothing: it is judged as ever.
        forged = bytearray(dev.seal({"v": 2}))
        forged[-1] ^= 1
        (bad,) = twin.open_many([bytes(forged)], redelivered=[True])
        assert bad.reason == "bad_signature"
        assert [e["type"] for e in twin.store.events(audit=False)][-1] == "frame.bad_signature"
    finally:
        dev.close()
        twin.close()


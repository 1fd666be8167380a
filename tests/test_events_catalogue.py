"""The event catalogue: issue 11's types, legacy reasons, the registration API, normalise(),
and docs/EVENTS.md generated from it (stale -> fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twinlink import errors, events
from twinlink.store import AUDIT_REASONS, Event, SQLiteStore, StorageError

ROOT = Path(__file__).resolve().parent.parent

ISSUE_TYPES = {
    "frame.malformed", "frame.oversize", "frame.bad_signature", "frame.decrypt_failed",
    "frame.replay", "frame.too_old", "frame.unknown_device", "frame.revoked_device",
    "frame.topic_mismatch", "frame.window_lost", "frame.conflict", "frame.context_retired",
    "frame.bad_payload", "ingest.internal_error", "device.registered", "device.revoked",
    "device.rekeyed", "device.rekey_announced", "device.context_renewed",
    "device.context_started", "window.reanchored", "window.marked_lost",
    "device.registration_refused", "ingest.storage_failure", "ingest.storage_full",
    "ingest.flood", "ack.forged", "ack.stale", "ack.conflict", "seq.persist_failure",
}

# The reasons stored today and the type each must become (written out, not derived).
LEGACY = {
    "malformed": "frame.malformed", "unknown_device": "frame.unknown_device",
    "revoked": "frame.revoked_device", "bad_signature": "frame.bad_signature",
    "decrypt_failed": "frame.decrypt_failed", "replay": "frame.replay",
    "too_old": "frame.too_old", "window_lost": "frame.window_lost",
    "topic_mismatch": "frame.topic_mismatch", "bad_payload": "frame.bad_payload",
    "conflict": "frame.conflict", "context_retired": "frame.context_retired",
    "internal_error": "ingest.internal_error", "too_large": "frame.oversize",
    "registered": "device.registered", "revoked_by_operator": "device.revoked",
    "reanchored": "window.reanchored", "window_marked_lost": "window.marked_lost",
    "rekey_announced": "device.rekey_announced", "rekeyed": "device.rekeyed",
    "context_renewed": "device.context_renewed", "context_started": "device.context_started",
    "storage_failure": "ingest.storage_failure",
}


@pytest.fixture
def scratch_catalogue():
    """Types registered by a test disappear afterwards (the catalogue is process-wide)."""
    types, reasons = dict(events._TYPES), dict(events._BY_REASON)
    yield
    events._TYPES.clear()
    events._TYPES.update(types)
    events._BY_REASON.clear()
    events._BY_REASON.update(reasons)


def test_issue_types_are_catalogued():
    names = {t.name for t in events.types()}
    assert ISSUE_TYPES <= names, ISSUE_TYPES - names


@pytest.mark.parametrize("reason,name", sorted(LEGACY.items()))
def test_legacy_reason_maps_to_its_type(reason, name):
    assert events.type_for_reason(reason).name == name
    assert events.get(name).reason == reason


def test_every_error_reason_the_ingest_records_is_catalogued():
    refusals = [errors.MalformedFrame, errors.UnknownDevice, errors.RevokedDevice,
                errors.BadSignature, errors.DecryptionFailed, errors.Replay, errors.TooOld,
                errors.WindowLost, errors.Conflict, errors.ContextRetired,
                errors.InternalError, errors.MalformedPayload, errors.TopicMismatch,
                errors.FrameTooLarge, StorageError]
    for cls in refusals:
        et = events.type_for_reason(cls.reason)
        assert et.name != events.UNCLASSIFIED, cls
    for reason in AUDIT_REASONS:
        et = events.type_for_reason(reason)
        assert et.audit and et.outcome == "info" and et.ocsf_class == 3004, reason
    assert errors.LineError.reason == "line"  # not stored: stays unclassified by design
    assert events.type_for_reason("line").name == events.UNCLASSIFIED


def test_catalogue_invariants():
    ts = events.types()
    assert len({t.rule for t in ts}) == len(ts)
    assert len({t.reason for t in ts}) == len(ts)
    for t in ts:
        assert len(t.name) <= 32 and t.name.isascii()
        assert t.outcome in ("blocked", "detected", "info")
        assert 0 <= t.severity <= 10
        assert t.ocsf_class in (2004, 3004)
        if t.outcome == "blocked" and not t.audit and t.ecs_kind == "alert":
            assert t.ecs_category == ("intrusion_detection", "network")
            assert t.ecs_type == ("denied",)
    refused = events.get("frame.replay")
    assert (refused.ecs_kind, refused.ecs_category, refused.ecs_type, refused.ecs_outcome) == (
        "alert", ("intrusion_detection", "network"), ("denied",), "success")
    assert events.get("device.registered").ecs_type == ("creation",)
    assert events.get("ack.forged").side == "device"


def test_severity_scales_are_monotonic():
    sev = list(range(11))
    syslog = [events.syslog_severity(s) for s in sev]
    ocsf = [events.ocsf_severity_id(s) for s in sev]
    assert syslog == sorted(syslog, reverse=True) and set(syslog) <= set(range(2, 7))
    assert ocsf == sorted(ocsf) and set(ocsf) <= {1, 2, 3, 4, 5}
    assert (events.syslog_severity(10), events.syslog_severity(0)) == (2, 6)
    assert (events.ocsf_severity_id(9), events.ocsf_severity_id(4)) == (5, 3)


def test_register_type_adds_a_detection_type(scratch_catalogue):
    # (the detection engine's own types are registered already; this one is made up)
    et = events.register_type(
        "value.bogus_jump", outcome="detected", severity=6, description="A value jumped",
        ecs_category=("intrusion_detection",), ecs_type=("info",))
    assert et.rule == "TL-VALUE-BOGUS-JUMP" and et.reason == "bogus_jump" and et.ecs_kind == "alert"
    assert et.ocsf_class == 2004
    assert events.type_for_reason("bogus_jump") is et
    # the same definition again is a no-op; a different one is refused
    assert events.register_type(
        "value.bogus_jump", outcome="detected", severity=6, description="A value jumped",
        ecs_category=("intrusion_detection",), ecs_type=("info",)) is et
    with pytest.raises(ValueError, match="already registered"):
        events.register_type("value.bogus_jump", outcome="detected", severity=7,
                             description="x", ecs_category=("intrusion_detection",),
                             ecs_type=("info",))
    row = {"id": 1, "at": 5.0, "reason": "bogus_jump", "detail": "d"}
    assert events.normalise(row)["type"] == "value.bogus_jump"


@pytest.mark.parametrize("kw,msg", [
    ({"name": "Frame.X"}, "lowercase"),
    ({"name": "frame"}, "lowercase"),
    ({"name": "value." + "x" * 30}, "at most 32"),
    ({"name": "bogus.thing"}, "namespace"),
    ({"outcome": "maybe"}, "outcome"),
    ({"severity": 11}, "severity"),
    ({"severity": True}, "severity"),
    ({"ecs_kind": "notice"}, "event.kind"),
    ({"ecs_category": ("firewall",)}, "event.category"),
    ({"ecs_type": ("indicator",)}, "event.type"),  # indicator belongs to threat
    ({"ecs_outcome": "denied"}, "event.outcome"),
    ({"ocsf_activity": 9}, "activity"),
    ({"reason": "Replay"}, "snake_case"),
    ({"reason": "replay"}, "already names"),
    ({"rule": "TL-FRAME-REPLAY"}, "taken"),
    ({"rule": "bad rule"}, "rule id"),
    ({"description": ""}, "description"),
    ({"side": "cloud"}, "side"),
])
def test_register_type_refuses(scratch_catalogue, kw, msg):
    args = {"name": "value.test_probe", "outcome": "detected", "severity": 5,
            "description": "probe", "ecs_category": ("intrusion_detection",),
            "ecs_type": ("info",)}
    args.update(kw)
    name = args.pop("name")
    with pytest.raises(ValueError, match=msg):
        events.register_type(name, **args)
    assert "value.test_probe" not in {t.name for t in events.types()}


def test_normalise_legacy_row():
    row = {"id": 9, "at": 1714564800.5, "kid": "0a", "device": "pump-17", "seq": 3,
           "reason": "replay", "detail": "seq 3 again", "source": "mqtt"}
    ev = events.normalise(row)
    assert tuple(ev) == events.RECORD_KEYS
    assert ev == {
        "id": 9, "time": 1714564800.5, "first_time": 1714564800.5,
        "last_time": 1714564800.5, "count": 1, "type": "frame.replay", "outcome": "blocked",
        "severity": 6, "reason": "replay", "device": "pump-17", "kid": "0a", "seq": 3,
        "transport": "mqtt", "source": "mqtt", "rule": "TL-FRAME-REPLAY",
        "detail": "seq 3 again"}
    assert events.normalise(ev) == ev  # idempotent


def test_normalise_new_row_keeps_its_fields_and_tolerates_junk():
    row = {"id": 10, "time": 20.0, "first_time": 10.0, "last_time": 20.0, "count": 7,
           "type": "frame.bad_signature", "outcome": "blocked", "severity": 9,
           "reason": "bad_signature", "device": None, "kid": b"\x01\x02", "seq": None,
           "transport": "serial", "source": "serial:/dev/ttyUSB0", "rule": "TL-FRAME-BAD-SIGNATURE",
           "detail": "x", "final_after": 30.0}
    ev = events.normalise(row)
    assert (ev["count"], ev["first_time"], ev["severity"], ev["kid"], ev["final_after"]) == (
        7, 10.0, 9, "0102", 30.0)
    junk = {"id": "7", "time": float("nan"), "count": -3, "type": 5, "severity": 99,
            "outcome": "exploded", "seq": "12", "detail": None, "source": 3, "rule": "x y",
            "transport": "carrier pigeon"}
    ev = events.normalise(junk)
    assert ev["type"] == events.UNCLASSIFIED and ev["count"] == 1 and ev["id"] == 0
    assert ev["severity"] == 5 and ev["outcome"] == "info" and ev["seq"] is None
    assert ev["detail"] == "" and ev["source"] == "" and ev["transport"] is None
    assert ev["rule"] == "TL-EVENT-UNCLASSIFIED" and ev["time"] == 0.0
    unknown = events.normalise({"id": 1, "at": 1.0, "reason": "gremlins", "detail": ""})
    assert (unknown["type"], unknown["reason"]) == (events.UNCLASSIFIED, "gremlins")


@pytest.mark.parametrize("source,transport", [
    ("mqtt", "mqtt"), ("twinlink/0a/t", "mqtt"), ("serial:loop://", "serial"),
    ("/dev/ttyUSB0", "serial"), ("", None), ("stdin", "stdin"), ("weird", None)])
def test_transport_from_source(source, transport):
    assert events.normalise({"reason": "replay", "source": source})["transport"] == transport


def test_every_stored_legacy_row_normalises(tmp_path):
    """Rows from a real SQLiteStore (today's schema) become full records of the right type."""
    store = SQLiteStore(str(tmp_path / "t.db"))
    try:
        store.record_events([Event(r, f"d {r}", b"\x01", 5, "mqtt") for r in LEGACY],
                            aggregate=False)
        rows = store.events(None, 100, after_id=0)
        assert len(rows) == len(LEGACY)
        for row in rows:
            ev = events.normalise(row)
            assert ev["type"] == LEGACY[row["reason"]]
            assert ev["kid"] == "01" and ev["seq"] == 5 and ev["time"] == row["at"]
    finally:
        store.close()


def test_events_md_is_generated_from_the_catalogue():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_events_md
    finally:
        sys.path.pop(0)
    text = (ROOT / "docs" / "EVENTS.md").read_text()
    assert text == gen_events_md.render_markdown(), (
        "docs/EVENTS.md is stale: run python scripts/gen_events_md.py")
    for t in events.types():
        assert f"| `{t.name}` | `{t.reason}` |" in text
    rc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_events_md.py"), "--check"],
                        capture_output=True, timeout=60)
    assert rc.returncode == 0, rc.stderr

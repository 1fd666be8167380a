"""The security-event catalogue: one source of truth for every event twinlink emits.

Each :class:`EventType` fixes, for one dotted type name (``frame.replay``), everything a
consumer needs: outcome (``blocked`` | ``detected`` | ``info``), severity 0-10, stable rule id,
one-line description, the legacy short reason the CLI prints (``replay``), the Elastic Common
Schema categorization, and the OCSF class and activity. The syslog, CEF and OCSF severities are
*derived* from the one 0-10 severity here, so the four renderings (:mod:`twinlink.siem`) can
never disagree. ``docs/EVENTS.md`` is generated from this module (``scripts/gen_events_md.py``)
and a test fails when it is stale.

Other modules add their own types with :func:`register_type` (the detection work adds
``value.*``, ``stream.*`` and more ``device.*`` types that way); :func:`normalise` turns a stored
event row, old or new, into the full event record, deriving what the row lacks.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

#: Event outcomes: the twin refused something / noticed something it let through / recorded
#: an action or a state change.
OUTCOMES = ("blocked", "detected", "info")

#: Namespaces a type name may start with. ``value``, ``stream`` are reserved for the
#: detection work (behaviour and data-quality anomalies); ``device`` is shared with it.
NAMESPACES = ("frame", "ingest", "device", "window", "ack", "seq", "value", "stream", "event",
              "downlink", "update")

#: Which side of the link emits a type.
SIDES = ("twin", "device")

#: Elastic Common Schema categorization values this catalogue may use (ECS 8.x allowed values,
#: elastic.co "ECS categorization fields"); :func:`register_type` refuses anything else.
ECS_KINDS = frozenset({"alert", "asset", "enrichment", "event", "metric", "state",
                       "pipeline_error", "signal"})
ECS_CATEGORY_TYPES: Mapping[str, frozenset[str]] = {
    # category -> the event.type values ECS expects with it
    "api": frozenset({"access", "admin", "allowed", "change", "creation", "deletion", "denied",
                      "end", "info", "start", "user"}),
    "authentication": frozenset({"start", "end", "info"}),
    "configuration": frozenset({"access", "change", "creation", "deletion", "info"}),
    "database": frozenset({"access", "change", "info", "error"}),
    "driver": frozenset({"change", "end", "info", "start"}),
    "file": frozenset({"change", "creation", "deletion", "info"}),
    "host": frozenset({"access", "change", "end", "info", "start"}),
    "iam": frozenset({"admin", "change", "creation", "deletion", "group", "info", "user"}),
    "intrusion_detection": frozenset({"allowed", "denied", "info"}),
    "library": frozenset({"start"}),
    "malware": frozenset({"info"}),
    "network": frozenset({"access", "allowed", "connection", "denied", "end", "info",
                          "protocol", "start"}),
    "package": frozenset({"access", "change", "deletion", "info", "installation", "start"}),
    "process": frozenset({"access", "change", "end", "info", "start"}),
    "registry": frozenset({"access", "change", "creation", "deletion"}),
    "session": frozenset({"start", "end", "info"}),
    "threat": frozenset({"indicator"}),
    "vulnerability": frozenset({"info"}),
    "web": frozenset({"access", "error", "info"}),
}
ECS_OUTCOMES = frozenset({"success", "failure", "unknown"})

#: OCSF classes the renderer knows: Detection Finding (refusals and detections) and Entity
#: Management (operator actions and context changes), with their activity ids.
OCSF_DETECTION_FINDING = 2004
OCSF_ENTITY_MANAGEMENT = 3004
OCSF_ACTIVITIES: Mapping[int, Mapping[int, str]] = {
    OCSF_DETECTION_FINDING: {1: "Create", 2: "Update", 3: "Close"},
    OCSF_ENTITY_MANAGEMENT: {1: "Create", 2: "Read", 3: "Update", 4: "Delete"},
}

_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,31}")
_RULE = re.compile(r"[A-Z][A-Z0-9-]{1,62}")
MAX_NAME = 32  # a type name is the syslog MSGID, which RFC 5424 caps at 32 characters


@dataclass(frozen=True)
class EventType:
    """One catalogued event type; built by :func:`register_type`, which validates it."""

    name: str
    outcome: str
    severity: int
    description: str
    reason: str
    rule: str
    audit: bool
    side: str
    ecs_kind: str
    ecs_category: tuple[str, ...]
    ecs_type: tuple[str, ...]
    ecs_outcome: str
    ocsf_class: int
    ocsf_activity: int

    @property
    def syslog_severity(self) -> int:
        return syslog_severity(self.severity)

    @property
    def cef_severity(self) -> int:
        return self.severity

    @property
    def ocsf_severity_id(self) -> int:
        return ocsf_severity_id(self.severity)

    @property
    def namespace(self) -> str:
        return self.name.split(".", 1)[0]


def syslog_severity(severity: int) -> int:
    """RFC 5424 severity (0 emergency .. 7 debug) of a 0-10 severity: 9-10 critical (2),
    7-8 error (3), 4-6 warning (4), 1-3 notice (5), 0 informational (6). Emergency and alert
    stay for the host's own troubles. (CEF uses the 0-10 scale as it is: 0-3 low, 4-6 medium,
    7-8 high, 9-10 very high.)"""
    s = severity
    return 2 if s >= 9 else 3 if s >= 7 else 4 if s >= 4 else 5 if s >= 1 else 6


def ocsf_severity_id(severity: int) -> int:
    """OCSF severity_id of a 0-10 severity: 1 informational (0), 2 low (1-3), 3 medium (4-6),
    4 high (7-8), 5 critical (9-10)."""
    s = severity
    return 5 if s >= 9 else 4 if s >= 7 else 3 if s >= 4 else 2 if s >= 1 else 1


_lock = threading.Lock()
_TYPES: dict[str, EventType] = {}
_BY_REASON: dict[str, str] = {}


def _default_rule(name: str) -> str:
    return "TL-" + re.sub(r"[^A-Z0-9]+", "-", name.upper())


def register_type(
    name: str,
    *,
    outcome: str,
    severity: int,
    description: str,
    ecs_category: tuple[str, ...],
    ecs_type: tuple[str, ...],
    ecs_kind: Optional[str] = None,
    ecs_outcome: str = "success",
    ocsf_class: Optional[int] = None,
    ocsf_activity: int = 1,
    reason: Optional[str] = None,
    rule: Optional[str] = None,
    audit: bool = False,
    side: str = "twin",
) -> EventType:
    """Add an event type to the catalogue and return it.

    ``name`` is ``namespace.what`` (lowercase, at most 32 characters, a namespace from
    :data:`NAMESPACES`); ``reason`` is the short legacy name (default: the part after the
    first dot); ``rule`` defaults to ``TL-`` plus the upper-cased name. ``ecs_kind`` defaults to
    ``alert`` for blocked/detected and ``event`` for info; ``ocsf_class`` to Entity Management
    for audit types, Detection Finding otherwise. Registering the same definition twice is a
    no-op; a different definition under a taken name, reason or rule raises ValueError, as
    does any value outside the ECS/OCSF enumerations above.
    """
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise ValueError(f"event type name {name!r} must be lowercase dotted "
                         f"'namespace.what', at most {MAX_NAME} characters")
    if name.split(".", 1)[0] not in NAMESPACES:
        raise ValueError(f"event type {name!r}: namespace must be one of {NAMESPACES}")
    if outcome not in OUTCOMES:
        raise ValueError(f"event type {name}: outcome must be one of {OUTCOMES}")
    if type(severity) is not int or not 0 <= severity <= 10:
        raise ValueError(f"event type {name}: severity must be an integer 0..10")
    if side not in SIDES:
        raise ValueError(f"event type {name}: side must be one of {SIDES}")
    description = " ".join(str(description).split())
    if not description or len(description) > 200:
        raise ValueError(f"event type {name}: give a one-line description (<= 200 chars)")
    reason = name.split(".", 1)[1] if reason is None else reason
    if not _REASON.fullmatch(reason):
        raise ValueError(f"event type {name}: reason {reason!r} must be lowercase snake_case")
    rule = _default_rule(name) if rule is None else rule
    if not _RULE.fullmatch(rule):
        raise ValueError(f"event type {name}: rule id {rule!r} must be upper-case A-Z 0-9 -")
    kind = ecs_kind if ecs_kind is not None else ("event" if outcome == "info" else "alert")
    if kind not in ECS_KINDS:
        raise ValueError(f"event type {name}: ECS event.kind {kind!r} is not an allowed value")
    if not ecs_category or not ecs_type:
        raise ValueError(f"event type {name}: give ECS event.category and event.type")
    for cat in ecs_category:
        if cat not in ECS_CATEGORY_TYPES:
            raise ValueError(f"event type {name}: ECS event.category {cat!r} is not allowed")
    for typ in ecs_type:
        if not any(typ in ECS_CATEGORY_TYPES[c] for c in ecs_category):
            raise ValueError(f"event type {name}: ECS event.type {typ!r} is not expected with "
                             f"categories {list(ecs_category)}")
    if ecs_outcome not in ECS_OUTCOMES:
        raise ValueError(f"event type {name}: ECS event.outcome {ecs_outcome!r} not allowed")
    cls = (ocsf_class if ocsf_class is not None
           else OCSF_ENTITY_MANAGEMENT if audit else OCSF_DETECTION_FINDING)
    if ocsf_activity not in OCSF_ACTIVITIES.get(cls, {}):
        raise ValueError(f"event type {name}: OCSF class {cls} has no activity "
                         f"{ocsf_activity}")
    et = EventType(name, outcome, severity, description, reason, rule, bool(audit), side, kind,
                   tuple(ecs_category), tuple(ecs_type), ecs_outcome, cls, ocsf_activity)
    with _lock:
        old = _TYPES.get(name)
        if old is not None:
            if old == et:
                return old
            raise ValueError(f"event type {name} is already registered differently")
        if reason in _BY_REASON:
            raise ValueError(f"event type {name}: reason {reason!r} already names "
                             f"{_BY_REASON[reason]}")
        if any(t.rule == rule for t in _TYPES.values()):
            raise ValueError(f"event type {name}: rule id {rule} is taken")
        _TYPES[name] = et
        _BY_REASON[reason] = name
    return et


def get(name: str) -> EventType:
    """The catalogued type ``name``; KeyError if there is none."""
    return _TYPES[name]


def types() -> list[EventType]:
    """Every registered type, sorted by name."""
    with _lock:
        return sorted(_TYPES.values(), key=lambda t: t.name)


def type_for_reason(reason: str) -> EventType:
    """The type a legacy reason (``replay``, ``revoked_by_operator`` …) maps to;
    :data:`UNCLASSIFIED` for a reason no type claims."""
    name = _BY_REASON.get(reason)
    return _TYPES[name] if name is not None else _TYPES[UNCLASSIFIED]


def legacy_reasons() -> dict[str, str]:
    """Legacy reason -> type name, for every registered type."""
    with _lock:
        return dict(sorted(_BY_REASON.items()))


# -- the catalogue ---------------------------------------------------------------------------

def _refusal(name: str, severity: int, description: str, reason: str | None = None) -> None:
    """A refused frame: an alert, ECS ``[intrusion_detection, network]`` / ``[denied]``."""
    register_type(name, outcome="blocked", severity=severity, description=description,
                  reason=reason, ecs_category=("intrusion_detection", "network"),
                  ecs_type=("denied",))


_refusal("frame.malformed", 5, "Frame refused: not a well-formed twinlink/1 COSE structure")
_refusal("frame.oversize", 5, "Frame or reading refused: larger than the configured maximum",
         reason="too_large")
_refusal("frame.bad_signature", 8,
         "Frame refused: Ed25519 signature does not verify under the registered device key")
_refusal("frame.decrypt_failed", 8,
         "Frame refused: signature verified but the AEAD tag did not (wrong context or "
         "altered ciphertext)")
_refusal("frame.replay", 6, "Frame refused: sequence number already accepted from this device")
_refusal("frame.too_old", 5, "Frame refused: sequence number below the device's replay window")
_refusal("frame.unknown_device", 5, "Frame refused: its kid names no registered device")
_refusal("frame.revoked_device", 7, "Frame refused: the device was revoked by an operator",
         reason="revoked")
_refusal("frame.topic_mismatch", 7,
         "Frame refused: the MQTT topic names another device than the frame's kid")
_refusal("frame.window_lost", 6,
         "Frame refused: the device's replay window is lost until an operator re-anchors it")
_refusal("frame.conflict", 9,
         "Frame refused: a different frame was stored under the same sequence number "
         "(cloned device or reused nonce)")
_refusal("frame.context_retired", 6,
         "Frame refused: sealed under a security context the twin has retired")
_refusal("frame.bad_payload", 6,
         "Frame refused: authenticated plaintext is not valid CBOR or SenML")
register_type("ingest.internal_error", outcome="blocked", severity=7, ecs_kind="event",
              ecs_category=("network",), ecs_type=("denied",), ecs_outcome="failure",
              description="Frame refused: an unexpected failure while processing it (logged "
                          "with its traceback)")
register_type("ingest.storage_failure", outcome="info", severity=8, ecs_kind="event",
              ecs_category=("database",), ecs_type=("error",), ecs_outcome="failure",
              description="The twin database could not store; the frames involved were "
                          "refused, not accepted unrecorded")
register_type("ingest.storage_full", outcome="info", severity=6, ecs_kind="event",
              ecs_category=("database",), ecs_type=("info",),
              description="The event table reached its cap; the oldest events are being "
                          "dropped (counters keep the totals)")
register_type("ingest.flood", outcome="detected", severity=7,
              ecs_category=("intrusion_detection", "network"), ecs_type=("info",),
              description="Refusals of one type from one device or source reached the flood "
                          "threshold (100 in 10 s): raised once per episode; the refusals are "
                          "aggregated")
register_type("ingest.flood.cleared", outcome="info", severity=1, ecs_kind="event",
              ecs_category=("intrusion_detection", "network"), ecs_type=("info",),
              reason="flood_cleared", ocsf_activity=3,
              description="A flood of refusals from one source ended: a whole window stayed "
                          "below the flood threshold (detail gives its totals)")
register_type("event.unclassified", outcome="info", severity=5, ecs_kind="event",
              ecs_category=("host",), ecs_type=("info",), ecs_outcome="unknown",
              description="An event whose reason this twinlink version does not catalogue "
                          "(see its reason field)")

# Audit: operator actions and security-context changes (OCSF Entity Management).
def _audit(name: str, reason: str, severity: int, ecs_type: str, description: str) -> None:
    """An operator action or context change: ECS ``iam`` creation/change, OCSF Entity
    Management create (1) or update (3)."""
    register_type(name, outcome="info", audit=True, severity=severity, reason=reason,
                  ecs_category=("iam",), ecs_type=(ecs_type,),
                  ocsf_activity=1 if ecs_type == "creation" else 3, description=description)


_audit("device.registered", "registered", 2, "creation",
       "A device was registered with its public key")
_audit("device.revoked", "revoked_by_operator", 4, "change",
       "An operator revoked a device; its frames are refused from now on")
_audit("device.rekey_announced", "rekey_announced", 2, "change",
       "An operator announced a re-key to a new Master Salt")
_audit("device.rekeyed", "rekeyed", 3, "change",
       "A device switched to a new security context; its window restarts")
_audit("device.context_renewed", "context_renewed", 5, "change",
       "A device started a new security context by itself: its sequence state was lost, "
       "restored or copied")
_audit("device.context_started", "context_started", 1, "creation",
       "A newly registered device sent its first frame in its first security context")
_audit("window.reanchored", "reanchored", 4, "change",
       "An operator re-anchored a device's replay window at a new floor")
_audit("window.marked_lost", "window_marked_lost", 4, "change",
       "An operator marked a device's replay window lost; refused until re-anchored")
register_type("device.registration_refused", outcome="blocked", severity=5, audit=True,
              ecs_kind="event", ecs_category=("iam",), ecs_type=("creation",),
              ecs_outcome="failure", ocsf_activity=1, reason="registration_refused",
              description="A device registration was refused (invalid key, taken name or "
                          "kid)")

# Firmware updates delivered over the downlink (docs/UPDATES.md): what the twin offered and
# what the device reported back.
register_type("update.offered", outcome="info", severity=3, audit=True, ecs_kind="event",
              ecs_category=("package",), ecs_type=("start",), ocsf_activity=1,
              reason="update_offered",
              description="An operator offered a device a firmware update (manifest and image "
                          "queued for delivery over the downlink)")
register_type("update.applied", outcome="info", severity=3, audit=True, ecs_kind="event",
              ecs_category=("package",), ecs_type=("installation",), ocsf_activity=3,
              reason="update_applied",
              description="A device reported a delivered firmware update verified, its "
                          "sequence number persisted and the image installed")
register_type("update.rejected", outcome="blocked", severity=7,
              ecs_category=("intrusion_detection", "network"), ecs_type=("denied",),
              reason="update_rejected",
              description="A device refused a delivered firmware update (forged or untrusted "
                          "manifest, rollback, wrong class, image mismatch, install failure); "
                          "nothing was installed")

# Device side: what a sender notices on its downlink and in its own state.
register_type("ack.forged", outcome="blocked", severity=8, side="device",
              ecs_category=("intrusion_detection", "network"), ecs_type=("denied",),
              reason="ack_forged",
              description="Device refused an acknowledgement that does not authenticate")
register_type("ack.stale", outcome="blocked", severity=3, side="device", ecs_kind="event",
              ecs_category=("network",), ecs_type=("denied",), reason="ack_stale",
              description="Device ignored an authentic acknowledgement older than one it "
                          "already had (a replayed ack)")
register_type("ack.conflict", outcome="detected", severity=8, side="device",
              ecs_category=("intrusion_detection", "network"), ecs_type=("info",),
              reason="ack_conflict",
              description="Device got an authentic acknowledgement naming a frame it never "
                          "sent (another sender uses its identity)")
register_type("downlink.forged", outcome="blocked", severity=8, side="device",
              ecs_category=("intrusion_detection", "network"), ecs_type=("denied",),
              reason="downlink_forged",
              description="Device refused a downlink frame (desired state or command) that does "
                          "not parse or authenticate, or is addressed to another device")
register_type("downlink.replay", outcome="blocked", severity=6, side="device",
              ecs_category=("intrusion_detection", "network"), ecs_type=("denied",),
              reason="downlink_replay",
              description="Device refused an authentic downlink frame seen before or below its "
                          "downlink replay window")
register_type("downlink.expired", outcome="blocked", severity=3, side="device",
              ecs_kind="event", ecs_category=("network",), ecs_type=("denied",),
              reason="downlink_expired",
              description="Device refused an authentic command that arrived after its deadline")
register_type("downlink.rejected", outcome="info", severity=2, side="device",
              ecs_kind="event", ecs_category=("configuration",), ecs_type=("info",),
              reason="downlink_rejected",
              description="Device rejected an authentic desired state or command (unknown "
                          "method, too large, malformed): reported to the twin")
register_type("seq.persist_failure", outcome="info", severity=8, side="device",
              ecs_kind="event", ecs_category=("host",), ecs_type=("info",),
              ecs_outcome="failure", reason="seq_persist_failure",
              description="Device could not durably store its sequence-number reservation; "
                          "it stops sealing rather than risk nonce reuse")

# Detection of authentic lies (twinlink.detect): value QC, stream and liveness behaviour. A
# detection is an alert the twin let through (ECS intrusion_detection/threat, indicator); its
# ``.cleared`` companion (and device.back_online) closes it as information.
_audit("device.qc_configured", "qc_configured", 2, "change",
       "An operator changed the detection (QC) configuration")


def _detections() -> None:
    from .detect.events import EVENT_TYPES, STATEFUL

    for kind, (severity, meaning) in EVENT_TYPES.items():
        name = DETECTION_NAMES.get(kind, kind)
        base = name.split(".", 1)[1]
        if kind == "device.back_online":
            register_type(name, outcome="info", severity=severity, reason=base,
                          ecs_kind="event", ecs_category=("intrusion_detection",),
                          ecs_type=("info",), description="Detection cleared: " + meaning)
            continue
        register_type(name, outcome="detected", severity=severity, reason=base,
                      ecs_category=("intrusion_detection", "threat"),
                      ecs_type=("info", "indicator"),
                      description=("Detection: " + meaning)[:200])
        if kind in STATEFUL:
            register_type(name + ".cleared", outcome="info", severity=1,
                          reason=base + "_cleared", ecs_kind="event",
                          ecs_category=("intrusion_detection",), ecs_type=("info",),
                          description=f"Detection cleared: {name} ended, the series or device "
                                      "is back to normal")


#: Detector type names that the catalogue spells differently (its namespaces are fixed).
DETECTION_NAMES = {"detect.series_cap": "device.series_cap"}
_detections()

#: The type an unknown reason normalises to.
UNCLASSIFIED = "event.unclassified"

# -- normalising stored rows -----------------------------------------------------------------

_TRANSPORTS = ("mqtt", "serial", "stdin", "api")


def _transport(source: str) -> Optional[str]:
    """Where a legacy row's ``source`` says the frame came from."""
    if source == "mqtt" or source.startswith("twinlink/") or source.startswith("mqtt:"):
        return "mqtt"
    if source.startswith("serial:") or source.startswith("/dev/"):
        return "serial"
    if source in ("stdin", "-"):
        return "stdin"
    if source.startswith("api"):
        return "api"
    return None


def _float(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _int(value: Any) -> Optional[int]:
    return value if type(value) is int else None


def normalise(row: Mapping[str, Any]) -> dict[str, Any]:
    """The full event record for a stored row (old or new schema), deriving what it lacks.

    Keys: id, time, first_time, last_time, count, type, outcome, severity, reason, device,
    kid, seq, transport, source, rule, detail (see docs/EVENTS.md), plus ``final_after`` when
    the row has one. ``type`` comes from the row or from its legacy ``reason`` (an unknown
    reason becomes ``event.unclassified`` and keeps its reason); outcome, severity and rule
    come from the row when valid, else from the catalogue; ``time`` is the row's
    ``time``/``last_time``/``at``. Never raises for a mapping; values of the wrong type are
    replaced by derived ones or None.
    """
    name = row.get("type")
    reason = row.get("reason")
    et: EventType
    if isinstance(name, str) and name in _TYPES:
        et = _TYPES[name]
    elif isinstance(reason, str):
        et = type_for_reason(reason)
    else:
        et = _TYPES[UNCLASSIFIED]
    if not isinstance(reason, str) or not reason:
        reason = et.reason
    t = _float(row.get("time"))
    if t is None:
        t = _float(row.get("last_time"))
    if t is None:
        t = _float(row.get("at"))
    if t is None:
        t = 0.0
    first = _float(row.get("first_time"))
    last = _float(row.get("last_time"))
    count = _int(row.get("count"))
    outcome = row.get("outcome")
    severity = _int(row.get("severity"))
    rule = row.get("rule")
    source = row.get("source")
    source = source if isinstance(source, str) else ""
    transport = row.get("transport")
    device = row.get("device")
    kid = row.get("kid")
    if isinstance(kid, (bytes, bytearray)):
        kid = bytes(kid).hex()
    detail = row.get("detail")
    ident = _int(row.get("id"))
    out: dict[str, Any] = {
        "id": ident if ident is not None else 0,
        "time": t,
        "first_time": first if first is not None else t,
        "last_time": last if last is not None else t,
        "count": count if count is not None and count >= 1 else 1,
        "type": et.name,
        "outcome": outcome if outcome in OUTCOMES else et.outcome,
        "severity": severity if severity is not None and 0 <= severity <= 10 else et.severity,
        "reason": reason,
        "device": device if isinstance(device, str) else None,
        "kid": kid if isinstance(kid, str) else None,
        "seq": _int(row.get("seq")),
        "transport": transport if transport in _TRANSPORTS else _transport(source),
        "source": source,
        "rule": rule if isinstance(rule, str) and _RULE.fullmatch(rule) else et.rule,
        "detail": detail if isinstance(detail, str) else "",
    }
    final_after = _float(row.get("final_after"))
    if final_after is not None:
        out["final_after"] = final_after
    return out


#: The keys of a normalised event record, in documentation order.
RECORD_KEYS = ("id", "time", "first_time", "last_time", "count", "type", "outcome", "severity",
               "reason", "device", "kid", "seq", "transport", "source", "rule", "detail")


# -- flood episodes --------------------------------------------------------------------------

#: Refusals with one key (kid or source, type) within one window that make a flood episode.
FLOOD_THRESHOLD = 100


@dataclass
class _FloodKey:
    window_end: float
    count: int = 0  # refusals in the current window
    started: Optional[float] = None  # the open episode's first refusal, None: no episode
    total: int = 0  # refusals since the episode's window began
    last: float = 0.0
    source: str = ""


@dataclass(frozen=True)
class FloodNotice:
    """An ``ingest.flood`` (episode began) or ``ingest.flood.cleared`` (it ended) to record:
    ``key`` is (kid bytes or transport, refusal type)."""

    type: str
    key: tuple[Any, ...]
    source: str
    detail: str
    at: float


class FloodWatch:
    """Flood episodes per aggregation key, from counts the store already has in hand: no
    query, O(1) per (key, batch), memory bounded by the keys active in the last window.

    An episode begins when one key collects ``threshold`` refusals within one ``window``
    (reported once, :data:`FLOOD_THRESHOLD` per 10 s by default) and ends at the first window
    that closes below the threshold (reported with the episode's totals). An end is noticed
    by :meth:`observe` or :meth:`expire`, i.e. at the next event the store handles: an idle
    twin reports it late, never wrongly. Not thread-safe: the caller serialises (the store
    calls it inside its write transaction).
    """

    def __init__(self, threshold: int = FLOOD_THRESHOLD, window: float = 10.0) -> None:
        if threshold < 1 or window <= 0:
            raise ValueError("flood threshold must be >= 1 and the window > 0 s")
        self.threshold, self.window = threshold, window
        self._keys: dict[tuple[Any, ...], _FloodKey] = {}
        self._next_sweep = 0.0

    def observe(self, key: tuple[Any, ...], n: int, first: float, last: float,
                source: str) -> list[FloodNotice]:
        """Count ``n`` refusals with ``key`` seen from ``first`` to ``last`` (epoch s);
        return the notices they cause (an episode that ended, one that began)."""
        out: list[FloodNotice] = []
        st = self._keys.get(key)
        if st is None or first >= st.window_end:
            if st is not None and st.started is not None:
                self._roll(key, st, first, out)
            if st is None or st.started is None:
                st = self._keys[key] = _FloodKey(first + self.window)
        st.count += n
        st.last, st.source = last, source
        if st.started is not None:
            st.total += n
        elif st.count >= self.threshold:
            st.started, st.total = st.window_end - self.window, st.count
            out.append(FloodNotice(
                "ingest.flood", key, source,
                f"{st.count} {key[1]} refusals within {self.window:g} s from {_who(key)} "
                f"(threshold {self.threshold}); they are aggregated", last))
        return out

    def expire(self, now: float) -> list[FloodNotice]:
        """End the episodes whose window closed below the threshold by ``now`` and forget
        idle keys; does the work at most once per second."""
        if now < self._next_sweep:
            return []
        self._next_sweep = now + 1.0
        out: list[FloodNotice] = []
        for key, st in list(self._keys.items()):
            if now < st.window_end:
                continue
            if st.started is not None:
                self._roll(key, st, now, out)
                if st.started is not None:
                    continue
            del self._keys[key]
        return out

    def _roll(self, key: tuple[Any, ...], st: _FloodKey, now: float,
              out: list[FloodNotice]) -> None:
        """Move an episode's key past its closed window at ``now`` (in O(1)): a closed window
        at or above the threshold with ``now`` inside the next keeps the episode open; else
        the closed window, or the empty one after it, stayed below and the episode ended."""
        if now < st.window_end:
            return
        if st.count >= self.threshold and now < st.window_end + self.window:
            st.window_end += self.window
            st.count = 0
            return
        out.append(FloodNotice(
            "ingest.flood.cleared", key, st.source,
            f"flood of {key[1]} refusals from {_who(key)} ended: {st.total} refusals "
            f"from {_rfc3339(st.started or st.last)} to {_rfc3339(st.last)}", now))
        st.started, st.total = None, 0
        st.window_end, st.count = now + self.window, 0


def _who(key: tuple[Any, ...]) -> str:
    k = key[0]
    return f"kid {bytes(k).hex()}" if isinstance(k, (bytes, bytearray)) else f"{k or 'any'} sources"


def _rfc3339(t: float) -> str:
    from .timefmt import iso

    return str(iso(t))

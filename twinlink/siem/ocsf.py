"""Open Cybersecurity Schema Framework (OCSF 1.4.0) JSON.

Refusals and detections are **Detection Finding** (class_uid 2004, category 2 Findings):
``finding_info`` {uid, title, types, analytic (the rule)}, ``count``, ``start_time``/
``end_time`` (epoch ms) for aggregated repeats, ``is_alert``, and the Security Control
profile's ``action_id``/``disposition_id`` (2 Denied / 2 Blocked for a refused frame; 1 Allowed
/ 15 Detected for a detection). Audit events (operator actions, context changes) are **Entity
Management** (class_uid 3004, category 3 IAM) with the device as the managed ``entity``.
``type_uid`` = class_uid x 100 + activity_id; ``severity_id`` comes from the catalogue's 0-10
severity. Fields OCSF has no place for go under ``unmapped.twinlink``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import events as _events
from . import Options, clean, epoch_ms, json_line, message, shorten

OCSF_VERSION = "1.4.0"

_CLASS = {
    _events.OCSF_DETECTION_FINDING: ("Detection Finding", 2, "Findings"),
    _events.OCSF_ENTITY_MANAGEMENT: ("Entity Management", 3, "Identity & Access Management"),
}
_SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
             5: "Critical", 6: "Fatal"}
#: OCSF device type_id 7: IOT.
_DEVICE_IOT = 7


def _device(ev: Mapping[str, Any]) -> dict[str, Any] | None:
    if ev["device"] is None and ev["kid"] is None:
        return None
    dev: dict[str, Any] = {"type_id": _DEVICE_IOT, "type": "IOT"}
    if ev["device"] is not None:
        dev["name"] = clean(ev["device"])
    if ev["kid"] is not None:
        dev["uid"] = clean(ev["kid"])
    return dev


def document(ev: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    """The OCSF event object of a normalised event record."""
    et = _events.get(ev["type"])
    cls = et.ocsf_class
    class_name, cat_uid, cat_name = _CLASS[cls]
    activity = et.ocsf_activity
    activity_name = _events.OCSF_ACTIVITIES[cls][activity]
    sev = _events.ocsf_severity_id(ev["severity"])
    uid = f"{clean(opts.hostname)}:{ev['id']}"
    detail = shorten(clean(ev["detail"]), opts.max_detail)
    doc: dict[str, Any] = {
        "class_uid": cls,
        "class_name": class_name,
        "category_uid": cat_uid,
        "category_name": cat_name,
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": cls * 100 + activity,
        "type_name": f"{class_name}: {activity_name}",
        "severity_id": sev,
        "severity": _SEVERITY[sev],
        "time": epoch_ms(ev["time"]),
        "start_time": epoch_ms(ev["first_time"]),
        "end_time": epoch_ms(ev["last_time"]),
        "count": ev["count"],
        "message": message(ev),
        "status_id": 2 if et.ecs_outcome == "failure" else 1,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": uid,
            "event_code": et.name,
            "log_name": "twinlink.security",
            "product": {"name": "twinlink", "vendor_name": "twinlink",
                        "version": opts.version},
        },
        "unmapped": {"twinlink": {
            "id": ev["id"], "type": et.name, "outcome": ev["outcome"],
            "reason": ev["reason"], "rule": ev["rule"], "seq": ev["seq"],
            "transport": ev["transport"], "source": clean(ev["source"]),
        }},
    }
    device = _device(ev)
    if cls == _events.OCSF_DETECTION_FINDING:
        blocked = ev["outcome"] == "blocked"
        doc["status_id"] = 1  # finding status: New
        doc["status"] = "New"
        doc["is_alert"] = et.ecs_kind == "alert"
        doc["metadata"]["profiles"] = ["security_control"]
        doc["action_id"], doc["action"] = (2, "Denied") if blocked else (1, "Allowed")
        doc["disposition_id"], doc["disposition"] = (2, "Blocked") if blocked else (15,
                                                                                    "Detected")
        doc["finding_info"] = {
            "uid": uid,
            "title": et.description,
            "desc": detail,
            "types": [et.name],
            "first_seen_time": epoch_ms(ev["first_time"]),
            "last_seen_time": epoch_ms(ev["last_time"]),
            "analytic": {"uid": ev["rule"], "name": et.name, "type_id": 1, "type": "Rule"},
        }
        if device is not None:
            doc["device"] = device
    else:
        doc["status"] = "Failure" if doc["status_id"] == 2 else "Success"
        doc["comment"] = detail
        entity: dict[str, Any] = {"type": "device"}
        if ev["device"] is not None:
            entity["name"] = clean(ev["device"])
        if ev["kid"] is not None:
            entity["uid"] = clean(ev["kid"])
        doc["entity"] = entity
    return doc


def render(ev: Mapping[str, Any], opts: Options) -> str:
    """One OCSF JSON line (see :func:`document`)."""
    return json_line(document(ev, opts))

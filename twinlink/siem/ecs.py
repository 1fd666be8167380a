"""Elastic Common Schema JSON lines.

Categorization comes from the catalogue and uses ECS's allowed values: a refused frame is
``event.kind: alert``, ``event.category: [intrusion_detection, network]``,
``event.type: [denied]``, and ``event.outcome: success`` — the outcome is the emitter's (the
twin's refusal succeeded); allow/deny lives in ``event.type``. ``event.action`` is the event
type, ``event.code`` the legacy reason, ``event.start``/``event.end`` the first/last time of an
aggregated event; what ECS has no field for (count, seq, kid, transport, source) goes under
the custom ``twinlink.*`` namespace, which ECS reserves no name in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import events as _events
from . import Options, clean, json_line, message, rfc3339, shorten

#: The ECS version whose field definitions this rendering follows.
ECS_VERSION = "8.11.0"
DATASET = "twinlink.security"


def document(ev: Mapping[str, Any], opts: Options) -> dict[str, Any]:
    """The ECS document (nested objects) of a normalised event record."""
    et = _events.get(ev["type"])
    doc: dict[str, Any] = {
        "@timestamp": rfc3339(ev["time"]),
        "ecs": {"version": ECS_VERSION},
        "message": message(ev),
        "event": {
            "id": f"{clean(opts.hostname)}:{ev['id']}",
            "kind": et.ecs_kind,
            "category": list(et.ecs_category),
            "type": list(et.ecs_type),
            "action": et.name,
            "outcome": et.ecs_outcome,
            "severity": ev["severity"],
            "code": ev["reason"],
            "reason": shorten(clean(ev["detail"]), opts.max_detail),
            "dataset": DATASET,
            "module": "twinlink",
            "provider": opts.app_name,
            "start": rfc3339(ev["first_time"]),
            "end": rfc3339(ev["last_time"]),
        },
        "observer": {"product": "twinlink", "vendor": "twinlink", "type": "ids",
                     "version": opts.version, "hostname": clean(opts.hostname)},
        "rule": {"id": ev["rule"], "name": et.name, "description": et.description,
                 "category": et.namespace},
        "twinlink": {
            "id": ev["id"],
            "type": et.name,
            "outcome": ev["outcome"],
            "reason": ev["reason"],
            "count": ev["count"],
            "first_time": rfc3339(ev["first_time"]),
            "last_time": rfc3339(ev["last_time"]),
            "source": clean(ev["source"]),
        },
    }
    if ev["device"] is not None or ev["kid"] is not None:
        doc["device"] = {"id": clean(ev["device"] if ev["device"] is not None else ev["kid"])}
    for key in ("seq", "kid", "transport"):
        if ev[key] is not None:
            doc["twinlink"][key] = ev[key] if key == "seq" else clean(ev[key])
    return doc


def render(ev: Mapping[str, Any], opts: Options) -> str:
    """One ECS JSON line (see :func:`document`)."""
    return json_line(document(ev, opts))

"""The OpenAPI 3.1 description of the dashboard's JSON API, built from code.

Served at ``/api/v1/openapi.json`` and written to ``docs/openapi.json`` by
``python -m twinlink.dashboard.openapi > docs/openapi.json``; a test fails when the file is
stale or when a route of the application is missing here (or described but not routed).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .. import __version__
from .. import events as _events
from .model import HEALTH, QC_LABELS
from .qcbounds import BOUND_KEYS, MAX_NAME, MAX_REASON, MAX_SERIES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _q(name: str, description: str, schema: dict[str, Any], *,
       explode: bool = False) -> dict[str, Any]:
    p = {"name": name, "in": "query", "required": False, "description": description,
         "schema": schema}
    if explode:
        p["explode"] = True
    return p


_NAME = {"name": "name", "in": "path", "required": True, "description": "device name",
         "schema": {"type": "string"}}
_LIMIT = _q("limit", "rows per page (1..1000, default 100)",
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
_AFTER = _q("after_id", "page forward: rows with a larger id, oldest first",
            {"type": "integer", "minimum": 0})
_SINCE = _q("since", "received at or after (ISO 8601, no offset = UTC; or Unix seconds)",
            {"type": "string"})
_UNTIL = _q("until", "received before (same forms as since)", {"type": "string"})
_EVENT_FILTERS = [
    _q("device", "only this device's events", {"type": "string"}),
    _q("type", "event type (repeat or comma-separate for several)",
       {"type": "array", "items": {"type": "string"}}, explode=True),
    _q("outcome", "blocked, detected or info (repeatable)",
       {"type": "array", "items": {"type": "string", "enum": list(_events.OUTCOMES)}},
       explode=True),
    _q("audit", "0 leaves out audit events (operator actions, context changes)",
       {"type": "string", "enum": ["0", "1"], "default": "1"}),
]


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"description": "bad parameter", "content": {"application/json": {
        "schema": _ref("Error")}}},
    "401": {"description": "no token, or a wrong one (only with a token file)",
            "content": {"application/json": {"schema": _ref("Error")}}},
}
_NOT_FOUND = {"404": {"description": "no such device",
                      "content": {"application/json": {"schema": _ref("Error")}}}}
_ADMIN_ERRORS = {
    "403": {"description": "not an admin token, or a cross-origin browser request",
            "content": {"application/json": {"schema": _ref("Error")}}},
    "415": {"description": "the body is not application/json",
            "content": {"application/json": {"schema": _ref("Error")}}},
}


def _get(summary: str, response: dict[str, Any], params: list[dict[str, Any]] | None = None,
         errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params or [],
                    "responses": {"200": response, **_ERRORS, **(errors or {})}}}


def _page(item: str, key: str) -> dict[str, Any]:
    return {"type": "object", "required": [key, "next", "more"], "properties": {
        key: {"type": "array", "items": _ref(item)},
        "next": {"type": ["string", "null"],
                 "description": "URL of the next page (after_id = the last id looked at)"},
        "more": {"type": "boolean", "description": "a full page: ask for the next at once"},
        "complete": {"type": "boolean", "description": "false: only the newest events were "
                     "searched for the type/outcome/time filter"}}}


def spec() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict)."""
    num = {"type": "number"}
    nullable_num = {"type": ["number", "null"]}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "QcFlag": {"type": ["integer", "null"], "enum": [*QC_LABELS, None],
                   "description": "QARTOD flag: " + ", ".join(
                       f"{k} {v}" for k, v in QC_LABELS.items())},
        "FleetDevice": {"type": "object", "properties": {
            "name": {"type": "string"}, "kid": {"type": "string"},
            "profile": {"type": "string"}, "status": {"type": "string",
                                                      "enum": ["active", "revoked"]},
            "fingerprint": {"type": "string"}, "last_seen": nullable_num,
            "last_seq": {"type": ["integer", "null"]}, "accepted": {"type": "integer"},
            "refused": {"type": "integer"}, "window_lost": {"type": "boolean"},
            "epoch": {"type": "integer"},
            "health": {"type": "string", "enum": list(HEALTH)},
            "qc": {**_ref("QcFlag"), "description": "worst current flag (when QC runs)"},
            "liveness": {"description": "the detection engine's liveness state, when present"},
        }},
        "Series": {"type": "object", "properties": {
            "name": {"type": "string"}, "value": {}, "unit": {"type": ["string", "null"]},
            "time": nullable_num, "seq": {"type": "integer"}, "flag": _ref("QcFlag")}},
        "DeviceDetail": {"allOf": [_ref("FleetDevice"), {"type": "object", "properties": {
            "registered_at": num, "window_top": {"type": "integer"},
            "id_context": {"type": ["string", "null"]},
            "state": {"type": "object", "description": "series name -> {value, unit, time, "
                      "seq, epoch}"},
            "series": {"type": "array", "items": _ref("Series")},
            "provenance": {"type": ["string", "null"],
                           "description": "of the newest reading: signed or aead-only"},
            "source": {"type": ["string", "null"]},
            "latest_reading": {"type": ["integer", "null"]}}}]},
        "Reading": {"type": "object", "required": ["id", "device", "seq", "received_at"],
                    "properties": {
                        "id": {"type": "integer"}, "device": {"type": "string"},
                        "seq": {"type": "integer"}, "epoch": {"type": "integer"},
                        "received_at": num, "time": nullable_num,
                        "provenance": {"type": "string"}, "source": {"type": "string"},
                        "payload": {"description": "{series: value} for SenML, else the "
                                    "decoded CBOR as JSON"},
                        "flags": {"type": "object", "description": "series -> QARTOD flag "
                                  "(when QC runs)"}}},
        "Event": {"type": "object", "description": "the event record of docs/EVENTS.md",
                  "required": ["id", "time", "type", "outcome", "severity"], "properties": {
                      "id": {"type": "integer"}, "time": num, "first_time": num,
                      "last_time": num, "count": {"type": "integer"},
                      "type": {"type": "string",
                               "description": "catalogue type (docs/EVENTS.md)"},
                      "outcome": {"type": "string", "enum": list(_events.OUTCOMES)},
                      "severity": {"type": "integer", "minimum": 0, "maximum": 10},
                      "reason": {"type": "string"}, "device": {"type": ["string", "null"]},
                      "kid": {"type": ["string", "null"]},
                      "seq": {"type": ["integer", "null"]},
                      "transport": {"type": ["string", "null"]},
                      "source": {"type": "string"}, "rule": {"type": "string"},
                      "detail": {"type": "string"},
                      "audit": {"type": "boolean", "description": "an operator action or a "
                                "context change (not a refusal or a detection)"}}},
    }
    bound = {"type": ["number", "null"], "minimum": -1e300, "maximum": 1e300}
    schemas["QcBounds"] = {
        "type": "object", "additionalProperties": False,
        "description": "gross range (min, max: a reading outside fails, flag 4) and suspect "
                       "span (suspect_min, suspect_max: outside is suspect, flag 3); finite; "
                       "min <= max and suspect_min <= suspect_max; null or absent: the default",
        "properties": {k: bound for k in BOUND_KEYS}}
    schemas["QcBoundsView"] = {
        "type": "object", "required": ["device", "series"], "properties": {
            "device": {"type": "string"},
            "series": {"type": "object", "description": "series name -> its bounds: every "
                       "series the device reported or that has bounds set",
                       "additionalProperties": {"type": "object", "properties": {
                           "unit": {"type": ["string", "null"]},
                           "set": {**_ref("QcBounds"),
                                   "description": "set for this device and series"},
                           "effective": {**_ref("QcBounds"), "description": "what the "
                                         "detectors apply (set, else the inherited default)"},
                       }}}}}
    paths: dict[str, Any] = {
        "/api/v1/devices": _get("every device with health, counters and QC state",
                                _ok({"type": "object", "properties": {"devices": {
                                    "type": "array", "items": _ref("FleetDevice")}}})),
        "/api/v1/devices/{name}": _get(
            "one device: registry, counters, window, latest value per series, provenance",
            _ok(_ref("DeviceDetail")), [_NAME], _NOT_FOUND),
        "/api/v1/devices/{name}/readings": _get(
            "one device's readings: the newest (optionally in [since, until)), or paged "
            "forward by after_id", _ok(_page("Reading", "readings")),
            [_NAME, _LIMIT, _AFTER, _SINCE, _UNTIL], _NOT_FOUND),
        "/api/v1/readings": _get(
            "readings of every device (or ?device=), paged like a device's",
            _ok(_page("Reading", "readings")),
            [_q("device", "only this device", {"type": "string"}), _LIMIT, _AFTER, _SINCE,
             _UNTIL]),
        "/api/v1/events": _get(
            "security events: the newest matching, or paged forward by after_id",
            _ok(_page("Event", "events")), [*_EVENT_FILTERS, _LIMIT, _AFTER, _SINCE, _UNTIL]),
        "/api/v1/stream": _get(
            "Server-Sent Events: 'reading' and 'event' messages whose data is a Reading or an "
            "Event, id = the cursor r<reading id>.e<event id> reached after the message; "
            "resumes after Last-Event-ID (or ?after=), else starts now; ': keep-alive' "
            "comments while quiet",
            {"description": "the stream", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}},
            [_q("after", "cursor to start after (Last-Event-ID wins)",
                {"type": "string", "pattern": r"^r\d+\.e\d+$"}),
             _q("kinds", "readings, events or both (default)",
                {"type": "array", "items": {"type": "string", "enum": ["readings", "events"]}},
                explode=True),
             *_EVENT_FILTERS], _NOT_FOUND),
        "/api/v1/whoami": _get("the token this request uses", _ok({
            "type": "object", "properties": {
                "name": {"type": "string"}, "role": {"type": "string",
                                                     "enum": ["read", "admin"]},
                "auth": {"type": "string", "enum": ["token", "session", "none"]}}})),
        "/api/v1/openapi.json": _get("this description", _ok({"type": "object"})),
        "/healthz": _get("liveness of the dashboard and its store polling (no token needed)",
                         _ok({"type": "object", "properties": {
                             "ok": {"type": "boolean"}, "version": {"type": "string"},
                             "cursor": {"type": "string"}, "streams": {"type": "integer"}}})),
        "/metrics": _get("Prometheus exposition of twinlink's series (twinlink.metrics) as "
                         "this dashboard sees the store, plus twinlink_dashboard_streams",
                         {"description": "text format 0.0.4", "content": {"text/plain": {
                             "schema": {"type": "string"}}}}),
    }
    for action, body, result in (
        ("revoke", {"reason": {"type": "string", "maxLength": 200}},
         {"status": {"type": "string", "enum": ["revoked"]}}),
        ("reanchor", {"floor": {"type": "integer", "minimum": 0, "maximum": 2**40 - 1},
                      "force": {"type": "boolean", "default": False}},
         {"floor": {"type": "integer"}, "previous_top": {"type": "integer"}}),
    ):
        paths[f"/api/v1/devices/{{name}}/{action}"] = {"post": {
            "summary": f"admin: {action} the device; recorded as an audit event naming the "
                       "token",
            "parameters": [_NAME],
            "requestBody": {"required": action == "reanchor", "content": {
                "application/json": {"schema": {"type": "object", "properties": body,
                                                 **({"required": ["floor"]}
                                                    if action == "reanchor" else {})}}}},
            "responses": {"200": _ok({"type": "object", "properties": {
                "ok": {"type": "boolean"}, "device": {"type": "string"}, **result}}),
                **_ERRORS, **_ADMIN_ERRORS, **_NOT_FOUND,
                **({"409": {"description": "floor refused (not above the numbers used)",
                            "content": {"application/json": {"schema": _ref("Error")}}}}
                   if action == "reanchor" else {})}}}
    paths["/api/v1/devices/{name}/qc"] = {
        **_get("one device's QC bounds per series: set here and effective",
               _ok(_ref("QcBoundsView")), [_NAME], _NOT_FOUND),
        "put": {
            "summary": "admin: set the QC bounds of some of the device's series (others and "
                       "non-bound settings are kept); recorded as the audit event "
                       "device.qc_configured naming the token; running ingests apply it "
                       "within 5 s",
            "parameters": [_NAME],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["series"], "additionalProperties": False,
                "properties": {
                    "series": {"type": "object", "minProperties": 1,
                               "maxProperties": MAX_SERIES,
                               "propertyNames": {"minLength": 1, "maxLength": MAX_NAME},
                               "description": "series name -> its new bounds (replacing "
                                              "its old ones; null or {} clears them)",
                               "additionalProperties": {"oneOf": [_ref("QcBounds"),
                                                                  {"type": "null"}]}},
                    "reason": {"type": "string", "maxLength": MAX_REASON}}}}}},
            "responses": {"200": _ok(_ref("QcBoundsView"), "the device's bounds after"),
                          **_ERRORS, **_ADMIN_ERRORS, **_NOT_FOUND}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "twinlink dashboard API", "version": __version__,
                 "description": "The twin's devices, readings and security events as JSON, "
                                "and a live stream of them. See docs/API.md."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}, {}],
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a token of the --token-file (read or admin)"},
            "session": {"type": "apiKey", "in": "cookie", "name": "twinlink_session",
                        "description": "set by POST /login; state-changing requests with it "
                                       "must be same-origin"}}},
        "paths": paths,
    }


def main() -> int:
    json.dump(spec(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

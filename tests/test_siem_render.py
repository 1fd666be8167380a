"""The four SIEM renderings: every catalogue type in every format, escaping that no hostile
name or detail can break (injection tests with independent parsers), ECS checked against the
ECS field definitions and OCSF against the class definitions, both written out below."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from twinlink import events, siem

OPTS = siem.Options(hostname="twin-1", procid="4242", version="0.1.0")

HOSTILE = [
    'quote " inside',
    "back\\slash and \\\\ double",
    "bracket ] and ]] and [",
    "equals = and key=value",
    "pipe | and ||",
    "line\nbreak",
    "carriage\rreturn and \r\n",
    "nul \x00 byte",
    "esc \x1b[31m red",
    "non-ASCII é ü 温度 🌡",
    "bidi \u202e reversed \u2066 isolate",
    "separators \u2028 line \u2029 para \x85 nel",
    "lone surrogate \udcff",
    '"] [evil@1 injected="1"] x',
    'x" injected="1',
    " cs1=evil act=allowed",
    "|CEF:0|evil|evil|1|1|1|10|",
    "\n<13>1 2024-01-01T00:00:00Z evil evil - - - fake line",
    '\n{"@timestamp":"fake"}',
]

UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
                    r"\ud800-\udfff]")


def record(type_name: str = "frame.replay", **kw: Any) -> dict[str, Any]:
    base = {"id": 17, "time": 1714564800.123, "first_time": 1714564790.0,
            "last_time": 1714564800.123, "count": 4, "type": type_name, "device": "pump-17",
            "kid": "0a", "seq": 42, "transport": "mqtt", "source": "twinlink/0a/t",
            "detail": "sequence number 42 was already accepted"}
    base.update(kw)
    return events.normalise(base)


def visible(text: str) -> str:
    """What the text-based formats show for raw text: surrogates as U+FFFD, other unsafe
    characters as \\xNN / \\uNNNN."""
    text = re.sub(r"[\ud800-\udfff]", "\ufffd", text)
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]",
                  lambda m: (f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                             else f"\\u{ord(m.group()):04x}"), text)


# -- an independent RFC 5424 parser (RFC 5424 section 6) --------------------------------------

_HEADER = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>[\x21-\x7e]{1,255}) (?P<app>[\x21-\x7e]{1,48}) "
    r"(?P<procid>[\x21-\x7e]{1,128}) (?P<msgid>[\x21-\x7e]{1,32}) ")


def parse_5424(line: str) -> dict[str, Any]:
    m = _HEADER.match(line)
    assert m, line[:120]
    rest = line[m.end():]
    elements: list[tuple[str, dict[str, str]]] = []
    i = 0
    assert rest.startswith("[")
    while i < len(rest) and rest[i] == "[":
        j = i + 1
        sd_id = re.match(r'[^ =\]"]{1,32}', rest[j:])
        assert sd_id
        j += sd_id.end()
        params: dict[str, str] = {}
        while rest[j] == " ":
            name = re.match(r'[^ =\]"]{1,32}', rest[j + 1:])
            assert name, rest[j:j + 40]
            j += 1 + name.end()
            assert rest[j:j + 2] == '="'
            j += 2
            val = []
            while rest[j] != '"':
                if rest[j] == "\\" and rest[j + 1] in '"\\]':
                    val.append(rest[j + 1])
                    j += 2
                else:
                    assert rest[j] != "]", "unescaped ] inside a PARAM-VALUE"
                    val.append(rest[j])
                    j += 1
            j += 1
            assert name.group() not in params, "duplicate parameter"
            params[name.group()] = "".join(val)
        assert rest[j] == "]"
        elements.append((sd_id.group(), params))
        i = j + 1
    assert rest[i] == " "
    return {**m.groupdict(), "sd": elements, "msg": rest[i + 1:]}


# -- an independent CEF parser (ArcSight CEF spec: header and extension escaping) ---------------


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    fields, cur, i = [], [], 0
    while len(fields) < 7:
        ch = line[i]
        if ch == "\\" and line[i + 1] in "\\|":
            cur.append(line[i + 1])
            i += 2
            continue
        assert ch != "\\", "lone backslash in a CEF header"
        if ch == "|":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    ext = line[i:]
    # A key starts at the beginning or after a space, and its '=' is not escaped.
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", ext))
    out: dict[str, str] = {}
    for n, k in enumerate(keys):
        end = keys[n + 1].start() if n + 1 < len(keys) else len(ext)
        raw = ext[k.end():end]
        val, j = [], 0
        while j < len(raw):
            if raw[j] == "\\":
                nxt = raw[j + 1]
                val.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
                assert nxt in "\\=nr", f"unknown escape \\{nxt}"
                j += 2
            else:
                assert raw[j] != "=", "unescaped = in a CEF value"
                val.append(raw[j])
                j += 1
        assert k.group(1) not in out, f"duplicate key {k.group(1)}"
        out[k.group(1)] = "".join(val)
    return fields, out


# -- ECS field definitions (ECS 8.11 reference: the fields used, their types) ----------------

ECS_FIELDS = {
    "@timestamp": "date", "message": "match_only_text", "ecs.version": "keyword",
    "event.id": "keyword", "event.kind": "keyword", "event.category": "keyword[]",
    "event.type": "keyword[]", "event.action": "keyword", "event.outcome": "keyword",
    "event.severity": "long", "event.code": "keyword", "event.reason": "keyword",
    "event.dataset": "keyword", "event.module": "keyword", "event.provider": "keyword",
    "event.start": "date", "event.end": "date", "observer.product": "keyword",
    "observer.vendor": "keyword", "observer.type": "keyword", "observer.version": "keyword",
    "observer.hostname": "keyword", "rule.id": "keyword", "rule.name": "keyword",
    "rule.description": "keyword", "rule.category": "keyword", "device.id": "keyword",
}
ECS_KIND = {"alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error",
            "signal"}
ECS_CATEGORY_TYPES = {
    "api": {"access", "admin", "allowed", "change", "creation", "deletion", "denied", "end",
            "info", "start", "user"},
    "authentication": {"start", "end", "info"},
    "configuration": {"access", "change", "creation", "deletion", "info"},
    "database": {"access", "change", "info", "error"},
    "driver": {"change", "end", "info", "start"},
    "file": {"change", "creation", "deletion", "info"},
    "host": {"access", "change", "end", "info", "start"},
    "iam": {"admin", "change", "creation", "deletion", "group", "info", "user"},
    "intrusion_detection": {"allowed", "denied", "info"},
    "library": {"start"}, "malware": {"info"},
    "network": {"access", "allowed", "connection", "denied", "end", "info", "protocol",
                "start"},
    "package": {"access", "change", "deletion", "info", "installation", "start"},
    "process": {"access", "change", "end", "info", "start"},
    "registry": {"access", "change", "creation", "deletion"},
    "session": {"start", "end", "info"}, "threat": {"indicator"}, "vulnerability": {"info"},
    "web": {"access", "error", "info"},
}
ECS_OUTCOME = {"success", "failure", "unknown"}
RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_ecs(doc: dict[str, Any]) -> None:
    flat = flatten(doc)
    for key, value in flat.items():
        if key.startswith("twinlink."):
            continue  # the custom namespace, outside ECS
        assert key in ECS_FIELDS, f"{key} is not an ECS field this output may use"
        typ = ECS_FIELDS[key]
        if typ == "long":
            assert type(value) is int, key
        elif typ == "date":
            assert RFC3339_MS.fullmatch(value), key
        elif typ == "keyword[]":
            assert isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        else:
            assert isinstance(value, str), key
    for need in ("@timestamp", "ecs.version", "event.kind", "event.category", "event.type",
                 "event.action", "event.outcome", "event.severity", "event.id",
                 "event.dataset", "observer.product", "rule.id", "message"):
        assert need in flat, need
    assert flat["event.kind"] in ECS_KIND
    assert flat["event.outcome"] in ECS_OUTCOME
    for c in flat["event.category"]:
        assert c in ECS_CATEGORY_TYPES
    for t in flat["event.type"]:
        assert any(t in ECS_CATEGORY_TYPES[c] for c in flat["event.category"]), t
    assert 0 <= flat["event.severity"] <= 10


# -- OCSF 1.4 class definitions (fields this output uses; required ones marked) --------------

OCSF_BASE = {  # base_event: name -> (type, required)
    "class_uid": (int, True), "class_name": (str, False), "category_uid": (int, True),
    "category_name": (str, False), "activity_id": (int, True), "activity_name": (str, False),
    "type_uid": (int, True), "type_name": (str, False), "severity_id": (int, True),
    "severity": (str, False), "time": (int, True), "start_time": (int, False),
    "end_time": (int, False), "count": (int, False), "message": (str, False),
    "status_id": (int, False), "status": (str, False), "metadata": (dict, True),
    "unmapped": (dict, False),
}
OCSF_CLASSES: dict[int, dict[str, Any]] = {
    2004: {"category": 2, "activities": {1, 2, 3},
           "fields": {"finding_info": (dict, True), "is_alert": (bool, False),
                      "device": (dict, False), "action_id": (int, False),
                      "action": (str, False), "disposition_id": (int, False),
                      "disposition": (str, False)},
           "status_ids": {0, 1, 2, 3, 4, 5, 6, 99}},
    3004: {"category": 3, "activities": {0, 1, 2, 3, 4, 99},
           "fields": {"entity": (dict, True), "comment": (str, False)},
           "status_ids": {0, 1, 2, 99}},
}
OCSF_SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
                 5: "Critical", 6: "Fatal", 99: "Other"}


def check_ocsf(doc: dict[str, Any]) -> None:
    cls = OCSF_CLASSES[doc["class_uid"]]
    allowed = {**OCSF_BASE, **cls["fields"]}
    for key, value in doc.items():
        assert key in allowed, f"{key} is not an attribute of class {doc['class_uid']}"
        typ, _ = allowed[key]
        assert isinstance(value, typ) and not (typ is int and isinstance(value, bool)), key
    for key, (_, required) in allowed.items():
        if required:
            assert key in doc, f"required {key} missing"
    assert doc["category_uid"] == cls["category"]
    assert doc["activity_id"] in cls["activities"]
    assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
    assert doc["severity_id"] in OCSF_SEVERITY
    assert doc["severity"] == OCSF_SEVERITY[doc["severity_id"]]
    assert doc["status_id"] in cls["status_ids"]
    assert doc["start_time"] <= doc["end_time"] and doc["count"] >= 1
    md = doc["metadata"]
    assert isinstance(md["product"], dict) and md["product"]["name"] == "twinlink"
    assert re.fullmatch(r"1\.\d+\.\d+", md["version"])
    if doc["class_uid"] == 2004:
        fi = doc["finding_info"]
        assert isinstance(fi["uid"], str) and fi["uid"]
        assert isinstance(fi["title"], str) and isinstance(fi["types"], list)
        assert fi["analytic"]["type_id"] in (0, 1, 2, 3, 4, 5, 6, 99)
        if "action_id" in doc:
            assert "security_control" in md["profiles"]
            assert doc["action_id"] in (0, 1, 2)
            assert (doc["action_id"], doc["disposition_id"]) in ((2, 2), (1, 15))
        if "device" in doc:
            assert isinstance(doc["device"]["type_id"], int)
    else:
        assert isinstance(doc["entity"], dict) and doc["entity"]


# -- tests --------------------------------------------------------------------------------------


ALL_TYPES = [t.name for t in events.types()]


@pytest.mark.parametrize("fmt", siem.FORMATS)
@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_every_type_renders_in_every_format(type_name, fmt):
    et = events.get(type_name)
    line = siem.render(record(type_name), fmt, OPTS)
    assert "\n" not in line and "\r" not in line
    if fmt == "ecs":
        doc = json.loads(line)
        check_ecs(doc)
        assert doc["event"]["action"] == type_name
        assert doc["event"]["kind"] == et.ecs_kind
        assert doc["event"]["category"] == list(et.ecs_category)
    elif fmt == "ocsf":
        doc = json.loads(line)
        check_ocsf(doc)
        assert doc["class_uid"] == et.ocsf_class
        if et.ocsf_class == 2004:
            assert doc["finding_info"]["types"] == [type_name]
            assert doc["is_alert"] == (et.ecs_kind == "alert")
    elif fmt == "rfc5424":
        p = parse_5424(line)
        assert p["msgid"] == type_name
        assert int(p["pri"]) == 10 * 8 + et.syslog_severity
        assert [sd for sd, _ in p["sd"]] == ["twinlink@32473"]
        assert p["sd"][0][1]["type"] == type_name and p["sd"][0][1]["rule"] == et.rule
    elif fmt == "cef":
        head, ext = parse_cef(line)
        assert head == ["CEF:0", "twinlink", "twinlink", "0.1.0", et.rule, type_name,
                        str(et.severity)]
        assert ext["cnt"] == "4" and ext["externalId"] == "17"
    else:
        doc = json.loads(line)
        assert doc["type"] == type_name and doc["time"] == "2024-05-01T12:00:00.123Z"


def test_refused_frame_is_an_ecs_alert_denied_success():
    doc = json.loads(siem.render(record("frame.bad_signature"), "ecs", OPTS))
    ev = doc["event"]
    assert (ev["kind"], ev["category"], ev["type"], ev["outcome"]) == (
        "alert", ["intrusion_detection", "network"], ["denied"], "success")
    assert doc["@timestamp"] == "2024-05-01T12:00:00.123Z"
    assert (doc["device"]["id"], doc["rule"]["id"], doc["twinlink"]["count"]) == (
        "pump-17", "TL-FRAME-BAD-SIGNATURE", 4)
    assert ev["start"] == "2024-05-01T11:59:50.000Z" and ev["severity"] == 8


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("field", ["detail", "device", "source", "kid"])
def test_hostile_text_cannot_inject(text, field):
    ev = record(**{field: text})
    for fmt in siem.FORMATS:
        line = siem.render(ev, fmt, OPTS)
        assert not UNSAFE.search(line), (fmt, line)
        assert len(line.splitlines()) == 1, (fmt, line)
        line.encode("utf-8")
    # JSON formats carry the exact text (surrogates aside) and add no key.
    exact = text.replace("\udcff", "\ufffd")
    j = json.loads(siem.render(ev, "jsonl", OPTS))
    assert j[field] == exact and len(j) == len(events.RECORD_KEYS)
    e = json.loads(siem.render(ev, "ecs", OPTS))
    check_ecs(e)
    where = {"detail": e["event"]["reason"], "device": e["device"]["id"],
             "source": e["twinlink"]["source"], "kid": e["twinlink"]["kid"]}
    assert where[field] == exact
    o = json.loads(siem.render(ev, "ocsf", OPTS))
    check_ocsf(o)
    # syslog: one SD element with exactly the expected parameters, values as visible text
    p = parse_5424(siem.render(ev, "rfc5424", OPTS))
    assert [sd for sd, _ in p["sd"]] == ["twinlink@32473"]
    params = p["sd"][0][1]
    assert set(params) == {"id", "type", "outcome", "severity", "rule", "reason", "count",
                           "first", "last", "device", "kid", "seq", "transport", "source",
                           "detail"}
    assert params[field] == visible(text)
    assert p["msgid"] == "frame.replay" and p["msg"].startswith("\ufeff")
    # CEF: the seven header fields and exactly the expected extension keys
    head, ext = parse_cef(siem.render(ev, "cef", OPTS))
    assert head[5] == "frame.replay" and len(head) == 7
    assert set(ext) == {"rt", "start", "end", "cnt", "externalId", "cat", "act", "outcome",
                        "dvchost", "deviceProcessName", "cs4Label", "cs4", "deviceExternalId",
                        "cs1Label", "cs1", "cs2Label", "cs2", "cs3Label", "cs3", "cn1Label",
                        "cn1", "reason", "msg"}
    cef_field = {"detail": "reason", "device": "deviceExternalId", "source": "cs3",
                 "kid": "cs1"}[field]
    # CEF writes CR/LF as \r/\n escapes (decoded back by the parser), others visibly.
    assert ext[cef_field] == visible(text.replace("\r", "\0CR").replace("\n", "\0LF")).replace(
        "\\x00CR", "\r").replace("\\x00LF", "\n")


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_hostname_and_header_fields(text):
    opts = siem.Options(hostname=text, procid=text, version=text)
    ev = record()
    for fmt in siem.FORMATS:
        line = siem.render(ev, fmt, opts)
        assert not UNSAFE.search(line) and len(line.splitlines()) == 1
    p = parse_5424(siem.render(ev, "rfc5424", opts))
    assert re.fullmatch(r"[\x21-\x7e]+", p["host"]) and re.fullmatch(r"[\x21-\x7e]+",
                                                                     p["procid"])
    head, ext = parse_cef(siem.render(ev, "cef", opts))
    assert head[3] == visible(text) and len(head) == 7
    assert ext["dvchost"] == visible(text.replace("\r", "\0CR").replace("\n", "\0LF")).replace(
        "\\x00CR", "\r").replace("\\x00LF", "\n")


def test_detail_is_cut_and_says_so():
    ev = record(detail="x" * 5000)
    line = siem.render(ev, "rfc5424", OPTS)
    detail = parse_5424(line)["sd"][0][1]["detail"]
    assert detail.startswith("x" * siem.MAX_DETAIL) and detail.endswith("…(3976 more characters)")
    # worst case: every character escaped, still under rsyslog's default 8 KiB message size
    worst = siem.render(record(detail="\u202e" * 5000, device="d", source=""), "rfc5424", OPTS)
    assert len(worst.encode()) < 8192


def test_syslog_pri_facility_and_bom_options():
    ev = record("frame.conflict")  # severity 9 -> syslog 2 (critical)
    assert siem.render(ev, "rfc5424", siem.Options(facility=4)).startswith("<34>1 ")
    assert siem.render(ev, "rfc5424", OPTS).startswith("<82>1 2024-05-01T12:00:00.123Z twin-1 "
                                                       "twinlink 4242 frame.conflict [")
    plain = parse_5424(siem.render(ev, "rfc5424", siem.Options(bom=False)))["msg"]
    assert plain.startswith("frame.conflict device pump-17 seq 42 (x4): ")
    assert siem.facility("local0") == 16 and siem.facility("10") == 10
    for bad in ("local9", "24", "-1", "kernel"):
        with pytest.raises(ValueError):
            siem.facility(bad)
    with pytest.raises(ValueError):
        siem.Options(facility=24)


def test_ocsf_audit_is_entity_management():
    doc = json.loads(siem.render(record("device.registered", seq=None, count=1), "ocsf", OPTS))
    check_ocsf(doc)
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"], doc["type_uid"]) == (
        3004, 3, 1, 300401)
    assert doc["entity"] == {"type": "device", "name": "pump-17", "uid": "0a"}
    refused = json.loads(siem.render(record("frame.replay"), "ocsf", OPTS))
    assert (refused["type_uid"], refused["severity_id"], refused["action_id"],
            refused["disposition_id"], refused["is_alert"]) == (200401, 3, 2, 2, True)
    assert (refused["start_time"], refused["end_time"], refused["count"]) == (
        1714564790000, 1714564800123, 4)
    flood = json.loads(siem.render(record("ingest.flood"), "ocsf", OPTS))
    assert (flood["action_id"], flood["disposition_id"]) == (1, 15)


def test_render_takes_a_raw_store_row_and_refuses_unknown_formats():
    row = {"id": 3, "at": 1.5, "kid": "01", "device": None, "seq": None, "reason": "malformed",
           "detail": "bad CBOR", "source": ""}
    assert json.loads(siem.render(row, "ecs", OPTS))["event"]["action"] == "frame.malformed"
    with pytest.raises(ValueError, match="unknown event format"):
        siem.render(row, "xml")


@pytest.mark.parametrize("unit", ['"]\\', "\n=|", "\u202e]", "é\\]"])
def test_long_hostile_detail_is_cut_without_breaking_structure(unit):
    ev = record(detail=unit * 3000, device=unit * 100, source=unit * 100)
    p = parse_5424(siem.render(ev, "rfc5424", OPTS))
    assert p["sd"][0][1]["detail"].endswith("more characters)")
    head, ext = parse_cef(siem.render(ev, "cef", OPTS))
    assert ext["reason"].endswith("more characters)") and len(head) == 7
    for fmt in ("jsonl", "ecs", "ocsf"):
        json.loads(siem.render(ev, fmt, OPTS))
    for fmt in siem.FORMATS:
        line = siem.render(ev, fmt, OPTS)
        assert len(line.encode()) < 8192 and len(line.splitlines()) == 1

"""The dashboard's JSON API, stream and access control, against a real ``twinlink dashboard``
process reading a SQLite store that a real ingest writes (a second store object)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("jinja2")

from conftest import CLI, cli_env
from dashboard_kit import (
    ADMIN_TOKEN,
    READ_TOKEN,
    Dash,
    Ingest,
    SseClient,
    write_tokens,
)

from twinlink.dashboard import auth, openapi, plot, stream
from twinlink.dashboard.app import Settings, create_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fed(rig):
    """pump-17 and valve-3 provisioned, a few readings stored by a real ingest."""
    rig.provision("pump-17")
    rig.provision("valve-3")
    ing = Ingest(rig)
    ing.send("pump-17", {"temp": 21.5}, 3)
    ing.send("valve-3", {"open": True})
    yield rig, ing
    ing.close()


@pytest.fixture
def dash(fed):
    rig, _ = fed
    d = Dash(rig.db, keepalive=0.5).start()
    yield d
    d.stop()


@pytest.fixture
def secured(fed, tmp_path):
    rig, _ = fed
    tokens = write_tokens(tmp_path / "tokens.txt",
                          [("alice", "admin", ADMIN_TOKEN), ("grafana", "read", READ_TOKEN)])
    d = Dash(rig.db, "--token-file", str(tokens)).start()
    yield d
    d.stop()


# -- reading ------------------------------------------------------------------------------------


def test_devices_and_one_device(dash, fed):
    devices = dash.get_json("/api/v1/devices")["devices"]
    assert [d["name"] for d in devices] == ["pump-17", "valve-3"]
    pump = devices[0]
    assert pump["accepted"] == 3 and pump["last_seq"] == 2 and pump["health"] == "online"
    one = dash.get_json("/api/v1/devices/pump-17")
    # the twin's detectors flag the first readings of a series 2 (not evaluated) until its
    # baseline exists
    assert one["series"] == [{"name": "temp", "value": 21.5, "unit": None,
                              "time": one["series"][0]["time"], "seq": 2, "flag": 2}]
    assert one["provenance"] == "signed" and len(one["fingerprint"]) == 16
    assert one["window_top"] == 2 and one["window_lost"] is False
    err = dash.get_json("/api/v1/devices/nope", status=404)
    assert "nope" in err["error"]


def test_readings_page_forward_by_after_id_without_gaps_or_repeats(dash, fed):
    _, ing = fed
    ing.send("pump-17", {"temp": 1.0}, 17)
    ids, path, pages = [], "/api/v1/devices/pump-17/readings?after_id=0&limit=4", 0
    while True:
        page = dash.get_json(path)
        ids += [r["id"] for r in page["readings"]]
        assert all(r["device"] == "pump-17" for r in page["readings"])
        pages += 1
        if not page["more"]:
            break
        path = page["next"]
    assert pages == 6  # 20 readings in pages of 4, then the empty check
    assert ids == sorted(set(ids)) and len(ids) == 20
    everyone = dash.get_json("/api/v1/readings?after_id=0&limit=1000")["readings"]
    assert len(everyone) == 21 and {r["device"] for r in everyone} == {"pump-17", "valve-3"}
    newest = dash.get_json("/api/v1/devices/pump-17/readings?limit=2")["readings"]
    assert [r["id"] for r in newest] == ids[-2:]
    for bad in ("limit=0", "limit=1001", "after_id=x", "after_id=1&since=2026-01-01",
                "since=yesterday"):
        code, _, body = dash.request("GET", f"/api/v1/readings?{bad}")
        assert code == 400 and "error" in json.loads(body), bad


def test_events_filter_and_page_after_id(dash, fed):
    rig, ing = fed
    replay = ing.frames[0]
    p = subprocess.run([*CLI, "open", "--db", str(rig.db), "--twin-key",
                        str(rig.twin_key_path)], input=replay.hex() + "\n",
                       capture_output=True, text=True, env=cli_env(), timeout=60)
    assert json.loads(p.stdout)["error"] == "replay"
    allev = dash.get_json("/api/v1/events?after_id=0&limit=1000")["events"]
    assert {e["type"] for e in allev} >= {"device.registered", "frame.replay"}
    blocked = dash.get_json("/api/v1/events?outcome=blocked")["events"]
    assert [e["type"] for e in blocked] == ["frame.replay"]
    assert blocked[0]["device"] == "pump-17" and blocked[0]["seq"] == 0
    typed = dash.get_json("/api/v1/events?type=device.registered&device=valve-3")["events"]
    assert len(typed) == 1 and typed[0]["device"] == "valve-3" and typed[0]["audit"] is True
    # paging forward with a filter: the cursor moves over the non-matching rows too
    seen, path = [], "/api/v1/events?after_id=0&limit=1&audit=0"
    for _ in range(10):
        page = dash.get_json(path)
        seen += page["events"]
        if not page["more"]:
            break
        path = page["next"]
    assert [e["type"] for e in seen] == ["frame.replay"]
    future = dash.get_json("/api/v1/events?since=2999-01-01")["events"]
    assert future == []
    code, _, _ = dash.request("GET", "/api/v1/events?type=no.such")
    assert code == 400


def test_healthz_metrics_and_openapi(dash):
    h = dash.get_json("/healthz")
    assert h["ok"] is True and stream.parse_cursor(h["cursor"])
    code, headers, body = dash.request("GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'twinlink_devices{state="active"} 2.0' in text
    assert 'twinlink_device_last_seen_timestamp_seconds{device="pump-17"}' in text
    assert "twinlink_dashboard_streams 0.0" in text
    promtool = shutil.which("promtool")
    if promtool:
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    assert dash.get_json("/api/v1/openapi.json") == json.loads(json.dumps(openapi.spec()))


def test_openapi_file_is_current_and_covers_every_route():
    doc = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert doc == json.loads(json.dumps(openapi.spec())), (
        "docs/openapi.json is stale: python -m twinlink.dashboard.openapi > docs/openapi.json")
    app = create_app(Settings(db=":unused:"))
    routed = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and route.method != "HEAD" and (path.startswith("/api/")
                                                or path in ("/metrics", "/healthz")):
            routed.add((path, route.method.lower()))
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routed == described


# -- the stream -----------------------------------------------------------------------------


def test_stream_sends_new_rows_and_resumes_after_last_event_id(dash, fed):
    _, ing = fed
    c = SseClient(dash.port, "/api/v1/stream")
    ing.send("pump-17", {"temp": 30.0}, 3)
    got = c.take(3)
    assert [m.event for m in got] == ["reading"] * 3
    assert [m.data["payload"] for m in got] == [{"temp": 30.0}] * 3
    ids = [stream.parse_cursor(m.id) for m in got]
    assert [i.r for i in ids] == [m.data["id"] for m in got]
    last = c.last_event_id
    c.close()
    ing.send("pump-17", {"temp": 31.0}, 2)  # while nobody listens
    c2 = SseClient(dash.port, "/api/v1/stream", last_event_id=last)
    again = c2.take(2)
    assert [m.data["payload"]["temp"] for m in again] == [31.0, 31.0]
    assert again[0].data["id"] == got[-1].data["id"] + 1
    c2.close()


def test_stream_keepalive_filters_and_bad_cursor(dash, fed):
    _, ing = fed
    c = SseClient(dash.port, "/api/v1/stream?kinds=events&outcome=blocked&device=pump-17")
    ing.send("valve-3", {"open": False})  # a reading: not on this stream
    ing.twin.open_many([ing.frames[0]])  # a replay of pump-17: on it
    m = c.next()
    assert m.event == "event" and m.data["type"] == "frame.replay"
    assert m.data["device"] == "pump-17"
    assert c.next_comment() == "keep-alive"  # a quiet stream (--keepalive 0.5) says so
    c.close()
    code, _, body = dash.request("GET", "/api/v1/stream", headers={"Last-Event-ID": "r1"})
    assert code == 400 and b"r123.e45" in body
    code, _, _ = dash.request("GET", "/api/v1/stream?device=nope")
    assert code == 404


def test_stream_survives_sigkill_of_the_dashboard_with_nothing_lost_or_repeated(fed):
    """Readings keep arriving while the dashboard is killed and restarted; a client resuming
    from its last id gets exactly the rows it had not seen."""
    rig, ing = fed
    d = Dash(rig.db).start()
    try:
        c = SseClient(d.port, "/api/v1/stream?kinds=readings")
        ing.send("pump-17", {"temp": 1.0}, 5)
        first = c.take(5)
        d.kill()
        with pytest.raises((EOFError, OSError)):
            while True:
                c.next()
        ing.send("pump-17", {"temp": 2.0}, 5)
        ing.send("valve-3", {"open": True}, 5)
        d.start()
        c2 = SseClient(d.port, "/api/v1/stream?kinds=readings", last_event_id=c.last_event_id)
        ing.send("pump-17", {"temp": 3.0}, 5)
        rest = c2.take(15)
        got = [m.data["id"] for m in first + rest]
        stored = [r["id"] for r in d.get_json("/api/v1/readings?after_id=0&limit=1000")
                  ["readings"]]
        assert got == stored[-20:] and len(set(got)) == 20
        c2.close()
    finally:
        d.stop()


# -- access -----------------------------------------------------------------------------------


def test_no_token_wrong_token_read_token_admin_token(secured, fed):
    d = secured
    code, headers, body = d.request("GET", "/api/v1/devices")
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    code, _, _ = d.request("GET", "/api/v1/devices", token="x" * 40)
    assert code == 401
    code, _, _ = d.request("GET", "/metrics")
    assert code == 401
    assert d.get_json("/healthz")["ok"] is True  # a probe needs no token
    assert d.get_json("/api/v1/whoami", token=READ_TOKEN) == {
        "name": "grafana", "role": "read", "auth": "token"}
    assert len(d.get_json("/api/v1/devices", token=READ_TOKEN)["devices"]) == 2
    code, _, body = d.request("POST", "/api/v1/devices/pump-17/revoke", {"reason": "x"},
                              token=READ_TOKEN)
    assert code == 403 and b"admin" in body
    assert d.get_json("/api/v1/devices/pump-17", token=READ_TOKEN)["status"] == "active"
    code, _, body = d.request("POST", "/api/v1/devices/pump-17/revoke",
                              {"reason": "stolen <b>"}, token=ADMIN_TOKEN)
    assert code == 200, body
    assert d.get_json("/api/v1/devices/pump-17", token=READ_TOKEN)["status"] == "revoked"
    audit = d.get_json("/api/v1/events?type=device.revoked", token=READ_TOKEN)["events"]
    assert len(audit) == 1 and audit[0]["detail"] == "by dashboard token alice: stolen <b>"
    # reanchor: refused floor -> 409; a good one is audited with the token's name
    code, _, body = d.request("POST", "/api/v1/devices/valve-3/reanchor", {"floor": 0},
                              token=ADMIN_TOKEN)
    assert code == 409, body
    code, _, body = d.request("POST", "/api/v1/devices/valve-3/reanchor", {"floor": 10},
                              token=ADMIN_TOKEN)
    assert code == 200 and json.loads(body)["previous_top"] == 0
    ev = d.get_json("/api/v1/events?type=window.reanchored", token=ADMIN_TOKEN)["events"]
    assert ev[0]["device"] == "valve-3" and "by dashboard token alice" in ev[0]["detail"]
    for bad in ({"floor": "10"}, {"floor": -1}, {"floor": 10, "force": "yes"}, [1]):
        code, _, _ = d.request("POST", "/api/v1/devices/valve-3/reanchor", bad,
                               token=ADMIN_TOKEN)
        assert code == 400, bad
    # no token value ever reaches the dashboard's log
    d.stop()
    log = "".join(d.stderr)
    assert ADMIN_TOKEN not in log and READ_TOKEN not in log


QC = "/api/v1/devices/pump-17/qc"
BAD_QC_BODIES = [
    ({"series": {"temp": {"min": 1, "mx": 2}}}, "unknown key 'mx'"),
    ({"serie": {"temp": {"min": 1}}}, "unknown key 'serie'"),
    ('{"series": {"temp": {"min": NaN}}}', "min must be finite"),
    ('{"series": {"temp": {"max": Infinity}}}', "max must be finite"),
    ('{"series": {"temp": {"min": -1e999}}}', "min must be finite"),
    ({"series": {"temp": {"min": 10**400}}}, "out of range"),
    ({"series": {"temp": {"min": 1e301}}}, "out of range"),
    ({"series": {"temp": {"min": 5, "max": 1}}}, "min 5 is above max 1"),
    ({"series": {"temp": {"suspect_min": 5, "suspect_max": 1}}}, "suspect_min 5 is above"),
    ({"series": {"temp": {"min": 1e20}}}, "above max"),  # above the inherited default max
    ({"series": {"temp": {"min": "1"}}}, "min must be a number"),
    ({"series": {"temp": {"min": True}}}, "min must be a number"),
    ({"series": {"temp": [1, 2]}}, "give an object of bounds"),
    ({"series": {}}, "series must be an object"),
    ({}, "series must be an object"),
    ({"series": {"x" * 1025: {"min": 0}}}, "1 to 1024 characters"),
    ({"series": {f"s{i}": {"min": 0} for i in range(257)}}, "too many series"),
    ({"series": {"temp": {"min": 0}}, "reason": 5}, "reason must be a string"),
    ([{"series": {}}], "must be a JSON object"),
    ("{not json", "not JSON"),
]


def test_admin_sets_qc_bounds_and_every_refusal_stores_nothing(secured, fed):
    d = secured
    _, ing = fed
    store = ing.twin.store
    store.set_qc_config({"series": {"pump-17": {"temp": {"spike_k": 5.0}}}})  # as twin qc
    before = store.qc_config()
    body = {"series": {"temp": {"min": -20, "max": 150}}, "reason": "spec sheet <b>"}
    code, headers, _ = d.request("PUT", QC, body)
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    code, _, _ = d.request("PUT", QC, body, token="x" * 40)
    assert code == 401
    code, _, out = d.request("PUT", QC, body, token=READ_TOKEN)
    assert code == 403 and b"admin" in out
    for bad, message in BAD_QC_BODIES:
        code, _, out = d.request("PUT", QC, bad, token=ADMIN_TOKEN)
        assert code == 400 and message in json.loads(out)["error"], (bad, out[:200])
        assert len(json.loads(out)["error"]) < 200  # a giant name is never echoed whole
    code, _, _ = d.request("PUT", QC, "min=1", {"Content-Type": "text/plain"},
                           token=ADMIN_TOKEN)
    assert code == 415
    code, _, _ = d.request("PUT", "/api/v1/devices/nope/qc", body, token=ADMIN_TOKEN)
    assert code == 404
    assert store.qc_config() == before  # nothing of the refused requests was stored
    audit = d.get_json("/api/v1/events?type=device.qc_configured", token=ADMIN_TOKEN)["events"]
    assert len(audit) == 1 and "dashboard" not in audit[0]["detail"]  # only the setup's

    code, _, out = d.request("PUT", QC, body, token=ADMIN_TOKEN)
    assert code == 200, out
    view = json.loads(out)
    assert view["series"]["temp"]["set"] == {"min": -20.0, "max": 150.0}
    assert view["series"]["temp"]["effective"] == {"min": -20.0, "max": 150.0,
                                                   "suspect_min": None, "suspect_max": None}
    assert d.get_json(QC, token=READ_TOKEN) == view
    assert store.qc_config() == {"series": {"pump-17": {"temp": {
        "spike_k": 5.0, "min": -20.0, "max": 150.0}}}}  # the other setting is kept
    [ev] = [e for e in d.get_json("/api/v1/events?type=device.qc_configured",
                                  token=READ_TOKEN)["events"] if "dashboard" in e["detail"]]
    assert ev["device"] == "pump-17" and ev["audit"] is True
    assert ev["detail"] == "QC bounds of temp set by dashboard token alice: spec sheet <b>"

    # a running twin's detector applies the new bounds on its next sweep, without a restart
    [r] = ing.send("pump-17", {"temp": 151.0})
    assert (r.flags or {}).get("temp") != 4
    ing.twin.sweep()
    [r] = ing.send("pump-17", {"temp": 151.0})
    assert r.flags == {"temp": 4}

    # null clears the series' bounds; its other settings stay
    code, _, out = d.request("PUT", QC, {"series": {"temp": None}}, token=ADMIN_TOKEN)
    assert code == 200 and json.loads(out)["series"]["temp"]["set"] == {}
    assert store.qc_config() == before


def test_browser_session_is_same_origin_only(secured):
    d = secured
    code, headers, _ = d.request("POST", "/login", f"token={READ_TOKEN}&next=/events",
                                 {"Content-Type": "application/x-www-form-urlencoded",
                                  "Origin": d.url.rstrip("/")})
    assert code == 303 and headers["location"] == "/events"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    session = cookie.split(";")[0]
    code, _, body = d.request("GET", "/api/v1/whoami", headers={"Cookie": session})
    assert code == 200 and json.loads(body)["auth"] == "session"
    # login from another site (login CSRF) and a form post without Origin are refused
    code, _, _ = d.request("POST", "/login", f"token={READ_TOKEN}",
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Origin": "http://evil.example"})
    assert code == 403
    code, _, _ = d.request("POST", "/logout", "", {"Cookie": session})
    assert code == 403
    code, _, _ = d.request("POST", "/logout", "", {"Cookie": session,
                                                   "Origin": d.url.rstrip("/"),
                                                   "Sec-Fetch-Site": "cross-site"})
    assert code == 403
    code, _, _ = d.request("GET", "/", headers={"Cookie": session + "x"})
    assert code == 303  # a tampered cookie is no session: off to /login
    code, _, _ = d.request("POST", "/login", "token=wrong&next=//evil.example",
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Origin": d.url.rstrip("/")})
    assert code == 401


def test_loopback_only_without_tokens(dash, fed, tmp_path):
    rig, _ = fed
    code, _, _ = dash.request("GET", "/", headers={"Host": "attacker.example:80"})
    assert code == 421  # DNS rebinding: only loopback names are answered
    p = subprocess.run([*CLI, "dashboard", "--db", str(rig.db), "--listen", "0.0.0.0:0"],
                       capture_output=True, text=True, env=cli_env(), timeout=60)
    assert p.returncode == 2 and "without --token-file" in p.stderr
    loose = write_tokens(tmp_path / "loose.txt", [("a", "admin", ADMIN_TOKEN)], mode=0o644)
    p = subprocess.run([*CLI, "dashboard", "--db", str(rig.db), "--listen", "0.0.0.0:0",
                        "--token-file", str(loose)],
                       capture_output=True, text=True, env=cli_env(), timeout=60)
    assert p.returncode == 3 and "chmod 600" in p.stderr and ADMIN_TOKEN not in p.stderr
    p = subprocess.run([*CLI, "dashboard", "--db", str(tmp_path / "none.db")],
                       capture_output=True, text=True, env=cli_env(), timeout=60)
    assert p.returncode == 7 and "no twin database" in p.stderr


# -- pieces -----------------------------------------------------------------------------------


def test_token_file_rules_never_echo_a_token():
    good = auth.Tokens.parse(f"# c\nalice admin {ADMIN_TOKEN}\nbob read {READ_TOKEN}\n".encode())
    assert "alice:admin" in repr(good) and ADMIN_TOKEN not in repr(good)
    assert good.check_bearer(ADMIN_TOKEN) == auth.Principal("alice", "admin", "token")
    assert good.check_bearer(READ_TOKEN[:-1]) is None and good.check_bearer("é" * 40) is None
    for text in (f"alice owner {ADMIN_TOKEN}", "alice admin short", f"alice {ADMIN_TOKEN}",
                 f"a/b admin {ADMIN_TOKEN}", f"a admin {ADMIN_TOKEN}\nb read {ADMIN_TOKEN}",
                 f"a admin {ADMIN_TOKEN}\na read {READ_TOKEN}", "# nothing\n"):
        with pytest.raises(auth.TokenFileError) as ei:
            auth.Tokens.parse(text.encode())
        assert ADMIN_TOKEN not in str(ei.value)


def test_session_cookie_is_bound_to_token_role_and_time():
    t = auth.Tokens.parse(f"a.b admin {ADMIN_TOKEN}\n".encode())
    p = auth.Principal("a.b", "admin", "token")
    c = t.make_session(p, 60, now=1000)
    assert t.check_session(c, now=1030) == auth.Principal("a.b", "admin", "session")
    assert t.check_session(c, now=1061) is None
    name, expiry, tag = c.rsplit(".", 2)
    assert t.check_session(f"{name}.{int(expiry) + 999}.{tag}", now=1030) is None
    demoted = auth.Tokens.parse(f"a.b read {ADMIN_TOKEN}\n".encode())
    assert demoted.check_session(c, now=1030) is None
    rotated = auth.Tokens.parse(f"a.b admin {READ_TOKEN}\n".encode())
    assert rotated.check_session(c, now=1030) is None


def test_same_origin_rules():
    ok = auth.same_origin("http://127.0.0.1:8080", "same-origin", "http", "127.0.0.1:8080")
    assert ok
    assert not auth.same_origin(None, "same-origin", "http", "127.0.0.1:8080")
    assert not auth.same_origin("null", None, "http", "127.0.0.1:8080")
    assert not auth.same_origin("http://127.0.0.1:8081", None, "http", "127.0.0.1:8080")
    assert not auth.same_origin("https://127.0.0.1:8080", None, "http", "127.0.0.1:8080")
    assert not auth.same_origin("http://127.0.0.1:8080", "same-site", "http", "127.0.0.1:8080")


def test_cursor_and_batch_encoding():
    assert stream.parse_cursor("r12.e3") == stream.Cursor(12, 3)
    for bad in ("", "r1", "12.3", "r1.e", "r-1.e2", "r1.e2\nx"):
        with pytest.raises(stream.BadCursor):
            stream.parse_cursor(bad)
    readings = [{"id": i, "device": "d" if i % 2 else "e", "x": "a\nb"} for i in (5, 6, 7)]
    events = [{"id": 9, "device": "d", "type": "frame.replay", "outcome": "blocked",
               "audit": False}]
    b = stream.Batch(stream.Cursor(4, 8), stream.Cursor(7, 9), readings, events)
    everything = stream.StreamFilter()
    data, end = b.encode(everything, stream.Cursor(4, 8))
    assert end == stream.Cursor(7, 9)
    text = data.decode()
    assert text.count("event: reading\n") == 3 and "id: r7.e8\n" in text and "id: r7.e9" in text
    assert "a\\nb" in text and "\na\nb" not in text  # a value's newline cannot end an SSE line
    assert b.encode(everything, stream.Cursor(4, 8))[0] is data  # encoded once per filter
    part, end = b.encode(stream.StreamFilter(device="d"), stream.Cursor(6, 8))
    assert part.decode().count("event: reading") == 1 and "id: r7.e8" in part.decode()
    assert end == stream.Cursor(7, 9)


def test_plot_escapes_text_and_marks_flagged_readings():
    rows = [{"received_at": 100.0 + i, "payload": {"<t>": float(i), "s": "x"},
             "flags": {"<t>": 4 if i == 3 else 1}} for i in range(6)]
    assert plot.numeric_series(rows) == ["<t>"]
    pts = plot.points(rows, "<t>")
    svg = plot.svg("<t>", 'u"\x1b[31m', pts, 100.0, 106.0)
    assert "<t>" not in svg.replace("<title>", "").replace("<text", "")
    assert "&lt;t&gt;" in svg and "&quot;" in svg and "\x1b" not in svg
    assert svg.count('class="flag-4"') == 1 and 'class="flag-1"' not in svg
    many = [plot.Point(float(i), float(i % 7), None) for i in range(100_000)]
    reduced = plot._reduce(many, 0.0, 100_000.0, 500)
    assert len(reduced) <= 4 * 500 and min(p.v for p in reduced) == 0.0
    assert max(p.v for p in reduced) == 6.0

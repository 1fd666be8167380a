"""The dashboard in a real browser: Playwright driving Debian's chromium (no ``playwright
install``) against a ``twinlink dashboard`` process on a store fed by a real ingest.

Requirement (issue 14): a committed reading or event shows on an open page, without a reload,
within 2 s. The tests wait on the DOM with a generous timeout (a loaded CI machine must not
flake) and *measure* the latency from the ingest's commit to the DOM change; each figure is
printed in the log and written to ``$TWINLINK_ARTIFACTS`` (default ``build/artifacts/``)
with the fleet and device-page screenshots, and a figure over 2 s raises a warning.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest import CLI, cli_env  # noqa: E402
from dashboard_kit import ADMIN_TOKEN, READ_TOKEN, Dash, Ingest, write_tokens  # noqa: E402

from twinlink import senml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("TWINLINK_CHROMIUM", "/usr/bin/chromium")
REQUIREMENT_S = 2.0  # issue 14: on the page within 2 s of the commit
WAIT_MS = 30_000  # what the tests wait at most (a loaded machine), never what they require
LAUNCH_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _artifacts() -> Path:
    d = Path(os.environ.get("TWINLINK_ARTIFACTS") or ROOT / "build" / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


class Report:
    """Latencies and artifact paths, printed at the end of the module and saved as JSON."""

    def __init__(self) -> None:
        self.latencies: dict[str, float] = {}
        self.files: list[Path] = []

    def latency(self, what: str, seconds: float) -> None:
        self.latencies[what] = round(seconds, 3)
        if seconds > REQUIREMENT_S:
            warnings.warn(f"dashboard latency {what}: {seconds:.2f} s, over the "
                          f"{REQUIREMENT_S:.0f} s requirement", stacklevel=2)


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest):
    rep = Report()
    yield rep
    out = _artifacts()
    path = out / "dashboard-latency.json"
    path.write_text(json.dumps({"requirement_s": REQUIREMENT_S, **rep.latencies}, indent=1))
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            _print(tr, rep, path)


def _print(tr: Any, rep: Report, path: Path) -> None:
    tr.write_line("")
    tr.write_line(f"dashboard latency, commit to DOM (requirement {REQUIREMENT_S} s): "
                  + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in rep.latencies.items()))
    for f in [*rep.files, path]:
        tr.write_line(f"dashboard artifact: {f}")


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; or set "
                    "TWINLINK_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


class Page:
    """A browser page that records every console error and uncaught exception."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def live(self) -> None:
        self.page.wait_for_function("() => document.getElementById('live').dataset.state "
                                    "=== 'live'", timeout=WAIT_MS)

    def timed(self, expression: str, arg: Any = None) -> float:
        """Seconds until ``expression`` holds in the page (waited for at most WAIT_MS)."""
        t0 = time.monotonic()
        self.page.wait_for_function(expression, arg=arg, timeout=WAIT_MS, polling="raf")
        return time.monotonic() - t0


@pytest.fixture
def tab(browser):
    t = Page(browser)
    yield t
    t.context.close()


@pytest.fixture
def fed(rig):
    rig.provision("pump-17")
    rig.provision("valve-3")
    rig.provision("fan-2")
    ing = Ingest(rig)
    ing.send("pump-17", {"temp": 21.5, "rpm": 1200}, 5)
    ing.send("valve-3", {"open": True, "mode": "auto"})
    yield rig, ing
    ing.close()


ROW_CELL = """([name, field, want]) => {
  const tr = [...document.querySelectorAll('#fleet tbody tr')]
    .find(r => r.dataset.device === name);
  const f = tr && tr.querySelector('[data-field="' + field + '"]');
  return f !== null && f !== undefined && f.textContent === want;
}"""


def test_fleet_and_device_page_update_live(tab, fed, report):
    rig, ing = fed
    d = Dash(rig.db).start()
    try:
        resp = tab.page.goto(d.url)
        assert resp.status == 200
        names = tab.page.eval_on_selector_all("#fleet tbody tr", "rs => rs.map(r => "
                                              "r.dataset.device)")
        assert names == ["fan-2", "pump-17", "valve-3"]
        health = tab.page.eval_on_selector_all("#fleet [data-field=health]",
                                               "bs => bs.map(b => b.textContent)")
        assert health == ["never seen", "online", "online"]
        tab.live()
        tab.page.evaluate("window.__notReloaded = true")
        [r] = ing.send("fan-2", {"speed": 3})  # committed when send returns
        report.latency("fleet", tab.timed(ROW_CELL, ["fan-2", "last_seq", str(r.seq)]))
        assert tab.page.evaluate("window.__notReloaded") is True
        assert tab.page.text_content("tr[data-device='fan-2'] [data-field=health]") == "online"
        assert tab.page.text_content("tr[data-device='fan-2'] [data-field=accepted]") == "1"
        shot = _artifacts() / "dashboard-fleet.png"
        tab.page.screenshot(path=str(shot), full_page=True)
        report.files.append(shot)

        tab.page.goto(d.url + "devices/pump-17")
        tab.live()
        assert tab.page.text_content("#fingerprint") == ing.twin.store.device(
            "pump-17").fingerprint
        assert tab.page.locator("img.plot").count() == 2  # rpm and temp
        [r] = ing.send("pump-17", {"temp": 43.25, "rpm": 1250})
        report.latency("device", tab.timed(
            """seq => {
              const row = [...document.querySelectorAll('#series tbody tr')]
                .find(r => r.dataset.series === 'temp');
              const first = document.querySelector('#readings tbody tr');
              return row.querySelector('[data-field=value]').textContent === '43.25'
                && first.children[1].textContent === String(seq);
            }""", r.seq))
        assert tab.page.text_content("#device [data-field=health]") == "online"
        tab.page.wait_for_function("() => [...document.querySelectorAll('img.plot')].every(i => "
                                   "i.complete && i.naturalWidth > 0 && /v=/.test(i.src))",
                                   timeout=WAIT_MS)
        shot = _artifacts() / "dashboard-device.png"
        tab.page.screenshot(path=str(shot), full_page=True)
        report.files.append(shot)
        assert tab.errors == []
    finally:
        d.stop()


def test_replay_injected_with_twinlink_open_appears_in_events(tab, fed, report):
    rig, ing = fed
    d = Dash(rig.db).start()
    try:
        tab.page.goto(d.url + "events")
        tab.live()
        p = subprocess.run([*CLI, "open", "--db", str(rig.db), "--twin-key",
                            str(rig.twin_key_path)], input=ing.frames[2].hex() + "\n",
                           capture_output=True, text=True, env=cli_env(), timeout=60)
        assert json.loads(p.stdout)["error"] == "replay"  # committed when open has exited
        report.latency("events", tab.timed(
            """() => [...document.querySelectorAll('#events tbody tr')]
                 .some(r => r.children[2].textContent === 'frame.replay'
                       && r.children[1].textContent === 'pump-17')"""))
        tab.page.goto(d.url + "events?outcome=blocked")
        types = tab.page.eval_on_selector_all("#events tbody tr", "rs => rs.map(r => "
                                              "r.children[2].textContent)")
        assert types == ["frame.replay"]
        tab.page.goto(d.url)
        assert "frame.replay" in tab.page.text_content("#events")
        assert tab.page.text_content("tr[data-device='pump-17'] [data-field=refused]") == "1"
        assert tab.errors == []
    finally:
        d.stop()


XSS_NAME = '<img src=x onerror="window.__xss=1">'
XSS_VALUE = "<script>window.__xss=2</script>"
XSS_UNIT = "<b onmouseover=window.__xss=3>u</b>"
XSS_LIVE = "<svg onload=window.__xss=4>"


def test_device_supplied_strings_render_as_text_and_run_no_script(tab, fed):
    rig, ing = fed
    ing.send_raw("pump-17", senml.encode({XSS_NAME: 1.5, "note": XSS_VALUE},
                                         units={XSS_NAME: XSS_UNIT}))
    d = Dash(rig.db).start()
    try:
        resp = tab.page.goto(d.url + "devices/pump-17")
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        tab.live()
        cells = tab.page.eval_on_selector_all(
            "#series tbody tr", "rs => rs.map(r => [r.dataset.series, "
            "r.children[1].textContent, r.children[2].textContent])")
        assert [XSS_NAME, "1.5", XSS_UNIT] in cells and ["note", XSS_VALUE, ""] in cells
        ing.send_raw("pump-17", senml.encode({XSS_LIVE: XSS_VALUE}))
        tab.timed("""name => [...document.querySelectorAll('#series tbody tr')]
                       .some(r => r.dataset.series === name)""", XSS_LIVE)
        assert XSS_VALUE in tab.page.text_content("#readings tbody tr")
        assert tab.page.evaluate("window.__xss") is None
        assert tab.page.evaluate("document.scripts.length") == 1  # ours, from /static
        assert tab.page.locator("img[src='x'], main svg, main b, main script").count() == 0
        svg = tab.page.request.get(d.url + "devices/pump-17/plot.svg?series="
                                   + "%3Cimg%20src%3Dx%20onerror%3D%22window.__xss%3D1%22%3E"
                                   + "&period=1h")
        assert svg.status == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        assert "&lt;img src=x onerror=&quot;" in svg.text() and "<img" not in svg.text()
        tab.page.goto(d.url)
        tab.page.goto(d.url + "events")
        assert tab.page.evaluate("window.__xss") is None
        assert tab.errors == []
    finally:
        d.stop()


def test_sigkill_and_restart_resume_the_page_with_no_duplicate_and_no_gap(tab, fed):
    rig, ing = fed
    d = Dash(rig.db).start()
    try:
        tab.page.goto(d.url + "devices/pump-17")
        tab.live()
        tab.page.evaluate("window.__notReloaded = true")
        shown = "() => [...document.querySelectorAll('#readings tbody tr')].length"
        before = tab.page.evaluate(shown)
        ing.send("pump-17", {"temp": 1.0}, 3)
        tab.timed(f"() => ({shown})() === {before + 3}")
        d.kill()
        tab.page.wait_for_function("() => document.getElementById('live').dataset.state "
                                   "=== 'reconnecting'", timeout=WAIT_MS)
        ing.send("pump-17", {"temp": 2.0}, 4)  # while no dashboard runs
        d.start()
        ing.send("pump-17", {"temp": 3.0}, 3)
        tab.timed(f"() => ({shown})() === {before + 10}")
        ids = tab.page.eval_on_selector_all("#readings tbody tr",
                                            "rs => rs.map(r => Number(r.dataset.id))")
        stored = [r["id"] for r in d.get_json("/api/v1/devices/pump-17/readings?limit=100")
                  ["readings"]]
        assert sorted(ids) == stored and len(set(ids)) == len(ids)
        assert tab.page.evaluate("window.__notReloaded") is True
        # only the reconnect attempts while the dashboard was down may complain
        others = [e for e in tab.errors if "ERR_CONNECTION_REFUSED" not in e
                  and "net::ERR" not in e]
        assert others == []
    finally:
        d.stop()


def test_admin_forms_only_for_admin_tokens_and_audited_with_the_token_name(tab, fed, tmp_path):
    rig, _ = fed
    tokens = write_tokens(tmp_path / "tokens.txt",
                          [("alice", "admin", ADMIN_TOKEN), ("grafana", "read", READ_TOKEN)])
    d = Dash(rig.db, "--token-file", str(tokens)).start()
    try:
        page = tab.page
        page.goto(d.url + "devices/valve-3")
        assert page.url.startswith(d.url + "login")  # no token: off to the login page
        page.fill("input[name=token]", READ_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(d.url + "devices/valve-3")
        tab.live()
        assert page.locator("form#revoke, form#reanchor, form#qc").count() == 0
        page.click("header form button")  # log out
        page.wait_for_url(d.url + "login")
        page.goto(d.url + "login?next=/devices/valve-3")
        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(d.url + "devices/valve-3")
        tab.live()
        page.fill("form#revoke input[name=reason]", "<i>stolen</i>")
        page.click("form#revoke button")
        page.wait_for_url(d.url + "devices/valve-3?done=revoked")
        assert page.text_content("#device [data-field=health]") == "revoked"
        detail = page.text_content("#events tbody tr:first-child .detail")
        assert detail == "by dashboard token alice: <i>stolen</i>"
        page.fill("form#reanchor input[name=floor]", "100")
        page.click("form#reanchor button")
        page.wait_for_url(d.url + "devices/valve-3?done=reanchored")
        assert "by dashboard token alice" in page.text_content(
            "#events tbody tr:first-child .detail")
        assert tab.errors == []
    finally:
        d.stop()


def test_admin_form_sets_qc_bounds_and_the_page_shows_them(tab, fed, tmp_path):
    rig, ing = fed
    tokens = write_tokens(tmp_path / "tokens.txt", [("alice", "admin", ADMIN_TOKEN)])
    d = Dash(rig.db, "--token-file", str(tokens)).start()
    try:
        page = tab.page
        page.goto(d.url + "login?next=/devices/pump-17")
        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(d.url + "devices/pump-17")
        tab.live()
        cell = "#qc-bounds tr[data-series='temp'] [data-field={}]"
        assert page.locator(cell.format("min")).get_attribute("class") == "num muted"
        page.fill("form#qc input[name=series]", "temp")
        page.fill("form#qc input[name=min]", "-20")
        page.fill("form#qc input[name=max]", "150.5")
        page.fill("form#qc input[name=suspect_max]", "90")
        page.fill("form#qc input[name=reason]", "<i>spec sheet</i>")
        page.click("form#qc button")
        page.wait_for_url(d.url + "devices/pump-17?done=qc")
        assert page.text_content("p.done") == "Done: QC bounds set."
        shown = {k: page.text_content(cell.format(k)) for k in
                 ("min", "max", "suspect_min", "suspect_max")}
        assert shown == {"min": "-20", "max": "150.5", "suspect_min": "—",
                         "suspect_max": "90"}
        assert page.locator(cell.format("max")).get_attribute("class") == "num set"
        assert page.text_content("#events tbody tr:first-child .detail") == (
            "QC bounds of temp set by dashboard token alice: <i>spec sheet</i>")
        assert ing.twin.store.qc_config() == {"series": {"pump-17": {"temp": {
            "min": -20.0, "max": 150.5, "suspect_max": 90.0}}}}
        assert tab.errors == []
        page.fill("form#qc input[name=series]", "temp")
        page.fill("form#qc input[name=min]", "7")
        page.fill("form#qc input[name=max]", "3")
        with page.expect_navigation() as nav:
            page.click("form#qc button")
        assert nav.value.status == 400
        assert "min 7 is above max 3" in page.text_content("main")  # the error page says why
        assert ing.twin.store.qc_config()["series"]["pump-17"]["temp"]["min"] == -20.0
        assert all("status of 400" in e for e in tab.errors)  # only the refused post's
    finally:
        d.stop()

"""Prometheus metrics and monitoring/: ``promtool check metrics`` on a live scrape of a
process using twinlink.metrics, ``promtool check rules`` / ``test rules`` on the alert rules,
and the Grafana dashboard's queries checked as PromQL against the series we export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from conftest import cli_env

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
requires_promtool = pytest.mark.skipif(
    not os.path.exists(PROMTOOL), reason="promtool not installed (apt-get install prometheus)")

SERIES = {"twinlink_frames_total", "twinlink_events_total", "twinlink_readings_stored_total",
          "twinlink_ingest_latency_seconds_bucket", "twinlink_ingest_latency_seconds_sum",
          "twinlink_ingest_latency_seconds_count",
          "twinlink_device_last_seen_timestamp_seconds", "twinlink_outbox_frames",
          "twinlink_outbox_oldest_age_seconds", "twinlink_devices", "twinlink_build_info"}

# A separate process exposes metrics the way an ingest would, then waits to be scraped.
EXPORTER = textwrap.dedent("""
    import sys, time
    from twinlink import metrics
    assert metrics.enabled() is None
    metrics.frame("stored")                       # no-ops before enable()
    server = metrics.serve_metrics("127.0.0.1:0")
    for r in ("stored", "stored", "replay", "bad_signature", "unknown_device", "line", "??"):
        metrics.frame(r)
    metrics.event("frame.replay", 3)
    metrics.event("no.such_type")
    metrics.readings_stored(2)
    for s in (0.0004, 0.003, 0.2, 7.0):
        metrics.ingest_latency(s)
    metrics.device_seen("pump-17", 1714564800.5)
    metrics.device_seen('we"ird\\\\name', 1714564801.0)
    metrics.device_seen("gone", 1.0)
    metrics.forget_device("gone")
    metrics.outbox(4, time.time() - 30)
    metrics.devices({"active": 3, "revoked": 1})
    print(server.port, flush=True)
    sys.stdin.read()
    server.close()
""")


@pytest.fixture(scope="module")
def scrape() -> str:
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=cli_env(), text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return text
    finally:
        proc.communicate("", timeout=10)


def value(scrape: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", scrape, re.M)
    assert m, series
    return float(m.group(1))


@requires_promtool
def test_promtool_check_metrics_on_a_live_scrape(scrape):
    rc = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape.encode(),
                        capture_output=True, timeout=60)
    assert rc.returncode == 0, rc.stdout + rc.stderr


def test_scrape_has_every_series_and_the_right_values(scrape):
    names = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines()
             if line and not line.startswith("#")}
    assert names >= SERIES
    assert not any(n.endswith("_created") for n in names)
    assert value(scrape, 'twinlink_frames_total{result="stored"}') == 2  # not the no-op one
    assert value(scrape, 'twinlink_frames_total{result="other"}') == 1
    assert value(scrape, 'twinlink_frames_total{result="line"}') == 1
    assert value(scrape, 'twinlink_events_total{type="frame.replay"}') == 3
    assert value(scrape, 'twinlink_events_total{type="event.unclassified"}') == 1
    assert value(scrape, "twinlink_readings_stored_total") == 2
    assert value(scrape, 'twinlink_ingest_latency_seconds_bucket{le="0.0005"}') == 1
    assert value(scrape, 'twinlink_ingest_latency_seconds_bucket{le="+Inf"}') == 4
    assert value(scrape, 'twinlink_device_last_seen_timestamp_seconds{device="pump-17"}') == (
        1714564800.5)
    assert 'device="gone"' not in scrape
    assert 'device="we\\"ird\\\\name"' in scrape  # label values escaped by the client
    assert value(scrape, "twinlink_outbox_frames") == 4
    assert 29 <= value(scrape, "twinlink_outbox_oldest_age_seconds") < 600
    assert value(scrape, 'twinlink_devices{state="window_lost"}') == 0
    assert value(scrape, 'twinlink_devices{state="revoked"}') == 1
    assert re.search(r'^twinlink_build_info\{backend="(native|python)",version="[^"]+"\} 1\.0$',
                     scrape, re.M)
    assert "process_cpu_seconds_total" in scrape


@requires_promtool
def test_alert_rules_check_and_unit_tests():
    rc = subprocess.run([PROMTOOL, "check", "rules", str(MON / "twinlink-alerts.yml")],
                        capture_output=True, timeout=60)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    rc = subprocess.run([PROMTOOL, "test", "rules", "twinlink-alerts.test.yml"], cwd=MON,
                        capture_output=True, timeout=120)
    assert rc.returncode == 0, rc.stdout + rc.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MON / "twinlink-alerts.test.yml").read_text()))
    defined = set(re.findall(r"- alert: (\w+)", (MON / "twinlink-alerts.yml").read_text()))
    assert tested == defined, defined - tested


def _exprs(obj: object) -> list[str]:
    if isinstance(obj, dict):
        found = [obj["expr"]] if isinstance(obj.get("expr"), str) else []
        return found + [e for v in obj.values() for e in _exprs(v)]
    if isinstance(obj, list):
        return [e for v in obj for e in _exprs(v)]
    return []


@requires_promtool
def test_grafana_dashboard_queries_are_valid_promql_on_our_series(tmp_path, scrape):
    dash = json.loads((MON / "twinlink-dashboard.json").read_text())
    assert dash["uid"] and dash["panels"] and dash["__inputs"][0]["pluginId"] == "prometheus"
    exprs = _exprs(dash["panels"])
    assert len(exprs) >= 9
    exported = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines()
                if line and not line.startswith("#")}
    rules = []
    for i, e in enumerate(exprs):
        for name in re.findall(r"\b(twinlink_[a-z_]+)", e):
            assert name in exported, f"dashboard uses {name}, which twinlink does not export"
        concrete = e.replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules.append({"record": f"dashboard:check_{i}", "expr": concrete})
    f = tmp_path / "dashboard-rules.yml"
    f.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    rc = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, timeout=60)
    assert rc.returncode == 0, rc.stdout + rc.stderr


def test_serve_metrics_refuses_bad_addresses():
    from twinlink import metrics

    for bad in ("9464", "host:", "host:port", "x:70000"):
        with pytest.raises(ValueError):
            metrics.parse_host_port(bad)
    assert metrics.parse_host_port(":9464") == ("127.0.0.1", 9464)
    assert metrics.parse_host_port("[::1]:9464") == ("::1", 9464)

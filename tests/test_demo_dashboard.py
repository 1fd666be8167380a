"""`twinlink demo --dashboard`: a new user sees the demo's twin in a browser."""

from __future__ import annotations

import json
import signal
import urllib.request

from mosquitto import Proc, free_port, wait_until


def test_demo_then_dashboard_serves_the_fleet(tmp_path):
    port = free_port()
    p = Proc(["demo", "--count", "3", "--keep", str(tmp_path / "demo"), "--dashboard",
              "--port", str(port)])
    try:
        wait_until(lambda: "dashboard on" in p.stderr() or p.p.poll() is not None, 120,
                   what="the demo to finish and the dashboard to start")
        assert p.p.poll() is None, p.stderr()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/devices", timeout=10) as r:
            names = [d["name"] for d in json.loads(r.read())["devices"]]
        assert names == ["pump-17", "valve-3"]
    finally:
        p.p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0, p.stderr()

"""Downlink latency (docs/PROTOCOL.md §20): how long a command takes from ``queue_command`` to
its result in the twin database, and a desired state from ``set_desired`` to the device's
handler, over MQTT (local mosquitto, ``twinlink serve`` as a separate process) and over a pty
serial cable (the serial receiver with acks, in process). Median and p99 of N round trips.

    python benchmarks/bench_downlink.py [--n 50]
    pytest benchmarks/bench_downlink.py --benchmark-only        (same measurement, one round)

What the figures include: the ingest's poll of the store for due frames (every 0.2 s: on
average half of that is waiting), sealing, the transport both ways, the device's persisted
window (an fsync) and handler, its report sealed into a reading, the ingest's commit, and this
script's 2 ms poll of the database for the result.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Broker, start_serve, twin_rig, wait_until  # noqa: E402

from twinlink import Device, Twin, transport  # noqa: E402
from twinlink.ingest import SerialReceiver  # noqa: E402
from twinlink.mqtt_link import for_device  # noqa: E402
from twinlink.testing import VirtualCable  # noqa: E402


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _measure(twin: Twin, dev: Device, n: int) -> dict[str, float]:
    applied = threading.Event()
    dev.on_desired(lambda values: applied.set() and None)
    dev.on_command("echo", lambda a: a)
    cmd: list[float] = []
    des: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        cid = twin.store.queue_command(dev.name, "echo", i, int(time.time()) + 60)
        while twin.store.command(cid)["status"] == "pending":
            time.sleep(0.002)
        cmd.append(time.perf_counter() - t0)
        assert twin.store.command(cid)["result"] == i
        applied.clear()
        t0 = time.perf_counter()
        twin.store.set_desired(dev.name, {"interval": i + 1})
        if not applied.wait(30):
            raise RuntimeError("desired state did not arrive")
        des.append(time.perf_counter() - t0)
    return {"command_median_ms": 1000 * statistics.median(cmd),
            "command_p99_ms": 1000 * _pct(cmd, 99),
            "desired_median_ms": 1000 * statistics.median(des),
            "desired_p99_ms": 1000 * _pct(des, 99), "n": n}


def run_mqtt(n: int, workdir: Path) -> dict[str, Any]:
    rig = twin_rig(workdir, window=64)
    broker = Broker(workdir / "broker")
    broker.start()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = for_device(dev, broker.url)
    try:
        dev.send({"boot": 1})
        wait_until(lambda: twin.store.status("pump")["accepted"] >= 1, 30, what="first reading")
        return _measure(twin, dev, n)
    finally:
        dev.close()
        twin.close()
        serve.terminate()
        broker.kill()


def run_serial(n: int, workdir: Path) -> dict[str, Any]:
    rig = twin_rig(workdir, window=64)
    dev = Device.load(rig.bundle("pump"), rig.state)
    with VirtualCable() as cable, Twin(rig.db, rig.twin_key) as twin:
        rx = SerialReceiver(cable.b, twin, acks=True)
        dev.link = transport.open(cable.a, device=dev, acks=True, timeout=10)
        try:
            dev.send({"boot": 1})
            wait_until(lambda: twin.store.status("pump")["accepted"] >= 1, 30,
                       what="first reading")
            return _measure(twin, dev, n)
        finally:
            dev.close()
            rx.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50, help="round trips per transport")
    args = ap.parse_args()
    for name, fn in (("mqtt", run_mqtt), ("pty", run_serial)):
        with tempfile.TemporaryDirectory() as d:
            r = fn(args.n, Path(d))
        print(f"{name:5} command round trip: median {r['command_median_ms']:.0f} ms, p99 "
              f"{r['command_p99_ms']:.0f} ms; set -> applied: median "
              f"{r['desired_median_ms']:.0f} ms, p99 {r['desired_p99_ms']:.0f} ms (n={r['n']})")
    return 0


def test_downlink_latency_mqtt(benchmark, tmp_path: Path) -> None:  # pragma: no cover
    result = benchmark.pedantic(run_mqtt, kwargs={"n": 20, "workdir": tmp_path}, rounds=1,
                                iterations=1)
    benchmark.extra_info.update(result)


def test_downlink_latency_pty(benchmark, tmp_path: Path) -> None:  # pragma: no cover
    result = benchmark.pedantic(run_serial, kwargs={"n": 20, "workdir": tmp_path}, rounds=1,
                                iterations=1)
    benchmark.extra_info.update(result)


if __name__ == "__main__":
    sys.exit(main())

"""Firmware update delivery throughput (docs/PROTOCOL.md §21): KiB/s of image from
``offer_update`` to the device's ``applied`` report in the twin database, over MQTT (local
mosquitto, ``twinlink serve`` as a separate process) and over a pty serial cable paced to
115 200 baud 8N1 (the serial receiver with acks, in process).

    python benchmarks/bench_update_delivery.py [--size KIB] [--baud 115200]
    pytest benchmarks/bench_update_delivery.py --benchmark-only      (one round each)

What the figures include: the manifest check on the offer, the twin's store poll for due frames
(every 0.2 s) and its window of 8 chunks of 2000 bytes ahead of the device's last report, the
downlink AEAD and persisted replay window per chunk (an fsync), staging, the device's progress
reports every 2 chunks sealed as telemetry and committed by the ingest, the final SHA-256 check,
the install record (fsync) and an installer that copies the image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mosquitto import Broker, start_serve, wait_until  # noqa: E402
from update_delivery_kit import Installer, update_rig  # noqa: E402

from twinlink import Device, Twin, transport  # noqa: E402
from twinlink.ingest import SerialReceiver  # noqa: E402
from twinlink.mqtt_link import for_device  # noqa: E402
from twinlink.testing import VirtualCable  # noqa: E402


class Pace:
    """A cable ``tamper`` that holds each direction's bytes for their time on a ``baud`` line
    (10 bits a byte, 8N1). One forwarding thread carries both directions, so the (small) uplink
    can wait behind a downlink chunk: slightly pessimistic for a full-duplex UART."""

    def __init__(self, baud: int) -> None:
        self.byte_time = 10.0 / baud
        self.free = {"ab": 0.0, "ba": 0.0}

    def __call__(self, data: bytes, direction: str) -> bytes:
        now = time.monotonic()
        done = max(now, self.free[direction]) + len(data) * self.byte_time
        self.free[direction] = done
        if done > now:
            time.sleep(done - now)
        return data


def _transfer(twin: Twin, ur: Any, size: int, timeout: float) -> dict[str, Any]:
    img = ur.image(7, size)
    manifest = ur.manifest(7, img)
    t0 = time.perf_counter()
    twin.store.offer_update("pump", manifest, img)
    wait_until(lambda: (twin.store.update_view("pump") or {}).get("status")
               in ("applied", "rejected"), timeout, step=0.005, what="the update")
    dt = time.perf_counter() - t0
    view = twin.store.update_view("pump") or {}
    if view.get("status") != "applied":
        raise RuntimeError(f"update not applied: {view}")
    return {"kib_s": size / 1024 / dt, "seconds": dt, "size": size, "sent": view["sent"],
            "manifest_bytes": len(manifest)}


def run_mqtt(size: int, workdir: Path) -> dict[str, Any]:
    ur = update_rig(workdir)
    rig = ur.rig
    broker = Broker(workdir / "broker")
    broker.start()
    serve = start_serve(broker.url, rig.db, rig.twin_key)
    twin = Twin(rig.db, rig.twin_key)
    dev = Device.load(rig.bundle("pump"), rig.state)
    dev.link = for_device(dev, broker.url)
    try:
        dev.send({"boot": 1})
        dev.on_update(Installer(workdir / "installed.bin"))
        if not dev.link.downlink_subscribed.wait(20):
            raise RuntimeError("downlink not subscribed")
        wait_until(lambda: twin.store.status("pump")["accepted"] >= 1, 30, what="first reading")
        return _transfer(twin, ur, size, 600)
    finally:
        dev.close()
        twin.close()
        serve.terminate()
        broker.kill()


def run_serial(size: int, workdir: Path, baud: int = 115200) -> dict[str, Any]:
    ur = update_rig(workdir)
    rig = ur.rig
    dev = Device.load(rig.bundle("pump"), rig.state)
    with VirtualCable(tamper=Pace(baud)) as cable, Twin(rig.db, rig.twin_key) as twin:
        rx = SerialReceiver(cable.b, twin, acks=True)
        dev.link = transport.open(cable.a, device=dev, acks=True, timeout=10)
        try:
            dev.on_update(Installer(workdir / "installed.bin"))
            dev.send({"boot": 1})
            wait_until(lambda: twin.store.status("pump")["accepted"] >= 1, 30,
                       what="first reading")
            r = _transfer(twin, ur, size, 600)
            r["line_kib_s"] = baud / 10 / 1024
            return r
        finally:
            dev.close()
            rx.close()


def _line(name: str, r: dict[str, Any]) -> str:
    extra = (f" (the line carries {r['line_kib_s']:.1f} KiB/s)" if "line_kib_s" in r else "")
    return (f"{name:14} {r['size'] // 1024} KiB in {r['seconds']:.1f} s: "
            f"{r['kib_s']:.1f} KiB/s{extra}; {r['sent']} image bytes sent, manifest "
            f"{r['manifest_bytes']} bytes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="image size in KiB (default 256)")
    ap.add_argument("--baud", type=int, default=115200, help="pty line rate (default 115200)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        print(_line("mqtt", run_mqtt(args.size * 1024, Path(d))), flush=True)
    with tempfile.TemporaryDirectory() as d:
        print(_line(f"pty {args.baud}", run_serial(args.size * 1024, Path(d), args.baud)))
    return 0


def test_update_throughput_mqtt(benchmark, tmp_path: Path) -> None:  # pragma: no cover
    result = benchmark.pedantic(run_mqtt, kwargs={"size": 256 * 1024, "workdir": tmp_path},
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print("\n" + _line("mqtt", result))


def test_update_throughput_pty_115200(benchmark, tmp_path: Path) -> None:  # pragma: no cover
    result = benchmark.pedantic(run_serial, kwargs={"size": 256 * 1024, "workdir": tmp_path},
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print("\n" + _line("pty 115200", result))


if __name__ == "__main__":
    sys.exit(main())

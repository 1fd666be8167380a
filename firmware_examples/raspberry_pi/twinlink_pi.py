#!/usr/bin/env python3
"""twinlink on a Raspberry Pi: read a temperature, seal it, stream it over serial or MQTT.

    python3 twinlink_pi.py --bundle /etc/twinlink/pi.device --serial /dev/serial0
    python3 twinlink_pi.py --bundle pi.device --mqtt mqtt://broker:1883 --interval 10

Sources, in the order ``--source auto`` tries them: a DS18B20 on the 1-Wire bus
(``/sys/bus/w1/devices/28-*/w1_slave``), the SoC's thermal zone
(``/sys/class/thermal/thermal_zone0/temp``), else a simulated source — announced on stderr,
never silently. Every path and setting also comes from the environment (``TL_*``, see
``--help``), so a systemd unit configures it without a wrapper script.

Exit codes: 0 done (``--count`` reached or SIGTERM), 1 a twinlink error (bad bundle, state
locked, ...), 2 usage, 3 the chosen sensor is missing or unreadable.

On exit it says what it knows, never more: over MQTT how many readings the twin acknowledged as
stored end to end and how many still wait in the outbox (sent on the next start); over serial,
which has no acknowledgement, how many were written to the port.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_SENSOR = 3
THERMAL_PATH = "/sys/class/thermal/thermal_zone0/temp"
W1_GLOB = "/sys/bus/w1/devices/28-*/w1_slave"


class SensorError(Exception):
    """The sensor could not be read (missing, unplugged, CRC failure on the 1-Wire bus)."""


def read_thermal(path: str) -> float:
    """°C from a thermal zone file, which holds millidegrees Celsius."""
    try:
        return int(Path(path).read_text().strip()) / 1000.0
    except (OSError, ValueError) as exc:
        raise SensorError(f"cannot read {path}: {exc}") from None


def read_ds18b20(path: str) -> float:
    """°C from a DS18B20 ``w1_slave`` file: line 1 ends in YES when the CRC passed, line 2
    carries ``t=<millidegrees>``."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SensorError(f"cannot read {path}: {exc}") from None
    if len(lines) < 2 or not lines[0].rstrip().endswith("YES") or "t=" not in lines[1]:
        raise SensorError(f"{path}: no valid reading (1-Wire CRC failed or sensor absent)")
    try:
        milli = int(lines[1].rsplit("t=", 1)[1])
    except ValueError:
        raise SensorError(f"{path}: malformed temperature") from None
    if milli == 85000:  # the power-on value: the conversion did not run
        raise SensorError(f"{path}: power-on value 85 °C, conversion did not complete")
    return milli / 1000.0


def simulated() -> Callable[[], float]:
    """A plausible, slowly varying temperature: 21 °C ± 2 with a little noise."""
    t0 = time.monotonic()
    rng = random.Random()

    def read() -> float:
        return round(21.0 + 2.0 * math.sin((time.monotonic() - t0) / 60.0)
                     + rng.uniform(-0.05, 0.05), 2)

    return read


def pick_source(kind: str, thermal: str, w1_glob: str) -> tuple[str, str, Callable[[], float]]:
    """Return (name, reading key, read function); raise SensorError if ``kind`` is missing."""
    if kind in ("auto", "ds18b20"):
        found = sorted(glob.glob(w1_glob))
        if found:
            path = found[0]
            return f"ds18b20 {path}", "temp", lambda: read_ds18b20(path)
        if kind == "ds18b20":
            raise SensorError(f"no DS18B20 matches {w1_glob} (enable dtoverlay=w1-gpio)")
    if kind in ("auto", "thermal"):
        if os.path.exists(thermal):
            read_thermal(thermal)  # fail now, not in the loop
            return f"thermal {thermal}", "cpu_temp", lambda: read_thermal(thermal)
        if kind == "thermal":
            raise SensorError(f"no thermal zone at {thermal}")
    return "simulated", "temp", simulated()


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Stream a Raspberry Pi temperature with twinlink.")
    ap.add_argument("--bundle", default=_env("TL_BUNDLE"),
                    help="device bundle (env TL_BUNDLE; under systemd: $CREDENTIALS_DIRECTORY/"
                         "bundle)")
    ap.add_argument("--state", default=_env("TL_STATE_DIR") or _env("STATE_DIRECTORY"),
                    help="sequence-state directory (env TL_STATE_DIR, or systemd's "
                         "STATE_DIRECTORY)")
    ap.add_argument("--serial", default=_env("TL_SERIAL"), help="port or pyserial URL "
                    "(env TL_SERIAL), e.g. /dev/serial0")
    ap.add_argument("--baudrate", type=int, default=int(_env("TL_BAUDRATE", "115200") or 115200))
    ap.add_argument("--mqtt", default=_env("TL_MQTT"), help="broker URL (env TL_MQTT)")
    ap.add_argument("--source", choices=["auto", "thermal", "ds18b20", "simulated"],
                    default=_env("TL_SOURCE", "auto"))
    ap.add_argument("--thermal", default=_env("TL_THERMAL_PATH", THERMAL_PATH))
    ap.add_argument("--w1-glob", default=_env("TL_W1_GLOB", W1_GLOB))
    ap.add_argument("--interval", type=float, default=float(_env("TL_INTERVAL", "5") or 5))
    ap.add_argument("--count", type=int, default=int(_env("TL_COUNT", "0") or 0),
                    help="stop after N readings (0: run until SIGTERM)")
    ap.add_argument("--flush-timeout", type=float,
                    default=float(_env("TL_FLUSH_TIMEOUT", "10") or 10),
                    help="seconds to wait at exit for the port, or for the twin's "
                         "acknowledgements over MQTT (env TL_FLUSH_TIMEOUT, default 10)")
    args = ap.parse_args(argv)
    if not args.bundle:
        cred = os.environ.get("CREDENTIALS_DIRECTORY")
        args.bundle = os.path.join(cred, "bundle") if cred else None
    if not args.bundle:
        ap.error("give --bundle (or TL_BUNDLE)")
    if bool(args.serial) == bool(args.mqtt):
        ap.error("give exactly one of --serial PORT and --mqtt URL")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from twinlink import Device, TwinlinkError

    try:
        source, key, read = pick_source(args.source, args.thermal, args.w1_glob)
    except SensorError as exc:
        print(f"twinlink-pi: {exc}", file=sys.stderr)
        return EXIT_SENSOR
    if source == "simulated":
        print(f"twinlink-pi: NOTICE: no sensor found (tried {args.w1_glob} and {args.thermal}); "
              "sending SIMULATED readings", file=sys.stderr)
    stop = threading.Event()
    wake = threading.Event()  # set to cut the current wait short (a new interval, a signal)
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), wake.set()))
    signal.signal(signal.SIGINT, lambda *_: (stop.set(), wake.set()))
    try:
        dev = Device.load(args.bundle, args.state)
        dev.link = link = _link(args, dev)
    except TwinlinkError as exc:
        print(f"twinlink-pi: {exc}", file=sys.stderr)
        return 1
    print(f"twinlink-pi: {dev!r} streaming {source} to {args.serial or args.mqtt}",
          file=sys.stderr)
    if hasattr(link, "set_downlink"):  # MQTT (or serial with acks): the twin can configure us
        remote_config(dev, args, wake)
    sent = failures = 0
    try:
        while not stop.is_set() and (not args.count or sent < args.count):
            try:
                value = read()
            except SensorError as exc:  # a flaky 1-Wire read: skip this one, say so
                failures += 1
                print(f"twinlink-pi: {exc}", file=sys.stderr)
            else:
                dev.send({key: value})
                sent += 1
            if not args.count or sent < args.count:
                wake.wait(args.interval)  # args.interval may change meanwhile (desired state)
                wake.clear()
        link.flush(args.flush_timeout)  # type: ignore[attr-defined]
        outcome = delivery(link, sent)
    except TwinlinkError as exc:
        print(f"twinlink-pi: {exc}", file=sys.stderr)
        return 1
    finally:
        dev.close()
    print(f"twinlink-pi: {outcome} ({failures} sensor read failures)", file=sys.stderr)
    return 0


#: The sampling intervals the twin may set (seconds).
MIN_INTERVAL, MAX_INTERVAL = 0.01, 86400.0


def remote_config(dev: Any, args: argparse.Namespace, wake: threading.Event) -> None:
    """Let the twin change the sampling interval live (``twinlink twin set NAME interval=S``,
    authenticated end to end: docs/PROTOCOL.md §20) and answer a ``ping`` command. An interval
    outside [MIN_INTERVAL, MAX_INTERVAL] is rejected and the rejection reported to the twin."""
    def desired(values: dict[str, Any]) -> dict[str, str] | None:
        value = values.get("interval")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not MIN_INTERVAL <= value <= MAX_INTERVAL:
            return {"interval": f"out of range {MIN_INTERVAL:g}..{MAX_INTERVAL:g} s"}
        if float(value) != args.interval:
            args.interval = float(value)
            print(f"twinlink-pi: interval now {args.interval:g} s (set by the twin)",
                  file=sys.stderr, flush=True)
            wake.set()
        return None

    dev.on_desired(desired)
    dev.on_command("ping", lambda _args: f"pong {args.interval:g}")


def delivery(link: object, handed: int) -> str:
    """What is known about the ``handed`` readings ``link`` took, read before it closes.

    MQTT: stored = released by the twin's end-to-end acknowledgements (this run; may include
    frames an earlier run left in the outbox), awaiting = still in the outbox. Serial has no
    acknowledgement: written to the port, or still queued for a port that is down.
    """
    from twinlink.transport.serial import SerialLink

    if isinstance(link, SerialLink):
        left = link.pending
        line = f"sent {handed - left} readings (no end-to-end acknowledgement on serial)"
        return line + (f", {left} never written (the port is down)" if left else "")
    pending = link.pending()  # type: ignore[attr-defined]
    stored = link.stats.released  # type: ignore[attr-defined]
    refused = link.stats.refused  # type: ignore[attr-defined]
    line = f"queued {handed} readings, stored {stored} (acknowledged end to end by the twin)"
    if refused:
        line += f", {refused} refused for good by the twin (see 'twinlink outbox')"
    return line + (f", {pending} awaiting the twin's acknowledgement (kept in the outbox, "
                   "sent on the next start)" if pending else "")


def _link(args: argparse.Namespace, dev: object) -> object:
    from twinlink import transport

    if args.serial:
        # Not require_open: a USB adapter plugged in after boot is picked up when it appears.
        return transport.open(args.serial, baudrate=args.baudrate, require_open=False)
    # The durable outbox goes next to the sequence state (StateDirectory under systemd).
    return transport.open(args.mqtt, device=dev)


if __name__ == "__main__":
    sys.exit(main())

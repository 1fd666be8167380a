"""Serial commands: ``send --serial`` (dispatched from commands.py), ``monitor``, ``bridge``.

A thin layer: the work is in :mod:`twinlink.transport.serial`, :mod:`twinlink.ingest.serial`,
:mod:`twinlink.monitor` and :mod:`twinlink.bridge`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from typing import Any

from .. import bridge as _bridge
from .. import transport
from ..device import Device
from ..errors import TwinlinkError
from ..ingest.serial import SerialReceiver
from ..monitor import Monitor
from ..twin import Twin
from . import EXIT_FAILURE, EXIT_TRANSPORT, EXIT_USAGE, READING_HINT, fail, json_readings


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# -- send --serial ----------------------------------------------------------------------------

def send_serial(args: argparse.Namespace) -> int:
    """Seal each JSON reading on stdin and send it over the serial link.

    A line that is not a JSON object is reported on stderr and skipped (exit status 1 at the end);
    a link failure stops with exit 5, reporting how many readings were sent.
    """
    if args.serial.split("://", 1)[0].lower() in transport.MQTT_SCHEMES:
        raise fail(f"{args.serial} is a broker URL, not a serial port", EXIT_USAGE,
                   "use --mqtt URL")
    dev = Device.load(args.device, args.state)
    sent = skipped = 0
    try:
        link = dev.link = transport.open(args.serial, baudrate=args.baudrate,
                                         write_timeout=args.timeout)
        for lineno, reading, why in json_readings(sys.stdin):
            try:
                if reading is None:
                    raise ValueError(why)
                frame = dev.seal(reading)
            except (ValueError, TypeError) as exc:
                skipped += 1
                print(f"twinlink: line {lineno} skipped: {exc} — {READING_HINT}", file=sys.stderr)
                continue
            try:
                link.send(frame)
            except TwinlinkError as exc:
                raise fail(f"{exc} (after {sent} readings sent)", EXIT_TRANSPORT,
                           "check the port/URL and that the other side is reading") from None
            sent += 1
        if not link.flush(args.timeout):
            raise fail(f"{link.pending} readings still queued: the port stayed down for "
                       f"{args.timeout} s", EXIT_TRANSPORT, "check the cable and the port")
    finally:
        dev.close()
    print(f"twinlink: sent {sent} readings over {args.serial}"
          + (f", skipped {skipped} bad lines" if skipped else ""), file=sys.stderr)
    return EXIT_FAILURE if skipped else 0


# -- monitor ----------------------------------------------------------------------------------

def cmd_monitor(args: argparse.Namespace) -> int:
    from .commands import _store

    monitor = Monitor()
    done = threading.Event()
    emitted = [0]
    lock = threading.Lock()

    def on_result(res: Any) -> None:
        with lock:
            if args.count and emitted[0] >= args.count:
                return
            obj = monitor.record(res)
            emitted[0] += 1
            if args.jsonl:
                _emit(obj)
            if args.count and emitted[0] >= args.count:
                done.set()

    live = sys.stdout.isatty() and not args.jsonl
    interval = args.interval if args.interval else (1.0 if live else 10.0)
    deadline = time.monotonic() + args.duration if args.duration else None
    with Twin(_store(args.db), args.twin_key) as twin:
        rx = SerialReceiver(args.port, twin, on_result=on_result, baudrate=args.baudrate,
                            require_open=not args.wait)
        print(f"monitor: listening on {args.port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            next_print = time.monotonic() + interval
            while not done.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wait = min(next_print, deadline or next_print) - now
                if done.wait(max(0.0, min(wait, 0.5))):
                    break
                if time.monotonic() >= next_print:
                    next_print += interval
                    if live:
                        cols = shutil.get_terminal_size().columns
                        sys.stdout.write("\x1b[H\x1b[J" + monitor.table(args.port, cols) + "\n")
                        sys.stdout.flush()
                    elif not args.jsonl:
                        print(monitor.summary_line(), flush=True)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a bench session ends: print the summary, exit 0
        finally:
            rx.close()
    if live:
        sys.stdout.write("\x1b[H\x1b[J" + monitor.table(args.port) + "\n")
    elif args.jsonl:
        print("monitor: " + monitor.summary_line(), file=sys.stderr)
    else:
        print(monitor.summary_line())
    return 0


# -- bridge -----------------------------------------------------------------------------------

def cmd_bridge(args: argparse.Namespace) -> int:
    cfg = _bridge.load_config(args.config)
    if args.parse:
        names = [s.name for s in cfg.sensors]
        sensor = args.sensor or names[0]
        if sensor not in names:
            raise fail(f"no sensor {sensor!r} in {args.config}", EXIT_USAGE,
                       f"choose one of {', '.join(names)}")
        scfg = next(s for s in cfg.sensors if s.name == sensor)
        with open(args.parse, encoding=scfg.encoding, errors="replace", newline="") as fh:
            lines = [ln.rstrip("\r\n") for ln in fh]
        for res in _bridge.parse_transcript(scfg, lines):
            _emit(res.to_json())
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="twinlink bridge: %(message)s", stream=sys.stderr)
    done = threading.Event()
    seen = [0]
    lock = threading.Lock()

    def on_result(res: _bridge.LineResult) -> None:
        with lock:
            seen[0] += 1
            if args.jsonl:
                _emit(res.to_json())
            if args.count and seen[0] >= args.count:
                done.set()

    bridge = _bridge.Bridge.from_config(cfg, on_result)
    try:
        bridge.start()
        print(f"bridge: {len(cfg.sensors)} sensor(s) → {cfg.output} as "
              f"{bridge.device.name} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            done.wait(args.duration if args.duration else None)
        except KeyboardInterrupt:
            pass
    finally:
        bridge.close()
    c = bridge.counts
    print(f"bridge: forwarded {c['forwarded']}, malformed {c['malformed']}, "
          f"send failures {c['send_failed']}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("monitor", help="watch a serial line live: rates, gaps, noise vs attacks")
    p.add_argument("port", metavar="PORT_OR_URL", help="serial port or pyserial URL")
    p.add_argument("--db", required=True, help="twin database (readings are stored)")
    p.add_argument("--twin-key", required=True)
    p.add_argument("--baudrate", type=int, default=115200)
    p.add_argument("--jsonl", action="store_true",
                   help="one JSON object per record (reading, refusal or line error), flushed")
    p.add_argument("--duration", type=float, help="stop after SECONDS")
    p.add_argument("--count", type=int, help="stop after N records (of any kind)")
    p.add_argument("--interval", type=float,
                   help="seconds between table refreshes or summary lines "
                   "(1 on a terminal, else 10)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the port to appear instead of failing at once")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("bridge", help="seal a legacy sensor's text lines and forward them")
    p.add_argument("--config", required=True, help="bridge TOML (see docs/SERIAL.md)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per sensor line")
    p.add_argument("--duration", type=float, help="stop after SECONDS")
    p.add_argument("--count", type=int, help="stop after N sensor lines (readings or malformed)")
    p.add_argument("--parse", metavar="FILE",
                   help="dry run: parse a recorded transcript, print JSON lines, send nothing")
    p.add_argument("--sensor", help="--parse: which sensor's format to use (default: the first)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also log port connects and disconnects")
    p.set_defaults(func=cmd_bridge)

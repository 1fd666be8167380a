"""Serial commands: ``send --serial``, ``serve --serial``, ``monitor``, ``bridge``.

A thin layer: the work is in :mod:`twinlink.transport.serial`, :mod:`twinlink.ingest.serial`,
:mod:`twinlink.monitor` and :mod:`twinlink.bridge`. ``send`` and ``serve`` are declared in
:mod:`.commands`; this module adds their serial options.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from typing import Any

from .. import bridge as _bridge
from .. import transport
from ..device import Device
from ..errors import LineError, TwinlinkError
from ..ingest.serial import SerialReceiver
from ..monitor import Monitor
from ..twin import Twin
from . import output
from .common import (
    EXIT_TRANSPORT,
    EXIT_USAGE,
    StopControl,
    add_command,
    add_db,
    add_json,
    add_metrics,
    add_run_limits,
    fail,
    open_twin_store,
    positive_int,
    positive_seconds,
    say,
    start_metrics,
)
from .jsonl import ReadingLines, utf8_stdin

NO_ACK = "serial has no end-to-end acknowledgement; check the twin"

# -- send --serial ----------------------------------------------------------------------------


def send_serial(args: argparse.Namespace) -> int:
    """Seal each JSON reading on stdin and send it over the serial link.

    Bad lines follow the JSON-lines policy (:mod:`.jsonl`: reported, skipped, exit 1 at the
    end); a link failure stops with exit 5, saying how many readings were sent. "Sent" is all
    serial can say: nothing comes back to tell what the twin stored.
    """
    if args.serial.split("://", 1)[0].lower() in transport.MQTT_SCHEMES:
        raise fail(f"{args.serial} is a broker URL, not a serial port", EXIT_USAGE,
                   "use --mqtt URL")
    dev = Device.load(args.device, args.state)
    lines = ReadingLines(utf8_stdin(), check=dev.encode)
    sent = 0
    try:
        link = dev.link = transport.open(args.serial, baudrate=args.baudrate,
                                         write_timeout=args.timeout)
        for _, reading in lines:
            frame = dev.seal(reading)
            try:
                link.send(frame)
            except TwinlinkError as exc:
                raise fail(f"{exc} (after {sent} readings sent; {NO_ACK})", EXIT_TRANSPORT,
                           "check the port/URL and that the other side is reading") from None
            sent += 1
        if not link.flush(args.timeout):
            raise fail(f"{link.pending} readings still queued: the port stayed down for "
                       f"{args.timeout:g} s", EXIT_TRANSPORT, "check the cable and the port")
    finally:
        dev.close()
    if args.json:
        output.emit({"sent": sent, "skipped": lines.bad})
    say(f"sent {sent} readings over {args.serial} ({NO_ACK})"
        + (f"; skipped {lines.bad} bad line(s)" if lines.bad else ""))
    return lines.exit_code


# -- serve --serial -----------------------------------------------------------------------------


def serve_serial(args: argparse.Namespace) -> int:
    """``twinlink serve --serial PORT``: store every frame from the port until stopped."""
    counts = {"frames": 0, "stored": 0, "refused": 0, "line_errors": 0}
    lock = threading.Lock()
    with StopControl(args.count, args.duration) as stop, \
            Twin(open_twin_store(args.db), args.twin_key) as twin:
        twin.start_sweeper()  # liveness (device.silent) and stream checks, once a second

        def on_result(res: Any) -> None:
            with lock:
                if isinstance(res, LineError):
                    counts["line_errors"] += 1
                else:
                    counts["frames"] += 1
                    counts["stored" if not isinstance(res, TwinlinkError) else "refused"] += 1
                if args.json:
                    output.emit(output.result_json(res))
            if not isinstance(res, LineError):
                stop.counted()

        rx = SerialReceiver(args.serial, twin, on_result=on_result, baudrate=args.baudrate,
                            require_open=not args.wait)
        try:
            say(f"serving {args.serial} into {args.db}")
            stop.event.wait()
        finally:
            rx.close()
    say(f"stopped; {counts['frames']} frames, {counts['stored']} stored, {counts['refused']} "
        f"refused, {counts['line_errors']} damaged records (line noise)")
    return 0


# -- monitor ----------------------------------------------------------------------------------


def cmd_monitor(args: argparse.Namespace) -> int:
    server = start_metrics(args)
    try:
        return _monitor(args)
    finally:
        if server is not None:
            server.close()


def _monitor(args: argparse.Namespace) -> int:
    monitor = Monitor()
    done = threading.Event()
    emitted = [0]
    lock = threading.Lock()

    def on_result(res: Any) -> None:
        with lock:
            if args.count and emitted[0] >= args.count:
                return
            monitor.record(res)
            emitted[0] += 1
            if args.json:
                output.emit(output.result_json(res))
            if args.count and emitted[0] >= args.count:
                done.set()

    live = sys.stdout.isatty() and not args.json
    interval = args.interval if args.interval else (1.0 if live else 10.0)
    deadline = time.monotonic() + args.duration if args.duration else None
    with Twin(open_twin_store(args.db), args.twin_key) as twin:
        twin.start_sweeper()  # liveness (device.silent) and stream checks, once a second
        rx = SerialReceiver(args.port, twin, on_result=on_result, baudrate=args.baudrate,
                            require_open=not args.wait)
        print(f"monitor: listening on {output.text(args.port)} (Ctrl-C to stop)",
              file=sys.stderr, flush=True)
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
                        sys.stdout.write("\x1b[H\x1b[J" + _table(monitor, args.port, cols) + "\n")
                        sys.stdout.flush()
                    elif not args.json:
                        print(output.text(monitor.summary_line()), flush=True)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a bench session ends: print the summary, exit 0
        finally:
            rx.close()
    if live:
        sys.stdout.write("\x1b[H\x1b[J" + _table(monitor, args.port) + "\n")
    elif args.json:
        print("monitor: " + output.text(monitor.summary_line()), file=sys.stderr)
    else:
        print(output.text(monitor.summary_line()))
    return 0


def _table(monitor: Monitor, port: str, width: int = 100) -> str:
    """The live table with every line terminal-safe (device names may come from an old
    database that predates the name rule)."""
    return output.lines_printable(monitor.table(port, width))


# -- bridge -----------------------------------------------------------------------------------


def cmd_bridge(args: argparse.Namespace) -> int:
    server = start_metrics(args) if not args.parse else None
    try:
        return _bridge_run(args)
    finally:
        if server is not None:
            server.close()


def _bridge_run(args: argparse.Namespace) -> int:
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
            output.emit(res.to_json())
        return 0
    done = threading.Event()
    seen = [0]
    lock = threading.Lock()

    def on_result(res: _bridge.LineResult) -> None:
        with lock:
            seen[0] += 1
            if args.json:
                output.emit(res.to_json())
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
    print(f"bridge: {bridge.summary()}", file=sys.stderr)  # queued vs stored: Bridge.delivery
    return 0


def _serial_options(p: argparse.ArgumentParser, *, wait: bool) -> None:
    g = p.add_argument_group("serial")
    g.add_argument("--baudrate", type=positive_int, default=115200, help="serial line speed")
    if wait:
        g.add_argument("--wait", action="store_true",
                       help="wait for the port to appear (and reopen it when it returns) "
                            "instead of failing at once")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _serial_options(sub.choices["send"], wait=False)
    _serial_options(sub.choices["serve"], wait=True)

    p = add_command(
        sub, "monitor", "watch a serial line live: rates, gaps, noise vs attacks",
        description="The bench view of a serial line: every frame is opened and stored like "
                    "'serve --serial'; a live table on a terminal, periodic summary lines "
                    "otherwise, one JSON object per record with --json.",
        examples=["twinlink monitor /dev/ttyUSB0 --db twin.db --twin-key keys/twin.key",
                  "twinlink monitor /dev/ttyUSB0 --twin-key keys/twin.key --json --count 10"])
    p.add_argument("port", metavar="PORT", help="serial port or pyserial URL")
    add_db(p, "twin database (readings are stored)")
    p.add_argument("--twin-key", required=True, metavar="FILE",
                   help="the twin's private key file (twin.key, mode 0600)")
    add_json(p, "one JSON object per record (reading, refusal or line error), flushed; the "
                "summary goes to stderr")
    add_run_limits(p, "records (of any kind)")
    p.add_argument("--interval", type=positive_seconds, metavar="S",
                   help="seconds between table refreshes or summary lines (default: 1 on a "
                        "terminal, else 10)")
    p.add_argument("--baudrate", type=positive_int, default=115200, help="serial line speed")
    p.add_argument("--wait", action="store_true",
                   help="wait for the port to appear instead of failing at once")
    add_metrics(p)
    p.set_defaults(func=cmd_monitor)

    p = add_command(
        sub, "bridge", "seal a legacy sensor's text lines and forward them",
        description="The edge gateway: read plain-text sensor lines (CSV, key=value) from "
                    "serial ports, seal each as a signed reading and forward it (docs/SERIAL.md)."
                    " -v also logs port connects and disconnects.",
        examples=["twinlink bridge --config bridge.toml",
                  "twinlink bridge --config bridge.toml --parse capture.log --sensor ws7"])
    p.add_argument("--config", required=True, metavar="FILE",
                   help="bridge TOML (see docs/SERIAL.md)")
    add_json(p, "one JSON object per sensor line")
    add_run_limits(p, "sensor lines (readings or malformed)")
    p.add_argument("--parse", metavar="FILE",
                   help="dry run: parse a recorded transcript, print JSON lines, send nothing "
                        "(default: run the bridge)")
    p.add_argument("--sensor",
                   help="--parse: which sensor's format to use (default: the first)")
    add_metrics(p)
    p.set_defaults(func=cmd_bridge)

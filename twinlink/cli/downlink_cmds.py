"""``twinlink twin set``, ``twinlink twin command`` and ``twinlink twin update``: desired state,
commands and firmware updates for a device (docs/PROTOCOL.md §20, §21), and the
desired-vs-reported and update parts of ``twinlink twin show``.

All only write the twin database; the serving ingest (``twinlink serve``) seals the frames,
sends them on ``<root>/<kid hex>/c`` (or down the serial port) and resends until the device
reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import downlink
from ..store import TwinStore
from . import output
from .common import EXIT_FAILURE, EXIT_OK, EXIT_PENDING, add_json, fail, say

#: Seconds a command may wait for its device by default.
DEFAULT_DEADLINE = 30.0
#: Seconds ``twin update`` waits for the device's verdict by default.
DEFAULT_UPDATE_TIMEOUT = 600.0


def parse_value(text: str) -> Any:
    """A value from the command line: JSON if it parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``key=value`` arguments as a dict; raise ValueError naming a bad one."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not key=value")
        downlink._check_name(key, "a desired key")
        out[key] = parse_value(value)
    downlink.encode_desired(0, out)  # the same checks and size limit the frame will have
    return out


def cmd_set(store: TwinStore, args: argparse.Namespace) -> int:
    values = parse_assignments(args.assignments)
    version = store.set_desired(args.name, values)
    if args.json:
        output.emit({"device": args.name, "version": version, "desired": values})
    else:
        say(f"desired state of {output.text(args.name)} is version {version}; "
                  "the serving twin sends it until the device reports")
    return EXIT_OK


def _poll(read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
          timeout: float, every: float) -> dict[str, Any]:
    """``read()`` every ``every`` seconds until ``done`` says so or ``timeout`` passes; return
    the last value. Polls the database: the answer arrives through another process."""
    give_up = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > give_up:
            return value
        time.sleep(every)


def cmd_command(store: TwinStore, args: argparse.Namespace) -> int:
    arg = parse_value(args.args) if args.args is not None else None
    deadline = int(time.time() + args.deadline + 0.999)
    downlink.encode_command(0, args.method, arg, deadline)  # checks before anything is stored
    cid = store.queue_command(args.name, args.method, arg, deadline)
    if not args.wait:
        if args.json:
            output.emit(store.command(cid))
        else:
            print(cid)
        return EXIT_OK
    c = _poll(lambda: store.command(cid), lambda c: c["status"] != "pending",
              args.timeout if args.timeout is not None else args.deadline, 0.05)
    if args.json:
        output.emit(c)
    if c["status"] == "ok":
        if not args.json:
            print(json.dumps(c["result"]))
        return EXIT_OK
    if c["status"] == "error":
        print(f"twinlink: {output.text(args.name)} rejected command {cid} "
              f"({output.text(args.method)}): {output.text(c['result'])}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"twinlink: no answer from {output.text(args.name)} to command {cid} "
          f"({output.text(args.method)}) " + ("before its deadline" if c["status"] == "expired"
                                              else "within --timeout") +
          " — is 'twinlink serve' running and the device connected?", file=sys.stderr)
    return EXIT_PENDING


def _read_update_files(manifest_path: str, image_path: str) -> tuple[bytes, bytes]:
    """The manifest and image files, checked against each other: the twin offers only an image
    whose size and SHA-256 are the manifest's (the device checks the signature)."""
    import hashlib

    from ..update import MAX_MANIFEST, parse

    try:
        with open(manifest_path, "rb") as fh:
            manifest = fh.read(MAX_MANIFEST + 1)
        with open(image_path, "rb") as fh:
            image = fh.read()
    except OSError as exc:
        raise fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    m = parse(manifest)  # MalformedManifest: a TwinlinkError the CLI reports
    if len(image) != m.size or hashlib.sha256(image).digest() != m.digest:
        raise fail(f"{image_path} is not the image {manifest_path} describes (size or SHA-256 "
                   "differ); nothing offered")
    return manifest, image


def cmd_update(store: TwinStore, args: argparse.Namespace) -> int:
    manifest, image = _read_update_files(args.manifest, args.image)
    view = store.offer_update(args.name, manifest, image)
    if not args.wait:
        if args.json:
            output.emit({"device": args.name, **view})
        else:
            say(f"update seq {view['seq']} ({view['size']} bytes) offered to "
                f"{output.text(args.name)}; the serving twin delivers it")
        return EXIT_OK
    say(f"update seq {view['seq']} ({view['size']} bytes) offered to {output.text(args.name)}; "
        "waiting for the device")
    view = _poll(lambda: store.update_view(args.name) or view,
                 lambda v: v["status"] in ("applied", "rejected"), args.timeout, 0.2)
    if args.json:
        output.emit({"device": args.name, **view})
    if view["status"] == "applied":
        if not args.json:
            say(f"{output.text(args.name)} installed update seq {view['seq']}")
        return EXIT_OK
    if view["status"] == "rejected":
        print(f"twinlink: {output.text(args.name)} refused update seq {view['seq']}: "
              f"{output.text(view['reason'])}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"twinlink: {output.text(args.name)} has not finished update seq {view['seq']} within "
          f"--timeout ({view['staged']} of {view['size']} bytes staged) — is 'twinlink serve' "
          "running and the device connected? The transfer goes on; see 'twinlink twin show'",
          file=sys.stderr)
    return EXIT_PENDING


def update_lines(store: TwinStore, name: str) -> tuple[dict[str, Any] | None, list[str]]:
    """(JSON, text lines) of a device's latest update transfer for ``twin show``."""
    view = store.update_view(name)
    if view is None:
        return None, []
    status = view["status"] + (f": {output.text(view['reason'])}" if view["reason"] else "")
    pct = 100 * view["staged"] // view["size"] if view["size"] else 100
    return view, [f"  seq {view['seq']} ({view['size']} bytes, transfer {view['transfer']}): "
                  f"{status}, {view['staged']} bytes staged ({pct}%), {view['sent']} sent"]


def desired_lines(store: TwinStore, name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(JSON rows, text lines) of a device's desired vs reported state for ``twin show``."""
    view = store.desired_view(name)
    lines = []
    for r in view:
        rep = "-" if r["reported"] is None else output.value_text(r["reported"])
        lines.append(f"  {output.text(r['key']):18} desired {output.value_text(r['desired'])}"
                     f", reported {rep}: {output.text(r['status'])}")
    return view, lines


def register(action: Any) -> None:
    """Add ``set``, ``command`` and ``update`` through twin_cmds' ``action`` helper."""
    p = action("set", "record a new desired state for a device", cmd_set,
               ["twinlink twin set pump-17 interval=30 mode=eco",
                "twinlink twin set relay-2 'thresholds={\"hi\": 80}'"],
               description="Record key=value pairs as the device's desired state under a new "
                           "version (other keys keep their values). Values are parsed as JSON, "
                           "else taken as strings. The serving twin sends the whole desired "
                           "state, authenticated end to end, until the device reports it "
                           "applied or rejected it ('twinlink twin show').")
    p.add_argument("name", help="device name")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                   help="keys of 1-64 of A-Z a-z 0-9 _ . : -")
    add_json(p, "print the version as one JSON object")

    p = action("command", "send a device a one-shot command and wait for its result",
               cmd_command,
               ["twinlink twin command pump-17 reboot",
                "twinlink twin command relay-2 set '{\"on\": true}' --deadline 10"],
               description="Queue METHOD(JSON) for the device with a deadline and (by default) "
                           "wait for its answer: exit 0 and print the result, exit 1 if the "
                           "device rejected it, exit 6 if no answer came before the deadline "
                           "(or --timeout). The device runs a command at most once.")
    p.add_argument("name", help="device name")
    p.add_argument("method", help="method name (1-64 of A-Z a-z 0-9 _ . : -)")
    p.add_argument("args", nargs="?", metavar="JSON",
                   help="the argument, JSON or a plain string (default: null)")
    p.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE, metavar="S",
                   help=f"seconds the device may take to get it (default: {DEFAULT_DEADLINE:g})")
    p.add_argument("--wait", dest="wait", action="store_true", default=True,
                   help="wait for the result (the default)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="only queue it and print its id")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds to wait for the result (default: the deadline)")
    add_json(p, "print the command as one JSON object")

    p = action("update", "offer a device a signed firmware update and wait for its verdict",
               cmd_update,
               ["twinlink twin update pump-17 fw-1.4.manifest fw-1.4.bin",
                "twinlink twin update pump-17 fw-1.4.manifest fw-1.4.bin --no-wait --json"],
               description="Offer the device MANIFEST (made with 'twinlink update make') and "
                           "IMAGE over the downlink: the serving twin sends the manifest, which "
                           "the device checks before it accepts any byte of the image, then the "
                           "image in chunks; the transfer resumes after a disconnect or a device "
                           "restart. Exit 0 when the device reports it installed, 1 if it "
                           "refused it (the reason is printed), 6 if no verdict came within "
                           "--timeout (the transfer goes on). The image must match the "
                           "manifest's size and SHA-256.")
    p.add_argument("name", help="device name")
    p.add_argument("manifest", help="signed update manifest file")
    p.add_argument("image", help="the image file the manifest describes")
    p.add_argument("--wait", dest="wait", action="store_true", default=True,
                   help="wait for the device's verdict (the default)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="only offer it")
    p.add_argument("--timeout", type=float, default=DEFAULT_UPDATE_TIMEOUT, metavar="S",
                   help=f"seconds to wait for the verdict (default: "
                        f"{DEFAULT_UPDATE_TIMEOUT:g})")
    add_json(p, "print the transfer as one JSON object")

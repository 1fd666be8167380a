"""Core commands: keygen, provision, seal, open, inspect, send, serve, doctor, demo.

``send`` and ``serve`` are declared here with the options both transports share; the serial and
MQTT modules add their own options and do the work (``--serial`` / ``--mqtt``, exactly one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import __version__, frame, keys
from .. import backends as backend
from ..device import Device
from ..errors import TwinlinkError
from ..naming import check_device_name
from ..provision import provision
from ..twin import MAX_LINE, Twin, open_lines
from . import output
from .common import (
    EXIT_USAGE,
    add_command,
    add_db,
    add_json,
    add_metrics,
    add_run_limits,
    fail,
    kid_arg,
    open_twin_store,
    positive_int,
    say,
    seconds,
    start_metrics,
)
from .jsonl import ReadingLines, bounded_lines, utf8_stdin

STATE_HELP = ("sequence-state directory (default: $TWINLINK_STATE_DIR, else "
              "~/.local/state/twinlink)")
TWIN_KEY_HELP = "the twin's private key file (twin.key, mode 0600)"

# -- keygen / provision ---------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.kind == "twin":
        tk = keys.TwinKey.generate()
        priv, pub, fp = out / "twin.key", out / "twin.pub", keys.fingerprint(tk.public)
        keys.write_private(priv, tk.to_pem(), args.force)
        keys.write_public(pub, tk.public_pem(), args.force)
    else:
        name = check_device_name(args.name or "device")  # a file stem: never a path
        dk = keys.DeviceKey.generate()
        priv, pub, fp = out / f"{name}.key", out / f"{name}.pub", keys.fingerprint(dk.public)
        keys.write_private(priv, dk.to_pem(), args.force)
        keys.write_public(pub, dk.public_pem(), args.force)
    if args.json:
        output.emit({"kind": args.kind, "key": str(priv), "pub": str(pub), "fingerprint": fp})
    say(f"{args.kind} key written: {priv} (0600), {pub}; fingerprint {fp}")
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    update_keys = [keys.load_public(f, "ed25519") for f in args.update_key or []]
    if update_keys and not (args.vendor and args.device_class):
        raise fail("--update-key needs --vendor and --class", EXIT_USAGE)
    b = provision(
        args.name, args.twin_pub, args.out, args.db, args.kid, args.lite, args.chunk, args.force,
        update_keys=update_keys or None, vendor=args.vendor, device_class=args.device_class,
    )
    out = Path(args.out)
    bundle = out / (b.name + ".device")
    if args.json:
        output.emit({"name": b.name, "kid": b.kid.hex(), "profile": b.profile,
                     "bundle": str(bundle), "key": str(out / (b.name + ".key")),
                     "pub": str(out / (b.name + ".pub")), "registered": args.db})
    say(f"provisioned {b.name}: kid {b.kid.hex()}, profile {b.profile}; bundle {bundle} (0600)"
        + (f"; registered in {args.db}" if args.db else
           f"; register it with: twinlink twin register {b.name} --pub "
           f"{out / (b.name + '.pub')} --kid {b.kid.hex()} --db TWIN_DB"))
    return 0


# -- seal / open / inspect ------------------------------------------------------------------


def cmd_seal(args: argparse.Namespace) -> int:
    dev = Device.load(args.device, args.state)
    lines = ReadingLines(utf8_stdin(), check=dev.encode)
    try:
        for _, reading in lines:
            sys.stdout.write(dev.seal(reading).hex() + "\n")
            sys.stdout.flush()
    finally:
        dev.close()
    return lines.exit_code


def cmd_open(args: argparse.Namespace) -> int:
    with Twin(open_twin_store(args.db), args.twin_key) as twin:
        for res in open_lines(twin, bounded_lines(utf8_stdin(), MAX_LINE + 2)):
            output.emit(output.result_json(res))
    return 0


def _read_frame_arg(arg: str) -> bytes:
    text = arg.strip()
    if text and len(text) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)  # hex first: a frame's hex is often longer than NAME_MAX
    p = Path(arg)
    try:
        raw = p.read_bytes()
    except OSError:
        raise fail(
            "argument is neither a file nor hex",
            EXIT_USAGE,
            "pass a hex string or a file holding a frame (hex or binary)",
        ) from None
    try:
        return bytes.fromhex(raw.decode().strip())
    except (UnicodeDecodeError, ValueError):
        return raw


def cmd_inspect(args: argparse.Namespace) -> int:
    data = _read_frame_arg(args.frame)
    try:
        info = frame.describe(data)
        diag = frame.diagnostic(data)
    except TwinlinkError as exc:
        info, diag = {"size": len(data), "malformed": str(exc)}, None
    verdict: dict[str, Any] | None = None
    if args.db and args.twin_key:
        # A dry run binds nothing: a database not yet tied to a twin key stays untied.
        with Twin(open_twin_store(args.db), args.twin_key, bind_key=False) as twin:
            verdict = output.verdict_json(twin.check(data))
    elif args.db or args.twin_key:
        raise fail("--db and --twin-key go together", EXIT_USAGE)
    if args.json:
        output.emit({"frame": info, "diagnostic": diag, "verdict": verdict})
        return 0
    print(f"twinlink frame, {len(data)} bytes")
    for k, v in info.items():
        print(f"  {k:22} {output.dumps(v) if isinstance(v, dict) else output.text(v)}")
    if diag:
        print("CBOR diagnostic notation:")
        print("  " + output.text(diag))
    if verdict is not None:
        print("verdict: " + output.dumps(verdict))
    return 0


# -- doctor / send / serve / demo -------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    info = {
        "twinlink": __version__,
        "backend": backend.name(),
        "why": backend.explain(),
        "native_error": backend.native_error(),
        "python": sys.version.split()[0],
    }
    if args.json:
        output.emit(info)
    else:
        for k, v in info.items():
            print(f"{k:13} {v}")
    return 0


def _transport(args: argparse.Namespace, command: str) -> str:
    if bool(getattr(args, "serial", None)) == bool(getattr(args, "mqtt", None)):
        raise fail(f"{command} needs exactly one of --serial PORT or --mqtt URL", EXIT_USAGE)
    if args.serial:
        return "serial"
    if not hasattr(args, "client_id"):
        raise fail("this build has no MQTT transport", EXIT_USAGE)
    return "mqtt"


def cmd_send(args: argparse.Namespace) -> int:
    if _transport(args, "send") == "serial":
        from . import serial_cmds

        return serial_cmds.send_serial(args)
    from . import mqtt_cmds

    return mqtt_cmds.send_mqtt(args)


def cmd_serve(args: argparse.Namespace) -> int:
    transport = _transport(args, "serve")
    server = start_metrics(args)
    try:
        if transport == "serial":
            from . import serial_cmds

            return serial_cmds.serve_serial(args)
        from . import mqtt_cmds

        return mqtt_cmds.serve_mqtt(args)
    finally:
        if server is not None:
            server.close()


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from ..demo import run_demo

    keep = args.keep or (tempfile.mkdtemp(prefix="twinlink-demo-") if args.dashboard else None)
    rc = run_demo(count=args.count, keep=keep, out=sys.stdout)
    if not args.dashboard:
        return rc
    from .dashboard_cmds import cmd_dashboard

    dash = argparse.Namespace(
        db=str(Path(str(keep)) / "twin.db"), listen=("127.0.0.1", args.port), token_file=None,
        poll=0.5, silent_after=300.0, keepalive=15.0, verbose=getattr(args, "verbose", 0))
    say("the dashboard runs until Ctrl-C")
    cmd_dashboard(dash)
    return rc


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(sub, "keygen", "generate the twin key (or a bare device key)", examples=[
        "twinlink keygen twin --out keys        # keys/twin.key (0600), keys/twin.pub",
        "twinlink keygen device spare-1 --out keys"])
    p.add_argument("kind", choices=["twin", "device"], help="which key to generate")
    p.add_argument("name", nargs="?", help="device key only: file stem (default: device)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the key files")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    add_json(p, "also print the written paths and fingerprint as one JSON object on stdout")
    p.set_defaults(func=cmd_keygen)

    p = add_command(
        sub, "provision", "create a device key and bundle (and register it)",
        description="Create NAME.key, NAME.pub and the bundle NAME.device in --out; with --db "
                    "register the device in the twin database too. NAME: 1-64 characters from "
                    "A-Z a-z 0-9 . _ -, starting with a letter or digit.",
        examples=["twinlink provision pump-17 --twin-pub keys/twin.pub --out keys --db twin.db"])
    p.add_argument("name", help="device name")
    p.add_argument("--twin-pub", required=True, metavar="FILE",
                   help="the twin's public key (twin.pub)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for NAME.key, NAME.pub, NAME.device")
    p.add_argument("--db", metavar="PATH",
                   help="twin database to register the device in (default: do not register)")
    p.add_argument("--kid", type=kid_arg,
                   help="kid in hex (default: the next free one in --db, else random)")
    p.add_argument("--lite", action="store_true",
                   help="lite profile: the bundle holds derived AEAD keys, frames are not signed")
    p.add_argument("--chunk", type=positive_int, metavar="K",
                   help="sequence numbers reserved per durable write (default: 1024)")
    p.add_argument("--force", action="store_true",
                   help="replace existing files (only after the new registration succeeded)")
    add_json(p, "also print what was created as one JSON object on stdout")
    g = p.add_argument_group("firmware updates (docs/UPDATES.md)")
    g.add_argument("--update-key", action="append", metavar="PUB",
                   help="an offline update-signing public key the device trusts (repeat for "
                        "rotation; default: none, no updates accepted)")
    g.add_argument("--vendor", help="the device's vendor name for update manifests "
                   "(default: none)")
    g.add_argument("--class", dest="device_class", metavar="CLASS",
                   help="the device's class name for update manifests (default: none)")
    p.set_defaults(func=cmd_provision)

    p = add_command(
        sub, "seal", "seal JSON readings from stdin into hex frames on stdout",
        description="Seal each JSON reading on stdin (one object a line) into a twinlink/1 "
                    "frame, printed as one hex line. Bad lines are reported and skipped; the "
                    "exit status is 1 if there were any (docs/CLI.md, JSON-lines input).",
        examples=["echo '{\"temp\": 21.5}' | twinlink seal --device keys/pump-17.device "
                  "--state state"])
    p.add_argument("--device", required=True, metavar="BUNDLE", help="device bundle (NAME.device)")
    p.add_argument("--state", metavar="DIR", help=STATE_HELP)
    p.set_defaults(func=cmd_seal)

    p = add_command(
        sub, "open", "open hex frames from stdin into JSON lines on stdout",
        description="Verify, decrypt and store each hex frame on stdin (one a line); print one "
                    "JSON object per line: the reading, or the refusal with its reason. A line "
                    "that is not a frame is refused as malformed; processing continues.",
        examples=["twinlink seal --device keys/pump-17.device < readings.jsonl | "
                  "twinlink open --db twin.db --twin-key keys/twin.key"])
    add_db(p)
    p.add_argument("--twin-key", required=True, metavar="FILE", help=TWIN_KEY_HELP)
    add_json(p, "JSON lines on stdout (always the case for open; accepted for uniformity)")
    p.set_defaults(func=cmd_open)

    p = add_command(
        sub, "inspect", "dump a frame's headers (and verdict, with keys)",
        description="Decode a frame without keys: headers, sizes, CBOR diagnostic notation. "
                    "With --db and --twin-key also say what 'open' would do with it (a dry "
                    "run: nothing is stored, the replay window is not touched).",
        examples=["twinlink inspect frame.hex",
                  "twinlink inspect d28443a2… --db twin.db --twin-key keys/twin.key --json"])
    p.add_argument("frame", help="hex string, or a file holding a frame (hex or binary)")
    p.add_argument("--db", metavar="PATH",
                   help="twin database, for the verdict (default: no verdict)")
    p.add_argument("--twin-key", metavar="FILE",
                   help=TWIN_KEY_HELP + ", for the verdict (default: no verdict)")
    add_json(p, "print one JSON object: frame, diagnostic, verdict")
    p.set_defaults(func=cmd_inspect)


def register_services(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]

    p = add_command(
        sub, "send", "send JSON readings from stdin over serial or MQTT",
        description="Seal each JSON reading on stdin and send it over --serial or --mqtt "
                    "(exactly one). MQTT: exit 0 only when the twin acknowledged every reading "
                    "end to end; stderr says 'stored N, pending M'. Serial has no "
                    "acknowledgement: stderr says 'sent N' and nothing more. Bad lines are "
                    "reported and skipped (exit 1 at the end).",
        examples=["sensor-script | twinlink send --device keys/pump-17.device --state state "
                  "--serial /dev/ttyUSB0",
                  "twinlink send --device keys/pump-17.device --mqtt mqtt://broker:1883 "
                  "--timeout 60 < readings.jsonl"])
    p.add_argument("--device", required=True, metavar="BUNDLE", help="device bundle (NAME.device)")
    p.add_argument("--state", metavar="DIR", help=STATE_HELP)
    p.add_argument("--serial", metavar="PORT",
                   help="serial port or pyserial URL (this or --mqtt is required)")
    p.add_argument("--mqtt", metavar="URL",
                   help="broker URL mqtt://host:port or mqtts://… (this or --serial is "
                        "required)")
    p.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                   help="seconds to wait for the other side: serial, for the port to take the "
                        "frames; MQTT, once every reading is queued, for the twin's "
                        "acknowledgements (and for room in a full outbox with --when-full "
                        "block)")
    add_json(p, "print a summary object on stdout: serial {sent, skipped}, "
                "MQTT {stored, pending, skipped}")
    p.set_defaults(func=cmd_send)

    p = add_command(
        sub, "serve", "ingest frames from a serial port or an MQTT broker into the twin",
        description="The twin's ingest service: open every frame from --serial PORT or --mqtt "
                    "URL (exactly one) and store it in --db. Runs until SIGTERM or SIGINT (a "
                    "clean stop, exit 0), --count or --duration. MQTT acknowledges each stored "
                    "reading end to end; serial has no back channel.",
        examples=["twinlink serve --mqtt mqtt://broker:1883 --db twin.db --twin-key "
                  "keys/twin.key",
                  "twinlink serve --serial /dev/ttyUSB0 --db twin.db --twin-key keys/twin.key "
                  "--json --count 100"])
    p.add_argument("--serial", metavar="PORT",
                   help="serial port or pyserial URL to read frames from (this or --mqtt is "
                        "required)")
    p.add_argument("--mqtt", metavar="URL",
                   help="broker URL mqtt://host:port or mqtts://… to subscribe to (this or "
                        "--serial is required)")
    add_db(p)
    p.add_argument("--twin-key", required=True, metavar="FILE", help=TWIN_KEY_HELP)
    add_json(p, "print one JSON object per frame on stdout (as 'twinlink open')")
    add_run_limits(p, "frames (stored or refused; a batch in progress completes)")
    add_metrics(p)
    p.set_defaults(func=cmd_serve)


def register_tools(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]

    p = add_command(sub, "doctor", "show the active backend and why",
                    examples=["twinlink doctor --json"])
    add_json(p, "print one JSON object")
    p.set_defaults(func=cmd_doctor)

    p = add_command(
        sub, "demo", "the main job on embedded defaults: no broker or hardware",
        description="Provision a twin and two devices in a temporary directory, stream readings "
                    "over a real pty serial pair, then replay, tamper, relabel and inject line "
                    "noise; exit 0 only if every reading arrived once and every attack was "
                    "refused.",
        examples=["twinlink demo", "twinlink demo --count 100 --keep /tmp/demo"])
    p.add_argument("--count", type=positive_int, default=10, help="readings per device")
    p.add_argument("--keep", metavar="DIR",
                   help="keep the demo's keys and database in DIR (default: a temporary "
                        "directory)")
    p.add_argument("--dashboard", action="store_true",
                   help="afterwards, show the twin in a browser: serve the dashboard on "
                        "127.0.0.1:--port until Ctrl-C (needs the 'twin' extra)")
    p.add_argument("--port", type=positive_int, default=8080,
                   help="--dashboard: the loopback port")
    p.set_defaults(func=cmd_demo)

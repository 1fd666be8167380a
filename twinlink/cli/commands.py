"""Core commands: keygen, provision, seal, open, inspect, twin, doctor, send, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import __version__, frame, keys, oscore
from .. import backends as backend
from ..device import Device
from ..errors import TwinlinkError
from ..provision import provision
from ..store import (
    PROFILE_LITE,
    PROFILE_SIGNED,
    RegistryError,
    StorageError,
    TwinStore,
    open_store,
)
from ..twin import Reading, Twin, open_lines, refusal_json
from ..values import to_json
from . import EXIT_REGISTRY, EXIT_USAGE, READING_HINT, fail, json_readings


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _kid(text: str) -> bytes:
    try:
        kid = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("kid must be hex, e.g. 01 or 0a1b") from None
    if not 1 <= len(kid) <= oscore.MAX_KID_LEN:
        raise argparse.ArgumentTypeError("kid must be 1 to 6 bytes")
    return kid


def _store(path: str, must_exist: bool = True) -> TwinStore:
    try:
        return open_store(path, must_exist=must_exist)
    except StorageError as exc:
        raise fail(str(exc), EXIT_REGISTRY) from None


# -- keygen / provision ---------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.kind == "twin":
        tk = keys.TwinKey.generate()
        keys.write_private(out / "twin.key", tk.to_pem(), args.force)
        keys.write_public(out / "twin.pub", tk.public_pem(), args.force)
        print(
            f"twin key written: {out / 'twin.key'} (0600), {out / 'twin.pub'}; "
            f"fingerprint {keys.fingerprint(tk.public)}",
            file=sys.stderr,
        )
    else:
        name = args.name or "device"
        dk = keys.DeviceKey.generate()
        keys.write_private(out / f"{name}.key", dk.to_pem(), args.force)
        keys.write_public(out / f"{name}.pub", dk.public_pem(), args.force)
        print(
            f"device key written: {out / (name + '.key')} (0600); "
            f"fingerprint {keys.fingerprint(dk.public)}",
            file=sys.stderr,
        )
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    b = provision(
        args.name, args.twin_pub, args.out, args.db, args.kid, args.lite, args.chunk, args.force
    )
    out = Path(args.out)
    print(
        f"provisioned {b.name}: kid {b.kid.hex()}, profile {b.profile}; bundle "
        f"{out / (b.name + '.device')} (0600)"
        + (
            f"; registered in {args.db}"
            if args.db
            else f"; register it with: twinlink twin register {b.name} --pub "
            f"{out / (b.name + '.pub')}"
            f" --kid {b.kid.hex()} --db TWIN_DB"
        ),
        file=sys.stderr,
    )
    return 0


# -- seal / open / inspect ------------------------------------------------------------------


def cmd_seal(args: argparse.Namespace) -> int:
    dev = Device.load(args.device, args.state)
    try:
        for lineno, reading, why in json_readings(sys.stdin):
            try:
                if reading is None:
                    raise ValueError(why)
                fr = dev.seal(reading)
            except (ValueError, TypeError) as exc:
                raise fail(f"line {lineno}: {exc}", EXIT_USAGE, READING_HINT) from None
            sys.stdout.write(fr.hex() + "\n")
            sys.stdout.flush()
    finally:
        dev.close()
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    with Twin(_store(args.db), args.twin_key) as twin:
        for obj in open_lines(twin, sys.stdin):
            _emit(obj)
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
        with Twin(_store(args.db), args.twin_key) as twin:
            verdict = _verdict(twin, data)
    elif args.db or args.twin_key:
        raise fail("--db and --twin-key go together", EXIT_USAGE)
    if args.json:
        _emit({"frame": info, "diagnostic": diag, "verdict": verdict})
        return 0
    print(f"twinlink frame, {len(data)} bytes")
    for k, v in info.items():
        print(f"  {k:22} {json.dumps(v) if isinstance(v, dict) else v}")
    if diag:
        print("CBOR diagnostic notation:")
        print("  " + diag)
    if verdict is not None:
        print("verdict: " + json.dumps(verdict))
    return 0


def _verdict(twin: Twin, data: bytes) -> dict[str, Any]:
    """What ``open`` would do with the frame (:meth:`Twin.check`: same rules, nothing stored)."""
    res = twin.check(data)
    if isinstance(res, Reading):
        return {
            "ok": True,
            "device": res.device,
            "status": "active",
            "window": "fresh",
            "plaintext": res.plaintext.hex(),
            "payload": to_json(res.payload),
        }
    return refusal_json(res)


# -- twin registry --------------------------------------------------------------------------


def cmd_twin(args: argparse.Namespace) -> int:
    store = _store(args.db, must_exist=args.action != "register")
    try:
        if args.action == "list":
            rows = [
                {
                    "name": d.name,
                    "kid": d.kid.hex(),
                    "profile": d.profile,
                    "status": d.status,
                    "fingerprint": d.fingerprint,
                }
                for d in store.devices()
            ]
            if args.json:
                for r in rows:
                    _emit(r)
            else:
                print(f"{'NAME':20} {'KID':14} {'PROFILE':11} {'STATUS':8} FINGERPRINT")
                for r in rows:
                    print(
                        f"{r['name']:20} {r['kid']:14} {r['profile']:11} {r['status']:8} "
                        f"{r['fingerprint']}"
                    )
        elif args.action == "show":
            st = store.status(_need_name(args))
            if args.json:
                _emit(st)
            else:
                for k, v in st.items():
                    if k != "state":
                        print(f"{k:12} {v}")
                print("state:")
                for n, v in st["state"].items():
                    print(f"  {n:18} {json.dumps(v['value'])} {v['unit'] or ''} (seq {v['seq']})")
        elif args.action == "events":
            for e in store.events(args.name, args.limit):
                _emit(e) if args.json else print(
                    f"{e['at']:.3f} {e['device'] or e['kid'] or '-':16} {e['reason']:16} "
                    f"seq={e['seq']} {e['detail']}"
                )
        elif args.action == "readings":
            for row in store.readings(args.name, args.limit):
                _emit(row)
        elif args.action == "register":
            if not args.pub:
                raise fail("register needs --pub FILE", EXIT_USAGE)
            d = store.register(
                _need_name(args),
                keys.load_public(args.pub, "ed25519"),
                args.kid,
                PROFILE_LITE if args.lite else PROFILE_SIGNED,
            )
            print(f"registered {d.name}: kid {d.kid.hex()}, profile {d.profile}", file=sys.stderr)
        elif args.action == "revoke":
            store.revoke(_need_name(args), args.why or "")
            print(f"revoked {args.name}", file=sys.stderr)
        elif args.action == "reanchor":
            if args.floor is None:
                raise fail(
                    "reanchor needs --floor SEQ (the lowest sequence number to accept)", EXIT_USAGE
                )
            _reanchor(store, _need_name(args), args.floor, args.force)
            print(f"re-anchored {args.name}: accepting seq >= {args.floor}", file=sys.stderr)
        elif args.action == "rekey":
            _rekey(store, _need_name(args), args.salt, args.bundle)
    finally:
        store.close()
    return 0


def _rekey(store: TwinStore, name: str, salt_hex: str | None, bundle_path: str | None) -> None:
    """New Master Salt for one device: history stays, window and counters start afresh.

    Crash-safe order: the store records the new salt as pending, the bundle is rewritten
    atomically, then the store switches. Killed anywhere, the bundle parses and the device's
    frames open under exactly the context its bundle names (a pending salt is accepted too);
    running the re-key again finishes the job.
    """
    try:
        salt = os.urandom(8) if salt_hex is None else bytes.fromhex(salt_hex)
    except ValueError:
        raise fail("--salt must be hex", EXIT_USAGE) from None
    bundle = keys.Bundle.load(bundle_path) if bundle_path else None
    dev = store.device(name)
    if dev.profile == PROFILE_LITE or (bundle is not None and bundle.device_key is None):
        # Its bundle holds keys derived from the current context: a new salt strands it.
        raise fail(
            "a lite bundle holds derived keys only",
            EXIT_USAGE,
            "re-provision the lite device instead of re-keying it",
        )
    if bundle is not None:
        if (bundle.name, bundle.kid) != (dev.name, dev.kid):
            raise fail(f"{bundle_path} is not {name}'s bundle", EXIT_USAGE)
        if (bundle.master_salt != dev.master_salt and bundle.master_salt == dev.pending_salt):
            # An earlier re-key was cut after it rewrote the bundle: finish that one first, or
            # announcing a new salt would replace the one the device already uses.
            _switch_context(store, name, bundle.master_salt, bundle.id_context)
    store.announce_rekey(name, salt)
    if bundle is not None and bundle_path is not None:
        bundle.settings["master_salt"] = salt.hex()
        bundle.settings["id_context"] = None
        bundle.save(bundle_path, overwrite=True)
    _switch_context(store, name, salt, None)
    if bundle is not None:
        print(f"re-keyed {name} (master salt {salt.hex()}); updated {bundle_path}", file=sys.stderr)
    else:
        print(
            f're-keyed {name}: set "master_salt": "{salt.hex()}" in its bundle\'s settings '
            "before it sends again",
            file=sys.stderr,
        )


def _reanchor(store: TwinStore, name: str, floor: int, force: bool) -> None:
    """Re-anchor; with ``force``, a floor that re-opens numbers already used goes through
    with a warning that says which (the store's refusal names the highest one used)."""
    try:
        store.reanchor(name, floor)
    except RegistryError as exc:
        if not force or not 0 <= floor <= oscore.MAX_SEQ:
            raise
        print(f"twinlink: warning: {exc}; forced", file=sys.stderr)
        store.reanchor(name, floor, force=True)


def _switch_context(store: TwinStore, name: str, salt: bytes, id_context: bytes | None) -> None:
    """The store's re-key, where a device that already completed it (its first frame under the
    announced salt renews the context by itself) counts as success."""
    try:
        store.rekey(name, salt, id_context)
    except RegistryError:
        rec = store.device(name)
        if (rec.master_salt, rec.id_context) != (salt, id_context):
            raise


def _need_name(args: argparse.Namespace) -> str:
    if not args.name:
        raise fail(f"'twin {args.action}' needs a device NAME", EXIT_USAGE)
    return str(args.name)


# -- doctor / send / demo -------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    info = {
        "twinlink": __version__,
        "backend": backend.name(),
        "why": backend.explain(),
        "native_error": backend.native_error(),
        "python": sys.version.split()[0],
    }
    if args.json:
        _emit(info)
    else:
        for k, v in info.items():
            print(f"{k:13} {v}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    if bool(args.serial) == bool(args.mqtt):
        raise fail("give exactly one of --serial PORT_OR_URL or --mqtt URL", EXIT_USAGE)
    if args.serial:
        from . import serial_cmds

        return int(serial_cmds.send_serial(args))
    try:
        from . import mqtt_cmds  # type: ignore[attr-defined]
    except ImportError:
        raise fail("this build has no MQTT transport", EXIT_USAGE) from None
    return int(mqtt_cmds.send_mqtt(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(count=args.count, keep=args.keep, out=sys.stdout)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keygen", help="generate the twin key (or a bare device key)")
    p.add_argument("kind", choices=["twin", "device"])
    p.add_argument("name", nargs="?", help="file stem for a device key")
    p.add_argument("--out", required=True, help="directory for the key files")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("provision", help="create a device key and bundle (and register it)")
    p.add_argument("name")
    p.add_argument("--twin-pub", required=True, help="the twin's public key (twin.pub)")
    p.add_argument("--out", required=True, help="directory for NAME.key, NAME.pub, NAME.device")
    p.add_argument("--db", help="twin database to register the device in")
    p.add_argument("--kid", type=_kid, help="kid in hex (default: next free in --db, else random)")
    p.add_argument(
        "--lite",
        action="store_true",
        help="lite profile: bundle holds derived AEAD keys, frames are not signed",
    )
    p.add_argument("--chunk", type=int, help="sequence numbers reserved per durable write (K)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_provision)

    p = sub.add_parser("seal", help="seal JSON readings from stdin into hex frames on stdout")
    p.add_argument("--device", required=True, help="device bundle (NAME.device)")
    p.add_argument(
        "--state",
        help="sequence-state directory (default $TWINLINK_STATE_DIR or ~/.local/state/twinlink)",
    )
    p.set_defaults(func=cmd_seal)

    p = sub.add_parser("open", help="open hex frames from stdin into JSON lines on stdout")
    p.add_argument("--db", required=True)
    p.add_argument("--twin-key", required=True)
    p.set_defaults(func=cmd_open)

    p = sub.add_parser("inspect", help="dump a frame's headers (and verdict, with keys)")
    p.add_argument("frame", help="hex string or file (hex or binary)")
    p.add_argument("--db")
    p.add_argument("--twin-key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("twin", help="query and administer the twin registry")
    p.add_argument(
        "action",
        choices=["list", "show", "events", "readings", "register", "revoke", "reanchor", "rekey"],
    )
    p.add_argument("name", nargs="?")
    p.add_argument("--db", default=os.environ.get("TWINLINK_DB", "twin.db"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--pub", help="register: the device's public key PEM")
    p.add_argument("--kid", type=_kid, help="register: kid in hex")
    p.add_argument("--lite", action="store_true", help="register: lite-profile device")
    p.add_argument("--why", help="revoke: reason recorded in the events")
    p.add_argument("--floor", type=int, help="reanchor: lowest sequence number to accept")
    p.add_argument("--force", action="store_true",
                   help="reanchor: allow a floor at or below numbers already used")
    p.add_argument("--salt", help="rekey: new Master Salt in hex (default: 8 random bytes)")
    p.add_argument("--bundle", help="rekey: the device's bundle file to update as well")
    p.set_defaults(func=cmd_twin)

    p = sub.add_parser("doctor", help="show the active backend and why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("send", help="send JSON readings from stdin over serial or MQTT")
    p.add_argument("--device", required=True)
    p.add_argument("--state")
    p.add_argument("--serial", help="serial port or pyserial URL")
    p.add_argument("--mqtt", help="broker URL mqtt://host:port or mqtts://…")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the link (MQTT: for the twin's acknowledgements)",
    )
    p.add_argument("--baudrate", type=int, default=115200)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("demo", help="the main job on embedded defaults: no broker or hardware")
    p.add_argument("--count", type=int, default=10, help="readings per device")
    p.add_argument("--keep", help="directory to keep the demo's keys and database in")
    p.set_defaults(func=cmd_demo)

"""``twinlink twin …``: query and administer the twin registry, one subcommand per action.

Queries (``list``, ``show``, ``events``, ``readings``) print a table by default and JSON with
``--json``; admin actions (``register``, ``revoke``, ``reanchor``, ``rekey``) report on stderr,
and with ``--json`` print the device's record on stdout. Names and any device-supplied text go
through :func:`twinlink.naming.printable` before they reach a terminal.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from .. import keys
from ..oscore import MAX_SEQ
from ..store import PROFILE_LITE, PROFILE_SIGNED, ReadingRow, RegistryError, TwinStore
from ..values import to_json
from . import downlink_cmds, output
from .common import (
    EXIT_USAGE,
    add_command,
    add_db,
    add_json,
    fail,
    kid_arg,
    open_twin_store,
    positive_int,
    say,
)

#: Rows fetched per query when paging through a time range.
PAGE = 1000


def _time_arg(text: str) -> float:
    try:
        return output.parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _report_device(store: TwinStore, args: argparse.Namespace, message: str) -> None:
    if args.json:
        output.emit(output.device_json(store.device(args.name)))
    say(message)


# -- queries ----------------------------------------------------------------------------------


def cmd_list(store: TwinStore, args: argparse.Namespace) -> None:
    devices = [output.device_json(d) for d in store.devices()]
    if args.json:
        for d in devices:
            output.emit(d)
        return
    print(f"{'NAME':20} {'KID':14} {'PROFILE':11} {'STATUS':8} {'REGISTERED':25} FINGERPRINT")
    for d in devices:
        print(f"{output.text(d['name']):20} {d['kid']:14} {output.text(d['profile']):11} "
              f"{output.text(d['status']):8} {output.text(d['registered_at']):25} "
              f"{d['fingerprint']}")


def cmd_show(store: TwinStore, args: argparse.Namespace) -> None:
    st = output.status_json(store.status(args.name))
    desired, desired_text = downlink_cmds.desired_lines(store, args.name)
    upd, update_text = downlink_cmds.update_lines(store, args.name)
    if args.json:
        output.emit({**st, "desired": desired, "update": upd})
        return
    for k, v in st.items():
        if k not in ("state", "qc"):
            print(f"{k:14} {output.text(v)}")
    qc = st.get("qc") or {}
    series_qc = qc.get("series") or {}
    print("state:")
    for n, s in st["state"].items():
        unit = f" {output.text(s['unit'])}" if s["unit"] else ""
        q = series_qc.get(n) or {}
        flag = (f"  [QC: {', '.join(map(output.text, q['open']))}]" if q.get("open")
                else "  [QC: learning]" if q and not q.get("baseline") else "")
        print(f"  {output.text(n):18} {output.value_text(s['value'])}{unit} (seq {s['seq']}"
              f"{', at ' + str(s['time']) if s['time'] is not None else ''}){flag}")
    if desired_text:
        print("desired (vs reported):")
        print("\n".join(desired_text))
    if update_text:
        print("update:")
        print("\n".join(update_text))
    opened = qc.get("open") or []
    print("open detections: " + (", ".join(map(output.text, opened)) if opened else
                                 "none" if qc else "none recorded (no ingest with detection "
                                 "has seen this device yet)"))


def cmd_qc(store: TwinStore, args: argparse.Namespace) -> None:
    """Show or change the detection (QC) configuration."""
    from ..detect import DetectConfig, load_toml

    if args.from_toml:
        new = load_toml(args.from_toml).to_json()
    else:
        new = DetectConfig.from_json(store.qc_config()).to_json()
        changes: dict[str, Any] = {k: getattr(args, k) for k in _QC_KEYS
                                   if getattr(args, k) is not None}
        if args.series and not args.name:
            raise fail("--series needs a device NAME (or '*' for every device)", EXIT_USAGE)
        if not changes and not args.enable and not args.disable:
            output.emit(new) if args.json else print(json.dumps(new, indent=2))
            return
        if args.name and args.series:
            table = new.setdefault("series", {}).setdefault(args.name, {}).setdefault(
                args.series, {})
        elif args.name:
            table = new.setdefault("device", {}).setdefault(args.name, {})
        else:
            table = new.setdefault("defaults", {})
        table.update(changes)
        for key, tests in (("enable", args.enable), ("disable", args.disable)):
            if tests:
                table[key] = sorted(set(table.get(key, [])) | set(tests))
    config = DetectConfig.from_json(new)  # validates: DetectConfigError names the key
    store.set_qc_config(config.to_json(), why=args.why or "set with twinlink twin qc")
    if args.json:
        output.emit(config.to_json())
    else:
        print("detection configuration updated; running ingests apply it within 5 s",
              file=sys.stderr)


_QC_KEYS = ("min", "max", "suspect_min", "suspect_max", "max_rate", "interval", "spike_k",
            "flat_count", "drift_k", "silent_factor", "rate_factor", "size_factor")


def cmd_events(store: TwinStore, args: argparse.Namespace) -> None:
    if args.format != "table" or args.follow or args.since is not None:
        from .events_cmds import print_events

        fmt = "jsonl" if args.format == "table" else args.format
        try:
            print_events(store, fmt, args.follow, args.since, args.name, sys.stdout,
                         limit=args.limit)
        except KeyboardInterrupt:
            pass  # --follow ends with Ctrl-C
        return
    for e in store.events(args.name, args.limit, audit=not args.no_audit):
        row = output.event_json(e)
        if args.json:
            output.emit(row)
        else:
            who = row["device"] or row["kid"] or "-"
            seq = "-" if row["seq"] is None else row["seq"]
            print(f"{row['at']} {output.text(who):16} {output.text(row['reason']):20} "
                  f"seq={seq} {output.text(row['detail'])}")


def _rows(store: TwinStore, args: argparse.Namespace) -> Iterator[ReadingRow]:
    """The readings asked for, oldest first: every one in the range (paged), or the newest
    ``--limit``."""
    limit = args.limit
    if limit is None and args.since is None and args.until is None:
        limit = 100
    if limit is not None:
        yield from store.readings(args.name, limit, since=args.since, until=args.until)
        return
    after = 0
    while True:
        page = store.readings(args.name, PAGE, since=args.since, until=args.until,
                              after_id=after)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]["id"]


class _Units:
    """Unit per series, from the twin's state (its latest reading's unit), looked up once per
    device."""

    def __init__(self, store: TwinStore) -> None:
        self.store = store
        self._by_device: dict[str, dict[str, str | None]] = {}

    def __call__(self, device: str) -> dict[str, str | None]:
        units = self._by_device.get(device)
        if units is None:
            state = self.store.status(device)["state"]
            units = self._by_device[device] = {n: s["unit"] for n, s in state.items()}
        return units


def _series(payload: Any) -> list[tuple[str, Any]]:
    """(series name, value) pairs of a payload; a non-map payload is one unnamed value."""
    if isinstance(payload, dict):
        return list(payload.items())
    return [("", payload)]


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell: numbers as numbers, text as text with a leading ``'`` where a spreadsheet
    would run it as a formula (device-supplied text is hostile), other values as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    if not isinstance(value, str):
        value = output.value_text(value)
    return "'" + value if value.startswith(_FORMULA) else value


CSV_COLUMNS = ["received_at", "time", "device", "seq", "epoch", "name", "value", "unit"]


def cmd_readings(store: TwinStore, args: argparse.Namespace) -> None:
    fmt = "jsonl" if args.json else args.format
    units = _Units(store)
    if fmt == "jsonl":
        for row in _rows(store, args):
            output.emit(output.reading_row_json(row, units(row["device"])))
        return
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for row in _rows(store, args):
            u = units(row["device"])
            for name, value in _series(row["payload"]):
                w.writerow([output.iso(row["received_at"]), _cell(output.iso(row["time"])),
                            _cell(row["device"]), row["seq"], row["epoch"], _cell(name),
                            _cell(to_json(value)), _cell(u.get(name))])
        return
    print(f"{'RECEIVED':24} {'DEVICE':16} {'SEQ':>8}  VALUES")
    for row in _rows(store, args):
        u = units(row["device"])
        values = " ".join(
            (f"{output.text(n)}=" if n else "") + output.value_text(v)
            + (f" {output.text(u[n])}" if u.get(n) else "")
            for n, v in _series(row["payload"]))
        print(f"{output.text(output.iso(row['received_at'])):24} "
              f"{output.text(row['device']):16} {row['seq']:>8}  {values}")


# -- admin actions ----------------------------------------------------------------------------


def cmd_register(store: TwinStore, args: argparse.Namespace) -> None:
    d = store.register(args.name, keys.load_public(args.pub, "ed25519"), args.kid,
                       PROFILE_LITE if args.lite else PROFILE_SIGNED)
    _report_device(store, args, f"registered {d.name}: kid {d.kid.hex()}, profile {d.profile}")


def cmd_revoke(store: TwinStore, args: argparse.Namespace) -> None:
    store.revoke(args.name, args.why)
    _report_device(store, args, f"revoked {args.name}")


def cmd_reanchor(store: TwinStore, args: argparse.Namespace) -> None:
    """Re-anchor; with --force, a floor that re-opens numbers already used goes through with
    a warning that says which (the store's refusal names the highest one used)."""
    try:
        store.reanchor(args.name, args.floor)
    except RegistryError as exc:
        if not args.force or not 0 <= args.floor <= MAX_SEQ:
            raise
        say(f"warning: {exc}; forced")
        store.reanchor(args.name, args.floor, force=True)
    _report_device(store, args, f"re-anchored {args.name}: accepting seq >= {args.floor}")


def cmd_rekey(store: TwinStore, args: argparse.Namespace) -> None:
    """New Master Salt for one device: history stays, window and counters start afresh.

    Crash-safe order: the store records the new salt as pending, the bundle is rewritten
    atomically, then the store switches. Killed anywhere, the bundle parses and the device's
    frames open under exactly the context its bundle names (a pending salt is accepted too);
    running the re-key again finishes the job.
    """
    name, bundle_path = args.name, args.device
    try:
        salt = os.urandom(8) if args.salt is None else bytes.fromhex(args.salt)
    except ValueError:
        raise fail("--salt must be hex", EXIT_USAGE) from None
    bundle = keys.Bundle.load(bundle_path) if bundle_path else None
    dev = store.device(name)
    if dev.profile == PROFILE_LITE or (bundle is not None and bundle.device_key is None):
        # Its bundle holds keys derived from the current context: a new salt strands it.
        raise fail("a lite bundle holds derived keys only", EXIT_USAGE,
                   "re-provision the lite device instead of re-keying it")
    if bundle is not None:
        if (bundle.name, bundle.kid) != (dev.name, dev.kid):
            raise fail(f"{bundle_path} is not {name}'s bundle", EXIT_USAGE)
        if bundle.master_salt != dev.master_salt and bundle.master_salt == dev.pending_salt:
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
        msg = f"re-keyed {name} (master salt {salt.hex()}); updated {bundle_path}"
    else:
        msg = (f're-keyed {name}: set "master_salt": "{salt.hex()}" in its bundle\'s settings '
               "before it sends again")
    _report_device(store, args, msg)


def _switch_context(store: TwinStore, name: str, salt: bytes, id_context: bytes | None) -> None:
    """Complete an announced re-key; a device that already completed it (its first frame under
    the announced salt renews the context by itself) keeps the context it chose."""
    store.rekey(name, salt, id_context, announced=True)


# -- parser -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    store = open_twin_store(args.db, must_exist=args.twin_action != "register")
    try:
        rc = args.twin_func(store, args)
    finally:
        store.close()
    return rc or 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    twin = add_command(
        sub, "twin", "query and administer the twin registry",
        description="Query and administer the twin registry. Each action is a subcommand "
                    "with its own options: 'twinlink twin ACTION --help'.",
        examples=["twinlink twin list --db twin.db",
                  "twinlink twin readings pump-17 --since 2026-11-30 --format csv > day.csv"])
    add_db(twin)
    twin.set_defaults(func=lambda args: _help(twin))
    tsub = twin.add_subparsers(dest="twin_action", metavar="ACTION")

    def action(name: str, summary: str, func: Any, examples: list[str],
               description: str = "") -> argparse.ArgumentParser:
        p = add_command(tsub, name, summary, examples=examples, description=description)
        add_db(p, default=argparse.SUPPRESS)  # else the twin-level --db (and its default)
        p.set_defaults(func=_run, twin_func=func)
        return p

    p = action("list", "list registered devices", cmd_list,
               ["twinlink twin list", "twinlink twin list --json | jq -r .name"])
    add_json(p, "one JSON object per device")

    p = action("show", "registry entry, counters and latest values of one device", cmd_show,
               ["twinlink twin show pump-17", "twinlink twin show pump-17 --json"])
    p.add_argument("name", help="device name")
    add_json(p, "one JSON object")

    p = action("events", "security events and operator actions, oldest first", cmd_events,
               ["twinlink twin events --limit 20", "twinlink twin events pump-17 --no-audit"])
    p.add_argument("name", nargs="?", help="only this device's events (default: all devices)")
    p.add_argument("--limit", type=positive_int, default=100, metavar="N",
                   help="the newest N events")
    p.add_argument("--no-audit", action="store_true",
                   help="leave out operator actions and context changes (refusals only)")
    p.add_argument("--format", choices=["table", "jsonl", "ecs", "rfc5424", "cef", "ocsf"],
                   default="table",
                   help="table for people; jsonl (the catalogue's event record), ecs (Elastic "
                        "Common Schema), rfc5424 (syslog), cef or ocsf for a SIEM")
    p.add_argument("--follow", action="store_true",
                   help="keep printing new events as they are stored (Ctrl-C ends)")
    p.add_argument("--since", type=int, metavar="ID",
                   help="every event with an id above ID (default: none, i.e. the newest --limit)")
    add_json(p, "one JSON object per event")

    p = action(
        "readings", "stored readings, oldest first, as a table, CSV or JSON lines", cmd_readings,
        ["twinlink twin readings pump-17 --limit 10",
         "twinlink twin readings pump-17 --since 2026-11-30 --until 2026-12-01 --format csv "
         "> day.csv",
         "twinlink twin readings --since 2026-11-30T08:00Z --format jsonl | jq .payload"],
        description="Stored readings, oldest first. --since/--until select by the time the "
                    "twin received (stored) each reading, [since, until). CSV has one row per "
                    "value (columns: " + ",".join(CSV_COLUMNS) + "); 'unit' is the unit the "
                    "twin's state holds for that series (its latest reading's unit).")
    p.add_argument("name", nargs="?", help="only this device's readings (default: all devices)")
    p.add_argument("--since", type=_time_arg, metavar="TIME",
                   help="received at or after TIME: ISO 8601 (UTC unless an offset is given) "
                        "or epoch seconds (default: no lower bound)")
    p.add_argument("--until", type=_time_arg, metavar="TIME",
                   help="received before TIME (default: no upper bound)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="only the newest N (default: 100; with --since or --until, every "
                        "reading in the range)")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table",
                   help="output format")
    add_json(p, "same as --format jsonl")

    p = action("register", "register a device's public key", cmd_register,
               ["twinlink twin register pump-17 --pub keys/pump-17.pub --kid 01"],
               description="Register a device (creates the database if needed). Public keys "
                           "must be valid Ed25519 points of full order.")
    p.add_argument("name", help="device name (1-64 of A-Z a-z 0-9 . _ -)")
    p.add_argument("--pub", required=True, metavar="FILE",
                   help="the device's public key (PEM, SubjectPublicKeyInfo)")
    p.add_argument("--kid", type=kid_arg, help="kid in hex (default: the next free one)")
    p.add_argument("--lite", action="store_true", help="a lite-profile device (unsigned frames)")
    add_json(p, "print the device's record as one JSON object")

    p = action("revoke", "refuse a device's frames from now on", cmd_revoke,
               ["twinlink twin revoke pump-17 --why 'stolen from site 4'"])
    p.add_argument("name", help="device name")
    p.add_argument("--why", default="", help="reason recorded in the events (default: none)")
    add_json(p, "print the device's record as one JSON object")

    p = action("reanchor", "accept a device again after its window state was lost",
               cmd_reanchor, ["twinlink twin reanchor pump-17 --floor 5000"],
               description="Accept only sequence numbers >= FLOOR from now on (0 … 2^40-1). A "
                           "floor at or below numbers the device already used is refused "
                           "unless --force (it would re-open them to replays).")
    p.add_argument("name", help="device name")
    p.add_argument("--floor", type=int, required=True, metavar="SEQ",
                   help="lowest sequence number to accept")
    p.add_argument("--force", action="store_true",
                   help="allow a floor at or below numbers already used")
    add_json(p, "print the device's record as one JSON object")

    p = action("qc", "show or change detection (value QC, liveness) settings", cmd_qc,
               ["twinlink twin qc", "twinlink twin qc boiler --series temp --min 0 --max 120",
                "twinlink twin qc pump-17 --interval 10 --disable flatline",
                "twinlink twin qc --from-toml qc.toml"],
               description="Without NAME the defaults, with NAME one device, with NAME and "
                           "--series one series of it ('*' as NAME: that series on every "
                           "device). Without a setting it prints the configuration. Settings "
                           "are stored in the twin database (audit event device.qc_configured)"
                           "; see docs/DETECTION.md for every key and the TOML format.")
    p.add_argument("name", nargs="?", help="device name, or '*' with --series")
    p.add_argument("--series", help="one series (SenML name) of the device (default: none, "
                   "the device's own settings)")
    for key, what in (("min", "gross range: lowest plausible value"),
                      ("max", "gross range: highest plausible value"),
                      ("suspect_min", "below this is suspect (flag 3)"),
                      ("suspect_max", "above this is suspect (flag 3)"),
                      ("max_rate", "largest plausible change per second"),
                      ("spike_k", "spike threshold in robust deviations"),
                      ("flat_count", "identical readings before a flat line"),
                      ("drift_k", "drift threshold"),
                      ("interval", "expected seconds between frames (device)"),
                      ("silent_factor", "silent after this many intervals (device)"),
                      ("rate_factor", "rate anomaly at this many times the usual rate (device)"),
                      ("size_factor", "size anomaly at this many times the usual size (device)")):
        p.add_argument("--" + key.replace("_", "-"), dest=key, metavar="X",
                       type=int if key == "flat_count" else float,
                       help=what + " (default: unchanged)")
    p.add_argument("--enable", action="append", metavar="TEST",
                   help="switch a test on (range, spike, rate, flatline, drift, gap, ...; "
                        "default: none changed)")
    p.add_argument("--disable", action="append", metavar="TEST",
                   help="switch a test off (default: none changed)")
    p.add_argument("--from-toml", metavar="FILE",
                   help="replace the whole configuration with a TOML file's (default: edit "
                        "the stored one)")
    p.add_argument("--why", help="reason recorded in the audit event (default: none)")
    add_json(p, "print the resulting configuration as one JSON object")

    p = action("rekey", "give a device a new Master Salt (history stays)", cmd_rekey,
               ["twinlink twin rekey pump-17 --device keys/pump-17.device"],
               description="Switch the device to a new security context: its history stays, "
                           "its window and counters restart. With --device the bundle is "
                           "rewritten (atomically, before the database switches); without it, "
                           "put the printed salt into the bundle yourself.")
    p.add_argument("name", help="device name")
    p.add_argument("--salt", metavar="HEX", help="new Master Salt (default: 8 random bytes)")
    p.add_argument("--device", "--bundle", dest="device", metavar="BUNDLE",
                   help="the device's bundle file to rewrite as well; --bundle is the same option "
                        "(default: only the database changes)")
    add_json(p, "print the device's record as one JSON object")

    downlink_cmds.register(action)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


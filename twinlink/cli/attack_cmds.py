"""``twinlink attack``: run the attack catalogue against a twin and print the scorecard."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .. import attack
from ..attack import report
from . import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail
from .common import add_command, positive_seconds, say


def _ids(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _transports(text: str) -> list[str]:
    names = _ids(text)
    bad = [n for n in names if n not in attack.TRANSPORTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"transports are a comma-separated subset of {','.join(attack.TRANSPORTS)}")
    return names


def _topic_root(text: str) -> str:
    from ..transport.topics import check_topic_root

    try:
        return check_topic_root(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_attack(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    existing = args.db is not None
    if not existing and (args.device or args.twin_key or args.mqtt):
        raise fail("--device, --twin-key and --mqtt attack an existing twin: give its --db too",
                   EXIT_USAGE)
    if existing and not 1 <= len(args.device or []) <= 2:
        raise fail("an existing twin is attacked through one or two of its devices: give "
                   "--device BUNDLE (the victim), optionally a second --device", EXIT_USAGE)
    try:
        runs = attack.select(attack.SCENARIOS, _ids(args.only or ""), args.transport)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE, "see 'twinlink attack --list'") from None
    if not runs:
        raise fail("no scenario runs over the chosen transports", EXIT_USAGE)
    keep = Path(args.keep) if args.keep else None
    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise fail(f"--keep {keep} is not empty", EXIT_USAGE,
                   "give a new or empty directory for the workspace")
    workdir = keep or Path(tempfile.mkdtemp(prefix="twinlink-attack-"))
    target = attack.Target(workdir, db=args.db, twin_key=args.twin_key,
                           devices=args.device or [], mqtt_url=args.mqtt,
                           topic_root=args.topic_root)
    live = sys.stderr.isatty()

    def started(i: int, n: int, sc: attack.Scenario, transport: str) -> None:
        if live:
            line = f"[{i}/{n}] {sc.id} over {transport}: {sc.title}"
            sys.stderr.write("\r\x1b[K" + line[:shutil.get_terminal_size().columns - 1])
            sys.stderr.flush()

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through run(): the broker it started is stopped

    old = signal.signal(signal.SIGTERM, terminated)
    t0 = time.monotonic()
    try:
        results = attack.run(runs, target, on_start=started, timeout=args.timeout)
    finally:
        signal.signal(signal.SIGTERM, old)
        if live:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = attack.Summary.of(results, time.monotonic() - t0)
    doc = report.to_json(results, summary)
    if args.json == "-":
        print(json.dumps(doc))
    else:
        print(report.table(results, shutil.get_terminal_size((140, 24)).columns))
        print(summary.line() + ("" if summary.passed else "  — FAILED"))
        if args.json:
            report.write(args.json, (json.dumps(doc, indent=1) + "\n").encode())
    if args.junit_xml:
        report.write(args.junit_xml, report.junit_xml(results, summary))
        if args.junit_xml != "-":
            say(f"JUnit report: {os.path.abspath(args.junit_xml)}")
    if keep is not None:
        say(f"workspace kept in {keep}")
    return EXIT_OK if summary.passed else EXIT_FAILURE


def _list(args: argparse.Namespace) -> int:
    for sc in attack.SCENARIOS:
        if args.json:
            print(json.dumps({"id": sc.id, "title": sc.title, "technique": sc.technique,
                              "transports": list(sc.transports), "verdict": sc.verdict,
                              "event": sc.event, "needs": list(sc.needs),
                              "assumes": sc.assumes}))
        else:
            tech = sc.technique[0] if sc.technique else "-"
            print(f"{sc.id:24} {tech:6} {sc.verdict:8} {sc.event or '-':22} "
                  f"{','.join(sc.transports):18} {sc.title}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub, "attack", "simulate attacks against a twin and score its defences",
        examples=["twinlink attack",
                  "twinlink attack --transport inproc --only replay-exact,kid-swap",
                  "twinlink attack --junit-xml attack.xml --json scorecard.json",
                  "twinlink attack --db twin.db --twin-key keys/twin.key "
                  "--device keys/pump-17.device --transport inproc",
                  "twinlink attack --list"],
        description="Run the attack catalogue (replays, tampering, downgrades, forged and "
                    "replayed acks, MQTT abuse, malformed CBOR, floods, authentic lies) and "
                    "mark each scenario ok, MISSED (an attack got further than it may, or "
                    "without its security event), FALSE-POSITIVE (a control raised an event) "
                    "or ERROR. By default each scenario gets a fresh twin in a temporary "
                    "directory, a pty pair for serial and a private mosquitto on a free port "
                    "for MQTT (MQTT scenarios are skipped, with the reason, if mosquitto is "
                    "not installed). With --db the scenarios that need no operator action run "
                    "against that twin: it stores their readings and events. Exit 0 only if "
                    "every run is ok (or skipped).")
    p.add_argument("--transport", type=_transports, default=list(attack.TRANSPORTS),
                   metavar="LIST", help="comma-separated transports to run over "
                                        "(default: inproc,serial,mqtt)")
    p.add_argument("--only", metavar="ID,...",
                   help="run only these scenario ids (default: the whole catalogue)")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the scorecard as JSON: to FILE, or alone for stdout instead of the "
                        "table (default: no JSON)")
    p.add_argument("--junit-xml", metavar="FILE",
                   help="also write the scorecard as JUnit XML to FILE (default: none)")
    p.add_argument("--keep", metavar="DIR",
                   help="keep the workspace (twin databases, keys, broker log) in DIR "
                        "(default: a temporary directory, removed)")
    p.add_argument("--timeout", type=positive_seconds, default=60.0, metavar="S",
                   help="seconds to wait for one scenario's verdict before marking it ERROR")
    p.add_argument("--topic-root", type=_topic_root, metavar="ROOT",
                   help="MQTT topic root (default: an existing twin's, as 'serve' would take "
                        "it from --db, else the victim bundle's, else twinlink; fresh twins: "
                        "twinlink-attack/<random hex> of this run)")
    g = p.add_argument_group("an existing twin instead of fresh ones")
    g.add_argument("--db", metavar="PATH",
                   help="its database (default: a fresh twin per scenario)")
    g.add_argument("--twin-key", metavar="FILE",
                   help="its private key, to open frames in this process (inproc runs; "
                        "default: none)")
    g.add_argument("--device", action="append", metavar="BUNDLE",
                   help="a registered device's bundle; the first is the victim, a second "
                        "enables the cross-device scenarios (default: none)")
    g.add_argument("--mqtt", metavar="URL",
                   help="the broker the twin's own ingest listens on (mqtt runs; default: "
                        "none)")
    p.set_defaults(func=cmd_attack)

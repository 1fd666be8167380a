"""``twinlink twin migrate`` (SQLite file → PostgreSQL) and ``twinlink twin retention``.

Added to the ``twin`` command group declared in :mod:`.twin_cmds`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..store import StorageError, StoreUnavailable
from . import output
from .common import (
    EXIT_FAILURE,
    EXIT_STATE,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    add_command,
    add_db,
    add_json,
    fail,
    open_twin_store,
    say,
)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Copy the twin from ``--from`` (SQLite) into ``--to`` (an empty PostgreSQL database)."""
    from ..store.postgres import is_postgres_url, redact_url
    from ..store.transfer import IngestRunning, migrate_sqlite_to_postgres

    if not is_postgres_url(args.to):
        raise fail(f"--to must be a postgresql:// URL, not {args.to!r}", EXIT_USAGE)
    if is_postgres_url(args.source):
        raise fail("--from must be a SQLite file", EXIT_USAGE)
    live = sys.stderr.isatty() and not args.json

    def progress(table: str, n: int) -> None:
        if live:
            say(f"{table}: {n} row(s)")

    try:
        counts = migrate_sqlite_to_postgres(args.source, args.to, progress)
    except IngestRunning as exc:
        raise fail(str(exc), EXIT_STATE) from None
    except StoreUnavailable as exc:
        raise fail(str(exc), EXIT_TRANSPORT) from None
    except StorageError as exc:
        raise fail(str(exc), EXIT_FAILURE) from None
    if args.json:
        output.emit({"from": args.source, "to": redact_url(args.to), **counts})
    say(f"migrated {counts['devices']} device(s), {counts['readings']} reading(s) and "
        f"{counts['events']} event(s) from {args.source} to {redact_url(args.to)}; serve with "
        "--db pointing there from now on")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    """Show or set how long readings and events are kept; ``--prune`` applies it now."""
    store = open_twin_store(args.db)
    try:
        if args.readings_days is not None or args.events_days is not None:
            cur = store.retention()
            store.set_retention(_days(args.readings_days, cur["readings_days"]),
                                _days(args.events_days, cur["events_days"]))
        limits: dict[str, Any] = dict(store.retention())
        if args.prune:
            limits["pruned_readings"], limits["pruned_events"] = store.prune()
    finally:
        store.close()
    if args.json:
        output.emit(limits)
    else:
        def show(d: float | None) -> str:
            return "forever" if d is None else f"{d:g} day(s)"

        msg = (f"readings kept {show(limits['readings_days'])}, events kept "
               f"{show(limits['events_days'])} (audit events always)")
        if args.prune:
            msg += (f"; pruned {limits['pruned_readings']} reading(s), "
                    f"{limits['pruned_events']} event(s)")
        print(msg)
    return 0


def _days(given: float | None, current: float | None) -> float | None:
    """--readings-days/--events-days: None keeps the current limit, 0 means forever."""
    if given is None:
        return current
    return None if given == 0 else given


def _non_negative_days(text: str) -> float:
    try:
        d = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 <= d < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text!r}")
    return d


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    twin = sub.choices["twin"]
    tsub = next(a for a in twin._actions if isinstance(a, argparse._SubParsersAction))

    p = add_command(
        tsub, "migrate", "move a twin from its SQLite file into PostgreSQL",
        examples=["twinlink twin migrate --from twin.db --to postgresql://twin@db.example/twin"],
        description="Copy devices, windows, contexts, readings, events and twin state from a "
                    "SQLite file into an empty PostgreSQL database, in one transaction. Refused "
                    "while an ingest runs on the source. The source is left as it was.")
    p.add_argument("--from", dest="source", required=True, metavar="FILE",
                   help="the SQLite twin database")
    p.add_argument("--to", required=True, metavar="URL",
                   help="the PostgreSQL database (postgresql://user@host/db; password from "
                        "~/.pgpass)")
    add_json(p, "print the rows copied per table as one JSON object")
    p.set_defaults(func=cmd_migrate)

    p = add_command(
        tsub, "retention", "show or set how long readings and events are kept",
        examples=["twinlink twin retention --readings-days 90 --events-days 365",
                  "twinlink twin retention --prune"],
        description="Readings older than --readings-days (by the time they were stored) and "
                    "security events older than --events-days are deleted by every running "
                    "ingest about once an hour (or now, with --prune). Audit events, the "
                    "registry and the latest values stay. The limits live in the database.")
    add_db(p, default=argparse.SUPPRESS)
    p.add_argument("--readings-days", type=_non_negative_days, metavar="DAYS",
                   help="keep readings DAYS days; 0: forever (default: unchanged)")
    p.add_argument("--events-days", type=_non_negative_days, metavar="DAYS",
                   help="keep security events DAYS days; 0: forever (default: unchanged)")
    p.add_argument("--prune", action="store_true", help="apply the limits now")
    add_json(p, "print the limits as one JSON object")
    p.set_defaults(func=cmd_retention)

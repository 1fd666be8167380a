"""Security-event commands: ``events forward`` (tail the store to a SIEM collector) and
``events types`` (the catalogue), plus :func:`print_events` for ``twin events --format``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import IO, Any

from .. import events as _events
from .. import siem
from ..errors import StateError
from ..forward import Forwarder, default_position_file, ready_prefix
from ..store import StorageError, TwinStore
from . import EXIT_REGISTRY, EXIT_STATE, EXIT_USAGE, fail
from .common import add_command

#: Rows fetched per query while paging or following.
_PAGE = 500


def print_events(
    store: TwinStore,
    fmt: str,
    follow: bool,
    since_id: int | None,
    name: str | None,
    out: IO[str],
    *,
    limit: int = 100,
    options: siem.Options | None = None,
    poll: float = 0.5,
    stop: threading.Event | None = None,
) -> int:
    """Print events in ``fmt`` (one per line) to ``out``; return how many were printed.

    Without ``since_id``: the newest ``limit`` events (of device ``name``, or all). With it:
    every event with a larger id, oldest first. ``follow`` then keeps printing new events as
    they are stored until ``stop`` is set (or KeyboardInterrupt); while following, an event
    that may still change (``final_after`` in the future) is printed once it is final.
    Raises ValueError for an unknown format, :class:`~twinlink.store.StorageError`.
    """
    render = siem.renderer(fmt)
    opts = options or siem.Options()
    stop = stop or threading.Event()
    printed = 0

    def emit(rows: list[Any]) -> None:
        nonlocal printed
        for r in rows:
            out.write(render(_events.normalise(r), opts) + "\n")
        out.flush()
        printed += len(rows)

    if since_id is None:
        rows: list[Any] = list(store.events(name, limit))
        if follow:
            rows, _ = ready_prefix(rows, _now())
        emit(rows)
        after = int(rows[-1]["id"]) if rows else 0
        if follow and not rows:
            newest = store.events(None, 1)
            after = int(newest[-1]["id"]) if newest else 0
    else:
        after = since_id
    while True:
        page: list[Any] = list(store.events(name, _PAGE, after_id=after))
        held = None
        if follow:
            page, held = ready_prefix(page, _now())
        if page:
            emit(page)
            after = int(page[-1]["id"])
            continue
        if not follow or stop.is_set():
            return printed
        wait = poll if held is None else max(0.01, min(poll, held - _now()))
        if stop.wait(wait):
            return printed


def _now() -> float:
    import time

    return time.time()


def _options(args: argparse.Namespace) -> siem.Options:
    kw: dict[str, Any] = {"facility": siem.facility(args.facility), "bom": not args.no_bom}
    if args.hostname:
        kw["hostname"] = args.hostname
    return siem.Options(**kw)


def cmd_forward(args: argparse.Namespace) -> int:
    try:
        opts = _options(args)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    position = args.position or default_position_file(args.db, args.to, args.format)
    try:
        fwd = Forwarder(args.db, args.to, args.format, position, options=opts, ca=args.ca,
                        batch=args.batch)
    except StorageError as exc:
        raise fail(str(exc), EXIT_REGISTRY, "give the twin database with --db") from None
    except StateError as exc:
        raise fail(str(exc), EXIT_STATE) from None
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"twinlink: forwarding events of {args.db} to {fwd.target} as {args.format}, "
          f"after id {fwd.after_id} (position {position})", file=sys.stderr)
    try:
        stats = fwd.run(stop, until_idle=args.once)
    except KeyboardInterrupt:
        stats = fwd.stats
    finally:
        fwd.close()
    print(f"twinlink: forwarded {stats.forwarded} events in {stats.batches} batches, position "
          f"{stats.position}, {stats.reconnects} reconnects, {stats.resent} resent, "
          f"{stats.skipped} lost to the store's event cap", file=sys.stderr)
    return 0


def cmd_types(args: argparse.Namespace) -> int:
    types = _events.types()
    if args.json:
        for t in types:
            print(json.dumps({"type": t.name, "reason": t.reason, "outcome": t.outcome,
                              "severity": t.severity, "rule": t.rule, "audit": t.audit,
                              "side": t.side, "description": t.description}))
        return 0
    for t in types:
        print(f"{t.name:28} {t.outcome:8} {t.severity:2}  {t.reason:22} {t.description}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(sub, "events", "security events: forward to a SIEM, list the catalogue")
    ev = p.add_subparsers(dest="events_command", metavar="ACTION")
    ev.required = True
    f = add_command(
        ev, "forward", "tail the twin's events and forward them to a collector",
        examples=["twinlink events forward --db twin.db --to tcp://127.0.0.1:6514",
                  "twinlink events forward --db twin.db --to file:events.log --format ecs"],
        description="Tail the twin database's security events and send each to a collector, "
                    "remembering the position so a restart resends nothing and skips nothing. "
                    "Targets: udp://HOST:PORT (RFC 5426, no delivery guarantee), "
                    "tcp://HOST:PORT (RFC 6587 octet counting), tls://HOST:PORT (RFC 5425), "
                    "file:PATH (one line per event). See docs/EVENTS.md.")
    f.add_argument("--db", required=True, help="twin database")
    f.add_argument("--to", required=True, metavar="URL",
                   help="udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or file:PATH")
    f.add_argument("--format", choices=siem.FORMATS, default="rfc5424",
                   help="rendering (default rfc5424)")
    f.add_argument("--position", metavar="FILE",
                   help="position file (default: next to the database, one per target and "
                        "format)")
    f.add_argument("--facility", default="authpriv",
                   help="syslog facility name or number (default authpriv = 10)")
    f.add_argument("--ca", metavar="FILE", help="tls://: CA certificate(s) to verify the "
                   "collector with (default: the system's)")
    f.add_argument("--hostname", help="the HOSTNAME this twin reports (default: this host)")
    f.add_argument("--no-bom", action="store_true",
                   help="rfc5424: no UTF-8 BOM before MSG (for collectors that display it)")
    f.add_argument("--batch", type=int, default=500, help="events per batch (default 500)")
    f.add_argument("--once", action="store_true",
                   help="forward what is stored and final, then exit")
    f.set_defaults(func=cmd_forward)
    t = add_command(ev, "types", "list the event catalogue",
                    examples=["twinlink events types --json"])
    t.add_argument("--json", action="store_true", help="one JSON object per type")
    t.set_defaults(func=cmd_types)

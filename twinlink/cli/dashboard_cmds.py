"""``twinlink dashboard``: serve the twin's web dashboard, JSON API and live stream.

The web side lives in :mod:`twinlink.dashboard` and needs the ``twin`` extra (aiohttp,
Jinja2); this module imports it only when the command runs, so ``twinlink --help`` and the
device side work without it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from .common import (
    EXIT_OK,
    EXIT_REGISTRY,
    EXIT_USAGE,
    add_command,
    add_db,
    fail,
    positive_seconds,
    say,
)

DEFAULT_LISTEN = "127.0.0.1:8080"


def listen_arg(text: str) -> tuple[str, int]:
    """argparse type: ``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (loopback)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"want HOST:PORT (e.g. {DEFAULT_LISTEN}), not {text!r}")
    return host or "127.0.0.1", int(port)


def cmd_dashboard(args: argparse.Namespace) -> int:
    host, port = args.listen
    try:
        from ..dashboard import app as dash
        from ..dashboard.auth import Tokens
    except ImportError as exc:
        raise fail(f"the dashboard needs the 'twin' extra ({exc.name} is missing)", EXIT_USAGE,
                   "pip install 'twinlink[twin]'") from None
    from ..store import StorageError, open_store

    tokens = Tokens.load(args.token_file) if args.token_file else None
    if tokens is None and not dash.is_loopback(host):
        raise fail(f"refusing to serve on {host} without --token-file: off loopback every "
                   "request needs a token", EXIT_USAGE,
                   "give --token-file FILE (see 'twinlink dashboard --help') or listen on "
                   "127.0.0.1")
    try:
        open_store(args.db, readonly=True).close()
    except StorageError as exc:
        raise fail(str(exc), EXIT_REGISTRY) from None
    settings = dash.Settings(db=args.db, host=host, port=port, tokens=tokens,
                             poll_interval=args.poll, silent_after=args.silent_after,
                             keepalive=args.keepalive)
    mode = (f"{len(tokens)} token(s)" if tokens is not None
            else "no tokens: read-only, loopback only")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await dash.serve(settings, lambda url: say(f"dashboard on {url} ({mode})"), stop,
                         access_log=args.verbose > 0)

    asyncio.run(main())
    say("dashboard stopped")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        sub, "dashboard", "serve the twin's web dashboard, JSON API and live stream",
        description="Serve the twin store as web pages (fleet, devices with plots, events), a "
                    "JSON API under /api/v1 and a Server-Sent Events stream, updated live "
                    "while ingests write. Loopback only unless --token-file is given; tokens "
                    "are 'NAME ROLE TOKEN' lines (ROLE read or admin, TOKEN at least 32 "
                    "characters), the file mode 0600. docs/API.md describes it all.",
        examples=["twinlink dashboard --db twin.db",
                  "twinlink dashboard --db twin.db --listen 0.0.0.0:8443 --token-file "
                  "tokens.txt",
                  "(umask 077; echo \"alice admin $(python3 -c 'import secrets; "
                  "print(secrets.token_urlsafe(32))')\" >> tokens.txt)"])
    add_db(p)
    p.add_argument("--listen", type=listen_arg, default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="address to serve on (port 0: any free one); off loopback it needs "
                        "--token-file")
    p.add_argument("--token-file", metavar="FILE",
                   help="access tokens, mode 0600 (default: none, which means read-only and "
                        "loopback only)")
    p.add_argument("--poll", type=positive_seconds, default=0.25, metavar="S",
                   help="seconds between looks at the store for new readings and events")
    p.add_argument("--silent-after", type=positive_seconds, default=300.0, metavar="S",
                   help="a device with no frame for S seconds shows as silent (when the store "
                        "has no liveness state of its own)")
    p.add_argument("--keepalive", type=positive_seconds, default=15.0, metavar="S",
                   help="seconds between keep-alive comments on a quiet stream")
    p.set_defaults(func=cmd_dashboard)

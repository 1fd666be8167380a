"""What every ``twinlink`` command shares: exit codes, the one-line error, the grammar.

The grammar (docs/CLI.md): global flags (``--debug``, ``-v/--verbose``, ``--version``) are
accepted before or after any subcommand; ``--json`` is the one machine-output flag (``--jsonl``
is a hidden alias kept for old scripts); ``--device`` names a device bundle; ``--timeout`` is
always "seconds to wait for the other side", with the other side stated per command; ``--db``
defaults to ``$TWINLINK_DB``, else ``twin.db``. Every option's help states its default.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, Callable

from .. import __version__, oscore
from .. import backends as backend
from ..store import StorageError, StoreUnavailable, TwinStore, open_store

#: Exit codes, stable and documented (docs/CLI.md).
EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed, or some input lines were bad and skipped
EXIT_USAGE = 2  # bad arguments
EXIT_KEYS = 3  # key, bundle or certificate file missing, malformed or unsafe
EXIT_STATE = 4  # sequence state locked by another process or corrupt
EXIT_TRANSPORT = 5  # link (serial port, broker) unavailable or timed out
EXIT_PENDING = 6  # send --mqtt: timed out with readings still unacknowledged (kept in outbox)
EXIT_REGISTRY = 7  # unknown device / registry conflict
EXIT_REFUSED = 8  # send --mqtt: the twin refused readings for good (moved to the dead letters)
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "operation failed, or bad input lines were skipped",
    EXIT_USAGE: "usage error",
    EXIT_KEYS: "key or bundle file problem",
    EXIT_STATE: "sequence state locked or corrupt",
    EXIT_TRANSPORT: "link unavailable or timed out",
    EXIT_PENDING: "readings still awaiting the twin's acknowledgement",
    EXIT_REGISTRY: "unknown device or registry conflict",
    EXIT_REFUSED: "the twin refused readings for good (see 'twinlink outbox')",
    EXIT_INTERRUPTED: "interrupted",
}

DB_ENV = "TWINLINK_DB"
DB_FALLBACK = "twin.db"


class CliError(Exception):
    """An expected failure with its exit code and hint (printed as one line, no traceback)."""

    def __init__(self, message: str, code: int = EXIT_FAILURE, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.hint = code, hint


def fail(message: str, code: int = EXIT_FAILURE, hint: str = "") -> CliError:
    """A :class:`CliError` to ``raise``."""
    return CliError(message, code, hint)


def say(message: str) -> None:
    """One status line on stderr (``twinlink: …``), flushed: never mixed into data on stdout."""
    print(f"twinlink: {message}", file=sys.stderr, flush=True)


def open_twin_store(path: str, must_exist: bool = True) -> TwinStore:
    """The twin database at ``path``; a missing or unreadable one is exit code 7, a database
    server that cannot be reached or refuses the credentials is exit code 5."""
    try:
        return open_store(path, must_exist=must_exist)
    except StoreUnavailable as exc:
        raise fail(str(exc), EXIT_TRANSPORT) from None
    except StorageError as exc:
        raise fail(str(exc), EXIT_REGISTRY) from None


def kid_arg(text: str) -> bytes:
    """argparse type: a kid in hex, 1 to 6 bytes."""
    try:
        kid = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("kid must be hex, e.g. 01 or 0a1b") from None
    if not 1 <= len(kid) <= oscore.MAX_KID_LEN:
        raise argparse.ArgumentTypeError("kid must be 1 to 6 bytes")
    return kid


def _number(text: str, cast: Callable[[str], Any], what: str, ok: Callable[[Any], bool],
            rule: str) -> Any:
    try:
        n = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not ok(n):  # written so that NaN fails too
        raise argparse.ArgumentTypeError(f"{rule}, not {text!r}")
    return n


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return int(_number(text, int, "an integer", lambda n: n >= 1, "must be at least 1"))


def seconds(text: str) -> float:
    """argparse type: a duration in seconds, finite and >= 0."""
    return float(_number(text, float, "a number of seconds", lambda s: 0 <= s < math.inf,
                         "must be a finite number >= 0"))


def positive_seconds(text: str) -> float:
    """argparse type: a duration in seconds, finite and > 0."""
    return float(_number(text, float, "a number of seconds", lambda s: 0 < s < math.inf,
                         "must be a finite number > 0"))


# -- the grammar ------------------------------------------------------------------------------


class HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions, keeps multi-line text (the examples epilog) as
    written, and appends ``(default: …)`` to every option that has a default worth stating
    (not flags, not None)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.nargs == 0
                or action.default in (None, "", argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


def global_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Add ``--debug``, ``-v/--verbose`` and ``--version``.

    The top-level parser holds the real defaults; on subcommands the defaults are SUPPRESS, so
    a flag given before the subcommand is not reset by the subcommand's parser (argparse copies
    every attribute of the sub-namespace over the parent's).
    """
    g = parser.add_argument_group("global options (accepted before or after the command)")
    g.add_argument("--debug", action="store_true",
                   default=False if top else argparse.SUPPRESS,
                   help="show tracebacks on errors")
    g.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                   help="more log output on stderr (-vv: debug)")
    g.add_argument("--version", action="version",
                   version=f"twinlink {__version__}, backend {backend.explain()}",
                   help="print the version and the active backend, then exit")


def add_command(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                name: str, summary: str, *, examples: Sequence[str] = (),
                description: str = "", **kw: Any) -> argparse.ArgumentParser:
    """A subcommand with the shared formatter, global flags and an ``Examples:`` epilog."""
    epilog = ""
    if examples:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description or summary[:1].upper() + summary[1:] + ".",
        epilog=epilog, formatter_class=HelpFormatter, **kw)
    global_flags(p, top=False)
    return p


def add_json(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json`` (machine output, described by ``what``) and the hidden ``--jsonl`` alias."""
    parser.add_argument("--json", action="store_true", help=what)
    parser.add_argument("--jsonl", dest="json", action="store_true", help=argparse.SUPPRESS)


def add_db(parser: argparse.ArgumentParser,
           what: str = "twin database (SQLite file or postgresql:// URL)",
           *, default: Any = None) -> None:
    """``--db PATH`` defaulting to ``$TWINLINK_DB``, else ``twin.db`` (documented in help)."""
    if default is None:
        default = os.environ.get(DB_ENV) or DB_FALLBACK
    parser.add_argument(
        "--db", metavar="PATH", default=default,
        help=f"{what}; default ${DB_ENV} if set, else {DB_FALLBACK}"
        + (" (now: %(default)s)" if default is not argparse.SUPPRESS else ""))


def add_run_limits(parser: argparse.ArgumentParser, what: str) -> None:
    """``--count N`` and ``--duration S`` for scripted runs of a long-running command."""
    parser.add_argument("--count", type=positive_int, metavar="N",
                        help=f"stop after N {what} (default: run until stopped)")
    parser.add_argument("--duration", type=positive_seconds, metavar="S",
                        help="stop after S seconds (default: run until stopped)")


class StopControl:
    """A stop flag for long-running commands: SIGTERM and SIGINT set it (a clean stop, exit
    0), so do ``--duration`` running out and ``--count`` reached (:meth:`counted`)."""

    def __init__(self, count: int | None = None, duration: float | None = None) -> None:
        self.event = threading.Event()
        self.count, self.seen = count, 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        if duration is not None:
            self._timer = threading.Timer(duration, self.event.set)
            self._timer.daemon = True
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopControl:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, lambda signum, frame: self.event.set())
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def counted(self, n: int = 1) -> bool:
        """Count ``n`` more items; True (and the stop flag set) once ``--count`` is reached."""
        with self._lock:
            self.seen += n
            if self.count is not None and self.seen >= self.count:
                self.event.set()
                return True
        return False

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


def add_metrics(parser: argparse.ArgumentParser) -> None:
    """``--metrics HOST:PORT``: serve Prometheus metrics while the command runs."""
    parser.add_argument(
        "--metrics", metavar="HOST:PORT",
        help="expose Prometheus metrics on http://HOST:PORT/metrics while running (default: "
             "off); see monitoring/ for alert rules and a Grafana dashboard")


def start_metrics(args: argparse.Namespace) -> Any:
    """Start the metrics exporter if ``--metrics`` was given; return it (close it when done)
    or None. Raises :class:`~twinlink.errors.TransportError` if the address is taken."""
    if not getattr(args, "metrics", None):
        return None
    from .. import metrics

    server = metrics.serve_metrics(args.metrics)
    say(f"metrics on http://{args.metrics}/metrics")
    return server

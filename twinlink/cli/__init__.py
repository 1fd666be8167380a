"""The ``twinlink`` command: a thin layer over the library.

An expected failure prints one line ``twinlink: <what went wrong> — <hint>`` on stderr and exits
with a documented code (see :data:`EXIT_CODES` and docs/CLI.md); ``--debug`` shows tracebacks.
Command groups live in sibling modules, each with a ``register(subparsers)`` function; what they
share is in :mod:`.common` (grammar, exit codes), :mod:`.output` (what is printed) and
:mod:`.jsonl` (the one JSON-lines reader). ``twinlink`` with no arguments prints the help and
exits 0; so does a command group (``twinlink twin``) without its subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Callable

from ..detect.config import DetectConfigError
from ..errors import KeyFileError, StateError, TransportError, TwinlinkError, UnknownDevice
from ..store.base import RegistryError, TwinKeyMismatch
from .common import (
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_KEYS,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REGISTRY,
    EXIT_STATE,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    CliError,
    HelpFormatter,
    fail,
    global_flags,
)

__all__ = [
    "EXIT_CODES", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_KEYS", "EXIT_OK", "EXIT_PENDING",
    "EXIT_REGISTRY", "EXIT_STATE", "EXIT_TRANSPORT", "EXIT_USAGE", "CliError", "build_parser",
    "fail", "main",
]

_HINTS: list[tuple[type[BaseException], int, str]] = [
    (KeyFileError, EXIT_KEYS, "check the path and that private files are mode 0600"),
    (StateError, EXIT_STATE, "stop the other process using this identity, or use its --state dir"),
    (TransportError, EXIT_TRANSPORT, "check the port/URL and that the peer is up"),
    (UnknownDevice, EXIT_REGISTRY, "see 'twinlink twin list --db …'"),
    (RegistryError, EXIT_REGISTRY, "see 'twinlink twin list --db …' and 'twinlink twin show'"),
    (TwinKeyMismatch, EXIT_KEYS, "give the twin key this database was created with"),
    (DetectConfigError, EXIT_USAGE, "see docs/DETECTION.md for the keys and their ranges"),
    (TwinlinkError, EXIT_FAILURE, "run with --debug for details"),
    (FileNotFoundError, EXIT_KEYS, "check the path"),
    (PermissionError, EXIT_KEYS, "check file permissions"),
    (OSError, EXIT_TRANSPORT, "check the path, port or URL"),
    (ValueError, EXIT_USAGE, "check the arguments"),
]

# (module, function): the order is the order of ``twinlink --help``. Options of ``send`` and
# ``serve`` are added by the transport modules after the commands exist.
_GROUPS = (("commands", "register"), ("twin_cmds", "register"), ("migrate_cmds", "register"),
           ("commands", "register_services"), ("serial_cmds", "register"),
           ("mqtt_cmds", "register"), ("events_cmds", "register"), ("attack_cmds", "register"),
           ("commands", "register_tools"), ("update_cmds", "register"),
           ("dashboard_cmds", "register"), ("completion", "register"))
_REQUIRED = ("commands", "twin_cmds", "completion")


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line grammar (also the source of the completion scripts)."""
    p = argparse.ArgumentParser(
        prog="twinlink",
        description="Signed, encrypted, replay-proof CBOR telemetry for devices and their twins."
                    " 'twinlink COMMAND --help' describes each command; docs/CLI.md all of them.",
        epilog="exit codes:\n" + "\n".join(f"  {k:3}  {v}" for k, v in EXIT_CODES.items())
               + "\n\nenvironment:\n  TWINLINK_DB         default --db (else twin.db)\n"
               "  TWINLINK_STATE_DIR  default --state (else ~/.local/state/twinlink)\n"
               "  TWINLINK_BACKEND    python|native: force a frame backend",
        formatter_class=HelpFormatter,
    )
    global_flags(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, function in _GROUPS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ImportError:
            if name in _REQUIRED:
                raise
            continue  # an optional transport missing from this build
        getattr(mod, function)(sub)
    p.set_defaults(func=lambda args: _print_help(p))
    return p


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_OK


class _Formatter(logging.Formatter):
    """``twinlink <module>: message`` — the CLI's one-line style for library log records."""

    def format(self, record: logging.LogRecord) -> str:
        record.short = record.name.replace("twinlink.", "twinlink ", 1)
        return super().format(record)


class _Handler(logging.StreamHandler):
    """The CLI's stderr handler (a class of its own so a second main() replaces it)."""


def _logging(verbose: int) -> None:
    """Library log records on stderr in the CLI's style; -v: INFO, -vv: DEBUG."""
    log = logging.getLogger("twinlink")
    for h in [h for h in log.handlers if isinstance(h, _Handler)]:
        log.removeHandler(h)  # main() called again in one process: one handler, not two
    handler = _Handler(sys.stderr)
    handler.setFormatter(_Formatter("%(short)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``twinlink`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # serve --workers re-runs it
    _logging(args.verbose)
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("twinlink: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except CliError as exc:
        if args.debug:
            raise
        hint = f" — {exc.hint}" if exc.hint else ""
        print(f"twinlink: {exc}{hint}", file=sys.stderr)
        return exc.code
    except Exception as exc:
        if args.debug:
            raise
        for cls, code, hint in _HINTS:
            if isinstance(exc, cls):
                msg = (
                    str(exc)
                    if isinstance(exc, TwinlinkError)
                    else (
                        f"{exc.strerror}: {exc.filename}"
                        if isinstance(exc, OSError) and exc.filename
                        else str(exc) or type(exc).__name__
                    )
                )
                print(f"twinlink: {msg} — {hint}", file=sys.stderr)
                return code
        print(
            f"twinlink: unexpected {type(exc).__name__}: {exc} — please report this with --debug",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

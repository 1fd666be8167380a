"""The ``twinlink`` command: a thin layer over the library.

An expected failure prints one line ``twinlink: <what went wrong> — <hint>`` on stderr and exits
with a documented code (see :data:`EXIT_CODES` and docs/CLI.md); ``--debug`` shows tracebacks.
Command groups live in sibling modules, each with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable

from .. import __version__
from .. import backends as backend
from ..errors import KeyFileError, StateError, TransportError, TwinlinkError, UnknownDevice

#: Exit codes, stable and documented.
EXIT_OK = 0
EXIT_FAILURE = 1  # the operation failed (a twinlink error not listed below)
EXIT_USAGE = 2  # bad arguments
EXIT_KEYS = 3  # key, bundle or certificate file missing, malformed or unsafe
EXIT_STATE = 4  # sequence state locked by another process or corrupt
EXIT_TRANSPORT = 5  # link (serial port, broker) unavailable or timed out
EXIT_PENDING = 6  # send --mqtt: timed out with readings still unacknowledged (kept in outbox)
EXIT_REGISTRY = 7  # unknown device / registry conflict
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "operation failed",
    EXIT_USAGE: "usage error",
    EXIT_KEYS: "key or bundle file problem",
    EXIT_STATE: "sequence state locked or corrupt",
    EXIT_TRANSPORT: "link unavailable or timed out",
    EXIT_PENDING: "readings still awaiting the twin's acknowledgement",
    EXIT_REGISTRY: "unknown device or registry conflict",
    EXIT_INTERRUPTED: "interrupted",
}

_HINTS: list[tuple[type[BaseException], int, str]] = [
    (KeyFileError, EXIT_KEYS, "check the path and that private files are mode 0600"),
    (StateError, EXIT_STATE, "stop the other process using this identity, or use its --state dir"),
    (TransportError, EXIT_TRANSPORT, "check the port/URL and that the peer is up"),
    (UnknownDevice, EXIT_REGISTRY, "see 'twinlink twin list --db …'"),
    (TwinlinkError, EXIT_FAILURE, "run with --debug for details"),
    (FileNotFoundError, EXIT_KEYS, "check the path"),
    (PermissionError, EXIT_KEYS, "check file permissions"),
    (OSError, EXIT_TRANSPORT, "check the path, port or URL"),
    (ValueError, EXIT_USAGE, "check the arguments"),
]

_GROUPS = ("commands", "serial_cmds", "mqtt_cmds", "update_cmds")


class CliError(Exception):
    """An expected failure with its exit code and hint."""

    def __init__(self, message: str, code: int = EXIT_FAILURE, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.hint = code, hint


def fail(message: str, code: int = EXIT_FAILURE, hint: str = "") -> CliError:
    return CliError(message, code, hint)


READING_HINT = 'each line must be a JSON object like {"temp": 21.5}'


def json_readings(stream: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """Readings from JSON lines: (line number, the object or None, why not). Blank lines skip."""
    for lineno, line in enumerate(stream, 1):
        text = line.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            yield lineno, None, str(exc)
            continue
        if isinstance(obj, dict):
            yield lineno, obj, ""
        else:
            yield lineno, None, "not a JSON object"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twinlink",
        description="Signed, encrypted, replay-proof CBOR telemetry for devices and their twins.",
        epilog="Exit codes: " + ", ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"twinlink {__version__}, backend {backend.explain()}",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _GROUPS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ImportError:
            if name == "commands":
                raise
            continue
        mod.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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

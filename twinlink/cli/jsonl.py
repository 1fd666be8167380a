"""The one reader of JSON-lines readings on stdin (``seal``, ``send --serial``, ``send --mqtt``).

Policy (docs/CLI.md, "JSON-lines input"), the same for every command that reads readings:

- one reading per line, a JSON object such as ``{"temp": 21.5}``; blank lines are ignored;
- a *bad* line is reported on stderr as ``twinlink: line N skipped: <why> — <hint>``, nothing
  is sealed or sent for it, and processing continues with the next line;
- a line is bad when it is not UTF-8, longer than :data:`MAX_LINE` characters, not JSON (RFC
  8259: no ``NaN``/``Infinity``), not an object, or a reading the device cannot encode (a value
  of an unsupported type, a payload over the protocol's size limit);
- at the end the command exits 1 if any line was bad (unless a worse failure has its own exit
  code), having processed every good line.

Memory stays bounded whatever the input: an overlong line is never held whole.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, Callable, TextIO

from .common import EXIT_FAILURE

#: Longest reading line, in characters (newline excluded).
MAX_LINE = 65536

HINT = 'each line must be a JSON object like {"temp": 21.5}'

_DISCARD = 65536


def bounded_lines(stream: TextIO, limit: int) -> Iterator[str]:
    """Lines of ``stream`` (with their newline); a line longer than ``limit`` characters comes
    out as its first ``limit + 1`` characters, the rest read and discarded in chunks, so a
    consumer's own length check sees it is too long without it ever being held whole."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith("\n"):
            while True:
                rest = stream.readline(_DISCARD)
                if not rest or rest.endswith("\n"):
                    break
        yield line


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def utf8_stdin() -> TextIO:
    """stdin that hands undecodable bytes through as surrogates (so one bad line is that line's
    problem, not the whole run's)."""
    stdin = sys.stdin
    reconfigure = getattr(stdin, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(encoding="utf-8", errors="surrogateescape")
        except (ValueError, OSError):  # already read from, or not a text wrapper
            pass
    return stdin


class ReadingLines:
    """Iterate ``(line number, reading)`` over good lines; report and count the bad ones.

    ``check`` (e.g. :meth:`twinlink.device.Device.encode`) is applied to each parsed reading; a
    ValueError or TypeError it raises makes the line bad. Callers that find a reading bad later
    call :meth:`skip` so it is reported the same way.
    """

    def __init__(self, stream: TextIO, *, check: Callable[[dict[str, Any]], Any] | None = None,
                 err: TextIO | None = None, max_line: int = MAX_LINE) -> None:
        self.stream, self.check, self.max_line = stream, check, max_line
        self.err = err
        self.bad = 0
        self.lines = 0

    def skip(self, lineno: int, why: str) -> None:
        """Report line ``lineno`` as skipped (one line on stderr) and count it."""
        self.bad += 1
        out = self.err if self.err is not None else sys.stderr
        why = why.replace("\n", " ")
        print(f"twinlink: line {lineno} skipped: {why} — {HINT}", file=out, flush=True)

    def _parse(self, line: str) -> dict[str, Any]:
        text = line.rstrip("\r\n")
        if len(text) > self.max_line:
            raise ValueError(f"longer than {self.max_line} characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not UTF-8") from None
        try:
            obj = json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object but {type(obj).__name__}")
        if self.check is not None:
            self.check(obj)
        return obj

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for lineno, line in enumerate(bounded_lines(self.stream, self.max_line), 1):
            self.lines = lineno
            if not line.strip():
                continue
            try:
                reading = self._parse(line)
            except (ValueError, TypeError, OverflowError) as exc:
                self.skip(lineno, str(exc) or type(exc).__name__)
                continue
            yield lineno, reading

    def batches(self, size: int) -> Iterator[list[tuple[int, dict[str, Any]]]]:
        """Good lines in lists of at most ``size`` (the last one may be shorter)."""
        batch: list[tuple[int, dict[str, Any]]] = []
        for item in self:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    @property
    def exit_code(self) -> int:
        """0, or 1 if any line was bad."""
        return EXIT_FAILURE if self.bad else 0

"""The legacy-sensor bridge: plain text lines from serial sensors in, sealed SenML frames out.

An edge gateway reads each sensor's lines (CSV with named columns, ``key=value`` pairs, or a
regex with named groups), turns every line into a SenML reading (numbers become numbers), seals
it with the *gateway's* device identity and forwards the frame over serial or MQTT. The SenML
base name ``"<sensor>:"`` records which sensor a value came from, so the twin stores
``boiler-1:temp``. Malformed lines are counted and logged, never fatal.

Configuration (TOML, see docs/SERIAL.md)::

    [gateway]
    device = "keys/gw-1.device"        # the gateway's bundle
    state = "state/"                   # its sequence-state directory

    [output]
    url = "/dev/ttyUSB0"               # serial path/URL, or mqtt://host:1883 / mqtts://…

    [[sensor]]
    name = "boiler-1"
    port = "/dev/ttyUSB1"
    baudrate = 9600
    format = "csv"                     # csv | kv | regex
    columns = ["temp", "pressure", "status"]
    units = { temp = "Cel", pressure = "Pa" }

Thread model: one reader thread per sensor port (a :class:`~twinlink.transport.serial.SerialLink`
I/O thread) calls :meth:`Bridge.handle_line`; sealing is serialised by a lock (one sequence
counter), the output link's ``send`` is thread-safe.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import senml, transport
from .device import Device, Link
from .errors import TwinlinkError
from .transport.serial import SerialLink

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("twinlink.bridge")

FORMATS = ("csv", "kv", "regex")
MAX_LINE = 1024
#: What a :class:`LineReader` hands on in place of a line longer than ``max_line``.
OVERLONG = "\x00<overlong line>"


class ConfigError(TwinlinkError, ValueError):
    """The bridge configuration is missing, unreadable or inconsistent."""

    reason = "config"


class MalformedLine(ValueError):
    """A sensor line that does not match its configured format (counted, never fatal)."""


# -- parsing ----------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][\w.\-/]*")


def parse_value(name: str, text: str, keep_string: bool = False) -> Any:
    """A field's value: the text itself for ``strings`` fields; otherwise an int, a finite
    float or true/false, else :class:`MalformedLine` (a garbled digit is line damage, not a
    string reading)."""
    if keep_string:
        return text
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        v = float(text)
        if math.isfinite(v):
            return v
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    raise MalformedLine(f"{name}: {text[:20]!r} is not a number (list text fields in strings)")


@dataclass
class SensorConfig:
    """One legacy sensor: where it is, how its lines look and what its values are called."""

    name: str
    port: str = ""
    baudrate: int = 9600
    format: str = "csv"
    columns: list[str] = field(default_factory=list)
    delimiter: str = ","
    pair_separator: str = r"[\s,;]+"
    assign: str = "="
    pattern: str = ""
    strings: list[str] = field(default_factory=list)
    require: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    ignore: str = ""
    encoding: str = "utf-8"
    max_line: int = MAX_LINE

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("every sensor needs a name")
        if self.format not in FORMATS:
            raise ConfigError(f"sensor {self.name}: format must be one of {', '.join(FORMATS)}")
        if self.format == "csv" and not self.columns:
            raise ConfigError(f"sensor {self.name}: format 'csv' needs columns = [...]")
        if self.format == "regex":
            try:
                rx = re.compile(self.pattern)
            except re.error as exc:
                raise ConfigError(f"sensor {self.name}: bad pattern: {exc}") from None
            if not rx.groupindex:
                raise ConfigError(f"sensor {self.name}: pattern needs named groups (?P<name>…)")
        if len(self.delimiter) != 1:
            raise ConfigError(f"sensor {self.name}: delimiter must be one character")


class LineParser:
    """Turn one sensor line into ``{name: value}``; raise :class:`MalformedLine`.

    Returns ``None`` for lines to skip silently: blank lines, lines matching ``ignore``, and a
    CSV header that repeats the column names.
    """

    def __init__(self, cfg: SensorConfig) -> None:
        self.cfg = cfg
        self._strings = set(cfg.strings)
        self._ignore = re.compile(cfg.ignore) if cfg.ignore else None
        self._pairs = re.compile(cfg.pair_separator)
        self._rx = re.compile(cfg.pattern) if cfg.format == "regex" else None

    def parse(self, line: str) -> dict[str, Any] | None:
        text = line.strip()
        if not text or (self._ignore is not None and self._ignore.search(text)):
            return None
        if self.cfg.format == "csv":
            values = self._csv(text)
        elif self.cfg.format == "kv":
            values = self._kv(text)
        else:
            values = self._regex(text)
        if values is None:
            return None
        missing = [k for k in self.cfg.require if k not in values]
        if missing:
            raise MalformedLine(f"missing {', '.join(missing)}")
        if not values:
            raise MalformedLine("no values")
        return values

    def _csv(self, text: str) -> dict[str, Any] | None:
        try:
            fields = [f.strip() for f in next(csv.reader([text], delimiter=self.cfg.delimiter))]
        except csv.Error as exc:
            raise MalformedLine(f"not CSV: {exc}") from None
        cols = self.cfg.columns
        if fields == cols:
            return None  # a header line (sensors often print one after a reset)
        if len(fields) != len(cols):
            raise MalformedLine(f"{len(fields)} fields, expected {len(cols)}")
        return {c: parse_value(c, f, c in self._strings) for c, f in zip(cols, fields)
                if c and c != "-" and f != ""}

    def _kv(self, text: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tok in self._pairs.split(text):
            if not tok:
                continue
            key, sep, val = tok.partition(self.cfg.assign)
            if not sep or not _NAME.fullmatch(key) or val == "":
                raise MalformedLine(f"not a key{self.cfg.assign}value pair: {tok[:40]!r}")
            if key in out:
                raise MalformedLine(f"duplicate key {key!r}")
            out[key] = parse_value(key, val, key in self._strings)
        return out

    def _regex(self, text: str) -> dict[str, Any]:
        assert self._rx is not None
        m = self._rx.fullmatch(text)
        if m is None:
            raise MalformedLine("does not match the pattern")
        return {k: parse_value(k, v, k in self._strings) for k, v in m.groupdict().items()
                if v is not None and v != ""}


# -- configuration ----------------------------------------------------------------------------

@dataclass
class BridgeConfig:
    sensors: list[SensorConfig]
    device: Path
    state: Path | None
    output: str
    output_options: dict[str, Any] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str]) -> BridgeConfig:
    """Read a bridge TOML file; relative paths in it are relative to the file. Raises
    :class:`ConfigError`."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read bridge config {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bridge config {p} is not valid TOML: {exc}") from None
    return config_from_dict(data, p.parent)


def config_from_dict(data: Mapping[str, Any], base: Path = Path()) -> BridgeConfig:
    """Build a :class:`BridgeConfig` from parsed TOML (``base`` anchors relative paths)."""
    gw, out = data.get("gateway"), data.get("output")
    if not isinstance(gw, dict) or "device" not in gw:
        raise ConfigError("[gateway] needs device = \"path/to/NAME.device\"")
    if not isinstance(out, dict) or not out.get("url"):
        raise ConfigError("[output] needs url = \"/dev/ttyUSB0\" (or a pyserial or mqtt:// URL)")
    raw = data.get("sensor", [])
    raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw, list) or not raw:
        raise ConfigError("no sensors: add a [[sensor]] table")
    names = {f.name for f in SensorConfig.__dataclass_fields__.values()}  # type: ignore[attr-defined]
    sensors = []
    for s in raw:
        unknown = set(s) - names
        if unknown:
            raise ConfigError(f"sensor {s.get('name', '?')}: unknown keys {sorted(unknown)}")
        try:
            sensors.append(SensorConfig(**s))
        except TypeError as exc:
            raise ConfigError(f"sensor {s.get('name', '?')}: {exc}") from None
    if len({s.name for s in sensors}) != len(sensors):
        raise ConfigError("sensor names must be unique")

    def rel(v: str) -> Path:
        q = Path(v).expanduser()
        return q if q.is_absolute() else base / q

    url = str(out["url"])
    if "://" not in url and not url.startswith("/"):
        url = str(rel(url))
    return BridgeConfig(sensors, rel(str(gw["device"])),
                        rel(str(gw["state"])) if gw.get("state") else None, url,
                        {k: v for k, v in out.items() if k != "url"})


# -- the bridge -------------------------------------------------------------------------------

def open_output(url: str, device: Device, **options: Any) -> Link:
    """The link a bridge forwards to: a serial path/URL, or MQTT for mqtt:// and mqtts://.

    The gateway seals with its own identity, so over MQTT its frames get the twin's end-to-end
    acknowledgements and a durable outbox next to its sequence state.
    """
    try:
        return transport.open(url, device=device, **options)
    except TypeError as exc:  # an [output] key the chosen transport does not take
        raise ConfigError(f"[output] for {url.split(':', 1)[0]}: {exc}") from None


@dataclass
class LineResult:
    """What became of one sensor line (for ``--jsonl`` and tests)."""

    sensor: str
    line: str
    values: dict[str, Any] | None = None
    seq: int | None = None
    error: str | None = None  # "malformed_line" or "send_failed"
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.error is None:
            return {"ok": True, "sensor": self.sensor, "seq": self.seq, "reading": self.values}
        return {"ok": False, "sensor": self.sensor, "error": self.error, "detail": self.detail,
                "line": self.line[:200]}


class Bridge:
    """Seal sensor lines with the gateway identity and forward them.

    ``handle_line`` is the whole job for one line and needs no port: tests and ``--parse`` call
    it directly. ``start`` opens each sensor's port with a line reader thread.
    """

    def __init__(self, sensors: Sequence[SensorConfig], device: Device, output: Link | None,
                 on_result: Callable[[LineResult], None] | None = None) -> None:
        self.sensors = {s.name: s for s in sensors}
        self.parsers = {s.name: LineParser(s) for s in sensors}
        self.device, self.output, self.on_result = device, output, on_result
        self.counts: Counter[str] = Counter()
        self.per_sensor: dict[str, Counter[str]] = {s.name: Counter() for s in sensors}
        self._seal_lock = threading.Lock()
        self._readers: list[SerialLink] = []

    @classmethod
    def from_config(cls, cfg: BridgeConfig, on_result: Callable[[LineResult], None] | None = None,
                    *, connect: bool = True) -> Bridge:
        """Load the gateway identity and open the output (``connect=False``: parse only)."""
        device = Device.load(cfg.device, cfg.state)
        try:
            output = open_output(cfg.output, device, **cfg.output_options) if connect else None
        except BaseException:
            device.close()
            raise
        return cls(cfg.sensors, device, output, on_result)

    def reading(self, sensor: str, values: Mapping[str, Any]) -> bytes:
        """The SenML plaintext of one sensor reading: base name ``"<sensor>:"``, gateway time."""
        units = self.sensors[sensor].units or None
        return senml.encode(values, time.time(), units, base_name=f"{sensor}:")

    def handle_line(self, sensor: str, line: str) -> LineResult | None:
        """Parse, seal and forward one line; never raises for bad input or a failed send."""
        res = LineResult(sensor, line)
        counts = self.per_sensor[sensor]
        try:
            if line == OVERLONG:
                raise MalformedLine(f"line longer than {self.sensors[sensor].max_line} bytes")
            values = self.parsers[sensor].parse(line)
            if values is None:
                return None
            plaintext = self.reading(sensor, values)
        except (MalformedLine, ValueError, TypeError) as exc:
            res.error, res.detail = "malformed_line", str(exc)
            self._count(counts, "malformed")
            log.warning("sensor %s: malformed line (%s): %r", sensor, exc, line[:120])
            return self._emit(res)
        res.values = values
        if self.output is None:
            self._count(counts, "parsed")
            return self._emit(res)
        try:
            with self._seal_lock:
                frame = self.device.seal_raw(plaintext)
                res.seq = self.device.seq.next_seq - 1
            self.output.send(frame)
        except TwinlinkError as exc:
            res.error, res.detail = "send_failed", str(exc)
            self._count(counts, "send_failed")
            log.error("sensor %s: reading not forwarded: %s", sensor, exc)
            return self._emit(res)
        self._count(counts, "forwarded")
        return self._emit(res)

    def _count(self, counts: Counter[str], key: str) -> None:
        with self._seal_lock:
            counts[key] += 1
            self.counts[key] += 1

    def _emit(self, res: LineResult) -> LineResult:
        if self.on_result is not None:
            try:
                self.on_result(res)
            except Exception:
                log.exception("bridge on_result callback failed")
        return res

    def start(self, **link_kw: Any) -> None:
        """Open every sensor port (raises :class:`TransportError` if one cannot be opened)."""
        for cfg in self.sensors.values():
            if not cfg.port:
                raise ConfigError(f"sensor {cfg.name} has no port")
            self._readers.append(LineReader(cfg, self.handle_line, **link_kw))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the readers, give queued frames ``timeout`` seconds, release the identity."""
        for r in self._readers:
            r.close()
        self._readers.clear()
        try:
            close = getattr(self.output, "close", None)
            if close is not None:
                try:
                    close(timeout)
                except TypeError:
                    close()
        finally:
            self.device.close()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineReader(SerialLink):
    """A sensor port read as text lines (LF or CRLF); each line goes to ``on_line(name, text)``
    on this link's I/O thread. Over-long lines are reported as malformed, then skipped to the
    next newline; undecodable bytes are replaced (the parser then rejects the line)."""

    def __init__(self, cfg: SensorConfig, on_line: Callable[[str, str], Any],
                 **kw: Any) -> None:
        self.cfg, self.on_line = cfg, on_line
        self._buf = bytearray()
        self._skipping = False
        kw.setdefault("baudrate", cfg.baudrate)
        super().__init__(cfg.port, **kw)

    def _on_data(self, data: bytes) -> None:
        parts = data.split(b"\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if not self._skipping:
                self._buf += part
                if len(self._buf) > self.cfg.max_line:
                    self._buf.clear()
                    self._skipping = True
                    self.on_line(self.cfg.name, OVERLONG)
            if last:
                return
            if self._skipping:
                self._skipping = False
                continue
            text = bytes(self._buf).rstrip(b"\r").decode(self.cfg.encoding, "replace")
            self._buf.clear()
            self.on_line(self.cfg.name, text)


def parse_transcript(cfg: SensorConfig, lines: Sequence[str]) -> list[LineResult]:
    """Dry run: what the bridge would make of each line (no identity, no sealing)."""
    parser = LineParser(cfg)
    out = []
    for line in lines:
        try:
            if len(line.encode(cfg.encoding, "replace")) > cfg.max_line:
                raise MalformedLine(f"line longer than {cfg.max_line} bytes")
            values = parser.parse(line)
        except MalformedLine as exc:
            out.append(LineResult(cfg.name, line, error="malformed_line", detail=str(exc)))
            continue
        if values is not None:
            out.append(LineResult(cfg.name, line, values))
    return out

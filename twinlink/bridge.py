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

Every key is type-checked when the file is loaded: a wrong type or an unknown key is a
:class:`ConfigError` naming the key. Operator-written regexes (``pattern``, ``ignore``,
``pair_separator``) run under the ``regex`` package with a per-line time limit
(``regex_timeout``, default 0.1 s): a line that makes one backtrack for longer is counted as
malformed, logged, and the bridge goes on with the next line.

What the bridge reports is what it knows: a reading is *queued* once the output link has it
(``counts["forwarded"]``); over MQTT it is *stored* only when the twin's end-to-end
acknowledgement releases it from the gateway's outbox; over serial there is no acknowledgement.
:meth:`Bridge.delivery` says which.

Thread model: one reader thread per sensor port (a :class:`~twinlink.transport.serial.SerialLink`
I/O thread) calls :meth:`Bridge.handle_line`; sealing is serialised by a lock (one sequence
counter), the output link's ``send`` is thread-safe.
"""

from __future__ import annotations

import codecs
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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import regex

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
#: Seconds one operator-written regex may spend on one line before the line counts as malformed.
REGEX_TIMEOUT = 0.1
#: What a :class:`LineReader` hands on in place of a line longer than ``max_line``.
OVERLONG = "\x00<overlong line>"


class ConfigError(TwinlinkError, ValueError):
    """The bridge configuration is missing, unreadable or inconsistent."""

    reason = "config"


class MalformedLine(ValueError):
    """A sensor line that does not match its configured format (counted, never fatal)."""


class RegexTimeout(MalformedLine):
    """An operator-written regex ran past its time limit on one line (counted as malformed)."""


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
    """One legacy sensor: where it is, how its lines look and what its values are called.

    Raises :class:`ConfigError` naming the key for a value of the wrong type or range, a regex
    that does not compile, or an unknown encoding.
    """

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
    regex_timeout: float = REGEX_TIMEOUT

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("every sensor needs a name = \"...\" (a non-empty string)")
        if not _SENSOR_NAME.fullmatch(self.name):
            raise ConfigError(f"sensor {self.name!r}: name must be 1-64 of A-Z a-z 0-9 - . _ "
                              "(it becomes the SenML base name)")
        v = _Check(f"sensor {self.name}")
        v.string("port", self.port)
        v.integer("baudrate", self.baudrate, 1, 10_000_000)
        v.string("format", self.format)
        if self.format not in FORMATS:
            v.fail("format", f"must be one of {', '.join(FORMATS)}")
        for key in ("columns", "strings", "require"):
            v.strings(key, getattr(self, key))
        v.string("delimiter", self.delimiter)
        if len(self.delimiter) != 1:
            v.fail("delimiter", "must be one character")
        v.string("assign", self.assign)
        if not self.assign:
            v.fail("assign", "must not be empty")
        v.mapping("units", self.units)
        v.string("encoding", self.encoding)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            v.fail("encoding", f"{self.encoding!r} is not a known text encoding")
        v.integer("max_line", self.max_line, 1, 1 << 20)
        v.number("regex_timeout", self.regex_timeout, 0.001, 60.0)
        for key in ("pair_separator", "pattern", "ignore"):
            v.string(key, getattr(self, key))
        if self.format == "csv" and not self.columns:
            v.fail("columns", "format 'csv' needs columns = [...]")
        if self.format == "kv":
            if not self.pair_separator:
                v.fail("pair_separator", "must not be empty")
            _compile(v, "pair_separator", self.pair_separator)
        if self.format == "regex":
            rx = _compile(v, "pattern", self.pattern)
            if not rx.groupindex:
                v.fail("pattern", "needs named groups (?P<name>…)")
        if self.ignore:
            _compile(v, "ignore", self.ignore)


_SENSOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


class _Check:
    """Type checks for one table of the config; every failure names the table and the key.

    Messages give the offending value's type, never the value (an ``[output]`` password must
    not end up in a log).
    """

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, why: str) -> NoReturn:
        raise ConfigError(f"{self.where}: {key} {why}")

    def _type(self, key: str, value: Any, what: str) -> NoReturn:
        self.fail(key, f"must be {what}, not {_toml_type(value)}")

    def string(self, key: str, value: Any) -> None:
        if not isinstance(value, str):
            self._type(key, value, "a string")

    def boolean(self, key: str, value: Any) -> None:
        if not isinstance(value, bool):
            self._type(key, value, "true or false")

    def integer(self, key: str, value: Any, lo: int, hi: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self._type(key, value, "an integer")
        if not lo <= value <= hi:
            self.fail(key, f"must be between {lo} and {hi}")

    def number(self, key: str, value: Any, lo: float, hi: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._type(key, value, "a number")
        if not (math.isfinite(value) and lo <= value <= hi):
            self.fail(key, f"must be a number from {lo:g} to {hi:g}")

    def strings(self, key: str, value: Any) -> None:
        if not isinstance(value, list):
            self._type(key, value, "a list of strings")
        for i, x in enumerate(value, 1):
            if not isinstance(x, str):
                self.fail(key, f"must be a list of strings (item {i} is {_toml_type(x)})")

    def mapping(self, key: str, value: Any) -> None:
        if not isinstance(value, dict):
            self._type(key, value, "a table of strings, e.g. { temp = \"Cel\" }")
        for k, x in value.items():
            if not isinstance(x, str):
                self.fail(f"{key}.{k}", f"must be a string, not {_toml_type(x)}")


def _toml_type(value: Any) -> str:
    """How a TOML user would name a value's type."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _compile(check: _Check, key: str, pattern: str) -> Any:
    # The regex package rather than re: its matching methods take a timeout.
    try:
        return regex.compile(pattern)
    except (regex.error, ValueError, TypeError) as exc:
        check.fail(key, f"is not a valid regex: {exc}")


class LineParser:
    """Turn one sensor line into ``{name: value}``; raise :class:`MalformedLine`.

    Returns ``None`` for lines to skip silently: blank lines, lines matching ``ignore``, and a
    CSV header that repeats the column names.
    """

    def __init__(self, cfg: SensorConfig) -> None:
        self.cfg = cfg
        self._strings = set(cfg.strings)
        self._ignore = regex.compile(cfg.ignore) if cfg.ignore else None
        self._pairs = regex.compile(cfg.pair_separator) if cfg.format == "kv" else None
        self._rx = regex.compile(cfg.pattern) if cfg.format == "regex" else None

    def _limited(self, key: str, method: Callable[..., Any], text: str) -> Any:
        """Run one operator-written regex on one line within the sensor's time limit."""
        try:
            return method(text, timeout=self.cfg.regex_timeout)
        except TimeoutError:
            raise RegexTimeout(f"{key} regex ran past its {self.cfg.regex_timeout:g} s limit on "
                               f"this line ({len(text)} characters)") from None

    def parse(self, line: str) -> dict[str, Any] | None:
        """The line's values, ``None`` for a line to skip; raise :class:`MalformedLine`
        (:class:`RegexTimeout` when a configured regex runs past ``regex_timeout``)."""
        text = line.strip()
        if not text or (self._ignore is not None
                        and self._limited("ignore", self._ignore.search, text)):
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
            cells = [f.strip() for f in next(csv.reader([text], delimiter=self.cfg.delimiter))]
        except csv.Error as exc:
            raise MalformedLine(f"not CSV: {exc}") from None
        cols = self.cfg.columns
        if cells == cols:
            return None  # a header line (sensors often print one after a reset)
        if len(cells) != len(cols):
            raise MalformedLine(f"{len(cells)} fields, expected {len(cols)}")
        return {c: parse_value(c, f, c in self._strings) for c, f in zip(cols, cells)
                if c and c != "-" and f != ""}

    def _kv(self, text: str) -> dict[str, Any]:
        assert self._pairs is not None
        out: dict[str, Any] = {}
        for tok in self._limited("pair_separator", self._pairs.split, text):
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
        m = self._limited("pattern", self._rx.fullmatch, text)
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


#: Types of the ``[output]`` keys the bridge knows (serial and MQTT links); a key not listed here
#: goes to the link as it is, and one the link does not take is a :class:`ConfigError` too.
_OUTPUT_KEYS: dict[str, str] = {
    # serial (SerialLink)
    "baudrate": "int", "write_timeout": "number", "read_timeout": "number", "max_frame": "int",
    "queue_size": "int", "overflow": "str", "reconnect": "bool", "backoff": "number",
    "max_backoff": "number", "exclusive": "bool", "flush_prefix": "bool",
    "require_open": "bool",
    # MQTT (for_device): connection, then outbox and flow control
    "ca": "path", "cert": "path", "key": "path", "password_file": "path", "username": "str",
    "password": "str", "client_id": "str", "keepalive": "int", "connect_timeout": "number",
    "reconnect_max": "number", "outbox": "path", "timeout": "number", "capacity": "int",
    "when_full": "str", "window": "int", "resend_after": "number", "topic_root": "str",
}
_GATEWAY_KEYS = ("device", "state")


def config_from_dict(data: Mapping[str, Any], base: Path = Path()) -> BridgeConfig:
    """Build a :class:`BridgeConfig` from parsed TOML (``base`` anchors relative paths).

    Raises :class:`ConfigError` naming the table and key for a missing or unknown key, or a
    value of the wrong type.
    """
    unknown = sorted(set(data) - {"gateway", "output", "sensor"})
    if unknown:
        raise ConfigError(f"unknown tables {unknown}: the bridge reads [gateway], [output] and "
                          "[[sensor]]")

    def rel(v: str) -> Path:
        q = Path(v).expanduser()
        return q if q.is_absolute() else base / q

    gw = data.get("gateway")
    if not isinstance(gw, dict) or "device" not in gw:
        raise ConfigError("[gateway] needs device = \"path/to/NAME.device\"")
    check = _Check("[gateway]")
    for key, value in gw.items():
        if key not in _GATEWAY_KEYS:
            check.fail(key, f"is not a [gateway] key (known: {', '.join(_GATEWAY_KEYS)})")
        check.string(key, value)
        if not value:
            check.fail(key, "must not be empty")

    out = data.get("output")
    if not isinstance(out, dict) or "url" not in out:
        raise ConfigError("[output] needs url = \"/dev/ttyUSB0\" (or a pyserial or mqtt:// URL)")
    check = _Check("[output]")
    check.string("url", out["url"])
    if not out["url"]:
        check.fail("url", "must not be empty")
    options: dict[str, Any] = {}
    for key, value in out.items():
        kind = _OUTPUT_KEYS.get(key)
        if kind in ("str", "path"):
            check.string(key, value)
        elif kind == "bool":
            check.boolean(key, value)
        elif kind == "int":
            check.integer(key, value, 0, 1 << 31)
        elif kind == "number":
            check.number(key, value, 0.0, 86400.0)
        if key != "url":
            options[key] = str(rel(value)) if kind == "path" else value

    raw = data.get("sensor", [])
    raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw, list) or not raw:
        raise ConfigError("no sensors: add a [[sensor]] table")
    names = {f.name for f in fields(SensorConfig)}
    sensors = []
    for i, table in enumerate(raw, 1):
        if not isinstance(table, dict):
            raise ConfigError(f"sensor #{i} must be a table ([[sensor]]), not "
                              f"{_toml_type(table)}")
        label = table.get("name") if isinstance(table.get("name"), str) else f"#{i}"
        unknown = sorted(set(table) - names)
        if unknown:
            raise ConfigError(f"sensor {label}: unknown keys {unknown}")
        if "name" not in table:
            raise ConfigError(f"sensor {label}: needs a name = \"...\"")
        sensors.append(SensorConfig(**table))
    if len({s.name for s in sensors}) != len(sensors):
        raise ConfigError("sensor names must be unique")

    url = out["url"]
    if "://" not in url and not url.startswith("/"):
        url = str(rel(url))
    return BridgeConfig(sensors, rel(gw["device"]), rel(gw["state"]) if "state" in gw else None,
                        url, options)


# -- the bridge -------------------------------------------------------------------------------

def open_output(url: str, device: Device, **options: Any) -> Link:
    """The link a bridge forwards to: a serial path/URL, or MQTT for mqtt:// and mqtts://.

    The gateway seals with its own identity, so over MQTT its frames get the twin's end-to-end
    acknowledgements and a durable outbox next to its sequence state.
    """
    try:
        return transport.open(url, device=device, **options)
    except (TypeError, ValueError) as exc:  # an [output] key or value the transport refuses
        if isinstance(exc, TwinlinkError):
            raise
        raise ConfigError(f"[output] for {url.split(':', 1)[0]}: {exc}") from None


@dataclass(frozen=True)
class Delivery:
    """What became of the readings the bridge handed to its output link.

    ``queued``: handed to the link (``counts["forwarded"]``). ``acknowledged``: whether the
    link has end-to-end acknowledgements from the twin (MQTT with the gateway's own key); only
    then is ``stored`` a count (frames the twin acknowledged as stored while the link was open,
    which may include frames a previous run left in the outbox) and ``awaiting`` the frames
    still in the outbox. Without them ``stored`` is ``None``: serial has no acknowledgement, so
    ``sent`` counts frames written to the port (``awaiting``: still queued for a port that is
    down; those are lost when the bridge stops).
    """

    transport: str  # "serial", "mqtt", or the link's class name
    queued: int
    acknowledged: bool
    stored: int | None
    awaiting: int | None
    sent: int | None = None
    refused: int = 0  # refused for good by the twin (moved to the outbox's dead letters)

    def describe(self) -> str:
        """One line for an operator: what was queued, and what is known to be stored."""
        if self.acknowledged:
            line = (f"queued {self.queued}, stored {self.stored} (acknowledged end to end by the "
                    "twin)")
            if self.refused:
                line += (f", {self.refused} refused for good by the twin (see 'twinlink "
                         "outbox')")
            if self.awaiting:
                line += (f", {self.awaiting} awaiting the twin's acknowledgement (kept in the "
                         "outbox, resent on the next run)")
            return line
        if self.transport == "serial":
            line = (f"queued {self.queued}, sent {self.sent} (no end-to-end acknowledgement on "
                    "serial)")
            if self.awaiting:
                line += f", {self.awaiting} never written (the port stayed down)"
            return line
        line = f"queued {self.queued} (no end-to-end acknowledgement from this link)"
        if self.awaiting:
            line += f", {self.awaiting} still queued"
        return line

    def to_json(self) -> dict[str, Any]:
        return {"transport": self.transport, "queued": self.queued,
                "acknowledged": self.acknowledged, "stored": self.stored,
                "awaiting": self.awaiting, "sent": self.sent, "refused": self.refused}


def _pending(link: Any) -> int | None:
    # SerialLink.pending is a property, MqttLink.pending() a method.
    pending = getattr(link, "pending", None)
    if callable(pending):
        pending = pending()
    return pending if isinstance(pending, int) else None


def _delivery(link: Any, queued: int, abandoned: int | None = None) -> Delivery:
    """Read what ``link`` knows about delivery (before it is closed)."""
    awaiting = _pending(link)
    if isinstance(link, SerialLink):
        left = abandoned if abandoned is not None else (awaiting or 0)
        return Delivery("serial", queued, False, None, left, max(0, queued - left))
    stats = getattr(link, "stats", None)
    released = getattr(stats, "released", None)
    if getattr(link, "e2e", False) and isinstance(released, int):
        return Delivery("mqtt", queued, True, released, awaiting,
                        refused=int(getattr(stats, "refused", 0)))
    name = "mqtt" if hasattr(link, "outbox") else type(link).__name__
    return Delivery(name, queued, False, None, awaiting)


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
        #: Per outcome: ``forwarded`` (handed to the output link: queued, not proof of
        #: storage, see :meth:`delivery`), ``parsed`` (no output), ``malformed`` (of which
        #: ``regex_timeout``), ``send_failed``.
        self.counts: Counter[str] = Counter()
        self.per_sensor: dict[str, Counter[str]] = {s.name: Counter() for s in sensors}
        self._seal_lock = threading.Lock()
        self._readers: list[SerialLink] = []
        self._final: Delivery | None = None

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
            if isinstance(exc, RegexTimeout):
                self._count(counts, "regex_timeout")
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

    def delivery(self) -> Delivery | None:
        """What the output link knows about the readings handed to it (``None`` without an
        output). After :meth:`close`, the figures as they were when the link closed."""
        if self._final is not None:
            return self._final
        if self.output is None:
            return None
        return _delivery(self.output, self.counts["forwarded"])

    def summary(self) -> str:
        """The operator's one-line account: queued vs stored, malformed lines, failed sends."""
        c = self.counts
        d = self.delivery()
        head = d.describe() if d is not None else f"parsed {c['parsed']} (no output)"
        tail = f"; malformed {c['malformed']}"
        if c["regex_timeout"]:
            tail += f" ({c['regex_timeout']} past the regex time limit)"
        return head + tail + f", send failures {c['send_failed']}"

    def close(self, timeout: float = 5.0) -> None:
        """Stop the readers, give queued frames ``timeout`` seconds (for the port, or for the
        twin's acknowledgements), record :meth:`delivery`, release the identity."""
        for r in self._readers:
            r.close()
        self._readers.clear()
        out = self.output
        try:
            if out is not None and self._final is None:
                abandoned = None
                if isinstance(out, SerialLink):
                    abandoned = out.close(timeout)
                else:
                    flush = getattr(out, "flush", None)
                    if flush is not None:
                        flush(timeout)
                self._final = _delivery(out, self.counts["forwarded"], abandoned)
                if not isinstance(out, SerialLink):
                    close = getattr(out, "close", None)
                    if close is not None:
                        try:
                            close(timeout)
                        except TypeError:  # a link whose close() takes no timeout
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

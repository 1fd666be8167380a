"""Downlink: desired state and commands from the twin to one device (docs/PROTOCOL.md §20).

A downlink frame is an OSCORE-style Encrypt0 under the device's pairwise context, in the
twin→device direction with the empty Sender ID and its own stream name ``"c"``::

    downlink     = 16([h'A1011818', {4: h'', 6: PIV, ? 10: kid_context}, ciphertext])
    key          = HKDF(salt, secret, [h'', id_context, 24, "Key", 32])
    nonce        = CommonIV XOR (0x00 || zeros(6) || pad(PIV))
    external_aad = [1, [24, -8], device_kid, PIV, h'63']
    plaintext    = {1: "desired", 2: version, 3: {key: value}}
                 / {1: "command", 2: id, 3: method, 4: args, 5: deadline}
                 / {1: "update", 2: manifest}                     ; §21: firmware delivery
                 / {1: "chunk", 2: transfer, 3: offset, 4: data}

Only the twin and the device hold the key, so whoever controls the broker can neither forge nor
alter a downlink frame; the device's kid in the AAD makes a frame for another device fail. The
twin's PIV is ``max(last + 1, ms since 2025-01-01)`` taken in the store's transaction
(:func:`next_piv`), so neither several ingest workers nor a restored database reuse one.

Device side (:class:`DownlinkState`, :func:`open_downlink`): parse strictly, decrypt, check a
replay window of 64 over the twin's PIVs persisted with :func:`twinlink.fileio.atomic_write`
*before* anything is applied (at-most-once), refuse an expired command, ignore a desired version
not newer than the applied one. Desired state is a state, so re-applying the same version after
a crash is harmless (the device re-applies its last persisted desired state when a handler is
registered); a command is never run twice (its id is recorded as started before it runs; after
a crash it is reported ``error: interrupted``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import cbor2

from . import enc0, senml
from .errors import DecryptionFailed, MalformedPayload, TwinlinkError
from .fileio import atomic_write, read_regular
from .oscore import MAX_SEQ, Context

__all__ = [
    "DOWNLINK_SID", "EPOCH_2025", "MAX_DOWNLINK", "MAX_NAME", "MAX_OFFER", "MAX_PLAINTEXT",
    "REPORT_PREFIX", "STREAM_DOWNLINK", "UPDATE_CHUNK", "UPDATE_REPORT", "WINDOW", "Chunk",
    "Command", "Desired", "DownlinkError", "DownlinkExpired", "DownlinkReplay", "DownlinkState",
    "DownlinkTooLarge", "Envelope", "Offer", "encode_chunk", "encode_command", "encode_desired",
    "encode_offer", "next_piv", "open_downlink", "parse_downlink", "parse_update_report",
    "seal_downlink", "transfer_id", "update_report",
]

#: The stream name bound into external_aad: "c" (commands), never "t" (telemetry) or "a" (acks).
STREAM_DOWNLINK = b"c"
#: The twin's Sender ID on the downlink: empty, so never a device kid (1 to 6 bytes) nor an
#: ack Sender ID (6 random bytes).
DOWNLINK_SID = b""
#: Largest downlink frame accepted on input.
MAX_DOWNLINK = 8192
#: Largest plaintext a device accepts by default (desired state or command); larger: rejected.
MAX_PLAINTEXT = 2048
#: Longest key or method name (characters).
MAX_NAME = 64
#: The size of the device's window over the twin's downlink PIVs (RFC 8613 §7.4 style).
WINDOW = 64
#: 2025-01-01T00:00:00Z: the twin's PIV clock floor counts milliseconds from here.
EPOCH_2025 = 1735689600
#: Telemetry names reserved for a device's reports about the downlink.
REPORT_PREFIX = "tl:"
#: Image bytes one update chunk carries at most: with its header (at most 32 bytes) the
#: plaintext stays within :data:`MAX_PLAINTEXT`.
UPDATE_CHUNK = 2000
#: Largest manifest an offer carries (twinlink.update.MAX_MANIFEST).
MAX_OFFER = 1024

log = logging.getLogger("twinlink.downlink")

_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
Json = Union[None, bool, int, float, str, list[Any], dict[str, Any]]


class DownlinkError(TwinlinkError):
    """Base of the device's refusals of an authentic downlink frame."""

    reason = "downlink_refused"


class DownlinkReplay(DownlinkError):
    """The twin's PIV was seen before, or lies below the device's downlink window."""

    reason = "downlink_replay"


class DownlinkExpired(DownlinkError):
    """A command whose deadline has passed: not run."""

    reason = "downlink_expired"


class DownlinkTooLarge(DownlinkError, ValueError):
    """A plaintext larger than the device accepts (or the protocol allows)."""

    reason = "downlink_too_large"


def next_piv(last: int | None, now: float | None = None) -> int:
    """The twin's next downlink PIV: ``max(last + 1, ms since 2025-01-01)``. The clock floor
    means a restored database (an older ``last``) cannot make the twin reuse a PIV, as long as
    the twin's clock was not set back by more than the restore gap. Raises ValueError past
    2^40 - 1 (the year 2059)."""
    now = _time.time() if now is None else now
    piv = max(-1 if last is None else last, -1) + 1
    piv = max(piv, int((now - EPOCH_2025) * 1000))
    if piv > MAX_SEQ:
        raise ValueError("downlink sequence numbers exhausted (2^40 ms after 2025)")
    return piv


@dataclass(frozen=True)
class Desired:
    """A desired state: every desired key with its value, at one version."""

    version: int
    values: dict[str, Any]


@dataclass(frozen=True)
class Command:
    """A one-shot command: ``method(args)``, to be run before ``deadline`` (epoch seconds)."""

    id: int
    method: str
    args: Any
    deadline: int


@dataclass(frozen=True)
class Offer:
    """A firmware update offered to the device: its signed manifest (docs/PROTOCOL.md §21),
    not yet authenticated — the device checks it before it accepts any chunk."""

    manifest: bytes

    @property
    def transfer(self) -> bytes:
        return transfer_id(self.manifest)


@dataclass(frozen=True)
class Chunk:
    """``data`` at byte ``offset`` of the image of the offer whose :func:`transfer_id` is
    ``transfer``."""

    transfer: bytes
    offset: int
    data: bytes


Message = Union[Desired, Command, Offer, Chunk]


def transfer_id(manifest: bytes) -> bytes:
    """The 8-byte name of one update transfer: the first 8 bytes of SHA-256 of the manifest
    as offered. Both sides compute it from the bytes alone, so a device can name an offer whose
    manifest it refused (it never trusts a field of an unauthenticated manifest)."""
    return hashlib.sha256(manifest).digest()[:8]


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what} must be 1 to {MAX_NAME} characters of A-Z a-z 0-9 _ . : -")
    return name


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > 8:
        raise ValueError("value nested deeper than 8")
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, int) and not isinstance(value, bool) \
                and not -(1 << 63) <= value < (1 << 64):
            raise ValueError("integer out of the 64-bit range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("values must be finite numbers")
        return
    if isinstance(value, list):
        for v in value:
            _check_json(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError("object keys must be strings")
            _check_json(v, depth + 1)
        return
    raise ValueError(f"a {type(value).__name__} is not a JSON value")


def _sized(plaintext: bytes) -> bytes:
    if len(plaintext) > MAX_PLAINTEXT:
        raise DownlinkTooLarge(f"downlink plaintext of {len(plaintext)} bytes exceeds "
                               f"{MAX_PLAINTEXT} bytes")
    return plaintext


def encode_desired(version: int, values: Mapping[str, Any]) -> bytes:
    """The deterministic CBOR plaintext of a desired state. Raises ValueError for a bad key or
    value, :class:`DownlinkTooLarge` above :data:`MAX_PLAINTEXT` bytes."""
    if type(version) is not int or not 0 <= version <= MAX_SEQ:
        raise ValueError("a desired version is 0 to 2^40-1")
    if not values:
        raise ValueError("a desired state names at least one key")
    for k, v in values.items():
        _check_name(k, "a desired key")
        _check_json(v)
    return _sized(cbor2.dumps({1: "desired", 2: version, 3: dict(values)}, canonical=True))


def encode_command(cmd_id: int, method: str, args: Any, deadline: int) -> bytes:
    """The deterministic CBOR plaintext of a command. Raises ValueError for a bad method or
    argument, :class:`DownlinkTooLarge` above :data:`MAX_PLAINTEXT` bytes."""
    if type(cmd_id) is not int or not 0 <= cmd_id < (1 << 63):
        raise ValueError("a command id is a non-negative 63-bit integer")
    if type(deadline) is not int or not 0 <= deadline < (1 << 40):
        raise ValueError("a deadline is whole epoch seconds")
    _check_name(method, "a method")
    _check_json(args)
    return _sized(cbor2.dumps({1: "command", 2: cmd_id, 3: method, 4: args, 5: deadline},
                              canonical=True))


def encode_offer(manifest: bytes) -> bytes:
    """The deterministic CBOR plaintext of an update offer. Raises ValueError for an empty
    manifest or one above :data:`MAX_OFFER` bytes."""
    if not isinstance(manifest, (bytes, bytearray)) or not 0 < len(manifest) <= MAX_OFFER:
        raise ValueError(f"an update manifest is 1 to {MAX_OFFER} bytes")
    return _sized(cbor2.dumps({1: "update", 2: bytes(manifest)}, canonical=True))


def encode_chunk(transfer: bytes, offset: int, data: bytes) -> bytes:
    """The deterministic CBOR plaintext of one image chunk. Raises ValueError for a bad
    transfer id, offset or a chunk outside 1..:data:`UPDATE_CHUNK` bytes."""
    if not isinstance(transfer, bytes) or len(transfer) != 8:
        raise ValueError("a transfer id is 8 bytes")
    if type(offset) is not int or not 0 <= offset < (1 << 64):
        raise ValueError("a chunk offset is a 64-bit unsigned integer")
    if not isinstance(data, (bytes, bytearray)) or not 0 < len(data) <= UPDATE_CHUNK:
        raise ValueError(f"a chunk carries 1 to {UPDATE_CHUNK} bytes")
    return _sized(cbor2.dumps({1: "chunk", 2: transfer, 3: offset, 4: bytes(data)},
                              canonical=True))


def _decode_update(obj: dict[Any, Any], plaintext: bytes) -> Message:
    # Deterministic encoding only (§8): one image has one byte string per chunk.
    if cbor2.dumps(obj, canonical=True) != plaintext:
        raise ValueError("update plaintext is not deterministic CBOR")
    if obj[1] == "update":
        if set(obj) != {1, 2} or not isinstance(obj[2], bytes) \
                or not 0 < len(obj[2]) <= MAX_OFFER:
            raise ValueError(f"update is {{1: 'update', 2: manifest (1..{MAX_OFFER} bytes)}}")
        return Offer(obj[2])
    if set(obj) != {1, 2, 3, 4} or not isinstance(obj[2], bytes) or len(obj[2]) != 8 \
            or type(obj[3]) is not int or not 0 <= obj[3] < (1 << 64) \
            or not isinstance(obj[4], bytes) or not 0 < len(obj[4]) <= UPDATE_CHUNK:
        raise ValueError("chunk is {1: 'chunk', 2: transfer (8 bytes), 3: offset, "
                         f"4: data (1..{UPDATE_CHUNK} bytes)}}")
    return Chunk(obj[2], obj[3], obj[4])


def decode(plaintext: bytes, max_plaintext: int = MAX_PLAINTEXT) -> Message:
    """Decode an authentic downlink plaintext strictly. Raises :class:`MalformedPayload`, or
    :class:`DownlinkTooLarge` above ``max_plaintext`` bytes (checked first)."""
    if len(plaintext) > max_plaintext:
        raise DownlinkTooLarge(f"downlink plaintext of {len(plaintext)} bytes exceeds the "
                               f"{max_plaintext} bytes this device accepts")
    obj = senml.loads(plaintext)  # bounded, strict decoder
    if not isinstance(obj, dict) or obj.get(1) not in ("desired", "command", "update", "chunk"):
        raise MalformedPayload("downlink plaintext is not a desired state, a command or an "
                               "update")
    try:
        if obj[1] in ("update", "chunk"):
            return _decode_update(obj, plaintext)
        if obj[1] == "desired":
            if set(obj) != {1, 2, 3} or type(obj[2]) is not int or not isinstance(obj[3], dict) \
                    or not obj[3]:
                raise ValueError("desired is {1: 'desired', 2: version, 3: {key: value}}")
            if not 0 <= obj[2] <= MAX_SEQ:
                raise ValueError("desired version out of range")
            for k, v in obj[3].items():
                _check_name(k, "a desired key")
                _check_json(v)
            return Desired(obj[2], dict(obj[3]))
        if set(obj) != {1, 2, 3, 4, 5} or type(obj[2]) is not int or type(obj[5]) is not int \
                or not 0 <= obj[2] < (1 << 63) or not 0 <= obj[5] < (1 << 40):
            raise ValueError("command is {1: 'command', 2: id, 3: method, 4: args, 5: deadline}")
        _check_name(obj[3], "a method")
        _check_json(obj[4])
        return Command(obj[2], obj[3], obj[4], obj[5])
    except ValueError as exc:
        raise MalformedPayload(str(exc)) from None


def seal_downlink(ctx: Context, kid: bytes, piv_seq: int, plaintext: bytes,
                  kid_context: bytes | None = None) -> bytes:
    """Seal a downlink plaintext (:func:`encode_desired` / :func:`encode_command`) for device
    ``kid``. ``ctx`` is the twin→device context with Sender ID h'' of the device context whose ID
    Context is ``kid_context`` (``Twin.ack_context(kid, b"", id_context)``); ``piv_seq`` must
    never repeat for it (:func:`next_piv`, in the store's transaction). Raises ValueError."""
    if ctx.sender_id != DOWNLINK_SID:
        raise ValueError("downlink frames are sealed with the empty twin Sender ID")
    return enc0.seal(ctx, kid, piv_seq, _sized(plaintext), STREAM_DOWNLINK, kid_context)


Envelope = enc0.Envelope


def parse_downlink(data: bytes) -> Envelope:
    """Strictly parse a downlink frame's envelope (the module docstring's shape, shortest heads,
    keys in order, the empty Sender ID); raise :class:`MalformedFrame` otherwise. Nothing is
    authenticated."""
    return enc0.parse(data, "downlink", len(DOWNLINK_SID), MAX_DOWNLINK)


def open_downlink(ctx: Context, kid: bytes, env: Envelope) -> bytes:
    """Authenticate a parsed downlink frame addressed to device ``kid`` and return its
    plaintext. Raises :class:`DecryptionFailed` (forged, altered, for another device or
    another context)."""
    if env.sender_id != DOWNLINK_SID:
        raise DecryptionFailed("downlink frame names a Sender ID other than the empty one")
    return enc0.decrypt(ctx, kid, env, STREAM_DOWNLINK, "downlink")


# -- the device's persisted downlink state ----------------------------------------------------


@dataclass
class _Persisted:
    context: str = ""  # hex ID Context the window belongs to ("" : base context)
    top: int = -1
    bits: int = 0
    version: int = -1  # applied desired version
    desired: dict[str, Any] = field(default_factory=dict)  # the applied desired state
    started: dict[str, str] = field(default_factory=dict)  # command id -> outcome ("" running)
    reports: dict[str, Any] = field(default_factory=dict)  # not yet handed to telemetry


#: Reports one reading carries at most (entries, and approximate bytes); the rest wait.
REPORTS_PER_READING, REPORT_BYTES = 32, 1024
#: Reports a device keeps waiting at most (the oldest are dropped: the twin resends).
MAX_REPORTS = 256
#: Longest command result reported (characters of its text form); longer is an error.
MAX_RESULT = 256

#: Command outcomes a device remembers (to answer a resent command without running it again).
KEEP_COMMANDS = 64


class DownlinkState:
    """The device's downlink window, applied desired version and command outcomes, in one JSON
    file replaced atomically (:func:`~twinlink.fileio.atomic_write`) on every change.

    Not thread-safe by itself: :class:`twinlink.device.Device` serialises calls. Raises
    :class:`OSError` if the file cannot be written (then nothing was applied).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.s = _Persisted()
        try:
            raw, _ = read_regular(self.path)
        except FileNotFoundError:
            return
        try:
            d = json.loads(raw)
            self.s = _Persisted(str(d["context"]), int(d["top"]), int(d["bits"]),
                                int(d["version"]), dict(d["desired"]), dict(d["started"]),
                                dict(d["reports"]))
        except (ValueError, KeyError, TypeError) as exc:
            # Lost downlink state must not reopen the window: refuse until removed by an
            # operator (a fresh file accepts only PIVs newer than the clock floor anyway).
            raise MalformedPayload(f"downlink state {self.path} is unreadable ({exc}); "
                                   "remove it to start over") from None
        # A command that was started but never finished: the device died while running it.
        for cid, outcome in self.s.started.items():
            if outcome == "":
                self.s.started[cid] = "error: interrupted"
                self.s.reports[f"{REPORT_PREFIX}cmd:{cid}"] = "error: interrupted"

    def save(self) -> None:
        """Write the state durably (temp file, fsync, rename)."""
        s = self.s
        atomic_write(self.path, json.dumps({
            "context": s.context, "top": s.top, "bits": s.bits, "version": s.version,
            "desired": s.desired, "started": s.started, "reports": s.reports},
            sort_keys=True, separators=(",", ":")))

    def check_window(self, kid_context: bytes | None, seq: int) -> None:
        """Raise :class:`DownlinkReplay` if ``seq`` was seen or is below the window of the
        device context ``kid_context``; changes nothing."""
        ctx = (kid_context or b"").hex()
        if ctx != self.s.context or self.s.top < 0:
            return  # a new context: a fresh key, so a fresh window
        top = self.s.top
        if seq > top:
            return
        if top - seq >= WINDOW:
            raise DownlinkReplay(f"downlink PIV {seq} is below the window (top {top})")
        if self.s.bits >> (top - seq) & 1:
            raise DownlinkReplay(f"downlink PIV {seq} was seen before")

    def mark(self, kid_context: bytes | None, seq: int) -> None:
        """Record ``seq`` as seen (in memory; :meth:`save` makes it durable)."""
        ctx = (kid_context or b"").hex()
        if ctx != self.s.context:
            self.s.context, self.s.top, self.s.bits = ctx, -1, 0
        if seq > self.s.top:
            shift = seq - self.s.top if self.s.top >= 0 else WINDOW
            self.s.bits = ((self.s.bits << shift) | 1) & ((1 << WINDOW) - 1)
            self.s.top = seq
        else:
            self.s.bits |= 1 << (self.s.top - seq)

    def remember(self, cmd_id: int, outcome: str) -> None:
        self.s.started[str(cmd_id)] = outcome
        while len(self.s.started) > KEEP_COMMANDS:
            self.s.started.pop(next(iter(self.s.started)))

    def take_reports(self) -> dict[str, Any]:
        """The oldest pending reports that fit one reading (at most :data:`REPORTS_PER_READING`
        entries, about :data:`REPORT_BYTES` bytes; in memory: the caller clears them durably with
        :meth:`save` once they are sealed)."""
        out: dict[str, Any] = {}
        size = 0
        for k, v in self.s.reports.items():
            size += len(k) + len(str(v)) + 8
            if len(out) >= REPORTS_PER_READING or (out and size > REPORT_BYTES):
                break
            out[k] = v
        return out

    def add_reports(self, reports: Mapping[str, Any]) -> None:
        """Queue reports (in memory), dropping the oldest beyond :data:`MAX_REPORTS`."""
        for k, v in reports.items():
            self.s.reports.pop(k, None)  # re-reported: now the newest
            self.s.reports[k] = v
        while len(self.s.reports) > MAX_REPORTS:
            self.s.reports.pop(next(iter(self.s.reports)))


#: The report name of an update transfer's progress and outcome (docs/PROTOCOL.md §21).
UPDATE_REPORT = REPORT_PREFIX + "update"
#: What a device says about a transfer: bytes staged, asks to resend after a gap, resumed after
#: a restart, installed, refused for good.
UPDATE_STATUSES = ("staging", "gap", "resume", "applied", "rejected")
_UPDATE_REPORT = re.compile(r"([0-9a-f]{16}) (staging|gap|resume|applied|rejected) "
                            r"(0|[1-9][0-9]{0,19})(?: ([a-z][a-z0-9_]{0,31}))?")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,31}")


def update_report(transfer: bytes, status: str, offset: int, reason: str = "") -> dict[str, str]:
    """The report of one update transfer: ``{"tl:update": "<transfer hex> <status> <offset>
    [<reason>]"}`` — one value, so progress and outcome never travel apart."""
    if status not in UPDATE_STATUSES:
        raise ValueError(f"unknown update status {status!r}")
    if reason and not _REASON.fullmatch(reason):
        reason = "refused"  # the twin parses reports strictly: never send what it would drop
    text = f"{transfer.hex()} {status} {offset}" + (f" {reason}" if reason else "")
    return {UPDATE_REPORT: text}


def parse_update_report(value: Any) -> tuple[bytes, str, int, str] | None:
    """(transfer, status, offset, reason) of a ``tl:update`` report, or None if it is not one
    (a device's report is hostile input: anything else is ignored)."""
    m = _UPDATE_REPORT.fullmatch(value) if isinstance(value, str) else None
    if m is None or int(m.group(3)) >= 1 << 64:
        return None
    return bytes.fromhex(m.group(1)), m.group(2), int(m.group(3)), m.group(4) or ""


def report_value(value: Any) -> Any:
    """A command result as a SenML value: numbers, strings and booleans as they are, anything
    else as compact JSON text."""
    if isinstance(value, (bool, int, float, str)) and not (
            isinstance(value, float) and not math.isfinite(value)):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# -- the device's receiver ----------------------------------------------------------------------

#: What a desired handler may return: None (all applied) or {key: reason} for rejected keys.
DesiredHandler = Any
CommandHandler = Any


class Rejected(Exception):
    """Raise from a command or desired handler to reject with a reason (reported to the twin)."""


class DownlinkReceiver:
    """Opens, checks and dispatches the downlink frames of one device (see the module
    docstring for the order of checks). :meth:`handle` is called on one thread at a time (the
    device's downlink thread); handlers run on it.

    ``key_context()`` returns ``(context, kid_context)``: the twin→device context (Sender ID
    h'') of the device's current security context and its ID Context (None: the base one).
    ``on_event(type, detail)`` gets the device events ``downlink.forged``, ``downlink.replay``,
    ``downlink.expired``, ``downlink.rejected``.
    """

    def __init__(self, kid: bytes, state: DownlinkState, key_context: Any,
                 on_event: Any = None, max_plaintext: int = MAX_PLAINTEXT) -> None:
        self.kid = kid
        self.state = state
        self._key_context = key_context
        self.on_event = on_event
        self.max_plaintext = max_plaintext
        self.desired_handler: DesiredHandler = None
        self.commands: dict[str, CommandHandler] = {}
        #: ``handler(msg) -> reports`` for update offers and chunks
        #: (:class:`twinlink.update.delivery.UpdateDelivery`); None: updates are refused.
        self.update_handler: Any = None
        #: Counts per device event type (and ``applied``, ``commands``).
        self.counts: dict[str, int] = {}

    def _event(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.on_event is not None:
            try:
                self.on_event(kind, detail)
            except Exception:  # a callback must not stop the downlink
                log.exception("downlink: the on_event callback failed")

    def handle(self, data: bytes, now: float | None = None) -> dict[str, Any]:
        """Process one downlink frame; return the reports it produced (also queued in the
        state). Raises a :class:`TwinlinkError` for a refused frame, after raising the device
        event; a refused frame changes nothing. Raises :class:`OSError` if the state cannot be
        persisted (then nothing was applied)."""
        now = _time.time() if now is None else now
        with self.state.lock:
            try:
                env = parse_downlink(data)
                ctx, kid_context = self._key_context()
                if env.kid_context != kid_context:
                    raise DecryptionFailed("downlink sealed under another security context")
                plaintext = open_downlink(ctx, self.kid, env)
            except TwinlinkError as exc:
                self._event("downlink.forged", str(exc))
                raise
            try:
                self.state.check_window(kid_context, env.seq)
            except DownlinkReplay as exc:
                self._event("downlink.replay", str(exc))
                raise
            try:
                msg = decode(plaintext, MAX_PLAINTEXT)
            except TwinlinkError as exc:  # authentic but unusable: consume it, report nothing
                self.state.mark(kid_context, env.seq)
                self.state.save()
                self._event("downlink.rejected", str(exc))
                raise
            too_large = len(plaintext) > self.max_plaintext
            self.state.mark(kid_context, env.seq)
            if isinstance(msg, (Offer, Chunk)):
                return self._update(msg)
            if isinstance(msg, Command):
                return self._command(msg, now, too_large)
            return self._desired(msg, too_large)

    def _report(self, reports: dict[str, Any]) -> dict[str, Any]:
        self.state.add_reports(reports)
        self.state.save()
        return reports

    def _update(self, msg: Offer | Chunk) -> dict[str, Any]:
        if self.update_handler is None:
            if isinstance(msg, Chunk):  # the refusal went with the offer; stay quiet
                self.state.save()
                return {}
            self._event("downlink.rejected", "update offered but this device takes no updates "
                                             "(Device.on_update was not called)")
            return self._report(update_report(msg.transfer, "rejected", 0, "no_updates"))
        reports = self.update_handler(msg)
        if not reports:
            self.state.save()  # the window moved on
            return {}
        return self._report(reports)

    def _command(self, cmd: Command, now: float, too_large: bool) -> dict[str, Any]:
        name = f"{REPORT_PREFIX}cmd:{cmd.id}"
        known = self.state.s.started.get(str(cmd.id))
        if known is not None:  # a resend: answer again, never run twice
            return self._report({name: known or "error: interrupted"})
        if cmd.deadline < now:
            self.state.remember(cmd.id, "error: expired")
            self._report({name: "error: expired"})
            self._event("downlink.expired", f"command {cmd.id} ({cmd.method}) arrived after "
                                            "its deadline; not run")
            raise DownlinkExpired(f"command {cmd.id} expired")
        handler = self.commands.get(cmd.method)
        reason = ("too_large" if too_large else
                  None if handler is not None else f"unknown method {cmd.method}")
        if reason is not None or handler is None:
            self.state.remember(cmd.id, f"error: {reason}")
            self._event("downlink.rejected", f"command {cmd.id}: {reason}")
            return self._report({name: f"error: {reason}"})
        self.state.remember(cmd.id, "")  # started: never run again, even after a crash
        self.state.save()
        reports: dict[str, Any] = {}
        try:
            result = handler(cmd.args)
            outcome = "ok"
            if result is not None:
                value = report_value(result)
                if len(str(value)) > MAX_RESULT:
                    outcome = f"error: result of {len(str(value))} characters exceeds {MAX_RESULT}"
                else:
                    reports[name + ":result"] = value
        except Rejected as exc:
            outcome = f"error: {_short(exc)}"
        except Exception as exc:  # the application's bug: reported, never fatal here
            outcome = f"error: {type(exc).__name__}: {_short(exc)}"
        reports[name] = outcome
        self.state.remember(cmd.id, outcome)
        self.counts["commands"] = self.counts.get("commands", 0) + 1
        return self._report(reports)

    def _desired(self, want: Desired, too_large: bool) -> dict[str, Any]:
        s = self.state.s
        if too_large:
            self._event("downlink.rejected", f"desired state version {want.version} is larger "
                                             "than this device accepts")
            return self._report({f"{REPORT_PREFIX}desired": want.version,
                                 f"{REPORT_PREFIX}rejected": "too_large"})
        if want.version <= s.version:  # an older or the same version: already applied
            return self._report({f"{REPORT_PREFIX}desired": s.version})
        s.version, s.desired = want.version, dict(want.values)
        self.state.save()  # persisted before the handler runs: re-applied after a crash
        return self._report(self.apply_desired())

    def apply_desired(self) -> dict[str, Any]:
        """Run the desired handler over the persisted desired state; return the reports (the
        applied version and any rejected keys). Idempotent: a state, not a delta."""
        s = self.state.s
        if s.version < 0:
            return {}
        reports: dict[str, Any] = {f"{REPORT_PREFIX}desired": s.version}
        if self.desired_handler is None:
            return reports
        try:
            rejected = self.desired_handler(dict(s.desired))
            if not isinstance(rejected, Mapping):  # None (all applied), or not a verdict
                rejected = {}
        except Rejected as exc:
            reports[f"{REPORT_PREFIX}rejected"] = _short(exc)
            rejected = {}
        except Exception as exc:
            reports[f"{REPORT_PREFIX}rejected"] = f"{type(exc).__name__}: {_short(exc)}"
            rejected = {}
        for k, why in dict(rejected).items():
            reports[f"{REPORT_PREFIX}rejected:{k}"] = str(why)[:120]
        self.counts["applied"] = self.counts.get("applied", 0) + 1
        return reports


def _short(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")[:120] or type(exc).__name__


class Dispatcher:
    """Hands downlink frames from a transport's I/O thread to ``handler`` on a thread of its
    own (``twinlink-downlink``), one at a time, so an application's handler never stalls the
    transport. A :class:`TwinlinkError` from the handler (a refused frame) is logged as a
    warning, any other exception with its traceback."""

    def __init__(self) -> None:
        self.handler: Any = None
        self._q: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def set(self, handler: Any) -> None:
        """Deliver from now on to ``handler(data)``; starts the thread on first use."""
        self.handler = handler
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="twinlink-downlink",
                                            daemon=True)
            self._thread.start()

    def put(self, data: bytes) -> None:
        """Queue one frame (any thread; returns at once)."""
        if self.handler is not None:
            self._q.put(bytes(data))

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread after the frames queued so far."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            data = self._q.get()
            if data is None:
                return
            try:
                self.handler(data)
            except TwinlinkError as exc:
                log.warning("downlink frame refused: %s", exc)
            except Exception:
                log.exception("downlink handler failed")


def is_downlink(data: bytes) -> bool:
    """True if ``data`` parses as a downlink frame (not an ack: those carry a 6-byte Sender
    ID); used by links that carry both on one stream (serial)."""
    try:
        parse_downlink(data)
    except TwinlinkError:
        return False
    return True

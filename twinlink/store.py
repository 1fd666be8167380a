"""The twin store: device registry, replay windows, readings, twin state and security events.

:class:`TwinStore` is the interface the twin talks to; :class:`SQLiteStore` (WAL, embedded
default) implements it. A shared PostgreSQL store for multi-process ingest is a new subclass of
:class:`TwinStore`, not a rewrite: the twin only needs ``lookup`` (device + window, read-only)
and ``commit`` (re-check windows, store readings, update windows, record events — atomically).

The window of a device is updated *only* inside :meth:`TwinStore.commit`, in the same
transaction that inserts the reading, after the window is re-checked under the write lock, so
two ingest processes can never both accept one sequence number.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time as _time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import keys as _keys
from .errors import RevokedDevice, TwinlinkError, UnknownDevice, WindowLost
from .replay import DEFAULT_WINDOW, ReplayWindow

PROFILE_SIGNED = "twinlink/1"
PROFILE_LITE = "lite"


@dataclass(frozen=True)
class DeviceRecord:
    """A registered device as the registry holds it (public data only)."""

    name: str
    kid: bytes
    public_key: bytes = field(repr=False)
    profile: str = PROFILE_SIGNED
    status: str = "active"
    master_salt: bytes = b""
    id_context: bytes | None = None
    epoch: int = 0
    window_size: int = DEFAULT_WINDOW
    registered_at: float = 0.0

    @property
    def fingerprint(self) -> str:
        return _keys.fingerprint(self.public_key)


@dataclass
class WindowState:
    """A device's replay state as read outside the write transaction (for the pre-check)."""

    device: DeviceRecord
    window: ReplayWindow
    lost: bool


@dataclass
class Accepted:
    """A verified, decrypted frame ready to be committed."""

    kid: bytes
    seq: int
    epoch: int
    plaintext: bytes
    payload: Any
    records: Sequence[Any]  # (name, value, unit, time, ...) tuples, e.g. senml.Record
    time: float | None
    provenance: str
    received_at: float = field(default_factory=_time.time)
    source: str = ""


@dataclass
class Event:
    """A security event: a refused frame or an operator action."""

    reason: str
    detail: str
    kid: bytes | None = None
    seq: int | None = None
    source: str = ""
    at: float = field(default_factory=_time.time)


def _context_key(master_salt: bytes, id_context: bytes | None) -> str:
    return master_salt.hex() + "|" + ("-" if id_context is None else id_context.hex())


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return repr(value)


_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=_json_default)


def dumps_json(value: Any) -> str:
    """JSON text of a decoded CBOR value: bytes as hex, anything exotic as its repr."""
    try:
        return _JSON.encode(value)  # one shared encoder: the C fast path, no per-call setup
    except (ValueError, TypeError):  # NaN/infinity, or non-string map keys
        return json.dumps(to_json(value), separators=(",", ":"))


def to_json(value: Any) -> Any:
    """Make a decoded CBOR value JSON-friendly (bytes become hex strings)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class TwinStore(ABC):
    """What the twin needs from a store. Every method is safe to call from one thread at a time."""

    @abstractmethod
    def register(
        self,
        name: str,
        public_key: bytes,
        kid: bytes | None = None,
        profile: str = PROFILE_SIGNED,
        master_salt: bytes = b"",
        id_context: bytes | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> DeviceRecord: ...

    @abstractmethod
    def next_kid(self) -> bytes: ...

    @abstractmethod
    def revoke(self, name: str, why: str = "") -> None: ...

    @abstractmethod
    def device(self, name_or_kid: str | bytes) -> DeviceRecord: ...

    @abstractmethod
    def devices(self) -> list[DeviceRecord]: ...

    @abstractmethod
    def lookup(self, kid: bytes) -> WindowState: ...

    @abstractmethod
    def commit(
        self, accepted: Sequence[Accepted], events: Sequence[Event]
    ) -> list[TwinlinkError | None]: ...

    @abstractmethod
    def record_events(self, events: Iterable[Event]) -> None: ...

    @abstractmethod
    def reanchor(self, name: str, floor: int) -> None: ...

    @abstractmethod
    def mark_window_lost(self, name: str) -> None: ...

    @abstractmethod
    def rekey(self, name: str, master_salt: bytes, id_context: bytes | None) -> DeviceRecord: ...

    @abstractmethod
    def take_ack_seq(self, kid: bytes) -> int: ...

    def stored_seqs(self, kid: bytes, seqs: Iterable[int]) -> set[int]:
        """Which of ``seqs`` are stored for ``kid`` in its current epoch (for re-acking
        duplicates). A store that cannot tell returns an empty set: the sender then retries."""
        return set()

    @abstractmethod
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    kid BLOB PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key BLOB NOT NULL,
    profile TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    master_salt BLOB NOT NULL DEFAULT x'',
    id_context BLOB,
    epoch INTEGER NOT NULL DEFAULT 0,
    registered_at REAL NOT NULL,
    revoked_at REAL,
    win_size INTEGER NOT NULL,
    win_top INTEGER NOT NULL DEFAULT -1,
    win_bits BLOB NOT NULL,
    win_lost INTEGER NOT NULL DEFAULT 0,
    ack_seq INTEGER NOT NULL DEFAULT 0,
    last_seen REAL,
    last_seq INTEGER,
    accepted INTEGER NOT NULL DEFAULT 0,
    refused INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    kid BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    received_at REAL NOT NULL,
    time REAL,
    provenance TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL,
    plaintext BLOB NOT NULL,
    UNIQUE (kid, epoch, seq)
);
CREATE TABLE IF NOT EXISTS state (
    kid BLOB NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    unit TEXT,
    time REAL,
    seq INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kid, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kid BLOB,
    seq INTEGER,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_kid ON events (kid, at);
CREATE TABLE IF NOT EXISTS retired_contexts (
    kid BLOB NOT NULL,
    context TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    retired_at REAL NOT NULL,
    PRIMARY KEY (kid, context)
);
"""

_DEVICE_COLS = (
    "name, kid, public_key, profile, status, master_salt, id_context, epoch, "
    "win_size, registered_at"
)


class SQLiteStore(TwinStore):
    """SQLite in WAL mode with ``synchronous=FULL``: a committed reading survives a power cut.

    One connection, guarded by a lock; callers from several threads are serialised.
    Several processes may share one file (SQLite's write lock serialises their commits).
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "FULL",
        timeout: float = 10.0,
        max_events: int = 1_000_000,
    ) -> None:
        self.path = str(path)
        # A flood of garbage frames must not fill the disk: only the newest ``max_events``
        # security events are kept (per-device refusal counters keep the totals).
        self.max_events = max_events
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', '1')")
        except sqlite3.Error as exc:
            raise TwinlinkError(f"cannot open twin database {self.path}: {exc}") from None

    # -- registry ---------------------------------------------------------------------------

    def next_kid(self) -> bytes:
        with self._lock:
            n = 1
            used = {bytes(r[0]) for r in self._db.execute("SELECT kid FROM devices")}
            while _keys.kid_from_int(n) in used:
                n += 1
            return _keys.kid_from_int(n)

    def register(
        self,
        name: str,
        public_key: bytes,
        kid: bytes | None = None,
        profile: str = PROFILE_SIGNED,
        master_salt: bytes = b"",
        id_context: bytes | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> DeviceRecord:
        if profile not in (PROFILE_SIGNED, PROFILE_LITE):
            raise ValueError(f"unknown profile {profile!r}")
        if len(public_key) != 32:
            raise ValueError("a device public key is 32 bytes")
        ReplayWindow(window)  # validates the size
        with self._lock:
            kid = kid if kid is not None else self.next_kid()
            if not 1 <= len(kid) <= 6:
                raise ValueError("kid must be 1 to 6 bytes")
            try:
                self._db.execute(
                    "INSERT INTO devices (kid, name, public_key, profile, master_salt, id_context,"
                    " registered_at, win_size, win_bits) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        kid,
                        name,
                        public_key,
                        profile,
                        master_salt,
                        id_context,
                        _time.time(),
                        window,
                        bytes(window // 8),
                    ),
                )
            except sqlite3.IntegrityError:
                raise TwinlinkError(
                    f"a device named {name!r} or with kid {kid.hex()} is already registered"
                ) from None
            return self.device(kid)

    def revoke(self, name: str, why: str = "") -> None:
        with self._lock:
            dev = self.device(name)
            self._db.execute(
                "UPDATE devices SET status='revoked', revoked_at=? WHERE kid=?",
                (_time.time(), dev.kid),
            )
            self.record_events([Event("revoked_by_operator", why or "revoked", dev.kid)])

    def device(self, name_or_kid: str | bytes) -> DeviceRecord:
        col = "name" if isinstance(name_or_kid, str) else "kid"
        with self._lock:
            row = self._db.execute(
                f"SELECT {_DEVICE_COLS} FROM devices WHERE {col}=?", (name_or_kid,)
            ).fetchone()
        if row is None:
            what = name_or_kid if isinstance(name_or_kid, str) else f"kid {name_or_kid.hex()}"
            raise UnknownDevice(f"no device {what} is registered")
        return self._record(row)

    @staticmethod
    def _record(row: Sequence[Any]) -> DeviceRecord:
        return DeviceRecord(
            row[0],
            bytes(row[1]),
            bytes(row[2]),
            row[3],
            row[4],
            bytes(row[5]),
            None if row[6] is None else bytes(row[6]),
            row[7],
            row[8],
            row[9],
        )

    def devices(self) -> list[DeviceRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY name").fetchall()
        return [self._record(r) for r in rows]

    # -- ingest -----------------------------------------------------------------------------

    def lookup(self, kid: bytes) -> WindowState:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_DEVICE_COLS}, win_top, win_bits, win_lost FROM devices WHERE kid=?",
                (kid,),
            ).fetchone()
        if row is None:
            raise UnknownDevice(f"no device with kid {kid.hex()} is registered")
        dev = self._record(row)
        return WindowState(
            dev, ReplayWindow.from_state(dev.window_size, row[10], row[11]), bool(row[12])
        )

    def commit(
        self, accepted: Sequence[Accepted], events: Sequence[Event]
    ) -> list[TwinlinkError | None]:
        """Atomically: re-check each window, store accepted readings, advance windows, log events.

        Returns one entry per ``accepted`` item: None if stored, else the refusal (a replay that
        raced in from another ingest, or a revocation that landed meanwhile); refusals are
        logged as events in the same transaction.
        """
        results: list[TwinlinkError | None] = []
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                windows: dict[bytes, tuple[ReplayWindow, str, int, bool]] = {}
                rows, extra_events = [], list(events)
                state_rows: dict[tuple[bytes, str], tuple[Any, ...]] = {}
                counts: dict[bytes, list[Any]] = {}
                for a in accepted:
                    if a.kid not in windows:
                        r = db.execute(
                            "SELECT win_size, win_top, win_bits, status, epoch, win_lost"
                            " FROM devices WHERE kid=?",
                            (a.kid,),
                        ).fetchone()
                        if r is None:
                            err: TwinlinkError | None = UnknownDevice("device was removed")
                            results.append(err)
                            continue
                        windows[a.kid] = (
                            ReplayWindow.from_state(r[0], r[1], r[2]),
                            r[3],
                            r[4],
                            bool(r[5]),
                        )
                    win, status, epoch, lost = windows[a.kid]
                    err = None
                    try:
                        if status != "active":
                            raise RevokedDevice("device was revoked")
                        if lost:
                            raise WindowLost("replay window lost; re-anchor the device")
                        if epoch != a.epoch:
                            raise WindowLost("device was re-keyed while this frame was in flight")
                        win.accept(a.seq)
                    except TwinlinkError as exc:
                        err = exc
                        extra_events.append(Event(exc.reason, str(exc), a.kid, a.seq, a.source))
                    results.append(err)
                    if err is not None:
                        continue  # counted as refused with its event, below
                    c = counts.setdefault(a.kid, [0, None, None])
                    c[0] += 1
                    c[1], c[2] = a.received_at, a.seq
                    rows.append(
                        (
                            a.kid,
                            a.epoch,
                            a.seq,
                            a.received_at,
                            a.time,
                            a.provenance,
                            a.source,
                            dumps_json(a.payload),
                            a.plaintext,
                        )
                    )
                    for rec in a.records:
                        name, value, unit, t = rec[0], rec[1], rec[2], rec[3]
                        # Newest seq per (device, name) within the batch: one upsert each.
                        prev = state_rows.get((a.kid, name))
                        if prev is None or a.seq >= prev[5]:
                            state_rows[(a.kid, name)] = (
                                a.kid,
                                name,
                                value,
                                unit,
                                t,
                                a.seq,
                                a.received_at,
                            )
                db.executemany(
                    "INSERT INTO readings (kid, epoch, seq, received_at, time, provenance, source,"
                    " payload, plaintext) VALUES (?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                db.executemany(
                    "INSERT INTO state (kid, name, value, unit, time, seq, updated_at)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT (kid, name) DO UPDATE SET"
                    " value=excluded.value, unit=excluded.unit, time=excluded.time,"
                    " seq=excluded.seq, updated_at=excluded.updated_at"
                    " WHERE excluded.seq >= state.seq",
                    [
                        (k, n, dumps_json(v), u, t, q, r)
                        for k, n, v, u, t, q, r in state_rows.values()
                    ],
                )
                for kid, (win, _, _, _) in windows.items():
                    db.execute(
                        "UPDATE devices SET win_top=?, win_bits=? WHERE kid=?",
                        (win.top, win.to_bytes(), kid),
                    )
                for kid, (acc, seen, seq) in counts.items():
                    db.execute(
                        "UPDATE devices SET accepted=accepted+?, last_seen=?,"
                        " last_seq=MAX(COALESCE(last_seq, -1), ?) WHERE kid=?",
                        (acc, seen, seq, kid),
                    )
                self._insert_events(extra_events)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return results

    def _insert_events(self, events: Iterable[Event]) -> None:
        evs = list(events)
        if not evs:
            return
        self._db.executemany(
            "INSERT INTO events (at, kid, seq, reason, detail, source) VALUES (?,?,?,?,?,?)",
            [(e.at, e.kid, e.seq, e.reason, e.detail, e.source) for e in evs],
        )
        refused: dict[bytes, int] = {}
        for e in evs:
            if e.kid is not None and e.reason != "revoked_by_operator":
                refused[e.kid] = refused.get(e.kid, 0) + 1
        self._db.executemany(
            "UPDATE devices SET refused=refused+? WHERE kid=?", [(n, k) for k, n in refused.items()]
        )
        self._db.execute(
            "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (self.max_events,)
        )

    def record_events(self, events: Iterable[Event]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert_events(events)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- operator actions -------------------------------------------------------------------

    def reanchor(self, name: str, floor: int) -> None:
        """Accept only sequence numbers >= ``floor`` from now on (after window state was lost)."""
        with self._lock:
            dev = self.device(name)
            win = ReplayWindow.anchored(dev.window_size, floor)
            self._db.execute(
                "UPDATE devices SET win_top=?, win_bits=?, win_lost=0 WHERE kid=?",
                (win.top, win.to_bytes(), dev.kid),
            )
            self.record_events([Event("reanchored", f"window re-anchored at {floor}", dev.kid)])

    def mark_window_lost(self, name: str) -> None:
        """Refuse the device until re-anchored (e.g. after restoring the database from backup)."""
        with self._lock:
            dev = self.device(name)
            self._db.execute("UPDATE devices SET win_lost=1 WHERE kid=?", (dev.kid,))

    def rekey(self, name: str, master_salt: bytes, id_context: bytes | None) -> DeviceRecord:
        """Switch the device to a new security context; history stays, the window restarts."""
        with self._lock:
            dev = self.device(name)
            old, new = (
                _context_key(dev.master_salt, dev.id_context),
                _context_key(master_salt, id_context),
            )
            used = self._db.execute(
                "SELECT 1 FROM retired_contexts WHERE kid=? AND context=?", (dev.kid, new)
            ).fetchone()
            if new == old or used:
                # Same key again with a fresh window would let every old frame be replayed.
                raise TwinlinkError(
                    f"{name} already used this Master Salt / ID Context; a re-key needs a new one"
                )
            self._db.execute(
                "INSERT INTO retired_contexts VALUES (?,?,?,?)",
                (dev.kid, old, dev.epoch, _time.time()),
            )
            self._db.execute(
                "UPDATE devices SET master_salt=?, id_context=?, epoch=epoch+1, win_top=-1,"
                " win_bits=?, win_lost=0, ack_seq=0 WHERE kid=?",
                (master_salt, id_context, bytes(dev.window_size // 8), dev.kid),
            )
            self.record_events(
                [Event("rekeyed", f"new security context, epoch {dev.epoch + 1}", dev.kid)]
            )
            return self.device(dev.kid)

    def take_ack_seq(self, kid: bytes) -> int:
        """Reserve the next twin→device sequence number (acknowledgements, later commands)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT ack_seq FROM devices WHERE kid=?", (kid,)).fetchone()
                if row is None:
                    raise UnknownDevice(f"no device with kid {kid.hex()} is registered")
                self._db.execute("UPDATE devices SET ack_seq=ack_seq+1 WHERE kid=?", (kid,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(row[0])

    # -- queries ----------------------------------------------------------------------------

    def stored_seqs(self, kid: bytes, seqs: Iterable[int]) -> set[int]:
        want = sorted(set(seqs))
        if not want:
            return set()
        with self._lock:
            row = self._db.execute("SELECT epoch FROM devices WHERE kid=?", (kid,)).fetchone()
            if row is None:
                return set()
            found: set[int] = set()
            for i in range(0, len(want), 500):
                part = want[i : i + 500]
                found.update(
                    int(r[0])
                    for r in self._db.execute(
                        "SELECT seq FROM readings WHERE kid=? AND epoch=? AND seq IN"
                        f" ({','.join('?' * len(part))})",
                        (kid, row[0], *part),
                    )
                )
            return found

    def status(self, name: str) -> dict[str, Any]:
        """Registry entry, counters and last values of one device, JSON-friendly."""
        dev = self.device(name)
        with self._lock:
            r = self._db.execute(
                "SELECT status, last_seen, last_seq, accepted, refused, win_top, win_lost, epoch"
                " FROM devices WHERE kid=?",
                (dev.kid,),
            ).fetchone()
            st = self._db.execute(
                "SELECT name, value, unit, time, seq FROM state WHERE kid=? ORDER BY name",
                (dev.kid,),
            ).fetchall()
        return {
            "name": dev.name,
            "kid": dev.kid.hex(),
            "profile": dev.profile,
            "status": r[0],
            "fingerprint": dev.fingerprint,
            "last_seen": r[1],
            "last_seq": r[2],
            "accepted": r[3],
            "refused": r[4],
            "window_top": r[5],
            "window_lost": bool(r[6]),
            "epoch": r[7],
            "state": {
                n: {"value": json.loads(v), "unit": u, "time": t, "seq": s} for n, v, u, t, s in st
            },
        }

    def _newest(self, select: str, alias: str, name: str | None, limit: int) -> list[Any]:
        """The newest ``limit`` rows of ``select`` (its table as ``alias``, devices as ``d``),
        of one device or all, oldest first."""
        q = f"{select} WHERE ? IS NULL OR d.name = ? ORDER BY {alias}.id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(q, (name, name, limit)).fetchall()
        return list(reversed(rows))

    def readings(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._newest(
            "SELECT d.name, r.seq, r.received_at, r.time, r.provenance, r.payload FROM readings r"
            " JOIN devices d ON d.kid = r.kid",
            "r",
            name,
            limit,
        )
        return [
            {
                "device": n,
                "seq": s,
                "received_at": ra,
                "time": t,
                "provenance": p,
                "payload": json.loads(pl),
            }
            for n, s, ra, t, p, pl in rows
        ]

    def count_readings(self, name: str | None = None) -> int:
        with self._lock:
            if name is None:
                return int(self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM readings r JOIN devices d ON d.kid=r.kid WHERE d.name=?",
                    (name,),
                ).fetchone()[0]
            )

    def events(self, name: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._newest(
            "SELECT e.at, e.kid, d.name, e.seq, e.reason, e.detail, e.source FROM events e"
            " LEFT JOIN devices d ON d.kid = e.kid",
            "e",
            name,
            limit,
        )
        return [
            {
                "at": at,
                "kid": None if k is None else bytes(k).hex(),
                "device": n,
                "seq": s,
                "reason": r,
                "detail": d,
                "source": src,
            }
            for at, k, n, s, r, d, src in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

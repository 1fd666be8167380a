"""The embedded twin store: one SQLite file in WAL mode with ``synchronous=FULL``.

A committed reading survives a power cut. One connection per store object, guarded by a lock
(callers from several threads are serialised); several processes may share one file (SQLite's
write lock serialises their commits, and every commit re-checks the windows it advances).
The file and its -wal/-shm companions are created mode 0600: they hold decrypted readings.
The schema carries its version in ``PRAGMA user_version`` and migrates forward in code.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import math
import os
import sqlite3
import threading
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from .. import _sqlite
from .. import events as _events
from .. import keys as _keys
from .. import metrics as _metrics
from ..errors import (
    Conflict,
    ContextRetired,
    Replay,
    RevokedDevice,
    TwinlinkError,
    UnknownDevice,
    WindowLost,
)
from ..naming import check_device_name, printable
from ..oscore import MAX_KID_LEN, MAX_SEQ
from ..replay import DEFAULT_WINDOW, ReplayWindow
from ..transport.topics import check_topic_root
from ..values import dumps_json
from . import downlink as _downlink
from .base import (
    AGGREGATION_WINDOW,
    AUDIT_REASONS,
    PROFILE_LITE,
    PROFILE_SIGNED,
    SCHEMA_VERSION,
    Accepted,
    ClientIdInUse,
    DeviceRecord,
    DeviceStatus,
    Event,
    EventRow,
    ReadingRow,
    RegistryError,
    Retention,
    StorageError,
    TwinKeyMismatch,
    TwinStore,
    WindowState,
    context_key,
)

_T = TypeVar("_T")

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
    pending_salt BLOB,
    registered_at REAL NOT NULL,
    revoked_at REAL,
    win_size INTEGER NOT NULL,
    win_top INTEGER NOT NULL DEFAULT -1,
    win_bits BLOB NOT NULL,
    win_lost INTEGER NOT NULL DEFAULT 0,
    ack_seq INTEGER NOT NULL DEFAULT 0,  -- unused since acks v2 (no database counter)
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
    digest BLOB NOT NULL DEFAULT x'',
    flags TEXT,
    UNIQUE (kid, epoch, seq)
);
CREATE TABLE IF NOT EXISTS state (
    kid BLOB NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    unit TEXT,
    time REAL,
    seq INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
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
    source TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '',
    severity INTEGER NOT NULL DEFAULT 0,
    rule TEXT NOT NULL DEFAULT '',
    transport TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    first_time REAL,
    final_after REAL
);
CREATE INDEX IF NOT EXISTS events_kid ON events (kid, at);
CREATE INDEX IF NOT EXISTS events_kid_id ON events (kid, id);
CREATE INDEX IF NOT EXISTS readings_kid_id ON readings (kid, id);
CREATE INDEX IF NOT EXISTS readings_received ON readings (received_at);
CREATE TABLE IF NOT EXISTS qc_config (
    device TEXT NOT NULL DEFAULT '',
    series TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (device, series)
);
CREATE TABLE IF NOT EXISTS detect_state (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS retired_contexts (
    kid BLOB NOT NULL,
    context TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    retired_at REAL NOT NULL,
    PRIMARY KEY (kid, context)
);
"""

# Version 1 is the schema twinlink 0.1 wrote (user_version 0, meta 'schema' = '1').
_MIGRATE_1_TO_2 = """
ALTER TABLE devices ADD COLUMN pending_salt BLOB;
ALTER TABLE readings ADD COLUMN digest BLOB NOT NULL DEFAULT x'';
ALTER TABLE state ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS readings_received ON readings (received_at);
"""

_MIGRATE_2_TO_3 = """
ALTER TABLE events ADD COLUMN type TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN severity INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN rule TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN transport TEXT;
ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN first_time REAL;
ALTER TABLE events ADD COLUMN final_after REAL;
ALTER TABLE readings ADD COLUMN flags TEXT;
"""

# Version 4: per-device pages and counts through (kid, id) indexes (created by _SCHEMA).
_MIGRATE_3_TO_4 = """
CREATE INDEX IF NOT EXISTS events_kid_id ON events (kid, id);
CREATE INDEX IF NOT EXISTS readings_kid_id ON readings (kid, id);
"""

# Version 5: the downlink tables (desired state, reports, commands; twinlink.store.downlink).
_MIGRATE_4_TO_5 = _downlink.SCHEMA_SQLITE

# Version 6: firmware update transfers (twinlink.store.downlink, docs/PROTOCOL.md §21).
_MIGRATE_5_TO_6 = _downlink.SCHEMA_UPDATES_SQLITE

#: Rows one retention transaction deletes at most.
PRUNE_BATCH = 5000

_SAME: Any = object()  # "the event's own kid"

_DEVICE_COLS = (
    "name, kid, public_key, profile, status, master_salt, id_context, epoch, "
    "win_size, registered_at, pending_salt"
)


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
        None if row[10] is None else bytes(row[10]),
    )


class SQLiteStore(_downlink.DownlinkTables, TwinStore):
    """The embedded :class:`TwinStore` (see the module docstring).

    ``max_events`` bounds the event table (a flood of garbage frames must not fill the disk:
    only the newest are kept; per-device counters keep the totals; reaching the cap is recorded
    once as ``ingest.storage_full``). Floods of one refusal are aggregated
    (:data:`~twinlink.store.base.AGGREGATION_WINDOW`; ``aggregate=False`` turns that off).
    ``readonly`` opens an existing database for queries (a dashboard, a test watching another
    process's ingest).
    """

    def __init__(
        self,
        path: str,
        synchronous: str = "FULL",
        timeout: float = 10.0,
        max_events: int = 1_000_000,
        *,
        readonly: bool = False,
        aggregate: bool = True,
    ) -> None:
        self.path = str(path)
        self._setup(max_events, readonly, aggregate)
        try:
            self._db = _sqlite.connect(self.path, timeout=timeout, synchronous=synchronous,
                                       readonly=readonly)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open twin database {self.path}: {exc}") from None
        try:
            self._migrate()
        except StorageError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise StorageError(f"cannot open twin database {self.path}: {exc}") from None

    def _setup(self, max_events: int, readonly: bool, aggregate: bool) -> None:
        """The state every store object has before it connects (shared with subclasses)."""
        #: Aggregate floods of one refusal on the ingest path (off: one row per refusal).
        self.aggregate = aggregate
        self.max_events = max_events
        self.readonly = readonly
        self._agg: dict[tuple[Any, ...], list[Any]] = {}  # key -> [window end, aggregate row]
        #: Flood episodes per aggregation key (ingest.flood); set ``threshold`` to tune.
        self._floods = _events.FloodWatch(window=AGGREGATION_WINDOW)
        self._capped = False
        self._lock = threading.RLock()
        self._closed = False
        self._claims: dict[str, int] = {}  # ingest lock file -> fd

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- plumbing -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._db
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"twin database {self.path} has schema version {version}, newer than this "
                f"twinlink understands ({SCHEMA_VERSION}); upgrade twinlink")
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            raise StorageError(f"twin database {self.path} needs a schema upgrade; open it "
                               "once read-write (any twinlink command with --db) first")
        with _sqlite.transaction(db, self._lock):
            has_devices = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='devices'").fetchone()
            if version == 0 and has_devices:  # twinlink 0.1's schema (version 1)
                version = 1
            steps = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3, 3: _MIGRATE_3_TO_4,
                     4: _MIGRATE_4_TO_5, 5: _MIGRATE_5_TO_6}
            while version in steps:
                for stmt in steps[version].strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                version += 1
            for stmt in (_SCHEMA + ";" + _downlink.SCHEMA_SQLITE + ";"
                         + _downlink.SCHEMA_UPDATES_SQLITE).strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _guard(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` under the lock; a database failure becomes :class:`StorageError`."""
        with self._lock:
            if self._closed:
                raise StorageError(f"twin database {self.path} is closed")
            try:
                return fn()
            except sqlite3.Error as exc:
                raise StorageError(f"twin database {self.path}: {exc}") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a database failure becomes :class:`StorageError` (after the
        rollback), twinlink errors raised by the body pass through unchanged."""
        if self.readonly:
            raise StorageError(f"twin database {self.path} is open read-only")
        with self._lock:
            if self._closed:
                raise StorageError(f"twin database {self.path} is closed")
            try:
                with _sqlite.transaction(self._db, self._lock) as db:
                    yield db
            except sqlite3.Error as exc:
                raise StorageError(f"twin database {self.path}: {exc}") from None

    def _lock_devices(self, db: Any, kids: Iterable[bytes]) -> dict[bytes, Any]:
        """The device rows of ``kids`` (``_DEVICE_COLS``, win_top, win_bits, win_lost), read
        in one go and locked for the rest of the transaction before their windows are used
        (here ``BEGIN IMMEDIATE`` already holds the whole database's write lock)."""
        return self._device_rows(db, kids, "")

    @staticmethod
    def _device_rows(db: Any, kids: Iterable[bytes], suffix: str) -> dict[bytes, Any]:
        want, out = sorted(kids), {}
        for i in range(0, len(want), 500):
            part = want[i:i + 500]
            for r in db.execute(f"SELECT {_DEVICE_COLS}, win_top, win_bits, win_lost FROM devices"
                                f" WHERE kid IN ({','.join('?' * len(part))}) ORDER BY kid"
                                f"{suffix}", part):
                out[bytes(r[1])] = r
        return out

    def _device_row(self, db: sqlite3.Connection, name_or_kid: str | bytes) -> DeviceRecord:
        col = "name" if isinstance(name_or_kid, str) else "kid"
        row = db.execute(f"SELECT {_DEVICE_COLS} FROM devices WHERE {col}=?",
                         (name_or_kid,)).fetchone()
        if row is None:
            what = (printable(name_or_kid) if isinstance(name_or_kid, str)
                    else f"with kid {name_or_kid.hex()}")
            raise UnknownDevice(f"no device {what} is registered")
        return _record(row)

    # -- twin key binding ---------------------------------------------------------------------

    def twin_fingerprint(self) -> str | None:
        row = self._guard(lambda: self._db.execute(
            "SELECT value FROM meta WHERE key='twin_fingerprint'").fetchone())
        return None if row is None else str(row[0])

    def bind_twin_key(self, fingerprint: str) -> None:
        known = self.twin_fingerprint()
        if known is None and not self.readonly:
            with self._tx() as db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('twin_fingerprint', ?)",
                           (fingerprint,))
            known = self.twin_fingerprint()
        if known is not None and known != fingerprint:
            raise TwinKeyMismatch(
                f"twin key {fingerprint} does not match this database, which belongs to twin "
                f"key {known}")

    def topic_root(self) -> str | None:
        row = self._guard(lambda: self._db.execute(
            "SELECT value FROM meta WHERE key='topic_root'").fetchone())
        return None if row is None else str(row[0])

    def set_topic_root(self, root: str) -> None:
        check_topic_root(root)
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key='topic_root'").fetchone()
            if row is not None and row[0] != root:
                raise RegistryError(f"this twin database uses MQTT topic root {row[0]!r}, not "
                                    f"{root!r}")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('topic_root', ?)", (root,))

    # -- registry -----------------------------------------------------------------------------

    def next_kid(self) -> bytes:
        return self._guard(lambda: self._next_kid(self._db))

    @staticmethod
    def _next_kid(db: sqlite3.Connection) -> bytes:
        used = {bytes(r[0]) for r in db.execute("SELECT kid FROM devices")}
        n = 1
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
        check_device_name(name)
        if profile not in (PROFILE_SIGNED, PROFILE_LITE):
            raise ValueError(f"unknown profile {profile!r}")
        _keys.check_device_public(public_key)
        _check_context(master_salt, id_context)
        ReplayWindow(window)  # validates the size
        if kid is not None and not 1 <= len(kid) <= MAX_KID_LEN:
            raise ValueError("kid must be 1 to 6 bytes")
        with self._tx() as db:
            kid = kid if kid is not None else self._next_kid(db)
            taken = db.execute("SELECT name, kid FROM devices WHERE name=? OR kid=?",
                               (name, kid)).fetchone()
            if taken is not None:
                raise RegistryError(
                    f"a device named {name!r} or with kid {kid.hex()} is already registered "
                    f"(as {taken[0]!r}, kid {bytes(taken[1]).hex()})")
            db.execute(
                "INSERT INTO devices (kid, name, public_key, profile, master_salt, id_context,"
                " registered_at, win_size, win_bits) VALUES (?,?,?,?,?,?,?,?,?)",
                (kid, name, public_key, profile, master_salt, id_context, _time.time(), window,
                 bytes(window // 8)),
            )
            self._insert_events(db, [Event(
                "registered", f"device registered, profile {profile}, key "
                f"{_keys.fingerprint(public_key)}", kid)])
            return self._device_row(db, kid)

    def device(self, name_or_kid: str | bytes) -> DeviceRecord:
        return self._guard(lambda: self._device_row(self._db, name_or_kid))

    def devices(self) -> list[DeviceRecord]:
        rows = self._guard(lambda: self._db.execute(
            f"SELECT {_DEVICE_COLS} FROM devices ORDER BY name").fetchall())
        return [_record(r) for r in rows]

    def revoke(self, name: str, why: str = "") -> None:
        with self._tx() as db:
            dev = self._device_row(db, name)
            db.execute("UPDATE devices SET status='revoked', revoked_at=? WHERE kid=?",
                       (_time.time(), dev.kid))
            self._insert_events(db, [Event("revoked_by_operator", why or "revoked", dev.kid)])

    def reanchor(self, name: str, floor: int, force: bool = False, why: str = "") -> int:
        if type(floor) is not int or not 0 <= floor <= MAX_SEQ:
            raise RegistryError(f"floor must be an integer from 0 to {MAX_SEQ}")
        with self._tx() as db:
            dev = self._device_row(db, name)
            row = db.execute("SELECT win_top, last_seq FROM devices WHERE kid=?",
                             (dev.kid,)).fetchone()
            stored = db.execute("SELECT MAX(seq) FROM readings WHERE kid=? AND epoch=?",
                                (dev.kid, dev.epoch)).fetchone()[0]
            highest = max(int(row[0]), -1 if stored is None else int(stored))
            if floor <= highest and not force:
                raise RegistryError(
                    f"floor {floor} is not above sequence number {highest}, which {name} has "
                    "already used in its current context; choose a floor above it (or force, "
                    "knowing that numbers already stored are still refused as replays)")
            win = ReplayWindow.anchored(dev.window_size, floor)
            db.execute("UPDATE devices SET win_top=?, win_bits=?, win_lost=0 WHERE kid=?",
                       (win.top, win.to_bytes(), dev.kid))
            detail = f"window re-anchored at {floor} (highest used {highest})"
            if floor <= highest:
                detail += "; forced below numbers already used"
            if why:
                detail += f"; {why}"
            self._insert_events(db, [Event("reanchored", detail, dev.kid)])
            return int(row[0])

    def mark_window_lost(self, name: str) -> None:
        with self._tx() as db:
            dev = self._device_row(db, name)
            db.execute("UPDATE devices SET win_lost=1 WHERE kid=?", (dev.kid,))
            self._insert_events(db, [Event("window_marked_lost", "window marked lost by an "
                                           "operator; refused until re-anchored", dev.kid)])

    def context_status(self, kid: bytes, master_salt: bytes, id_context: bytes | None) -> str:
        def q() -> str:
            row = self._db.execute(
                "SELECT master_salt, id_context, pending_salt FROM devices WHERE kid=?",
                (kid,)).fetchone()
            if row is None:
                return "unknown"
            cur = (bytes(row[0]), None if row[1] is None else bytes(row[1]))
            if cur == (master_salt, id_context):
                return "current"
            if self._db.execute("SELECT 1 FROM retired_contexts WHERE kid=? AND context=?",
                                (kid, context_key(master_salt, id_context))).fetchone():
                return "retired"
            if row[2] is not None and bytes(row[2]) == master_salt:
                return "pending"
            return "unknown"

        return self._guard(q)

    def announce_rekey(self, name: str, master_salt: bytes) -> DeviceRecord:
        _check_context(master_salt, None)
        with self._tx() as db:
            dev = self._device_row(db, name)
            if master_salt == dev.master_salt or db.execute(
                    "SELECT 1 FROM retired_contexts WHERE kid=? AND context LIKE ?",
                    (dev.kid, master_salt.hex() + "|%")).fetchone():
                raise RegistryError(f"{name} already used this Master Salt; a re-key needs a "
                                    "new one")
            db.execute("UPDATE devices SET pending_salt=? WHERE kid=?", (master_salt, dev.kid))
            self._insert_events(db, [Event("rekey_announced",
                                           f"re-key to a new Master Salt announced (epoch "
                                           f"{dev.epoch})", dev.kid)])
            return self._device_row(db, dev.kid)

    def rekey(self, name: str, master_salt: bytes, id_context: bytes | None, *,
              announced: bool = False) -> DeviceRecord:
        _check_context(master_salt, id_context)
        with self._tx() as db:
            dev = self._device_row(db, name)
            if announced and dev.master_salt == master_salt and dev.pending_salt is None:
                return dev  # the device's first frame under the announced salt completed it
            new = context_key(master_salt, id_context)
            if new == context_key(dev.master_salt, dev.id_context) or db.execute(
                    "SELECT 1 FROM retired_contexts WHERE kid=? AND context=?",
                    (dev.kid, new)).fetchone():
                # Same key again with a fresh window would let every old frame be replayed.
                raise RegistryError(
                    f"{name} already used this Master Salt / ID Context; a re-key needs a new "
                    "one")
            self._switch_context(db, dev, master_salt, id_context)
            self._insert_events(db, [Event(
                "rekeyed", f"new security context by an operator, epoch {dev.epoch + 1}",
                dev.kid)])
            return self._device_row(db, dev.kid)

    @staticmethod
    def _switch_context(db: sqlite3.Connection, dev: DeviceRecord, master_salt: bytes,
                        id_context: bytes | None) -> None:
        """Retire the current context and install a new one with a fresh window (in a tx)."""
        db.execute("INSERT OR IGNORE INTO retired_contexts VALUES (?,?,?,?)",
                   (dev.kid, context_key(dev.master_salt, dev.id_context), dev.epoch,
                    _time.time()))
        pending = dev.pending_salt if dev.pending_salt != master_salt else None
        db.execute(
            "UPDATE devices SET master_salt=?, id_context=?, epoch=epoch+1, pending_salt=?,"
            " win_top=-1, win_bits=?, win_lost=0, ack_seq=0 WHERE kid=?",
            (master_salt, id_context, pending, bytes(dev.window_size // 8), dev.kid))

    # -- ingest -------------------------------------------------------------------------------

    def lookup(self, kid: bytes) -> WindowState:
        def q() -> WindowState:
            row = self._db.execute(
                f"SELECT {_DEVICE_COLS}, win_top, win_bits, win_lost FROM devices WHERE kid=?",
                (kid,)).fetchone()
            if row is None:
                raise UnknownDevice(f"no device with kid {kid.hex()} is registered")
            dev = _record(row)
            return WindowState(dev, ReplayWindow.from_state(dev.window_size, row[11], row[12]),
                               bool(row[13]))

        return self._guard(q)

    def commit(
        self, accepted: Sequence[Accepted], events: Sequence[Event]
    ) -> list[TwinlinkError | None]:
        try:
            return self._commit(accepted, events, careful=False)
        except _Collision:
            # A (kid, epoch, seq) was stored already although the window allowed it (after a
            # forced re-anchor, or a database edited by hand): redo with an explicit check.
            return self._commit(accepted, events, careful=True)

    def _commit(self, accepted: Sequence[Accepted], events: Sequence[Event],
                careful: bool) -> list[TwinlinkError | None]:
        results: list[TwinlinkError | None] = []
        with self._tx() as db:
            locked = self._lock_devices(db, {a.kid for a in accepted}
                                        | {e.kid for e in events if e.kid is not None})
            devs: dict[bytes, list[Any]] = {}  # kid -> [record, window, lost]
            rows: list[tuple[Any, ...]] = []
            extra = list(events)
            state_rows: dict[tuple[bytes, str], tuple[Any, ...]] = {}
            counts: dict[bytes, list[Any]] = {}
            reports: list[tuple[bytes, dict[str, Any]]] = []
            for a in accepted:
                entry = devs.get(a.kid)
                if entry is None:
                    r = locked.get(a.kid)
                    if r is None:
                        gone = UnknownDevice("device was removed")
                        results.append(gone)
                        extra.append(Event(gone.reason, str(gone), a.kid, a.seq, a.source))
                        continue
                    dev0 = _record(r)
                    entry = devs[a.kid] = [
                        dev0, ReplayWindow.from_state(dev0.window_size, r[11], r[12]), bool(r[13])]
                err: TwinlinkError | None = None
                try:
                    dev, win, lost = entry
                    if dev.status != "active":
                        raise RevokedDevice(f"device {dev.name} was revoked")
                    ctx = ((dev.master_salt, dev.id_context) if a.master_salt is None
                           else (a.master_salt, a.id_context))
                    if ctx != (dev.master_salt, dev.id_context):
                        key = context_key(*ctx)
                        retired = db.execute(
                            "SELECT 1 FROM retired_contexts WHERE kid=? AND context=?",
                            (a.kid, key)).fetchone()
                        if retired or not a.renew or dev.profile == PROFILE_LITE:
                            raise ContextRetired(
                                f"frame of {dev.name} was sealed under a security context the "
                                "twin has retired")
                        used = win.top >= 0 or db.execute(
                            "SELECT 1 FROM readings WHERE kid=? AND epoch=? LIMIT 1",
                            (a.kid, dev.epoch)).fetchone() is not None
                        self._switch_context(db, dev, ctx[0], ctx[1])
                        shown = "-" if ctx[1] is None else ctx[1].hex()
                        if ctx[0] == dev.pending_salt and ctx[1] == dev.id_context:
                            extra.append(Event(
                                "context_renewed", f"{dev.name} renewed its security context "
                                f"(epoch {dev.epoch + 1}, kid context {shown}): its first frame "
                                "under the Master Salt an operator re-key announced", a.kid,
                                a.seq, a.source))
                        else:
                            extra.append(Event(
                                "context_renewed", f"{dev.name} renewed its security context "
                                f"(epoch {dev.epoch + 1}, kid context {shown}): its sequence "
                                "state was lost, restored or copied", a.kid, a.seq, a.source)
                                if used else Event(
                                "context_started", f"{dev.name} started its first security "
                                f"context in use (epoch {dev.epoch + 1}, kid context {shown})",
                                a.kid, a.seq, a.source))
                        dev = self._device_row(db, a.kid)
                        win, lost = ReplayWindow(dev.window_size), False
                        entry[:] = [dev, win, lost]
                    if lost:
                        raise WindowLost("replay window lost; re-anchor the device")
                    win.check(a.seq)
                    if careful:
                        prior = db.execute(
                            "SELECT digest FROM readings WHERE kid=? AND epoch=? AND seq=?",
                            (a.kid, dev.epoch, a.seq)).fetchone()
                        if prior is not None:
                            if a.digest and bytes(prior[0]) and bytes(prior[0]) != a.digest:
                                raise Conflict(f"sequence number {a.seq} of {dev.name} was "
                                               "stored before with different content")
                            raise Replay(f"sequence number {a.seq} was already accepted")
                    win.update(a.seq)
                except TwinlinkError as exc:
                    err = exc
                    extra.append(Event(exc.reason, str(exc), a.kid, a.seq, a.source))
                results.append(err)
                if err is not None:
                    continue
                epoch = a.epoch = entry[0].epoch  # a renewal moved it on: report the truth
                c = counts.setdefault(a.kid, [0, None, None])
                c[0] += 1
                c[1], c[2] = a.received_at, a.seq
                qc = None
                if a.flags is not None:
                    qc = dumps_json({"f": a.flags, "t": a.qc_tests} if a.qc_tests
                                    else {"f": a.flags})
                rows.append((a.kid, epoch, a.seq, a.received_at, a.time, a.provenance, a.source,
                             a.payload_json or dumps_json(a.payload), a.plaintext, a.digest, qc))
                records, rep = _downlink.split_reports(a.records)
                if rep:  # a device's downlink reports (tl:*): applied below, not state
                    reports.append((a.kid, rep))
                for rec in records:
                    name, value, unit, t = rec[0], rec[1], rec[2], rec[3]
                    # Newest (epoch, seq) per (device, name) within the batch: one upsert each.
                    prev = state_rows.get((a.kid, name))
                    if prev is None or (epoch, a.seq) >= (prev[6], prev[5]):
                        state_rows[(a.kid, name)] = (a.kid, name, value, unit, t, a.seq, epoch,
                                                     a.received_at)
            before = db.total_changes
            db.executemany(
                "INSERT INTO readings (kid, epoch, seq, received_at, time, provenance, source,"
                " payload, plaintext, digest, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (kid, epoch, seq) DO NOTHING",
                rows,
            )
            if db.total_changes - before != len(rows):
                raise _Collision
            db.executemany(
                "INSERT INTO state (kid, name, value, unit, time, seq, epoch, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (kid, name) DO UPDATE SET"
                " value=excluded.value, unit=excluded.unit, time=excluded.time,"
                " seq=excluded.seq, epoch=excluded.epoch, updated_at=excluded.updated_at"
                " WHERE excluded.epoch > state.epoch"
                " OR (excluded.epoch = state.epoch AND excluded.seq >= state.seq)",
                [(k, n, dumps_json(v), u, t, q, e, r)
                 for k, n, v, u, t, q, e, r in state_rows.values()],
            )
            if reports:
                extra.extend(self._apply_reports(db, reports, _time.time()))
            # One statement per kind, not per device (a round trip each on a database server).
            db.executemany("UPDATE devices SET win_top=?, win_bits=? WHERE kid=?",
                           [(win.top, win.to_bytes(), kid)
                            for kid, (_dev, win, _lost) in sorted(devs.items())])
            db.executemany(
                "UPDATE devices SET accepted=accepted+?, last_seen=?, last_seq=? WHERE kid=?",
                [(acc, seen, seq, kid) for kid, (acc, seen, seq) in sorted(counts.items())])
            self._insert_events(db, extra, aggregate=self.aggregate)
        return results

    def _insert_events(self, db: sqlite3.Connection, events: Iterable[Event],
                       aggregate: bool = True) -> None:
        """Insert events with their catalogue type, aggregating floods of one refusal.

        A refusal (outcome ``blocked``) repeated with the same key — the device's kid and the
        type, or, for frames that name no known device, the transport and the type — within
        :data:`AGGREGATION_WINDOW` seconds becomes: the first occurrence as its own event
        (final at once, so an alert is not delayed), then one aggregate row per window whose
        ``count`` grows and which is final (``final_after``) when the window ends. Counts add up
        to the number of refusals exactly. The window state is this process's; several ingest
        processes each aggregate their own share.
        """
        rows: list[tuple[Any, ...]] = []
        groups: dict[tuple[Any, ...], list[Event]] = {}
        refused: dict[bytes, int] = {}
        for e in events:
            et = _event_type(e.reason)
            if e.kid is not None and et.outcome == "blocked" and not et.audit:
                refused[e.kid] = refused.get(e.kid, 0) + e.count
            if aggregate and et.outcome == "blocked" and not et.audit:
                anonymous = e.kid is None or et.name in ("frame.unknown_device",
                                                         "frame.malformed")
                key = ((_transport(e.source), et.name) if anonymous
                       else (bytes(e.kid), et.name))  # type: ignore[arg-type]
                groups.setdefault(key, []).append(e)
            else:
                rows.append(self._event_row(e, et, e.count, e.at, None))
        if rows:
            db.executemany(_INSERT_EVENT, rows)
        for key, evs in groups.items():
            self._aggregate(db, key, evs)
        if aggregate:  # flood episodes describe the aggregation (after the refusals)
            floods = self._flood_rows(groups)
            if floods:
                db.executemany(_INSERT_EVENT, floods)
        db.executemany("UPDATE devices SET refused=refused+? WHERE kid=?",
                       [(n, k) for k, n in sorted(refused.items())])
        over = db.execute("SELECT EXISTS (SELECT 1 FROM events WHERE id <= "
                          "(SELECT MAX(id) FROM events) - ?)", (self.max_events,)).fetchone()[0]
        if over and not self._capped:
            # Warn once (per database) that the cap is reached and old events now go.
            self._capped = db.execute(
                "SELECT 1 FROM meta WHERE key='events_capped'").fetchone() is not None
            if not self._capped:
                self._capped = True
                db.execute("INSERT OR IGNORE INTO meta VALUES ('events_capped', ?)",
                           (repr(_time.time()),))
                e = Event("ingest.storage_full",
                          f"the event table reached its cap of {self.max_events} events; the "
                          "oldest are dropped from now on (device counters keep the totals)")
                db.execute(_INSERT_EVENT, self._event_row(e, _event_type(e.reason), 1, e.at,
                                                          None))
        if over:
            db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                       (self.max_events,))

    def _flood_rows(self, groups: dict[tuple[Any, ...], list[Event]]) -> list[tuple[Any, ...]]:
        """``ingest.flood`` / ``ingest.flood.cleared`` rows for the flood episodes these
        refusals (grouped by aggregation key) begin or end (:class:`twinlink.events.FloodWatch`:
        counts in memory, no query)."""
        notices = [n for key, evs in groups.items()
                   for n in self._floods.observe(key, sum(e.count for e in evs), evs[0].at,
                                                 evs[-1].at, evs[-1].source)]
        # The clock of the refusals themselves (the wall clock when there are none).
        now = max((evs[-1].at for evs in groups.values()), default=_time.time())
        notices += self._floods.expire(now)
        out = []
        for n in notices:
            kid = n.key[0] if isinstance(n.key[0], bytes) else None
            e = Event(n.type, n.detail, kid, None, n.source, n.at)
            out.append(self._event_row(e, _event_type(n.type), 1, n.at, None))
            _metrics.event(n.type)
        return out

    def _aggregate(self, db: sqlite3.Connection, key: tuple[Any, ...], evs: list[Event]) -> None:
        window = self._agg.get(key)
        first = evs[0]
        if window is None or first.at >= window[0]:
            # A new window: the first occurrence stands alone, final at once.
            et = _event_type(first.reason)
            db.execute(_INSERT_EVENT, self._event_row(first, et, first.count, first.at, None))
            window = self._agg[key] = [first.at + AGGREGATION_WINDOW, None]
            evs = evs[1:]
            if not evs:
                return
        last, n = evs[-1], sum(e.count for e in evs)
        if window[1] is not None:
            cur = db.execute(
                "UPDATE events SET count=count+?, at=?, seq=?, detail=? WHERE id=?",
                (n, last.at, last.seq, last.detail, window[1]))
            if cur.rowcount == 1:
                return
        et = _event_type(last.reason)
        kid = None if isinstance(key[0], str) else last.kid
        row = self._event_row(last, et, n, evs[0].at, window[0], kid=kid)
        window[1] = db.execute(_INSERT_EVENT, row).lastrowid

    @staticmethod
    def _event_row(e: Event, et: Any, count: int, first_time: float,
                   final_after: float | None, kid: Any = _SAME) -> tuple[Any, ...]:
        return (e.at, e.kid if kid is _SAME else kid, e.seq, et.reason, e.detail, e.source,
                et.name, et.outcome, et.severity, et.rule, _transport(e.source), count,
                first_time, final_after)

    def record_events(self, events: Iterable[Event], *, aggregate: bool = True) -> None:
        evs = list(events)
        if not evs:
            return
        with self._tx() as db:
            self._insert_events(db, evs, aggregate=aggregate)

    def stored(self, kid: bytes, epoch: int, seqs: Iterable[int]) -> dict[int, bytes]:
        want = sorted(set(seqs))

        def q() -> dict[int, bytes]:
            found: dict[int, bytes] = {}
            for i in range(0, len(want), 500):
                part = want[i : i + 500]
                found.update(
                    (int(r[0]), bytes(r[1]))
                    for r in self._db.execute(
                        "SELECT seq, digest FROM readings WHERE kid=? AND epoch=? AND seq IN"
                        f" ({','.join('?' * len(part))})",
                        (kid, epoch, *part),
                    )
                )
            return found

        return self._guard(q) if want else {}

    def claim_ingest(self, client_id: str) -> None:
        """A lock file beside the database per client id, held until :meth:`close`."""
        path = ingest_lock_path(self.path, client_id)
        with self._lock:
            if path in self._claims:
                return
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StorageError(f"cannot create the ingest lock {path}: {exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ClientIdInUse(
                    f"another ingest on {self.path} runs with client id {client_id!r}; give "
                    "every ingest process its own --client-id") from None
            self._claims[path] = fd

    # -- retention ----------------------------------------------------------------------------

    def set_retention(self, readings_days: float | None, events_days: float | None) -> None:
        for days in (readings_days, events_days):
            if days is not None and not 0 < days < math.inf:
                raise ValueError("a retention limit must be a number of days > 0 (or none)")
        with self._tx() as db:
            for key, days in (("retention_readings_days", readings_days),
                              ("retention_events_days", events_days)):
                db.execute("DELETE FROM meta WHERE key=?", (key,))
                if days is not None:
                    db.execute("INSERT INTO meta VALUES (?, ?)", (key, repr(float(days))))

    def retention(self) -> Retention:
        rows = dict(self._guard(lambda: self._db.execute(
            "SELECT key, value FROM meta WHERE key IN ('retention_readings_days',"
            " 'retention_events_days')").fetchall()))
        got = {k: None if v is None else float(v) for k, v in rows.items()}
        return {"readings_days": got.get("retention_readings_days"),
                "events_days": got.get("retention_events_days")}

    def prune(self, now: float | None = None) -> tuple[int, int]:
        limits = self.retention()
        now = _time.time() if now is None else now
        done = [0, 0]
        audit = ",".join("?" * len(AUDIT_REASONS))
        for i, (days, sql, extra) in enumerate((
                (limits["readings_days"], "SELECT id FROM readings WHERE received_at < ?", ()),
                (limits["events_days"], f"SELECT id FROM events WHERE at < ? AND reason NOT IN"
                                        f" ({audit})", tuple(sorted(AUDIT_REASONS))))):
            if days is None:
                continue
            table = "readings" if i == 0 else "events"
            args = (now - days * 86400.0, *extra, PRUNE_BATCH)
            while True:  # short transactions: the ingest's commits go on in between
                with self._tx() as db:
                    n = db.execute(f"DELETE FROM {table} WHERE id IN ({sql} LIMIT ?)",
                                   args).rowcount
                done[i] += n
                if n < PRUNE_BATCH:
                    break
        return done[0], done[1]

    # -- detection ----------------------------------------------------------------------------

    def qc_config(self) -> dict[str, Any]:
        row = self._guard(lambda: self._db.execute(
            "SELECT config FROM qc_config WHERE device='' AND series=''").fetchone())
        return {} if row is None else dict(json.loads(row[0]))

    def set_qc_config(self, config: dict[str, Any], why: str = "",
                      device: str | None = None) -> None:
        text = json.dumps(config, sort_keys=True, allow_nan=False, separators=(",", ":"))
        with self._tx() as db:
            kid = None if device is None else self._device_row(db, device).kid
            db.execute("INSERT INTO qc_config VALUES ('', '', ?, ?) ON CONFLICT (device, series)"
                       " DO UPDATE SET config=excluded.config, updated_at=excluded.updated_at",
                       (text, _time.time()))
            self._insert_events(db, [Event("qc_configured", why or "detection configuration "
                                           f"replaced ({len(text)} bytes)", kid)])

    def save_detect_state(self, learned: dict[str, Any] | None,
                          views: dict[str, dict[str, Any]]) -> None:
        now = _time.time()
        rows = [(name, dumps_json(view), now) for name, view in views.items() if name]
        if learned is not None:
            rows.append(("", dumps_json(learned), now))
        if not rows:
            return
        with self._tx() as db:
            db.executemany("INSERT INTO detect_state VALUES (?,?,?) ON CONFLICT (device) DO"
                           " UPDATE SET state=excluded.state, updated_at=excluded.updated_at",
                           rows)

    def detect_state(self) -> dict[str, Any] | None:
        row = self._guard(lambda: self._db.execute(
            "SELECT state FROM detect_state WHERE device=''").fetchone())
        return None if row is None else dict(json.loads(row[0]))

    # -- queries ------------------------------------------------------------------------------

    def status(self, name: str) -> DeviceStatus:
        def q() -> DeviceStatus:
            dev = self._device_row(self._db, name)
            r = self._db.execute(
                "SELECT status, last_seen, last_seq, accepted, refused, win_top, win_lost, epoch"
                " FROM devices WHERE kid=?", (dev.kid,)).fetchone()
            st = self._db.execute(
                "SELECT name, value, unit, time, seq, epoch FROM state WHERE kid=? ORDER BY name",
                (dev.kid,)).fetchall()
            qc = self._db.execute("SELECT state FROM detect_state WHERE device=?",
                                  (dev.name,)).fetchone()
            return {
                "name": dev.name,
                "kid": dev.kid.hex(),
                "profile": dev.profile,
                "status": r[0],
                "fingerprint": dev.fingerprint,
                "registered_at": dev.registered_at,
                "last_seen": r[1],
                "last_seq": r[2],
                "accepted": r[3],
                "refused": r[4],
                "window_top": r[5],
                "window_lost": bool(r[6]),
                "epoch": r[7],
                "id_context": None if dev.id_context is None else dev.id_context.hex(),
                "state": {n: {"value": json.loads(v), "unit": u, "time": t, "seq": s, "epoch": e}
                          for n, v, u, t, s, e in st},
                "qc": json.loads(qc[0]) if qc else {},
            }

        return self._guard(q)

    def _page(self, select: str, alias: str, name: str | None, limit: int,
              after_id: int | None, extra: str = "", params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of ``select`` (its table as ``alias``, devices as ``d``), oldest first: the newest
        ``limit`` matching, or the first ``limit`` after ``after_id``. One device's rows are
        found through the (kid, id) index, not by scanning the table for its name."""
        if name is None:
            where, args = f"1 = 1{extra}", tuple(params)
        else:
            row = self._guard(lambda: self._db.execute(
                "SELECT kid FROM devices WHERE name=?", (name,)).fetchone())
            if row is None:
                return []
            where, args = f"{alias}.kid = ?{extra}", (row[0], *params)
        if after_id is not None:
            q = f"{select} WHERE {where} AND {alias}.id > ? ORDER BY {alias}.id LIMIT ?"
            return self._guard(lambda: self._db.execute(q, (*args, after_id, limit)).fetchall())
        q = f"{select} WHERE {where} ORDER BY {alias}.id DESC LIMIT ?"
        rows = self._guard(lambda: self._db.execute(q, (*args, limit)).fetchall())
        return list(reversed(rows))

    def readings(
        self,
        name: str | None = None,
        limit: int = 100,
        *,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
    ) -> list[ReadingRow]:
        rows = self._page(
            "SELECT r.id, d.name, r.seq, r.epoch, r.received_at, r.time, r.provenance, r.source,"
            " r.payload, r.flags FROM readings r JOIN devices d ON d.kid = r.kid",
            "r", name, limit, after_id, *_time_filter(since, until),
        )
        out: list[ReadingRow] = []
        for i, n, s, e, ra, t, p, src, pl, fl in rows:
            qc = json.loads(fl) if fl else {}
            out.append({"id": i, "device": n, "seq": s, "epoch": e, "received_at": ra,
                        "time": t, "provenance": p, "source": src, "payload": json.loads(pl),
                        "flags": qc.get("f"), "qc_tests": qc.get("t")})
        return out

    def events(
        self, name: str | None = None, limit: int = 100, *, after_id: int | None = None,
        audit: bool = True,
    ) -> list[EventRow]:
        extra, params = "", ()  # type: tuple[str, tuple[str, ...]]
        if not audit:
            extra = f" AND e.reason NOT IN ({','.join('?' * len(AUDIT_REASONS))})"
            params = tuple(sorted(AUDIT_REASONS))
        rows = self._page(
            "SELECT e.id, e.at, e.kid, d.name, e.seq, e.reason, e.detail, e.source, e.type,"
            " e.outcome, e.severity, e.rule, e.transport, e.count, e.first_time, e.final_after"
            " FROM events e LEFT JOIN devices d ON d.kid = e.kid",
            "e", name, limit, after_id, extra, params,
        )
        out: list[EventRow] = []
        for (i, at, k, n, sq, r, d, src, typ, outc, sev, rule, tr, cnt, first,
             final) in rows:
            if not typ:  # a row from before the catalogue (schema 2): derive its type
                et = _event_type(r)
                typ, outc, sev, rule, tr = (et.name, et.outcome, et.severity, et.rule,
                                            _transport(src))
            out.append({
                "id": i, "at": at, "time": at, "first_time": at if first is None else first,
                "last_time": at, "count": cnt, "type": typ, "outcome": outc, "severity": sev,
                "rule": rule, "transport": tr, "kid": None if k is None else bytes(k).hex(),
                "device": n, "seq": sq, "reason": r, "detail": d, "source": src,
                "final_after": final,
            })
        return out

    def count_readings(self, name: str | None = None) -> int:
        return self._count("readings", name)

    def count_events(self, name: str | None = None) -> int:
        return self._count("events", name)

    def _count(self, table: str, name: str | None) -> int:
        def q() -> int:
            if name is None:
                return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            row = self._db.execute("SELECT kid FROM devices WHERE name=?", (name,)).fetchone()
            if row is None:
                return 0
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table} WHERE kid=?",
                                        (row[0],)).fetchone()[0])

        return self._guard(q)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
                for fd in self._claims.values():
                    os.close(fd)  # releases the flock
                self._claims.clear()

    def __enter__(self) -> SQLiteStore:
        return self


class _Collision(Exception):
    """Internal: the fast insert found a stored (kid, epoch, seq); redo the commit carefully."""


_INSERT_EVENT = (
    "INSERT INTO events (at, kid, seq, reason, detail, source, type, outcome, severity, rule,"
    " transport, count, first_time, final_after) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def _event_type(reason: str) -> Any:
    """The catalogue type of an event's reason (a legacy short name or a dotted type)."""
    if "." in reason:
        try:
            return _events.get(reason)
        except KeyError:
            pass
    return _events.type_for_reason(reason)


def _transport(source: str) -> str | None:
    """The transport a source names: the part before its first ':' (``mqtt:<topic>``)."""
    head = source.split(":", 1)[0]
    return head if head in ("mqtt", "serial", "stdin", "api") else None


def ingest_lock_path(db_path: str, client_id: str) -> str:
    """The lock file an ingest with ``client_id`` holds beside the SQLite file while it runs."""
    return f"{db_path}.ingest-{hashlib.sha256(client_id.encode()).hexdigest()[:16]}.lock"


def ingest_lock_glob(db_path: str) -> str:
    """A glob matching every ingest lock file of ``db_path``."""
    return f"{glob.escape(db_path)}.ingest-*.lock"


def _name_filter(name: str | None) -> tuple[str, tuple[Any, ...]]:
    """A WHERE condition on the device name (``d.name``), or none: built here rather than as
    ``? IS NULL OR …`` so that an index can serve it and every SQL database can type it."""
    return ("d.name = ?", (name,)) if name is not None else ("1 = 1", ())


def _time_filter(since: float | None, until: float | None) -> tuple[str, tuple[Any, ...]]:
    """`` AND`` conditions on ``r.received_at`` in [since, until) and their parameters."""
    where, args = "", []  # type: tuple[str, list[Any]]
    if since is not None:
        where += " AND r.received_at >= ?"
        args.append(since)
    if until is not None:
        where += " AND r.received_at < ?"
        args.append(until)
    return where, tuple(args)


def _check_context(master_salt: bytes, id_context: bytes | None) -> None:
    if type(master_salt) is not bytes or len(master_salt) > 64:
        raise ValueError("Master Salt must be bytes, at most 64")
    if id_context is not None and (type(id_context) is not bytes
                                   or not 1 <= len(id_context) <= 16):
        raise ValueError("ID Context must be 1 to 16 bytes (or absent)")

"""The device's durable outbox: sealed frames wait here until the twin acknowledges them.

SQLite in WAL mode with ``synchronous=FULL``: once :meth:`Outbox.put` returns, the frame survives
a power cut, and it leaves only through :meth:`Outbox.release` (an authenticated end-to-end ack,
or a broker PUBACK for links that hold no device key). The stored bytes are the original frame:
a resend is the same frame, never a re-seal, so the twin's replay window drops the duplicate.

Bounded: ``capacity`` frames. When full, :meth:`put` refuses the whole batch with
:class:`OutboxFull` and stores none of it; a reading is never dropped silently, and nothing
already queued is ever evicted. (:class:`~twinlink.delivery.Delivery` with
``when_full="block"`` waits for room first.)
A lock file stops two processes from draining one outbox. What leaves the outbox, and when, is
:mod:`twinlink.delivery`'s policy; this module only stores.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import _sqlite
from . import frame as _frame
from .errors import StateLocked, TransportError, TwinlinkError
from .replay import ReplayWindow

DEFAULT_CAPACITY = 100_000
#: Replay window over the twin's ack sequence numbers (acks from several ingest processes may
#: arrive slightly out of order; a window accepts them once each).
ACK_WINDOW = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    kid BLOB NOT NULL,
    seq INTEGER NOT NULL,
    frame BLOB NOT NULL,
    added REAL NOT NULL,
    PRIMARY KEY (kid, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ack_window (
    kid BLOB PRIMARY KEY,
    top INTEGER NOT NULL,
    bits BLOB NOT NULL
);
"""


class OutboxFull(TransportError):
    """The outbox holds ``capacity`` unacknowledged frames; the new ones were not queued."""

    reason = "outbox_full"


class Outbox:
    """A bounded, durable queue of sealed frames keyed by (kid, seq). Thread-safe."""

    def __init__(self, path: str | os.PathLike[str], capacity: int = DEFAULT_CAPACITY,
                 timeout: float = 10.0) -> None:
        if capacity < 1:
            raise ValueError("outbox capacity must be at least 1")
        self.path = Path(path)
        self.capacity = capacity
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lockfd)
            raise StateLocked(f"outbox {self.path} is in use by another process") from None
        try:
            self._db = _sqlite.connect(str(self.path), timeout=timeout)  # WAL, FULL, 0600
        except (sqlite3.Error, OSError) as exc:
            os.close(self._lockfd)
            raise TwinlinkError(f"cannot open outbox {self.path}: {exc}") from None
        try:
            self._db.executescript(_SCHEMA)
            self._count = int(self._db.execute("SELECT COUNT(*) FROM frames").fetchone()[0])
        except sqlite3.Error as exc:
            self._db.close()
            os.close(self._lockfd)
            raise TwinlinkError(f"cannot open outbox {self.path}: {exc}") from None

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, {self._count}/{self.capacity})"

    def __len__(self) -> int:
        return self._count

    def room(self) -> int:
        return max(0, self.capacity - self._count)

    def put(self, frames: Sequence[bytes], kid: bytes | None = None) -> int:
        """Durably queue sealed frames (all or none); return how many were new.

        Raises :class:`OutboxFull` if they do not all fit, :class:`MalformedFrame` for bytes
        that are not a frame and ValueError (with ``kid``) for a frame of another device; nothing
        is queued then either. Re-queuing a frame already queued is a no-op.
        """
        rows = []
        for fr in frames:
            p = _frame.parse(bytes(fr))
            if kid is not None and p.kid != kid:
                raise ValueError("frame belongs to another device than this link's bundle")
            rows.append((p.kid, p.seq, bytes(fr)))
        if not rows:
            return 0
        now = time.time()
        with self._lock:
            if self._count + len(rows) > self.capacity:
                raise OutboxFull(
                    f"outbox {self.path.name} is full ({self._count}/{self.capacity} unacknowledged"
                    f" frames); {len(rows)} new frame(s) refused")
            with _sqlite.transaction(self._db, self._lock) as db:
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO frames VALUES (?,?,?,?)",
                               [(k, s, f, now) for k, s, f in rows])
                added = db.total_changes - before
            self._count += added
            return added

    def kids(self) -> list[bytes]:
        with self._lock:
            return [bytes(r[0]) for r in self._db.execute("SELECT DISTINCT kid FROM frames")]

    def head(self, kid: bytes, span: int) -> list[tuple[int, bytes]]:
        """Queued frames of ``kid`` with seq < (lowest queued seq) + ``span``, in seq order."""
        with self._lock:
            row = self._db.execute("SELECT MIN(seq) FROM frames WHERE kid=?", (kid,)).fetchone()
            if row is None or row[0] is None:
                return []
            return [(int(s), bytes(f)) for s, f in self._db.execute(
                "SELECT seq, frame FROM frames WHERE kid=? AND seq<? ORDER BY seq",
                (kid, int(row[0]) + span))]

    def seqs(self, kid: bytes | None = None) -> list[int]:
        with self._lock:
            if kid is None:
                return [int(r[0]) for r in self._db.execute("SELECT seq FROM frames ORDER BY seq")]
            return [int(r[0]) for r in self._db.execute(
                "SELECT seq FROM frames WHERE kid=? ORDER BY seq", (kid,))]

    def release(self, kid: bytes, ranges: Iterable[tuple[int, int]],
                ack_seq: int | None = None) -> int:
        """Remove the frames of ``kid`` inside ``ranges``; return how many were removed.

        With ``ack_seq`` (the twin's ack PIV), first check it against the persisted ack replay
        window and raise :class:`~twinlink.errors.Replay`/``TooOld`` without removing anything
        if it was seen; the window update and the removal commit together.
        """
        rs = list(ranges)
        with self._lock:
            with _sqlite.transaction(self._db, self._lock) as db:
                if ack_seq is not None:
                    row = db.execute("SELECT top, bits FROM ack_window WHERE kid=?",
                                     (kid,)).fetchone()
                    win = (ReplayWindow.from_state(ACK_WINDOW, row[0], row[1]) if row
                           else ReplayWindow(ACK_WINDOW))
                    win.accept(ack_seq)
                    db.execute("INSERT OR REPLACE INTO ack_window VALUES (?,?,?)",
                               (kid, win.top, win.to_bytes()))
                before = db.total_changes
                db.executemany("DELETE FROM frames WHERE kid=? AND seq BETWEEN ? AND ?",
                               [(kid, lo, hi) for lo, hi in rs])
                removed = db.total_changes - before
            self._count -= removed
            return removed

    def close(self) -> None:
        with self._lock:
            if self._lockfd < 0:
                return
            self._db.close()
            os.close(self._lockfd)
            self._lockfd = -1

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

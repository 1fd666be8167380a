"""The device's durable outbox: sealed frames wait here until the twin acknowledges them.

SQLite in WAL mode with ``synchronous=FULL``: once :meth:`Outbox.put` returns, the frame survives
a power cut. Frames are keyed by (kid, ID Context, seq) — a device that renewed its security
context (docs/PROTOCOL.md §10.2) may have frames of two contexts queued, with the same sequence
numbers — and each is stored with its digest (SHA-256(frame)[:8], :func:`twinlink.ack.digest`).
A frame leaves the outbox in one of three ways:

- :meth:`Outbox.settle` with an authenticated ack (:mod:`twinlink.ack`): a *stored* entry whose
  digest equals the queued frame's releases it; a *refused* entry whose digest matches moves it
  to the **dead letters** (with the twin's reason; :meth:`Outbox.dead_letters` lists them), so
  one reading the twin will never store does not wedge the ones after it. An entry whose
  sequence number is queued with another digest releases nothing: it is reported as a conflict
  (a clone, or a lost sender state, under the same identity).
- :meth:`Outbox.release` on a hop acknowledgement (a gateway without the device's key).
- Never by eviction: when ``capacity`` frames are queued, :meth:`put` refuses the whole batch
  with :class:`OutboxFull` and stores none of it. (:class:`~twinlink.delivery.Delivery` with
  ``when_full="block"`` waits for room first.)

The stored bytes are the original frame: a resend is the same frame, never a re-seal, so the
twin's replay window drops the duplicate. A lock file stops two processes from draining one
outbox. What leaves the outbox, and when, is :mod:`twinlink.delivery`'s policy; this module
only stores and matches digests. The ID Context of the base context is stored as ``b''`` (a
real one is 1 to 16 bytes).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from . import _sqlite
from . import frame as _frame
from .ack import digest as frame_digest
from .errors import StateLocked, TransportError, TwinlinkError

__all__ = ["DEFAULT_CAPACITY", "DeadLetter", "Outbox", "OutboxFull", "Queued", "Settled"]

DEFAULT_CAPACITY = 100_000
#: ``PRAGMA user_version`` of the outbox this program writes. Version 1 (twinlink 0.1, frames
#: keyed by (kid, seq), an ack replay window) is migrated on open.
OUTBOX_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    kid BLOB NOT NULL,
    ctx BLOB NOT NULL,
    seq INTEGER NOT NULL,
    frame BLOB NOT NULL,
    digest BLOB NOT NULL,
    ord INTEGER NOT NULL,
    added REAL NOT NULL,
    PRIMARY KEY (kid, ctx, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS frames_order ON frames (kid, ord);
CREATE TABLE IF NOT EXISTS dead_letters (
    kid BLOB NOT NULL,
    ctx BLOB NOT NULL,
    seq INTEGER NOT NULL,
    frame BLOB NOT NULL,
    digest BLOB NOT NULL,
    reason TEXT NOT NULL,
    added REAL NOT NULL,
    refused_at REAL NOT NULL,
    PRIMARY KEY (kid, ctx, seq)
) WITHOUT ROWID;
"""


class OutboxFull(TransportError):
    """The outbox holds ``capacity`` unacknowledged frames; the new ones were not queued."""

    reason = "outbox_full"


class Queued(NamedTuple):
    """One queued frame: its context (``b''`` = base), sequence number and bytes."""

    ctx: bytes
    seq: int
    frame: bytes


@dataclass(frozen=True)
class DeadLetter:
    """A frame the twin refused for good (authenticated NACK), kept for the operator."""

    kid: bytes
    kid_context: bytes | None
    seq: int
    reason: str
    digest: bytes
    frame: bytes = field(repr=False)
    added: float
    refused_at: float


@dataclass
class Settled:
    """What one ack did to the outbox: frames released (stored) and dead-lettered (refused),
    by seq, and conflicts: (seq, queued digest, digest the ack names)."""

    released: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    conflicts: list[tuple[int, bytes, bytes]] = field(default_factory=list)


def _ctx(kid_context: bytes | None) -> bytes:
    return b"" if kid_context is None else kid_context


class Outbox:
    """A bounded, durable queue of sealed frames keyed by (kid, ID Context, seq). Thread-safe."""

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
            self._migrate()
            self._count = int(self._db.execute("SELECT COUNT(*) FROM frames").fetchone()[0])
            self._ord = int(self._db.execute("SELECT COALESCE(MAX(ord), 0) FROM frames")
                            .fetchone()[0])
        except (sqlite3.Error, TwinlinkError) as exc:
            self._db.close()
            os.close(self._lockfd)
            raise TwinlinkError(f"cannot open outbox {self.path}: {exc}") from None

    def _migrate(self) -> None:
        db = self._db
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > OUTBOX_VERSION:
            raise TwinlinkError(f"outbox version {version} is newer than this twinlink "
                                f"understands ({OUTBOX_VERSION}); upgrade twinlink")
        if version == OUTBOX_VERSION:
            return
        with _sqlite.transaction(db, self._lock):
            old = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='frames'"
                             ).fetchone() is not None
            if old:  # version 1: frames (kid, seq, frame, added); re-key them by context
                db.execute("ALTER TABLE frames RENAME TO frames_v1")
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)
            if old:
                rows = db.execute("SELECT frame, added FROM frames_v1 ORDER BY added, seq")
                for n, (fr, added) in enumerate(rows.fetchall(), 1):
                    try:
                        p = _frame.parse(bytes(fr))
                    except TwinlinkError:
                        continue  # cannot have been queued by put(); nothing to deliver
                    db.execute("INSERT OR IGNORE INTO frames VALUES (?,?,?,?,?,?,?)",
                               (p.kid, _ctx(p.kid_context), p.seq, bytes(fr),
                                frame_digest(bytes(fr)), n, added))
                db.execute("DROP TABLE frames_v1")
            db.execute("DROP TABLE IF EXISTS ack_window")
            db.execute(f"PRAGMA user_version={OUTBOX_VERSION}")

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
            b = bytes(fr)
            p = _frame.parse(b)
            if kid is not None and p.kid != kid:
                raise ValueError("frame belongs to another device than this link's bundle")
            rows.append((p.kid, _ctx(p.kid_context), p.seq, b, frame_digest(b)))
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
                db.executemany("INSERT OR IGNORE INTO frames VALUES (?,?,?,?,?,?,?)",
                               [(*r, self._ord + i, now) for i, r in enumerate(rows, 1)])
                added = db.total_changes - before
            self._ord += len(rows)
            self._count += added
            return added

    def kids(self) -> list[bytes]:
        with self._lock:
            return [bytes(r[0]) for r in self._db.execute("SELECT DISTINCT kid FROM frames")]

    def contexts(self, kid: bytes) -> list[bytes]:
        """The contexts of ``kid`` with queued frames, oldest first (by when their first
        still-queued frame was queued); ``b''`` is the base context."""
        with self._lock:
            return [bytes(r[0]) for r in self._db.execute(
                "SELECT ctx FROM frames WHERE kid=? GROUP BY ctx ORDER BY MIN(ord)", (kid,))]

    def head(self, kid: bytes, span: int) -> list[Queued]:
        """The frames to have in flight for ``kid``: those of its *oldest* queued context only
        with seq < (that context's lowest queued seq) + ``span``, in seq order.

        A newer context's frames wait until every older-context frame has left the outbox: the
        twin adopts a new context on its first frame and retires the old one, after which the
        old context's frames could never be stored.
        """
        with self._lock:
            # Both lookups use an index: the oldest queued frame's context, then its lowest seq.
            row = self._db.execute("SELECT ctx FROM frames WHERE kid=? ORDER BY ord LIMIT 1",
                                   (kid,)).fetchone()
            if row is None:
                return []
            ctx = bytes(row[0])
            low = int(self._db.execute("SELECT MIN(seq) FROM frames WHERE kid=? AND ctx=?",
                                       (kid, ctx)).fetchone()[0])
            return [Queued(ctx, int(s), bytes(f)) for s, f in self._db.execute(
                "SELECT seq, frame FROM frames WHERE kid=? AND ctx=? AND seq<? ORDER BY seq",
                (kid, ctx, low + span))]

    def seqs(self, kid: bytes | None = None, kid_context: bytes | None = None) -> list[int]:
        """Queued sequence numbers (of one device and context, or all), ascending."""
        with self._lock:
            if kid is None:
                return [int(r[0]) for r in self._db.execute("SELECT seq FROM frames ORDER BY seq")]
            return [int(r[0]) for r in self._db.execute(
                "SELECT seq FROM frames WHERE kid=? AND ctx=? ORDER BY seq",
                (kid, _ctx(kid_context)))]

    def pending_by_context(self) -> dict[tuple[bytes, bytes | None], int]:
        """Queued frames per (kid, kid context)."""
        with self._lock:
            return {(bytes(k), bytes(c) or None): int(n) for k, c, n in self._db.execute(
                "SELECT kid, ctx, COUNT(*) FROM frames GROUP BY kid, ctx ORDER BY MIN(ord)")}

    def settle(self, kid: bytes, kid_context: bytes | None, stored: Iterable[tuple[int, bytes]],
               refused: Iterable[tuple[int, bytes, str]] = ()) -> Settled:
        """Apply one authenticated ack for frames of ``kid`` under ``kid_context``, atomically.

        A stored entry releases the queued frame with that seq only if the digests match; a
        refused entry moves it to the dead letters (with the reason) only if they match. A
        mismatch changes nothing and is returned as a conflict; an entry naming no queued frame
        is ignored (an ack for a frame released before, or a replayed ack).
        """
        ctx = _ctx(kid_context)
        out = Settled()
        st, rf = dict(stored), {s: (d, r) for s, d, r in refused}
        want = sorted(set(st) | set(rf))
        if not want:
            return out
        with self._lock:
            with _sqlite.transaction(self._db, self._lock) as db:
                queued: dict[int, tuple[bytes, bytes, float]] = {}
                for i in range(0, len(want), 500):
                    part = want[i:i + 500]
                    for s, d, f, a in db.execute(
                            "SELECT seq, digest, frame, added FROM frames WHERE kid=? AND ctx=? "
                            f"AND seq IN ({','.join('?' * len(part))})", (kid, ctx, *part)):
                        queued[int(s)] = (bytes(d), bytes(f), float(a))
                now = time.time()
                for seq, (have, fr, added) in sorted(queued.items()):
                    # One ack may name a seq twice (the twin stored one frame under it and
                    # refused another as a conflict): the queued frame's digest decides.
                    if st.get(seq) == have:
                        out.released.append(seq)
                    elif seq in rf and rf[seq][0] == have:
                        db.execute("INSERT OR REPLACE INTO dead_letters VALUES (?,?,?,?,?,?,?,?)",
                                   (kid, ctx, seq, fr, have, rf[seq][1], added, now))
                        out.dead.append(seq)
                    else:
                        out.conflicts.append((seq, have, st[seq] if seq in st else rf[seq][0]))
                gone = out.released + out.dead
                db.executemany("DELETE FROM frames WHERE kid=? AND ctx=? AND seq=?",
                               [(kid, ctx, s) for s in gone])
            self._count -= len(gone)
        return out

    def release(self, keys: Iterable[tuple[bytes, bytes, int]]) -> int:
        """Remove the frames with these (kid, ctx, seq) keys (a hop acknowledgement, without
        an end-to-end one); return how many were removed."""
        ks = list(keys)
        with self._lock:
            with _sqlite.transaction(self._db, self._lock) as db:
                before = db.total_changes
                db.executemany("DELETE FROM frames WHERE kid=? AND ctx=? AND seq=?", ks)
                removed = db.total_changes - before
            self._count -= removed
            return removed

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Frames the twin refused for good, oldest refusal first (at most ``limit``)."""
        q = ("SELECT kid, ctx, seq, reason, digest, frame, added, refused_at FROM dead_letters "
             "ORDER BY refused_at, kid, ctx, seq")
        args: tuple[int, ...] = ()
        if limit is not None:
            q += " LIMIT ?"
            args = (limit,)
        with self._lock:
            return [DeadLetter(bytes(k), bytes(c) or None, int(s), str(r), bytes(d), bytes(f),
                               float(a), float(t))
                    for k, c, s, r, d, f, a, t in self._db.execute(q, args)]

    def oldest_added(self) -> float | None:
        """When the oldest queued frame was queued (epoch seconds), None if the outbox is
        empty."""
        with self._lock:
            row = self._db.execute("SELECT MIN(added) FROM frames").fetchone()
            return None if row[0] is None else float(row[0])

    def count_dead_letters(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

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


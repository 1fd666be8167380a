"""Moving a twin from its SQLite file to PostgreSQL (``twinlink twin migrate``).

Everything moves: the registry with its windows, contexts and counters, retired contexts,
readings, latest values, events (ids kept, so a SIEM cursor stays valid), detection settings and
state, and the twin key binding. The copy is one PostgreSQL transaction (all or nothing) and
holds SQLite's write lock for its whole duration, so the source cannot change under it; an
ingest that still runs on the source is refused beforehand (its client-id lock is held).
"""

from __future__ import annotations

import fcntl
import glob
import os
import sqlite3
from collections.abc import Callable
from typing import Any

from .base import StorageError
from .postgres import PostgresStore
from .sqlite import SQLiteStore, ingest_lock_glob

__all__ = ["IngestRunning", "TABLES", "migrate_sqlite_to_postgres"]

#: Tables copied, in this order (none references another; the order only reads well).
TABLES = ("meta", "devices", "retired_contexts", "state", "readings", "events", "qc_config",
          "detect_state")
_IDENTITY = ("readings", "events")
_NOT_COPIED_META = ("schema", "events_capped")


class IngestRunning(StorageError):
    """A process writes (or is ready to write) the source database; stop it first."""


def _ingest_running(path: str) -> bool:
    """True while any ingest holds its client-id lock beside the SQLite file."""
    for lock in glob.glob(ingest_lock_glob(path)):
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # also releases our probe's lock
    return False


def migrate_sqlite_to_postgres(source: str, target_url: str,
                               progress: Callable[[str, int], None] | None = None
                               ) -> dict[str, int]:
    """Copy the twin in the SQLite file ``source`` into the empty PostgreSQL database
    ``target_url``; returns rows copied per table.

    Raises :class:`IngestRunning` while an ingest runs on the source or another process holds
    its write lock, :class:`StorageError` when the source is missing or unreadable, the target
    already holds a twin, or the copy fails (then nothing was stored in the target),
    :class:`~twinlink.store.StoreUnavailable` when the target cannot be reached.
    """
    if not os.path.exists(source):
        raise StorageError(f"no twin database at {source}")
    if _ingest_running(source):
        raise IngestRunning(f"an ingest is running on {source}; stop every 'twinlink serve' on it "
                            "first (the copy must not miss readings stored meanwhile)")
    SQLiteStore(source).close()  # brings an older file to the current schema
    src = sqlite3.connect(source, timeout=0.5, isolation_level=None)
    try:
        try:
            src.execute("BEGIN IMMEDIATE")  # no writer from here to the end of the copy
        except sqlite3.OperationalError:
            raise IngestRunning(f"another process is writing {source}; stop it first") from None
        try:
            if _ingest_running(source):  # started between the check and the lock
                raise IngestRunning(f"an ingest started on {source}; stop it first")
            return _copy(src, target_url, progress)
        finally:
            src.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {source}: {exc}") from None
    finally:
        src.close()


def _copy(src: sqlite3.Connection, target_url: str,
          progress: Callable[[str, int], None] | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    with PostgresStore(target_url) as dst:
        if dst.devices() or dst.count_readings():
            raise StorageError(f"{dst.path} already holds a twin; migrate into an empty "
                               "database")

        def copy_all(_: Any) -> None:
            conn = dst._db.conn
            with conn.transaction():
                conn.execute("LOCK TABLE devices, readings, events IN EXCLUSIVE MODE")
                conn.execute("DELETE FROM meta WHERE key <> 'schema'")
                for table in TABLES:
                    counts[table] = _copy_table(src, conn, table)
                    if progress is not None:
                        progress(table, counts[table])
                for table in _IDENTITY:
                    conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                 f"GREATEST((SELECT MAX(id) FROM {table}), 1))")
                for table in TABLES:
                    if table == "meta":
                        continue
                    n = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    if n != counts[table]:
                        raise StorageError(f"copied {counts[table]} rows of {table} but the "
                                           f"target holds {n}; nothing was committed")

        dst._guard(lambda: copy_all(None))
    return counts


def _copy_table(src: sqlite3.Connection, conn: Any, table: str) -> int:
    src_cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    dst_cols = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND table_schema = current_schema()", (table,))}
    missing = [c for c in src_cols if c not in dst_cols]
    if missing:
        raise StorageError(f"the target's {table} table has no column {missing[0]!r}: its "
                           "schema does not match this twinlink's")
    cols = ", ".join(src_cols)
    where = ""
    if table == "meta":
        where = f" WHERE key NOT IN ({', '.join(repr(k) for k in _NOT_COPIED_META)})"
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        for row in src.execute(f"SELECT {cols} FROM {table}{where}"):
            copy.write_row(row)
            n += 1
    return n

"""SQLite plumbing shared by the twin store and the device outbox: private files, one
connection setup, and the one transaction helper (``BEGIN IMMEDIATE`` … ``COMMIT``, or
``ROLLBACK`` on any exception)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from .fileio import create_private


def connect(path: str, *, timeout: float = 10.0, synchronous: str = "FULL",
            readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (transactions are explicit) with WAL and the given
    ``synchronous`` level. A new file is created mode 0600 first (SQLite gives its -wal and
    -shm files the database file's mode), an existing one we own is tightened to 0600.
    ``readonly`` opens an existing database for queries only. Raises sqlite3.Error/OSError."""
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                             check_same_thread=False)
    else:
        create_private(path)
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                             check_same_thread=False)
    try:
        if not readonly:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, lock: threading.RLock | threading.Lock
                ) -> Iterator[sqlite3.Connection]:
    """Hold ``lock`` and run the body in one ``BEGIN IMMEDIATE`` transaction: commit when the
    body returns, roll back when it raises (the exception propagates unchanged)."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT (disk full, I/O error): leave no transaction open.
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

"""The twin store: device registry, replay windows, readings, twin state and security events.

:class:`TwinStore` (in :mod:`twinlink.store.base`) is the interface every caller uses — the
twin, the CLI, the demo and the tests; :class:`SQLiteStore` (:mod:`twinlink.store.sqlite`,
WAL, the embedded default) and :class:`~twinlink.store.postgres.PostgresStore` (shared by many
ingest processes; the ``pg`` extra) implement it, chosen by :func:`open_store` from the
``--db`` value.
"""

from __future__ import annotations

import os

from .base import (
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
    SeriesState,
    StorageError,
    StoreUnavailable,
    TwinKeyMismatch,
    TwinStore,
    WindowState,
    context_key,
)
from .sqlite import SQLiteStore

__all__ = [
    "AUDIT_REASONS",
    "PROFILE_LITE",
    "PROFILE_SIGNED",
    "SCHEMA_VERSION",
    "Accepted",
    "ClientIdInUse",
    "DeviceRecord",
    "DeviceStatus",
    "Event",
    "EventRow",
    "ReadingRow",
    "RegistryError",
    "Retention",
    "SQLiteStore",
    "SeriesState",
    "StorageError",
    "StoreUnavailable",
    "TwinKeyMismatch",
    "TwinStore",
    "WindowState",
    "context_key",
    "open_store",
]


def open_store(db: str | os.PathLike[str], *, readonly: bool = False,
               must_exist: bool = False) -> TwinStore:
    """The store a ``--db`` value names: a file path (or ``sqlite:///path``) is SQLite, a
    ``postgresql://`` URL is PostgreSQL (:mod:`twinlink.store.postgres`).

    ``must_exist`` refuses to create a new database (:class:`StorageError` with a hint);
    :class:`StoreUnavailable` when a database server cannot be reached or refuses us.
    """
    text = os.fspath(db)
    if text.lower().startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(text, readonly=readonly, must_exist=must_exist)
    if text.startswith("sqlite://"):
        # SQLAlchemy's form: sqlite:///relative.db, sqlite:////absolute/path.db
        text = text[len("sqlite://"):]
        text = text[1:] if text.startswith("/") else text
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise StorageError(f"unsupported database URL scheme {scheme!r}; give a SQLite file "
                           "path or a postgresql:// URL")
    if (must_exist or readonly) and not os.path.exists(text):
        raise StorageError(f"no twin database at {text} — create one with 'twinlink provision "
                           "NAME --db PATH …' or give the right --db")
    return SQLiteStore(text, readonly=readonly)

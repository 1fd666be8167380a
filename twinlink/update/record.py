"""The install record: which manifest a device last accepted, kept so it survives a crash.

One JSON file per device identity, ``<state_dir>/<name>-<kid hex>.update``, replaced only
through :func:`twinlink.fileio.atomic_write` (temp file, fsync, rename, directory fsync): a
reader sees the whole old record or the whole new one, never a mix, and a SIGKILL or power cut
at any instant leaves one of them (``tests/test_update_crash.py`` kills writers at random
points to show it). A ``check`` field (SHA-256 of the rest) catches a file damaged behind the
rename's back; a damaged record is refused, never treated as "nothing installed", because
forgetting the installed sequence number would re-open rollbacks. An exclusive ``flock`` on
``<record>.lock`` makes check-then-write atomic against a second process.

The record is not tied to the security context: a telemetry re-key keeps the update history.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StateLocked
from ..fileio import atomic_write, read_regular
from ..keys import Bundle
from .errors import UpdateStateError
from .manifest import MAX_KEYS, MAX_UINT

RECORD_FORMAT = "twinlink-update-state/1"


@dataclass(frozen=True)
class InstallRecord:
    """The last accepted manifest: its seq, image digest and size, whether the installer
    finished, and the current update keys when a manifest rotated them (None: the bundle's)."""

    seq: int
    digest: bytes
    size: int
    installed: bool
    keys: tuple[bytes, ...] | None = None

    def body(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "seq": self.seq, "digest": self.digest.hex(),
                "size": self.size, "installed": self.installed,
                "keys": None if self.keys is None else [k.hex() for k in self.keys]}


def _check(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class RecordStore:
    """The install record of one device identity in ``state_dir``."""

    def __init__(self, state_dir: str | os.PathLike[str], bundle: Bundle) -> None:
        self.path = Path(state_dir) / f"{bundle.name}-{bundle.kid.hex()}.update"

    @contextlib.contextmanager
    def locked(self) -> Iterator[RecordStore]:
        """Hold the record's lock; :class:`StateLocked` if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateLocked(f"another process is installing an update ({self.path}.lock)"
                                  ) from None
            yield self
        finally:
            os.close(fd)  # closing drops the flock

    def load(self) -> InstallRecord | None:
        """The record, or None if this device never accepted an update.

        Raises :class:`UpdateStateError` if the file exists but is unreadable or damaged."""
        try:
            raw, _ = read_regular(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UpdateStateError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
            check = doc.pop("check")
            if doc.get("format") != RECORD_FORMAT or check != _check(doc):
                raise ValueError
            keys = doc["keys"]
            rec = InstallRecord(
                int(doc["seq"]), bytes.fromhex(doc["digest"]), int(doc["size"]),
                bool(doc["installed"]),
                None if keys is None else tuple(bytes.fromhex(k) for k in keys))
            if (not 0 <= rec.seq <= MAX_UINT or len(rec.digest) != 32
                    or not 0 <= rec.size <= MAX_UINT
                    or (rec.keys is not None and not 1 <= len(rec.keys) <= MAX_KEYS)
                    or any(len(k) != 32 for k in rec.keys or ())):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpdateStateError(f"{self.path} is damaged; refusing updates until an "
                                   "operator restores it (it guards against rollbacks)") from None
        return rec

    def save(self, rec: InstallRecord) -> None:
        """Replace the record atomically and durably (returns only once it is on disk)."""
        body = rec.body()
        body["check"] = _check(rec.body())
        try:
            atomic_write(self.path, json.dumps(body, sort_keys=True) + "\n", 0o600)
        except OSError as exc:
            raise UpdateStateError(f"cannot write {self.path}: {exc.strerror or exc}") from None

"""The device side of an update: authenticate, check, persist, then hand off to an installer.

:func:`verify_and_record` is what ``Device.verify_update`` and ``twinlink update verify`` run.
In this order, stopping at the first failure with nothing changed on the device:

1. parse the manifest strictly; any unknown critical field is refused;
2. the signature must verify under a trusted update key (the bundle's, or the set a verified
   manifest rotated to);
3. vendor-id and class-id must be the device's; the announced size must fit the device;
4. under the record's lock: seq below the recorded one is a rollback; equal seq with another
   image is a conflict; equal seq with the same image already installed is a no-op;
5. the image must have exactly the announced size and SHA-256;
6. the new record (seq, digest, size, rotated keys) is written durably — *before* anything
   reports success or the installer runs (TUF's lesson: persist what you trust before use);
7. the installer hook runs; only when it returns is the record marked installed.

A crash after 6 leaves the new seq recorded but not installed: the same manifest runs the
installer again (installers must be idempotent). The recorded seq never decreases.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..keys import Bundle
from .errors import ImageTooLarge, InstallFailed, Rollback, SeqConflict, WrongClass, WrongVendor
from .image import verify_file
from .manifest import Manifest, authenticate
from .record import InstallRecord, RecordStore
from .trust import Trust, trust_from_bundle

#: ``installer(image_path, manifest)``: install the verified image; raise to report failure.
Installer = Callable[[Path, Manifest], None]


@dataclass(frozen=True)
class UpdateResult:
    """What :func:`verify_and_record` did: ``status`` is ``"installed"`` (the installer ran),
    ``"accepted"`` (no installer: verified and recorded, the caller installs) or
    ``"already_installed"`` (this manifest was installed before: nothing done)."""

    status: str
    seq: int
    previous_seq: int | None
    digest: bytes
    size: int
    keys_rotated: bool

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "status": self.status, "seq": self.seq,
                "previous_seq": self.previous_seq, "digest": self.digest.hex(),
                "size": self.size, "keys_rotated": self.keys_rotated}


def check_manifest(trust: Trust, record: InstallRecord | None,
                   manifest: bytes | bytearray | memoryview) -> tuple[Manifest, bool]:
    """Steps 1-4 without touching the device: return (manifest, same), where ``same`` means
    it repeats the recorded seq with the same image. Raises an
    :class:`~twinlink.update.UpdateRefused` subclass for every refusal.

    A delivery layer calls this before it accepts the first chunk of an image."""
    trusted = record.keys if record is not None and record.keys else trust.keys
    m = authenticate(manifest, trusted)
    if m.vendor_id != trust.vendor_id:
        raise WrongVendor(f"manifest is for another vendor (device vendor {trust.vendor!r})")
    if m.class_id != trust.class_id:
        raise WrongClass(f"manifest is for another device class (device class "
                         f"{trust.model!r})")
    if trust.max_image is not None and m.size > trust.max_image:
        raise ImageTooLarge(f"manifest announces {m.size} bytes, this device takes at most "
                            f"{trust.max_image}")
    if record is None or m.seq > record.seq:
        return m, False
    if m.seq < record.seq:
        raise Rollback(f"manifest seq {m.seq} is below the installed seq {record.seq}")
    if m.digest != record.digest or m.size != record.size:
        raise SeqConflict(f"manifest repeats seq {m.seq} for a different image")
    return m, True


def verify_and_record(bundle: Bundle, state_dir: str | os.PathLike[str],
                      manifest: bytes | bytearray | memoryview,
                      image_path: str | os.PathLike[str],
                      installer: Installer | None = None) -> UpdateResult:
    """Verify ``manifest`` and the image at ``image_path`` for this device, persist the new
    sequence number crash-safely, then run ``installer`` (see the module doc for the order).

    Raises an :class:`~twinlink.update.UpdateRefused` subclass (nothing changed),
    :class:`~twinlink.errors.KeyFileError` (the bundle has no usable update trust),
    :class:`~twinlink.errors.StateLocked`, :class:`~twinlink.update.UpdateStateError`,
    :class:`~twinlink.update.InstallFailed` (recorded, installer failed) or OSError (the
    image cannot be read; nothing changed)."""
    trust = trust_from_bundle(bundle)
    store = RecordStore(state_dir, bundle)
    with store.locked():
        record = store.load()
        m, same = check_manifest(trust, record, manifest)
        previous = None if record is None else record.seq
        if same and record is not None and record.installed:
            return UpdateResult("already_installed", m.seq, previous, m.digest, m.size, False)
        verify_file(image_path, m)
        keys = m.next_keys or (record.keys if record is not None else None)
        pending = InstallRecord(m.seq, m.digest, m.size, installed=installer is None,
                                keys=keys or None)
        if not same or installer is None:
            store.save(pending)
        if installer is not None:
            try:
                installer(Path(image_path), m)
            except Exception as exc:
                raise InstallFailed(f"seq {m.seq} is recorded but the installer failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
            store.save(InstallRecord(m.seq, m.digest, m.size, True, pending.keys))
    return UpdateResult("installed" if installer is not None else "accepted", m.seq, previous,
                        m.digest, m.size, bool(m.next_keys) and not same)

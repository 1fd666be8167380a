"""Signed firmware updates: SUIT-shaped manifests in COSE_Sign1/Ed25519, verified on the device
against rollback, with a crash-safe install record. See docs/UPDATES.md.

Signing side (offline)::

    seed = update.generate_key("keys")                    # keys/update.key (0600), update.pub
    raw = update.make_manifest(seed, seq=7, vendor_id=update.vendor_uuid("example.com"), ...)

Device side::

    update.verify_and_record(bundle, state_dir, raw, "image.bin", installer=my_installer)

Modules: :mod:`.manifest` (format, signing, strict parsing), :mod:`.trust` (keys, vendor and
class in the bundle), :mod:`.record` (the install record), :mod:`.image` (streaming digest,
staging), :mod:`.verify` (the checks and their order), :mod:`.errors` (one class per reason).
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import keys as _keys
from .errors import (
    C_CODES,
    ChunkGap,
    DigestMismatch,
    ImageSizeMismatch,
    ImageTooLarge,
    InstallFailed,
    MalformedManifest,
    ManifestSignatureInvalid,
    Rollback,
    SeqConflict,
    UnknownCritical,
    UntrustedKey,
    UpdateRefused,
    UpdateStateError,
    WrongClass,
    WrongVendor,
)
from .image import ImageStaging, ImageVerifier, verify_file
from .manifest import (
    MAX_MANIFEST,
    Manifest,
    authenticate,
    class_uuid,
    key_id,
    make_manifest,
    parse,
    vendor_uuid,
)
from .record import InstallRecord, RecordStore
from .trust import Trust, add_update_trust, load_update_public, trust_from_bundle
from .verify import Installer, UpdateResult, check_manifest, verify_and_record

__all__ = [
    "C_CODES", "MAX_MANIFEST", "ChunkGap", "DigestMismatch", "ImageSizeMismatch",
    "ImageStaging", "ImageTooLarge", "ImageVerifier", "InstallFailed", "InstallRecord",
    "Installer", "MalformedManifest", "Manifest", "ManifestSignatureInvalid", "RecordStore",
    "Rollback", "SeqConflict", "Trust", "UnknownCritical", "UntrustedKey", "UpdateRefused",
    "UpdateResult", "UpdateStateError", "WrongClass", "WrongVendor", "add_update_trust",
    "authenticate", "check_manifest", "class_uuid", "generate_key", "hash_file", "key_id",
    "load_update_key", "load_update_public", "make_manifest", "parse", "trust_from_bundle",
    "vendor_uuid", "verify_and_record", "verify_file",
]


def generate_key(out: str | os.PathLike[str], name: str = "update", force: bool = False
                 ) -> tuple[Path, Path, bytes]:
    """Write a new Ed25519 update-signing key: ``<out>/<name>.key`` (PKCS#8 PEM, mode 0600)
    and ``<out>/<name>.pub``; return (key path, public path, raw public key).

    Keep the private key offline: it is not the twin key and never goes to a device."""
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    key = _keys.DeviceKey.generate()
    key_path, pub_path = outp / f"{name}.key", outp / f"{name}.pub"
    _keys.write_private(key_path, key.to_pem(), force)
    _keys.write_public(pub_path, key.public_pem(), force)
    return key_path, pub_path, key.public


def load_update_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte Ed25519 seed of an update-signing key file (mode 0600 required)."""
    return _keys.load_device_key(path).seed


def hash_file(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """(SHA-256, size) of a file, read in chunks."""
    import hashlib

    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            sha.update(chunk)
            size += len(chunk)
    return sha.digest(), size

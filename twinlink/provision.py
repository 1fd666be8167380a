"""Provisioning: a new device identity (key pair + bundle) and its registration with a twin.

``provision("pump-17", "keys/twin.pub", "keys", db="twin.db")`` writes ``keys/pump-17.key``
(0600), ``keys/pump-17.pub`` and ``keys/pump-17.device`` (0600) and registers the device.
The name is validated first (:mod:`twinlink.naming`), so it can never point outside ``out``.
Order matters for ``force``: the new files are written under temporary names, the device is
registered, and only then do they replace the old ones — a refused registration never costs a
working bundle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import keys
from .errors import KeyFileError
from .fileio import atomic_write, fsync_dir
from .naming import check_device_name
from .store import PROFILE_LITE, PROFILE_SIGNED, TwinStore, open_store


def bundle_paths(name: str, out: str | os.PathLike[str]) -> dict[str, Path]:
    """The three files :func:`provision` writes for ``name`` in ``out``."""
    check_device_name(name)
    o = Path(out)
    return {"key": o / f"{name}.key", "pub": o / f"{name}.pub", "bundle": o / f"{name}.device"}


def provision(
    name: str,
    twin_pub: str | os.PathLike[str] | bytes,
    out: str | os.PathLike[str],
    db: str | os.PathLike[str] | TwinStore | None = None,
    kid: bytes | None = None,
    lite: bool = False,
    chunk: int | None = None,
    force: bool = False,
    settings: dict[str, Any] | None = None,
    update_keys: list[bytes] | None = None,
    vendor: str | None = None,
    device_class: str | None = None,
) -> keys.Bundle:
    """Create a device key pair and bundle in ``out``; register it in ``db`` if given.

    ``twin_pub`` is the twin's public key file (or its raw 32 bytes). Raises
    :class:`~twinlink.naming.InvalidName`, :class:`~twinlink.errors.KeyFileError` (files exist
    and ``force`` is not set, or cannot be written), :class:`~twinlink.store.RegistryError`
    (name or kid taken), :class:`~twinlink.store.TwinKeyMismatch` (``db`` belongs to another
    twin key). On any failure nothing is registered and no existing file is changed.
    ``update_keys`` (raw Ed25519 public keys of the offline update-signing key(s)), ``vendor``
    and ``device_class`` put firmware-update trust into the bundle (docs/UPDATES.md).
    """
    paths = bundle_paths(name, out)
    if not force:
        for p in paths.values():
            if os.path.lexists(p):
                raise KeyFileError(f"{p} already exists; refusing to overwrite a device "
                                   "identity (use force to replace it)")
    twin_public = (twin_pub if isinstance(twin_pub, bytes)
                   else keys.load_public(twin_pub, "x25519"))
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    dk = keys.DeviceKey.generate()
    store = db if isinstance(db, TwinStore) or db is None else open_store(db)
    staged: dict[str, Path] = {}
    try:
        if store is not None:
            store.bind_twin_key(keys.fingerprint(twin_public))
        if kid is None:
            kid = store.next_kid() if store is not None else os.urandom(4)
        bundle_settings: dict[str, Any] = {"stream": "t", "master_salt": "", "id_context": None}
        if chunk:
            bundle_settings["sequence_chunk"] = chunk
        bundle_settings.update(settings or {})
        if update_keys:
            from .update import add_update_trust

            if not vendor or not device_class:
                raise ValueError("update keys need a vendor and a device class")
            add_update_trust(bundle_settings, update_keys, vendor, device_class)
        bundle = keys.Bundle(name, kid, twin_public, dk, bundle_settings)
        if lite:
            ctx = bundle.context()
            bundle = keys.Bundle(name, kid, twin_public, None, bundle_settings, ctx.key,
                                 ctx.common_iv)
        contents = {"key": (dk.to_pem(), 0o600), "pub": (dk.public_pem(), 0o644),
                    "bundle": (bundle.to_json(), 0o600)}
        for what, (text, mode) in contents.items():
            tmp = paths[what].with_name(f".{paths[what].name}.new")
            atomic_write(tmp, text, mode)
            staged[what] = tmp
        if store is not None:
            store.register(name, dk.public, kid, PROFILE_LITE if lite else PROFILE_SIGNED)
        for what, tmp in staged.items():
            os.replace(tmp, paths[what])
        staged.clear()
        fsync_dir(outp)
        return bundle
    finally:
        for tmp in staged.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if store is not None and store is not db:
            store.close()

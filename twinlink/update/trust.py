"""What a device trusts for updates: its update keys, vendor and class, kept in the bundle.

Provisioning calls :func:`add_update_trust` to put them into the bundle's settings
(``settings["update"] = {"keys": [hex, ...], "vendor": ..., "class": ..., "max_image": n}``);
:func:`trust_from_bundle` reads them back. The keys here are the *initial* trust anchors: a
verified manifest may rotate them (the device's install record then holds the current set).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import KeyFileError
from ..keys import Bundle, check_device_public, fingerprint, load_public
from .manifest import MAX_KEYS, MAX_UINT, class_uuid, vendor_uuid

SETTINGS_KEY = "update"


@dataclass(frozen=True)
class Trust:
    """A device's update trust: Ed25519 update keys, SUIT vendor-id and class-id, capacity."""

    keys: tuple[bytes, ...] = field(repr=False)
    vendor: str
    model: str
    vendor_id: bytes
    class_id: bytes
    max_image: int | None = None

    @property
    def fingerprints(self) -> list[str]:
        return [fingerprint(k) for k in self.keys]


def _check_keys(pubkeys: Iterable[bytes]) -> list[bytes]:
    keys = [check_device_public(bytes(k)) for k in pubkeys]
    if not 1 <= len(keys) <= MAX_KEYS or len(set(keys)) != len(keys):
        raise ValueError(f"give 1 to {MAX_KEYS} distinct update public keys")
    return keys


def add_update_trust(bundle_settings: MutableMapping[str, Any], pubkeys: Iterable[bytes],
                     vendor: str, class_: str, max_image: int | None = None
                     ) -> MutableMapping[str, Any]:
    """Store update keys (raw 32-byte Ed25519 public keys), vendor and class in a bundle's
    settings and return the settings. Raises ValueError (or
    :class:`~twinlink.keys.InvalidPublicKey`) for bad keys, names or capacity."""
    keys = _check_keys(pubkeys)
    vendor_uuid(vendor)  # validates both names
    class_uuid(vendor_uuid(vendor), class_)
    entry: dict[str, Any] = {"keys": [k.hex() for k in keys], "vendor": vendor,
                             "class": class_}
    if max_image is not None:
        if not 0 <= max_image <= MAX_UINT:
            raise ValueError("max_image is a byte count")
        entry["max_image"] = max_image
    bundle_settings[SETTINGS_KEY] = entry
    return bundle_settings


def load_update_public(path: str | os.PathLike[str]) -> bytes:
    """An update public key file (SubjectPublicKeyInfo PEM, Ed25519) as its raw 32 bytes."""
    return load_public(path, "ed25519")


def trust_from_settings(settings: MutableMapping[str, Any] | dict[str, Any]) -> Trust:
    """The :class:`Trust` in bundle settings; :class:`KeyFileError` if absent or malformed."""
    entry = settings.get(SETTINGS_KEY)
    if entry is None:
        raise KeyFileError("the device bundle has no update keys — provision it with the "
                           "update public key, vendor and class")
    try:
        keys = _check_keys(bytes.fromhex(k) for k in entry["keys"])
        vendor, model = entry["vendor"], entry["class"]
        vid = vendor_uuid(vendor)
        cid = class_uuid(vid, model)
        max_image = entry.get("max_image")
        if max_image is not None and (type(max_image) is not int or max_image < 0):
            raise ValueError
    except KeyFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise KeyFileError("the bundle's update settings are malformed") from None
    return Trust(tuple(keys), vendor, model, vid, cid, max_image)


def trust_from_bundle(bundle: Bundle) -> Trust:
    """The bundle's update trust. Refuses (:class:`KeyFileError`) a bundle that trusts its own
    device key for updates: a device key lives on the device, so it must never sign firmware."""
    trust = trust_from_settings(bundle.settings)
    if bundle.device_key is not None and bundle.device_key.public in trust.keys:
        raise KeyFileError("the bundle lists the device's own key as an update key — update "
                           "keys must be generated apart (twinlink update keygen)")
    return trust

"""Keys, key files and device bundles.

Device keys are Ed25519 (their X25519 form does the key agreement); the twin key is X25519.
Private keys are stored as PKCS#8 PEM with mode 0600, public keys as SubjectPublicKeyInfo PEM,
so ``openssl pkey`` reads both. A *device bundle* is one JSON file holding everything a device
needs. Nothing here ever puts key bytes in a repr, a log line or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from nacl import bindings as _nacl

from . import oscore
from .errors import KeyFileError
from .fileio import atomic_write, read_regular
from .naming import InvalidName, check_device_name

PathLike = Union[str, "os.PathLike[str]"]

# DER prefixes of the RFC 8410 encodings (the only variable part is the trailing 32-byte key).
_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")
_X25519_PKCS8 = bytes.fromhex("302e020100300506032b656e04220420")
_X25519_SPKI = bytes.fromhex("302a300506032b656e032100")

BUNDLE_FORMAT = "twinlink-device-bundle/1"
_BUNDLED: Any = object()  # "the bundle's own ID Context"


def fingerprint(public_key: bytes) -> str:
    """A short, safe-to-log identifier of a public key: the first 8 bytes of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _pem(label: str, der: bytes) -> str:
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def _unpem(text: str, label: str, where: str) -> bytes:
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    start = text.find(begin)
    stop = text.find(end, start + 1)
    if start < 0 or stop < 0:
        raise KeyFileError(f"{where}: no '{begin}' block")
    body = "".join(text[start + len(begin) : stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:
        raise KeyFileError(f"{where}: PEM body is not valid base64") from None


def _strip(der: bytes, prefix: bytes, what: str, where: str) -> bytes:
    if len(der) != len(prefix) + 32 or not der.startswith(prefix):
        raise KeyFileError(f"{where}: not an {what} (RFC 8410 encoding expected)")
    return der[len(prefix) :]


@dataclass(frozen=True)
class DeviceKey:
    """An Ed25519 device key pair. ``repr`` shows the public-key fingerprint only."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(os.urandom(32))

    @property
    def public(self) -> bytes:
        return _nacl.crypto_sign_seed_keypair(self.seed)[0]

    @property
    def secret64(self) -> bytes:
        """libsodium's 64-byte secret key form (seed || public key)."""
        return _nacl.crypto_sign_seed_keypair(self.seed)[1]

    @property
    def x25519_secret(self) -> bytes:
        return _nacl.crypto_sign_ed25519_sk_to_curve25519(self.secret64)

    def to_pem(self) -> str:
        return _pem("PRIVATE KEY", _ED25519_PKCS8 + self.seed)

    def public_pem(self) -> str:
        return ed25519_public_pem(self.public)

    def __repr__(self) -> str:
        return f"DeviceKey(fingerprint={fingerprint(self.public)})"


@dataclass(frozen=True)
class TwinKey:
    """The twin's X25519 key pair (shared by every receiver of one twin)."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ValueError("an X25519 secret is 32 bytes")

    @classmethod
    def generate(cls) -> TwinKey:
        return cls(os.urandom(32))

    @property
    def public(self) -> bytes:
        return _nacl.crypto_scalarmult_base(self.secret)

    def to_pem(self) -> str:
        return _pem("PRIVATE KEY", _X25519_PKCS8 + self.secret)

    def public_pem(self) -> str:
        return x25519_public_pem(self.public)

    def __repr__(self) -> str:
        return f"TwinKey(fingerprint={fingerprint(self.public)})"


def ed25519_public_pem(public: bytes) -> str:
    return _pem("PUBLIC KEY", _ED25519_SPKI + public)


def x25519_public_pem(public: bytes) -> str:
    return _pem("PUBLIC KEY", _X25519_SPKI + public)


def parse_device_key(text: str, where: str = "device key") -> DeviceKey:
    return DeviceKey(
        _strip(_unpem(text, "PRIVATE KEY", where), _ED25519_PKCS8, "Ed25519 private key", where)
    )


def parse_twin_key(text: str, where: str = "twin key") -> TwinKey:
    return TwinKey(
        _strip(_unpem(text, "PRIVATE KEY", where), _X25519_PKCS8, "X25519 private key", where)
    )


def parse_ed25519_public(text: str, where: str = "public key") -> bytes:
    return _strip(_unpem(text, "PUBLIC KEY", where), _ED25519_SPKI, "Ed25519 public key", where)


def parse_x25519_public(text: str, where: str = "public key") -> bytes:
    return _strip(_unpem(text, "PUBLIC KEY", where), _X25519_SPKI, "X25519 public key", where)


def _read_text(path: PathLike, private: bool) -> str:
    """Read a key or bundle file: a regular file (a FIFO or device is refused, never waited
    on), at most 1 MiB, UTF-8; a private one must not be readable by group or others."""
    p = Path(path)
    try:
        raw, st = read_regular(p)
    except OSError as exc:
        raise KeyFileError(f"cannot read {p}: {exc.strerror or exc}") from None
    if private and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{p} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"private keys must be 0600 — run: chmod 600 {p}"
        )
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise KeyFileError(f"{p} is not a text (PEM/JSON) file") from None


def write_private(path: PathLike, text: str, overwrite: bool = False) -> None:
    """Write a secret file, mode 0600 from its creation on, atomically and durably.

    Without ``overwrite`` an existing file is refused (:class:`KeyFileError`). With it, the old
    file stays whole until the new one is on disk (temp file, fsync, rename, directory fsync):
    a power cut mid-write never leaves a truncated key or bundle.
    """
    p = Path(path)
    if not overwrite and os.path.lexists(p):
        raise KeyFileError(f"{p} already exists; refusing to overwrite a key")
    try:
        atomic_write(p, text, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot write {p}: {exc.strerror or exc}") from None


def write_public(path: PathLike, text: str, overwrite: bool = False) -> None:
    """Write a public key file (mode 0644), atomically; refuse to replace one unless asked."""
    p = Path(path)
    if not overwrite and os.path.lexists(p):
        raise KeyFileError(f"{p} already exists; refusing to overwrite it")
    try:
        atomic_write(p, text, 0o644)
    except OSError as exc:
        raise KeyFileError(f"cannot write {p}: {exc.strerror or exc}") from None


def load_device_key(path: PathLike) -> DeviceKey:
    return parse_device_key(_read_text(path, True), str(path))


def load_twin_key(path: PathLike) -> TwinKey:
    return parse_twin_key(_read_text(path, True), str(path))


def load_public(path: PathLike, kind: str | None = None) -> bytes:
    """Load an Ed25519 or X25519 SubjectPublicKeyInfo PEM; returns the raw 32 bytes.

    ``kind="ed25519"`` or ``"x25519"`` requires that type (a twin key given where a device key
    belongs is a :class:`KeyFileError`, not a silently wrong registration).
    """
    text = _read_text(path, False)
    der = _unpem(text, "PUBLIC KEY", str(path))
    is_ed = der.startswith(_ED25519_SPKI)
    if kind == "ed25519" or (kind is None and is_ed):
        return _strip(der, _ED25519_SPKI, "Ed25519 public key", str(path))
    if kind not in (None, "x25519"):
        raise ValueError("kind must be 'ed25519', 'x25519' or None")
    return _strip(der, _X25519_SPKI, "X25519 public key", str(path))


class InvalidPublicKey(KeyFileError):
    """A public key that is not a usable Ed25519 device key (not a curve point, small order)."""

    reason = "invalid_public_key"


def check_device_public(public: bytes) -> bytes:
    """Return ``public`` if it is a valid Ed25519 public key: 32 bytes, a canonical encoding of
    a point in the prime-order subgroup, not of small order (libsodium's
    ``crypto_core_ed25519_is_valid_point``). Raise :class:`InvalidPublicKey` otherwise: such a
    key could never verify a frame, and its X25519 conversion fails."""
    if type(public) is not bytes or len(public) != 32:
        raise InvalidPublicKey("a device public key is 32 bytes")
    if not _nacl.crypto_core_ed25519_is_valid_point(public):
        raise InvalidPublicKey(
            f"public key {fingerprint(public)} is not a valid Ed25519 point "
            "(off the curve, non-canonical or of small order)"
        )
    return public


def master_secret_device(device: DeviceKey, twin_public: bytes) -> bytes:
    """X25519(device's X25519 form, twin public key): the device side of the key agreement."""
    return _nacl.crypto_scalarmult(device.x25519_secret, twin_public)


def master_secret_twin(twin: TwinKey, device_public_ed25519: bytes) -> bytes:
    """The twin's mirror computation: X25519(twin secret, device's Ed25519 key as X25519)."""
    xpub = _nacl.crypto_sign_ed25519_pk_to_curve25519(device_public_ed25519)
    return _nacl.crypto_scalarmult(twin.secret, xpub)


def kid_from_int(n: int) -> bytes:
    """Shortest big-endian byte string for ``n`` (kids are 1..6 bytes)."""
    out = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    if len(out) > oscore.MAX_KID_LEN:
        raise ValueError("kid space exhausted")
    return out


@dataclass
class Bundle:
    """Everything a device needs: its name, kid, key, the twin's public key and settings.

    For a *lite* device (no Ed25519 on the board) the bundle carries the derived AEAD key and
    Common IV instead of being used for signing; it still names the device key's fingerprint.
    """

    name: str
    kid: bytes
    twin_public: bytes = field(repr=False)
    device_key: DeviceKey | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    lite_key: bytes | None = field(default=None, repr=False)
    lite_iv: bytes | None = field(default=None, repr=False)

    @property
    def profile(self) -> str:
        return "lite" if self.lite_key is not None else "twinlink/1"

    @property
    def master_salt(self) -> bytes:
        return bytes.fromhex(self.settings.get("master_salt", ""))

    @property
    def id_context(self) -> bytes | None:
        ctx = self.settings.get("id_context")
        return None if ctx is None else bytes.fromhex(ctx)

    def context(self, id_context: Any = _BUNDLED) -> oscore.Context:
        """The device→twin context (Sender ID = kid), under the bundle's ID Context or the
        given one (a renewed context, see :class:`~twinlink.replay.SequenceStore`)."""
        if self.lite_key is not None and self.lite_iv is not None:
            return oscore.Context(self.kid, self.lite_key, self.lite_iv)
        return self._derive(self.kid, id_context)

    def ack_context(self, id_context: Any = _BUNDLED, sender_id: bytes = b"") -> oscore.Context:
        """A twin→device context (Sender ID h'', or the twin's ``sender_id``) used to check the
        twin's acknowledgements."""
        return self._derive(sender_id, id_context)

    def _derive(self, sender_id: bytes, id_context: Any) -> oscore.Context:
        if self.device_key is None:
            raise KeyFileError(f"bundle of {self.name} holds no device key (lite profile)")
        idc = self.id_context if id_context is _BUNDLED else id_context
        secret = master_secret_device(self.device_key, self.twin_public)
        return oscore.derive_context(secret, sender_id, self.master_salt, idc)

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "name": self.name,
            "kid": self.kid.hex(),
            "profile": self.profile,
            "twin_public_key": x25519_public_pem(self.twin_public),
            "settings": self.settings,
        }
        if self.device_key is not None:
            doc["device_key"] = self.device_key.to_pem()
        if self.lite_key is not None and self.lite_iv is not None:
            doc["lite"] = {"key": self.lite_key.hex(), "common_iv": self.lite_iv.hex()}
        return json.dumps(doc, indent=2) + "\n"

    def save(self, path: PathLike, overwrite: bool = False) -> None:
        write_private(path, self.to_json(), overwrite)

    @classmethod
    def load(cls, path: PathLike) -> Bundle:
        where = str(path)
        try:
            doc = json.loads(_read_text(path, True))
        except json.JSONDecodeError:
            raise KeyFileError(f"{where}: not a device bundle (invalid JSON)") from None
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise KeyFileError(f"{where}: not a {BUNDLE_FORMAT} file")
        try:
            kid = bytes.fromhex(doc["kid"])
            if not 1 <= len(kid) <= oscore.MAX_KID_LEN:
                raise ValueError
            twin_public = parse_x25519_public(doc["twin_public_key"], where)
            device_key = parse_device_key(doc["device_key"], where) if "device_key" in doc else None
            lite = doc.get("lite")
            lite_key = bytes.fromhex(lite["key"]) if lite else None
            lite_iv = bytes.fromhex(lite["common_iv"]) if lite else None
            settings = dict(doc.get("settings") or {})
            name = check_device_name(doc["name"])
        except InvalidName as exc:
            raise KeyFileError(f"{where}: {exc}") from None
        except KeyFileError:
            raise
        except (KeyError, TypeError, ValueError):
            raise KeyFileError(
                f"{where}: bundle is missing a field or has a malformed one"
            ) from None
        if device_key is None and lite_key is None:
            raise KeyFileError(f"{where}: bundle has neither a device key nor lite keys")
        return cls(name, kid, twin_public, device_key, settings, lite_key, lite_iv)

"""The update manifest: a SUIT-shaped subset in one COSE_Sign1, signed with Ed25519.

::

    manifest = 18([ h'A2 01 27 04 48 <key id>',   ; protected {1: -8 (EdDSA), 4: key id}
                    {},                          ; unprotected
                    payload,                     ; bstr .cbor update-manifest
                    signature ])                 ; Ed25519 over the RFC 9052 Sig_structure
    update-manifest = {1: 1, 2: seq, 3: {1: vendor-id, 2: class-id, 3: [-16, sha256],
                                          14: size, ? 21: uri}, ? 4: [+ next update key]}

Labels 1 and 2 are SUIT's manifest-version and sequence-number; inside 3 the labels are SUIT's
parameter numbers (vendor-identifier, class-identifier, image-digest, image-size, uri), the
digest is a SUIT_Digest and the identifiers are SUIT's UUIDs (RFC 9124 §4.2.2: vendor-id =
UUIDv5(DNS namespace, vendor domain), class-id = UUIDv5(vendor-id, model name)). The full
CDDL, the parse rules and the size figures are in docs/UPDATES.md.

Fail closed: every non-negative label, manifest version and digest algorithm this code does
not know is *critical* and refused (:class:`UnknownCritical`); negative labels are optional
extensions a receiver skips. Parsing is strict and matches ``native/tl_update.c`` byte for
byte and reason for reason (``tests/test_update_c.py`` holds them to it).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl import bindings as _nacl
from nacl.exceptions import BadSignatureError

from .. import cbor
from ..cbor import ARRAY, BSTR, MAP, NINT, SIMPLE, TAG, TSTR, UINT, Reader
from ..errors import MalformedFrame
from ..keys import check_device_public, fingerprint
from .errors import (
    MalformedManifest,
    ManifestSignatureInvalid,
    UnknownCritical,
    UntrustedKey,
)

MANIFEST_VERSION = 1
#: Largest manifest accepted (the usual one is about 180 bytes; room for a URI and 4 keys).
MAX_MANIFEST = 1024
MAX_KEYS = 4
MAX_URI = 255
KEY_ID_LEN = 8
MAX_UINT = (1 << 64) - 1
#: Nesting allowed inside an ignored (negative-label) extension value.
EXT_MAX_DEPTH = 8

ALG_EDDSA, ALG_ED25519 = -8, -19
ALG_SHA256 = -16  # COSE / SUIT_Digest algorithm id
COSE_SIGN1_TAG = 18

# Manifest labels (1, 2 as in SUIT) and image parameters (SUIT parameter numbers).
M_VERSION, M_SEQ, M_IMAGE, M_NEXT_KEYS = 1, 2, 3, 4
P_VENDOR, P_CLASS, P_DIGEST, P_SIZE, P_URI = 1, 2, 3, 14, 21


def key_id(public: bytes) -> bytes:
    """The 8-byte key id a manifest names its signing key by: SHA-256(public key)[:8]."""
    return hashlib.sha256(public).digest()[:KEY_ID_LEN]


def vendor_uuid(vendor: str) -> bytes:
    """SUIT vendor-id: ``vendor`` itself if it is a UUID, else UUIDv5(DNS namespace, vendor)."""
    return _as_uuid(vendor, uuid.NAMESPACE_DNS)


def class_uuid(vendor_id: bytes, model: str) -> bytes:
    """SUIT class-id: ``model`` itself if it is a UUID, else UUIDv5(vendor-id, model)."""
    return _as_uuid(model, uuid.UUID(bytes=vendor_id))


def _as_uuid(text: str, namespace: uuid.UUID) -> bytes:
    if not isinstance(text, str) or not text or len(text.encode()) > 255:
        raise ValueError("vendor and class are non-empty strings of at most 255 bytes")
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        return uuid.uuid5(namespace, text).bytes


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest. Parsing proves its shape, not its signature (:func:`authenticate`)."""

    seq: int
    vendor_id: bytes
    class_id: bytes
    digest: bytes
    size: int
    uri: str | None
    next_keys: tuple[bytes, ...]
    key_id: bytes
    alg: int
    protected: bytes = field(repr=False)
    payload: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def raw(self) -> bytes:
        """The manifest bytes, re-encoded exactly as received (the encoding is unique)."""
        return (cbor.head(TAG, COSE_SIGN1_TAG) + cbor.head(ARRAY, 4) + cbor.bstr(self.protected)
                + cbor.head(MAP, 0) + cbor.bstr(self.payload) + cbor.bstr(self.signature))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (no secrets in a manifest)."""
        return {"seq": self.seq, "vendor_id": str(uuid.UUID(bytes=self.vendor_id)),
                "class_id": str(uuid.UUID(bytes=self.class_id)), "digest": self.digest.hex(),
                "size": self.size, "uri": self.uri, "key_id": self.key_id.hex(),
                "next_keys": [fingerprint(k) for k in self.next_keys],
                "bytes": len(self.raw)}


# -- encoding ---------------------------------------------------------------------------------

def encode(obj: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1) of ints, bytes, str, lists, int-keyed dicts, bools
    and None: shortest heads, definite lengths, map keys in bytewise order of their encoding."""
    if obj is None or isinstance(obj, bool):
        return bytes((0xF6 if obj is None else 0xF5 if obj else 0xF4,))
    if isinstance(obj, int):
        if not -(1 << 64) <= obj <= MAX_UINT:
            raise ValueError("integer out of CBOR range")
        return cbor.int_(obj)
    if isinstance(obj, (bytes, bytearray)):
        return cbor.bstr(bytes(obj))
    if isinstance(obj, str):
        return cbor.tstr(obj)
    if isinstance(obj, (list, tuple)):
        return cbor.head(ARRAY, len(obj)) + b"".join(encode(x) for x in obj)
    if isinstance(obj, Mapping):
        items = sorted((encode(k), encode(v)) for k, v in obj.items())
        return cbor.head(MAP, len(items)) + b"".join(k + v for k, v in items)
    raise TypeError(f"cannot encode {type(obj).__name__} in a manifest")


def payload_fields(seq: int, vendor_id: bytes, class_id: bytes, digest: bytes, size: int,
                   uri: str | None = None, next_keys: Sequence[bytes] = ()) -> dict[int, Any]:
    """The manifest map for these values, checked; :func:`encode` makes its bytes."""
    if not 0 <= seq <= MAX_UINT or not 0 <= size <= MAX_UINT:
        raise ValueError("seq and size are unsigned 64-bit integers")
    if len(vendor_id) != 16 or len(class_id) != 16 or len(digest) != 32:
        raise ValueError("vendor-id and class-id are 16-byte UUIDs, the digest 32 bytes")
    image: dict[int, Any] = {P_VENDOR: vendor_id, P_CLASS: class_id,
                             P_DIGEST: [ALG_SHA256, digest], P_SIZE: size}
    if uri is not None:
        if not 1 <= len(uri.encode()) <= MAX_URI:
            raise ValueError(f"uri is 1 to {MAX_URI} bytes")
        image[P_URI] = uri
    fields: dict[int, Any] = {M_VERSION: MANIFEST_VERSION, M_SEQ: seq, M_IMAGE: image}
    if next_keys:
        keys = [check_device_public(bytes(k)) for k in next_keys]
        if not 1 <= len(keys) <= MAX_KEYS or len(set(keys)) != len(keys):
            raise ValueError(f"next keys: 1 to {MAX_KEYS} distinct Ed25519 public keys")
        fields[M_NEXT_KEYS] = keys
    return fields


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """RFC 9052 §4.4 ToBeSigned: ["Signature1", protected, h'' (no external_aad), payload]."""
    return (cbor.head(ARRAY, 4) + cbor.tstr("Signature1") + cbor.bstr(protected)
            + cbor.bstr(b"") + cbor.bstr(payload))


def sign_payload(seed: bytes, payload: bytes, alg: int = ALG_EDDSA) -> bytes:
    """Wrap ``payload`` bytes in a COSE_Sign1 signed by the Ed25519 key ``seed``.

    No check of the payload: tests use it to build manifests a verifier must refuse."""
    public, secret = _nacl.crypto_sign_seed_keypair(seed)
    protected = encode({1: alg, 4: key_id(public)})
    signature = _nacl.crypto_sign(sig_structure(protected, payload), secret)[:64]
    return (cbor.head(TAG, COSE_SIGN1_TAG) + cbor.head(ARRAY, 4) + cbor.bstr(protected)
            + cbor.head(MAP, 0) + cbor.bstr(payload) + cbor.bstr(signature))


def make_manifest(seed: bytes, *, seq: int, vendor_id: bytes, class_id: bytes, digest: bytes,
                  size: int, uri: str | None = None, next_keys: Sequence[bytes] = ()) -> bytes:
    """A signed manifest. Raises ValueError for out-of-range values or a result larger than
    :data:`MAX_MANIFEST`."""
    out = sign_payload(seed, encode(payload_fields(seq, vendor_id, class_id, digest, size, uri,
                                                   next_keys)))
    if len(out) > MAX_MANIFEST:
        raise ValueError(f"manifest would be {len(out)} bytes (at most {MAX_MANIFEST})")
    return out


# -- strict parsing ---------------------------------------------------------------------------

def parse(data: bytes | bytearray | memoryview) -> Manifest:
    """Parse a manifest strictly (no cryptography). Raises :class:`MalformedManifest` or its
    subclass :class:`UnknownCritical`; nothing else for any input bytes."""
    raw = bytes(data)
    if len(raw) > MAX_MANIFEST:
        raise MalformedManifest(f"manifest is {len(raw)} bytes (at most {MAX_MANIFEST})")
    try:
        r = Reader(raw)
        r.expect(TAG, COSE_SIGN1_TAG, "COSE_Sign1 tag")
        r.expect(ARRAY, 4, "COSE_Sign1 array")
        protected = r.bytes_("protected header", 1)
        alg, kid = _protected(protected)
        r.expect(MAP, 0, "unprotected header")
        payload = r.bytes_("payload", 1)
        signature = r.bytes_("signature", 64, 64)
        r.done("manifest")
        f = _payload(payload)
    except MalformedFrame as exc:
        raise MalformedManifest(f"malformed manifest: {exc}") from None
    return Manifest(f["seq"], f["vendor"], f["class"], f["digest"], f["size"], f.get("uri"),
                    tuple(f.get("keys", ())), kid, alg, protected, payload, signature)


def _protected(prot: bytes) -> tuple[int, bytes]:
    r = Reader(prot)
    r.expect(MAP, 2, "protected header map")
    r.expect(UINT, 1, "alg label")
    major, arg = r.head("alg")
    if major != NINT or arg not in (-1 - ALG_EDDSA, -1 - ALG_ED25519):
        raise MalformedFrame("alg is not EdDSA (-8) or Ed25519 (-19)")
    r.expect(UINT, 4, "kid label")
    kid = r.bytes_("key id", KEY_ID_LEN, KEY_ID_LEN)
    r.done("protected header")
    return -1 - arg, kid


def _labels(r: Reader, count: int, what: str) -> Any:
    """Yield each integer label of a map in turn, refusing any order but the deterministic one
    (which also refuses duplicates); the caller consumes the value."""
    prev = b""
    for i in range(count):
        start = r.pos
        major, arg = r.head(f"{what} label")
        if major not in (UINT, NINT):
            raise MalformedFrame(f"{what} labels must be integers")
        enc = r.buf[start:r.pos]
        if i and enc <= prev:
            raise MalformedFrame(f"{what} labels repeated or not in deterministic order")
        prev = enc
        yield (arg if major == UINT else -1 - arg)


def _skip(r: Reader, depth: int) -> None:
    """Skip one extension value: integers, strings, arrays, maps and false/true/null only,
    nested at most EXT_MAX_DEPTH deep."""
    if depth > EXT_MAX_DEPTH:
        raise MalformedFrame("extension nested too deeply")
    major, arg = r.head("extension value")
    if major in (BSTR, TSTR):
        if arg > r.end - r.pos:
            raise MalformedFrame("truncated in extension value")
        r.pos += arg
    elif major in (ARRAY, MAP):
        for _ in range(arg if major == ARRAY else 2 * arg):
            _skip(r, depth + 1)
    elif major == TAG or (major == SIMPLE and arg not in (20, 21, 22)):
        raise MalformedFrame("tags, floats and other simple values are not allowed")


def _map(r: Reader, what: str) -> int:
    """Read a map head; return its number of pairs."""
    major, n = r.head(what)
    if major != MAP:
        raise MalformedFrame(f"{what} is not a map")
    return n


def _uint(r: Reader, what: str) -> int:
    major, arg = r.head(what)
    if major != UINT:
        raise MalformedFrame(f"{what} is not an unsigned integer")
    return arg


def _payload(payload: bytes) -> dict[str, Any]:
    r = Reader(payload)
    out: dict[str, Any] = {}
    for label in _labels(r, _map(r, "manifest payload"), "manifest"):
        if label < 0:
            _skip(r, 1)
        elif label == M_VERSION:
            version = _uint(r, "manifest version")
            if version != MANIFEST_VERSION:
                raise UnknownCritical(f"manifest version {version} is not supported")
            out["version"] = version
        elif label == M_SEQ:
            out["seq"] = _uint(r, "sequence number")
        elif label == M_IMAGE:
            _image(r, out)
        elif label == M_NEXT_KEYS:
            out["keys"] = _next_keys(r)
        else:
            raise UnknownCritical(f"unknown critical manifest field {label}")
    r.done("manifest map")
    if not {"version", "seq", "vendor"} <= out.keys():
        raise MalformedFrame("manifest lacks its version, sequence number or image")
    return out


def _image(r: Reader, out: dict[str, Any]) -> None:
    got: dict[str, Any] = {}
    for label in _labels(r, _map(r, "image parameters"), "image parameter"):
        if label < 0:
            _skip(r, 1)
        elif label in (P_VENDOR, P_CLASS):
            got["vendor" if label == P_VENDOR else "class"] = r.bytes_("vendor/class id", 16, 16)
        elif label == P_DIGEST:
            r.expect(ARRAY, 2, "image digest")
            major, arg = r.head("digest algorithm")
            if major not in (UINT, NINT):
                raise MalformedFrame("digest algorithm is not an integer")
            if major != NINT or arg != -1 - ALG_SHA256:
                raise UnknownCritical("image digest algorithm is not SHA-256 (-16)")
            got["digest"] = r.bytes_("image digest", 32, 32)
        elif label == P_SIZE:
            got["size"] = _uint(r, "image size")
        elif label == P_URI:
            major, arg = r.head("uri")
            if major != TSTR or not 1 <= arg <= MAX_URI or arg > r.end - r.pos:
                raise MalformedFrame(f"uri is not a text string of 1 to {MAX_URI} bytes")
            try:
                got["uri"] = r.buf[r.pos:r.pos + arg].decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedFrame("uri is not valid UTF-8") from None
            r.pos += arg
        else:
            raise UnknownCritical(f"unknown critical image parameter {label}")
    if not {"vendor", "class", "digest", "size"} <= got.keys():
        raise MalformedFrame("image parameters lack vendor-id, class-id, digest or size")
    out.update(got)


def _next_keys(r: Reader) -> list[bytes]:
    major, n = r.head("next keys")
    if major != ARRAY or not 1 <= n <= MAX_KEYS:
        raise MalformedFrame(f"next keys must be an array of 1 to {MAX_KEYS} keys")
    keys = [r.bytes_("next key", 32, 32) for _ in range(n)]
    if len(set(keys)) != n:
        raise MalformedFrame("next keys repeat a key")
    return keys


# -- authentication ---------------------------------------------------------------------------

def verify_signature(m: Manifest, trusted: Sequence[bytes]) -> bytes:
    """Check ``m``'s signature under the trusted key its key id names; return that key.

    Raises :class:`UntrustedKey` (no trusted key has that id) or
    :class:`ManifestSignatureInvalid`."""
    key = next((k for k in trusted if key_id(k) == m.key_id), None)
    if key is None:
        raise UntrustedKey(f"manifest is signed by key id {m.key_id.hex()}, "
                           "which is not one of this device's update keys")
    try:
        _nacl.crypto_sign_open(m.signature + sig_structure(m.protected, m.payload), key)
    except BadSignatureError:
        raise ManifestSignatureInvalid(
            f"manifest signature does not verify under update key {fingerprint(key)}"
        ) from None
    return key


def authenticate(data: bytes | bytearray | memoryview, trusted: Sequence[bytes]) -> Manifest:
    """Parse strictly, then verify the signature: the manifest a device may act on."""
    m = parse(data)
    verify_signature(m, trusted)
    return m

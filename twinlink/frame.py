"""Sealing and opening twinlink/1 frames: the one entry to the frame layer.

These functions work on keys and contexts you already hold; :class:`twinlink.Device` and
:class:`twinlink.Twin` add identities, sequence numbers, replay windows and storage on top.

Arguments are checked here, once, for every backend: a wrong type is a ``TypeError``, a wrong
size or range a ``ValueError`` -- programming errors, deliberately *not* :class:`TwinlinkError`,
so they can never be logged as a security event. What the frame itself fails (malformed, bad
signature, decryption) raises a :class:`TwinlinkError` subclass. Then each call goes to the
active backend (:mod:`twinlink.backends`: native C core or pure Python; identical bytes and
errors), which this module holds directly and re-binds when the backend is switched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import backends as backend
from . import oscore
from .cbor import PAYLOAD_MAX as MAX_PAYLOAD
from .frametypes import KIND_LITE, KIND_SIGNED, MAX_FRAME, MAX_KID_CONTEXT, FrameBackend, Parsed
from .oscore import IV_LEN, KEY_LEN, MAX_KID_LEN, MAX_SEQ, STREAM_TELEMETRY

__all__ = [
    "KIND_LITE",
    "MAX_PAYLOAD",
    "KIND_SIGNED",
    "MAX_FRAME",
    "MAX_KID_CONTEXT",
    "Parsed",
    "check_payload",
    "decrypt",
    "describe",
    "diagnostic",
    "open_frame",
    "parse",
    "seal",
    "seal_lite",
    "seal_many",
    "verify",
]

SIGN_SK_LEN = 64  # libsodium's Ed25519 secret key: seed || public key
SIGN_PK_LEN = 32

_be: FrameBackend = backend.current()


def _bind(be: FrameBackend) -> None:
    global _be
    _be = be


backend.on_switch(_bind)


# -- argument checks (slow path: only reached when the one-line fast check fails) ----------------

def _need_bytes(name: str, value: object, *sizes: int) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if sizes and len(value) not in sizes:
        want = " or ".join(map(str, sizes))
        raise ValueError(f"{name} must be {want} bytes, not {len(value)}")


def _need_kid(kid: object) -> None:
    if not isinstance(kid, bytes):
        raise TypeError(f"kid (the context's sender_id) must be bytes, not {type(kid).__name__}")
    if not 1 <= len(kid) <= MAX_KID_LEN:
        raise ValueError(f"kid must be 1 to {MAX_KID_LEN} bytes, not {len(kid)}")


def _need_seq(seq: object, count: int = 1) -> None:
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise TypeError(f"sequence number must be an int, not {type(seq).__name__}")
    if not 0 <= seq or seq + count - 1 > MAX_SEQ:
        raise ValueError(f"sequence number out of range (0 to 2**40-1): {seq}")


def _check_context(ctx: oscore.Context, stream: bytes) -> None:
    _need_kid(ctx.sender_id)
    _need_bytes("key", ctx.key, KEY_LEN)
    _need_bytes("common IV", ctx.common_iv, IV_LEN)
    _need_bytes("stream", stream)


def _need_kid_context(kid_context: object) -> None:
    if kid_context is None:
        return
    if not isinstance(kid_context, bytes):
        raise TypeError(f"kid_context must be bytes or None, not {type(kid_context).__name__}")
    if not 1 <= len(kid_context) <= MAX_KID_CONTEXT:
        raise ValueError(f"kid_context must be 1 to {MAX_KID_CONTEXT} bytes, "
                         f"not {len(kid_context)}")


def _check_seal(sign_sk: object, ctx: oscore.Context, seq: object, plaintexts: Iterable[object],
                stream: bytes, count: int = 1, kid_context: object = None) -> None:
    """Raise the TypeError/ValueError that explains why the fast check refused a seal."""
    if sign_sk is not None:
        _need_bytes("sign_sk (the 64-byte libsodium Ed25519 secret key)", sign_sk, SIGN_SK_LEN)
    _need_kid_context(kid_context)
    _check_context(ctx, stream)
    _need_seq(seq, count)
    for p in plaintexts:
        _need_bytes("plaintext", p)


def _ok_context(ctx: oscore.Context, stream: bytes) -> bool:
    kid, key, iv = ctx.sender_id, ctx.key, ctx.common_iv
    return (type(kid) is bytes and 0 < len(kid) <= MAX_KID_LEN and type(key) is bytes
            and len(key) == KEY_LEN and type(iv) is bytes and len(iv) == IV_LEN
            and type(stream) is bytes)


# -- sealing ---------------------------------------------------------------------------------

def _ok_kid_context(kid_context: bytes | None) -> bool:
    return kid_context is None or (type(kid_context) is bytes
                                   and 0 < len(kid_context) <= MAX_KID_CONTEXT)


def seal(
    sign_sk: bytes,
    ctx: oscore.Context,
    seq: int,
    plaintext: bytes,
    stream: bytes = STREAM_TELEMETRY,
    *,
    kid_context: bytes | None = None,
) -> bytes:
    """Seal one frame: Encrypt0 under ``ctx`` with Partial IV ``seq``, then Ed25519-sign it.

    ``kid_context``: the ID Context ``ctx`` was derived with (1..16 bytes), named in the
    signed protected header (COSE label 10) so a receiver can tell contexts apart; None for
    the base context (no ID Context), whose frames carry no label 10.
    The caller guarantees ``seq`` is never reused under ``ctx`` (see :class:`SequenceStore`).
    Raises TypeError/ValueError for bad arguments, ValueError if the frame would exceed
    :data:`MAX_FRAME`.
    """
    kid, key, iv = ctx.sender_id, ctx.key, ctx.common_iv
    # The hot path: one combined test (_ok_context inlined); the reasons only on failure.
    if not (type(sign_sk) is bytes and len(sign_sk) == SIGN_SK_LEN and type(seq) is int
            and 0 <= seq <= MAX_SEQ and type(plaintext) is bytes and type(kid) is bytes
            and 0 < len(kid) <= MAX_KID_LEN and type(key) is bytes and len(key) == KEY_LEN
            and type(iv) is bytes and len(iv) == IV_LEN and type(stream) is bytes
            and (kid_context is None or _ok_kid_context(kid_context))):
        _check_seal(sign_sk, ctx, seq, (plaintext,), stream, 1, kid_context)
    if kid_context is None:
        return _be.seal(sign_sk, kid, key, iv, stream, seq, plaintext)
    return _be.seal(sign_sk, kid, key, iv, stream, seq, plaintext, kid_context)


def seal_many(
    sign_sk: bytes,
    ctx: oscore.Context,
    first_seq: int,
    plaintexts: Iterable[bytes],
    stream: bytes = STREAM_TELEMETRY,
    *,
    kid_context: bytes | None = None,
) -> list[bytes]:
    """Seal ``plaintexts`` with sequence numbers ``first_seq``, ``first_seq + 1``, ...

    All or nothing: every argument and every frame size is checked before anything is sealed
    (the native backend does it in one C call). Raises as :func:`seal`.
    """
    pts = plaintexts if isinstance(plaintexts, list) else list(plaintexts)
    if not pts:
        return []
    n = len(pts)
    if not (type(sign_sk) is bytes and len(sign_sk) == SIGN_SK_LEN and type(first_seq) is int
            and 0 <= first_seq and first_seq + n - 1 <= MAX_SEQ and _ok_context(ctx, stream)
            and _ok_kid_context(kid_context) and all(type(p) is bytes for p in pts)):
        _check_seal(sign_sk, ctx, first_seq, pts, stream, n, kid_context)
    return _be.seal_many(sign_sk, ctx.sender_id, ctx.key, ctx.common_iv, stream, first_seq, pts,
                         kid_context)


def seal_lite(
    ctx: oscore.Context, seq: int, plaintext: bytes, stream: bytes = STREAM_TELEMETRY
) -> bytes:
    """Seal one lite-profile frame (COSE_Encrypt0 with the kid unprotected, no signature)."""
    if not (type(seq) is int and 0 <= seq <= MAX_SEQ and type(plaintext) is bytes
            and _ok_context(ctx, stream)):
        _check_seal(None, ctx, seq, (plaintext,), stream)
    return _be.seal_lite(ctx.sender_id, ctx.key, ctx.common_iv, stream, seq, plaintext)


# -- opening ---------------------------------------------------------------------------------

def parse(frame: bytes) -> Parsed:
    """Strictly parse a frame's structure; raise :class:`MalformedFrame`. Checks no crypto.

    ``frame`` is hostile input: anything that is not a bytes-like object of a well-formed
    frame (too long included) is :class:`MalformedFrame`.
    """
    return _be.parse(frame)


def _need_pk(sign_pk: object) -> None:
    _need_bytes("sign_pk (the device's Ed25519 public key)", sign_pk, SIGN_PK_LEN)


def verify(parsed: Parsed, sign_pk: bytes, stream: bytes = STREAM_TELEMETRY) -> None:
    """Check a parsed frame's Ed25519 signature; raise :class:`BadSignature` (also for a lite
    frame, which has none)."""
    if not (type(sign_pk) is bytes and len(sign_pk) == SIGN_PK_LEN and type(stream) is bytes
            and type(parsed) is Parsed):
        if not isinstance(parsed, Parsed):
            raise TypeError("parsed must come from frame.parse")
        _need_pk(sign_pk)
        _need_bytes("stream", stream)
    _be.verify(parsed, sign_pk, stream)


def decrypt(parsed: Parsed, ctx: oscore.Context, stream: bytes = STREAM_TELEMETRY) -> bytes:
    """Decrypt a parsed frame under ``ctx``; raise :class:`DecryptionFailed` if the AEAD tag
    does not verify. The nonce uses the frame's own kid, not ``ctx.sender_id``."""
    key, iv = ctx.key, ctx.common_iv
    if not (type(key) is bytes and len(key) == KEY_LEN and type(iv) is bytes
            and len(iv) == IV_LEN and type(stream) is bytes and type(parsed) is Parsed):
        if not isinstance(parsed, Parsed):
            raise TypeError("parsed must come from frame.parse")
        _need_bytes("key", key, KEY_LEN)
        _need_bytes("common IV", iv, IV_LEN)
        _need_bytes("stream", stream)
    return _be.decrypt(parsed, key, iv, stream)


def open_frame(
    frame: bytes,
    sign_pk: bytes | None,
    ctx: oscore.Context,
    stream: bytes = STREAM_TELEMETRY,
) -> tuple[Parsed, bytes]:
    """Parse, verify and decrypt; return (parsed header, plaintext). No replay check.

    ``sign_pk`` None opens only a lite frame (a signed one is :class:`BadSignature`).
    """
    key, iv = ctx.key, ctx.common_iv
    if not ((sign_pk is None or (type(sign_pk) is bytes and len(sign_pk) == SIGN_PK_LEN))
            and type(key) is bytes and len(key) == KEY_LEN and type(iv) is bytes
            and len(iv) == IV_LEN and type(stream) is bytes):
        if sign_pk is not None:
            _need_pk(sign_pk)
        _need_bytes("key", key, KEY_LEN)
        _need_bytes("common IV", iv, IV_LEN)
        _need_bytes("stream", stream)
    return _be.open_frame(frame, sign_pk, key, iv, stream)


def check_payload(plaintext: bytes) -> None:
    """Refuse a decrypted payload that is not the CBOR a reading may hold; raise
    :class:`MalformedPayload` with a short reason. Call it before any general CBOR decoder.

    Accepts exactly (docs/PROTOCOL.md §13): one item of at most :data:`MAX_PAYLOAD` bytes and
    nothing after it; definite lengths (shortest heads not required); integers in
    [-2**63, 2**63-1]; byte strings; UTF-8 text; arrays; maps keyed by integers or text with no
    two keys equal as values; false/true/null; finite floats; nesting at most 8 deep; no tags.
    """
    if type(plaintext) is not bytes:
        raise TypeError(f"plaintext must be bytes, not {type(plaintext).__name__}")
    _be.check_payload(plaintext)


# -- for humans ------------------------------------------------------------------------------

def describe(frame: bytes) -> dict[str, Any]:
    """Header values and sizes of a frame, for humans and the ``inspect`` command."""
    p = parse(frame)
    out: dict[str, Any] = {
        "profile": "twinlink/1" if p.kind == KIND_SIGNED else "lite",
        "size": len(frame),
        "kid": p.kid.hex(),
        "seq": p.seq,
        "partial_iv": p.piv.hex(),
        "ciphertext_size": len(p.ct) - 16,
        "aead_tag": p.ct[-16:].hex(),
    }
    if p.kind == KIND_SIGNED:
        prot: dict[str, Any] = {"alg": p.alg, "kid": p.kid.hex()}
        if p.kid_context is not None:
            prot["kid_context"] = p.kid_context.hex()
        out.update(
            {
                "cose": "COSE_Sign1 (tag 18) over COSE_Encrypt0 (tag 16)",
                "sign1_protected": {**prot, "bytes": p.prot.hex()},
                "sign1_unprotected": {},
                "encrypt0_size": len(p.enc0),
                "encrypt0_protected": {"alg": oscore.ALG_CHACHA20_POLY1305, "bytes": "a1011818"},
                "encrypt0_unprotected": {"partial_iv": p.piv.hex()},
                "signature": p.sig.hex(),
            }
        )
    else:
        out.update(
            {
                "cose": "COSE_Encrypt0 (tag 16), lite profile: no signature",
                "encrypt0_protected": {"alg": oscore.ALG_CHACHA20_POLY1305, "bytes": "a1011818"},
                "encrypt0_unprotected": {"kid": p.kid.hex(), "partial_iv": p.piv.hex()},
            }
        )
    out["overhead"] = len(frame) - out["ciphertext_size"]
    return out


def diagnostic(data: bytes) -> str:
    """RFC 8949 §8 diagnostic notation of a frame (nested bstr-wrapped Encrypt0 shown as <<…>>)."""
    p = parse(data)
    enc0_unprot = (
        f"{{4: h'{p.kid.hex()}', 6: h'{p.piv.hex()}'}}"
        if p.kind == KIND_LITE
        else f"{{6: h'{p.piv.hex()}'}}"
    )
    enc0 = f"16([h'a1011818' / {{1: 24}} /, {enc0_unprot}, h'{p.ct.hex()}'])"
    if p.kind == KIND_LITE:
        return enc0
    kc = "" if p.kid_context is None else f", 10: h'{p.kid_context.hex()}'"
    prot = f"h'{p.prot.hex()}' / {{1: {p.alg}, 4: h'{p.kid.hex()}'{kc}}} /"
    return f"18([{prot}, {{}}, << {enc0} >>, h'{p.sig.hex()}'])"

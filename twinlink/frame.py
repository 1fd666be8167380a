"""Sealing and opening twinlink/1 frames: the public face of the active backend.

These functions work on keys and contexts you already hold; :class:`twinlink.Device` and
:class:`twinlink.Twin` add identities, sequence numbers, replay windows and storage on top.
Every function dispatches to :func:`twinlink.backends.current` (native C core or pure Python),
which produce identical bytes and raise identical exceptions.
"""

from __future__ import annotations

from typing import Any

from . import backends as backend
from . import oscore
from ._backend_pure import KIND_LITE, KIND_SIGNED, MAX_FRAME, Parsed


def _be() -> Any:
    """The active backend module (typed Any: both backends share one duck-typed surface)."""
    return backend.current()


__all__ = [
    "KIND_LITE",
    "KIND_SIGNED",
    "MAX_FRAME",
    "Parsed",
    "seal",
    "seal_lite",
    "parse",
    "open_frame",
    "describe",
]


def seal(
    sign_sk: bytes,
    ctx: oscore.Context,
    seq: int,
    plaintext: bytes,
    stream: bytes = oscore.STREAM_TELEMETRY,
) -> bytes:
    """Seal one frame: Encrypt0 under ``ctx`` with Partial IV ``seq``, then Ed25519-sign it.

    The caller guarantees ``seq`` is never reused under ``ctx`` (see :class:`SequenceStore`).
    """
    return _be().seal(
        sign_sk,
        ctx.sender_id,
        ctx.key,
        ctx.common_iv,
        stream,
        seq,
        plaintext,
    )


def seal_lite(
    ctx: oscore.Context, seq: int, plaintext: bytes, stream: bytes = oscore.STREAM_TELEMETRY
) -> bytes:
    """Seal one lite-profile frame (COSE_Encrypt0 with the kid unprotected, no signature)."""
    return _be().seal_lite(
        ctx.sender_id,
        ctx.key,
        ctx.common_iv,
        stream,
        seq,
        plaintext,
    )


def parse(frame: bytes) -> Parsed:
    """Strictly parse a frame's structure; raise :class:`MalformedFrame`. Checks no crypto."""
    return _be().parse(frame)


def open_frame(
    frame: bytes,
    sign_pk: bytes | None,
    ctx: oscore.Context,
    stream: bytes = oscore.STREAM_TELEMETRY,
) -> tuple[Parsed, bytes]:
    """Parse, verify and decrypt; return (parsed header, plaintext). No replay check."""
    return _be().open_frame(frame, sign_pk, ctx.key, ctx.common_iv, stream)


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
        out.update(
            {
                "cose": "COSE_Sign1 (tag 18) over COSE_Encrypt0 (tag 16)",
                "sign1_protected": {"alg": p.alg, "kid": p.kid.hex(), "bytes": p.prot.hex()},
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
    prot = f"h'{p.prot.hex()}' / {{1: {p.alg}, 4: h'{p.kid.hex()}'}} /"
    return f"18([{prot}, {{}}, << {enc0} >>, h'{p.sig.hex()}'])"


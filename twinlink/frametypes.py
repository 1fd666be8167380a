"""What every frame backend shares: the parsed-frame type, the profile constants, the COSE
structures and the backend contract (:class:`FrameBackend`).

Neutral ground: both backends (:mod:`twinlink._backend_pure`, :mod:`twinlink._backend_native`)
and everything above them import from here, never from each other. Callers use
:mod:`twinlink.frame`, which validates arguments once and dispatches to the active backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import cbor

#: Kinds of frame :func:`parse` recognises: twinlink/1 (COSE_Sign1 over Encrypt0), lite.
KIND_SIGNED = 1
KIND_LITE = 2

#: Encrypt0 protected header {1: 24} (ChaCha20/Poly1305), the same bytes in every frame.
ENC0_PROTECTED = b"\xa1\x01\x18\x18"
TAG_LEN = 16  # Poly1305 tag
SIG_LEN = 64  # Ed25519 signature
#: Largest frame either backend seals or parses; bounds every allocation a length field drives.
MAX_FRAME = 65535
#: An ID Context carried as COSE "kid context" (label 10) is 1..16 bytes (PROTOCOL.md §7).
MAX_KID_CONTEXT = 16
#: Longest outer protected header: A3 01 27 04 <bstr kid (7)> 0A <bstr kid_context (17)>.
MAX_PROTECTED = 29

_SIG1_PREFIX = b"\x84\x6aSignature1"
_ENC0_PREFIX = b"\x83\x68Encrypt0"


def sig_structure(protected: bytes, external_aad: bytes, payload: bytes) -> bytes:
    """RFC 9052 §4.4 ToBeSigned for COSE_Sign1: ["Signature1", protected, external_aad, payload]."""
    return _SIG1_PREFIX + cbor.bstr(protected) + cbor.bstr(external_aad) + cbor.bstr(payload)


def enc_structure(protected: bytes, external_aad: bytes) -> bytes:
    """RFC 9052 §5.3 AAD for COSE_Encrypt0: ["Encrypt0", protected, external_aad]."""
    return _ENC0_PREFIX + cbor.bstr(protected) + cbor.bstr(external_aad)


class Parsed:
    """A frame that passed strict structural parsing: its header values and the byte ranges
    the cryptography needs. Holds only public bytes. Built by the backends, never by callers.

    ``prot`` and ``sig`` are empty for a lite frame; ``enc0`` is then the whole frame.
    ``kid_context`` is the ID Context the protected header names (label 10), None for the base
    context (and always for a lite frame).
    """

    __slots__ = ("alg", "ct", "enc0", "kid", "kid_context", "kind", "piv", "prot", "seq", "sig")

    def __init__(self, kind: int, kid: bytes, piv: bytes, seq: int, alg: int, prot: bytes,
                 enc0: bytes, ct: bytes, sig: bytes, kid_context: bytes | None) -> None:
        self.kind, self.kid, self.piv, self.seq, self.alg = kind, kid, piv, seq, alg
        self.prot, self.enc0, self.ct, self.sig = prot, enc0, ct, sig
        self.kid_context = kid_context

    def fields(self) -> tuple[object, ...]:
        """Every field, in ``__slots__`` order (for comparing two parses)."""
        return tuple(getattr(self, s) for s in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Parsed) and self.fields() == other.fields()

    def __repr__(self) -> str:
        kind = "twinlink/1" if self.kind == KIND_SIGNED else "lite"
        ctx = "" if self.kid_context is None else f", kid_context={self.kid_context.hex()}"
        return f"Parsed({kind}, kid={self.kid.hex()}{ctx}, seq={self.seq})"


class FrameBackend(Protocol):
    """The surface both backends implement, byte for byte and exception for exception.

    Contract: arguments are already valid (:mod:`twinlink.frame` checks types and sizes once:
    bytes everywhere, kid 1..6 bytes, kid context None or 1..16 bytes, key 32, Common IV 12,
    Ed25519 secret key 64, public key 32, seq 0..2**40-1). A backend never re-checks them and
    may misbehave if called directly with anything else. What a backend raises is about the
    *frame*: :class:`MalformedFrame`, :class:`BadSignature`, :class:`DecryptionFailed` (all
    :class:`TwinlinkError`), and ``ValueError`` when a frame to seal would exceed
    :data:`MAX_FRAME`. A ``frame`` argument of :meth:`parse` / :meth:`open_frame` is hostile
    input: any bytes, even too long.
    """

    NAME: str

    def seal(self, sign_sk: bytes, kid: bytes, key: bytes, common_iv: bytes, stream: bytes,
             seq: int, plaintext: bytes, kid_context: bytes | None = None) -> bytes:
        """A twinlink/1 frame of ``plaintext`` with sequence number ``seq``; ``kid_context``
        (1..16 bytes) goes into the protected header as label 10, None leaves it out."""
        ...

    def seal_many(self, sign_sk: bytes, kid: bytes, key: bytes, common_iv: bytes,
                  stream: bytes, first_seq: int, plaintexts: Sequence[bytes],
                  kid_context: bytes | None = None) -> list[bytes]:
        """Frames of ``plaintexts`` with seqs ``first_seq``, ``first_seq + 1``, ... (all fit)."""
        ...

    def seal_lite(self, kid: bytes, key: bytes, common_iv: bytes, stream: bytes, seq: int,
                  plaintext: bytes) -> bytes:
        """A lite-profile frame (COSE_Encrypt0 only, kid unprotected, not signed)."""
        ...

    def parse(self, frame: bytes) -> Parsed:
        """Strict structural parse; :class:`MalformedFrame` for anything else."""
        ...

    def verify(self, parsed: Parsed, sign_pk: bytes, stream: bytes) -> None:
        """Check the Ed25519 signature; :class:`BadSignature` (also for a lite frame)."""
        ...

    def decrypt(self, parsed: Parsed, key: bytes, common_iv: bytes, stream: bytes) -> bytes:
        """The plaintext; :class:`DecryptionFailed` if the AEAD tag does not verify."""
        ...

    def open_frame(self, frame: bytes, sign_pk: bytes | None, key: bytes, common_iv: bytes,
                   stream: bytes) -> tuple[Parsed, bytes]:
        """parse, verify (signed frames; ``sign_pk`` None -> :class:`BadSignature`), decrypt."""
        ...

    def check_payload(self, plaintext: bytes) -> None:
        """Refuse a decrypted payload that is not the CBOR a reading may hold
        (:class:`MalformedPayload` with a short reason; docs/PROTOCOL.md §13)."""
        ...

"""End-to-end acknowledgements, version 2: the twin tells a device, authenticated, which of its
frames it has *stored* and which it refused for good (normative text: docs/PROTOCOL.md §15.1).

A broker's PUBACK only says the broker holds a frame; a broker restart without persistence still
drops it. So the twin answers on ``<root>/<kid hex>/a`` with an ack, and the device's outbox
releases a frame only when an ack names it *by its digest*::

    ack          = 16([h'A1011818', {4: twin_sid, 6: PIV, ? 10: kid_context}, ciphertext])
    key          = HKDF(salt, secret, [twin_sid, id_context, 24, "Key", 32])   ; RFC 8613 §3.2
    nonce        = CommonIV XOR (len(twin_sid) || pad(twin_sid) || pad(PIV))    ; RFC 8613 §5.2
    external_aad = [1, [24, -8], device_kid, PIV, h'61']
    plaintext    = {? 1: [+ [seq, digest]], ? 2: [+ [seq, digest, reason]]}
    digest       = SHA-256(frame as sent)[:8]

``twin_sid`` is 6 random bytes an ingest process picks when it starts, and PIV a counter it keeps
in memory per (twin_sid, device context): no (key, nonce) pair repeats across processes, workers
or a restored database, and no database write is needed per ack. An ack is an idempotent, true
claim about frames identified by their digests, so a replayed ack can release only frames that
really were stored: no replay window is kept.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cbor2

from . import enc0, senml
from .errors import MalformedFrame, MalformedPayload
from .oscore import MAX_KID_LEN, MAX_SEQ, STREAM_ACK, Context

__all__ = ["DIGEST_LEN", "MAX_ACK", "MAX_ENTRIES", "PERMANENT_REFUSALS", "SID_LEN", "Ack",
           "Refused", "Stored", "digest", "open_ack", "parse_ack", "seal_ack", "sender_id_for"]

#: Largest ack accepted on input (256 entries with the longest reasons fit with room to spare).
MAX_ACK = 16384
#: Most entries (stored + refused) in one ack; a sender splits beyond.
MAX_ENTRIES = 256
#: Length of the twin's Sender ID: the largest an OSCORE nonce of 12 bytes allows.
SID_LEN = MAX_KID_LEN
#: Length of a frame digest.
DIGEST_LEN = 8
#: Refusal reasons the twin sends back (only for frames whose signature or lite AEAD verified):
#: the frame will never be stored, whatever the device does; it moves to the dead letters.
PERMANENT_REFUSALS = frozenset({"bad_payload", "too_old", "context_retired", "revoked",
                                "conflict"})

_REASON = re.compile(r"[a-z][a-z0-9_]{0,31}")

Stored = tuple[int, bytes]  # (seq, digest)
Refused = tuple[int, bytes, str]  # (seq, digest, reason)


def digest(frame: bytes) -> bytes:
    """The 8-byte digest an ack names a frame by: SHA-256 of the frame bytes as sent."""
    return hashlib.sha256(frame).digest()[:DIGEST_LEN]


def sender_id_for(twin_sid: bytes, kid: bytes) -> bytes:
    """The twin Sender ID used towards device ``kid``: ``twin_sid``, or, in the one case it
    equals the kid (a 6-byte kid), ``twin_sid`` with the low bit of its last byte flipped, so
    the twin's nonces never fall into the device's own nonce space."""
    if twin_sid != kid:
        return twin_sid
    return twin_sid[:-1] + bytes((twin_sid[-1] ^ 1,))


@dataclass(frozen=True)
class Ack:
    """An opened, authenticated acknowledgement addressed to device ``kid``."""

    kid: bytes
    sender_id: bytes  # the twin process's Sender ID
    seq: int  # its Partial IV (no freshness meaning: acks are idempotent)
    kid_context: bytes | None  # the device context the named frames were sealed under
    stored: tuple[Stored, ...] = ()
    refused: tuple[Refused, ...] = ()

    def __len__(self) -> int:
        return len(self.stored) + len(self.refused)


def _check_entries(stored: Sequence[Stored], refused: Sequence[Refused]) -> None:
    if not stored and not refused:
        raise ValueError("an ack names at least one frame")
    if len(stored) + len(refused) > MAX_ENTRIES:
        raise ValueError(f"more than {MAX_ENTRIES} entries in one ack; split it")
    for e in (*stored, *refused):
        if not (type(e[0]) is int and 0 <= e[0] <= MAX_SEQ and type(e[1]) is bytes
                and len(e[1]) == DIGEST_LEN):
            raise ValueError("an ack entry is (seq 0..2^40-1, 8-byte digest[, reason])")
    for e in refused:
        if not (isinstance(e[2], str) and _REASON.fullmatch(e[2])):
            raise ValueError(f"bad refusal reason {e[2]!r}")


def seal_ack(ctx: Context, kid: bytes, piv_seq: int, stored: Iterable[Stored] = (),
             refused: Iterable[Refused] = (), kid_context: bytes | None = None) -> bytes:
    """Seal an ack for device ``kid``: ``stored`` (seq, digest) and ``refused`` (seq, digest,
    reason) entries of frames sealed under the device context whose ID Context is
    ``kid_context`` (None: the base context).

    ``ctx`` is the twin→device context of that device context with the twin process's Sender ID
    (``Twin.ack_context(kid, sender_id, id_context)``); ``piv_seq`` must never repeat for
    ``ctx`` (the ingest counts per context in memory). Entries are sorted by seq. Raises
    ValueError for a Sender ID that is not 6 bytes or equals ``kid``, no entry or more than
    :data:`MAX_ENTRIES`, or a malformed entry.
    """
    sid = ctx.sender_id
    if len(sid) != SID_LEN or sid == kid:
        raise ValueError("acks are sealed with the twin's 6-byte Sender ID, never the kid")
    st = sorted((int(s), bytes(d)) for s, d in stored)
    rf = sorted((int(s), bytes(d), r) for s, d, r in refused)
    _check_entries(st, rf)
    body: dict[int, list[list[object]]] = {}
    if st:
        body[1] = [[s, d] for s, d in st]
    if rf:
        body[2] = [[s, d, r] for s, d, r in rf]
    return enc0.seal(ctx, kid, piv_seq, cbor2.dumps(body, canonical=True), STREAM_ACK,
                     kid_context)


Envelope = enc0.Envelope


def parse_ack(data: bytes) -> Envelope:
    """Strictly parse an ack's envelope (exactly the shape in the module docstring, in that key
    order, shortest heads); raise :class:`MalformedFrame` otherwise. Nothing is authenticated."""
    return enc0.parse(data, "ack", SID_LEN, MAX_ACK)


def open_ack(ctx: Context, kid: bytes, data: bytes, env: Envelope | None = None) -> Ack:
    """Authenticate and decode an ack addressed to device ``kid``.

    ``ctx`` is the device's copy of the twin→device context for the envelope's Sender ID and
    kid context (see :class:`twinlink.delivery.AckOpener`, which derives it); ``env`` the
    already parsed envelope, if any. Raises :class:`MalformedFrame` (shape, or a Sender ID equal
    to ``kid``), :class:`DecryptionFailed` (forged, altered, or for another device or context)
    or :class:`MalformedPayload` (an authentic plaintext of the wrong shape).
    """
    env = env if env is not None else parse_ack(data)
    if env.sender_id == kid:
        raise MalformedFrame("ack Sender ID equals the device's kid")
    if ctx.sender_id != env.sender_id:
        raise ValueError("the context belongs to another twin Sender ID")
    plaintext = enc0.decrypt(ctx, kid, env, STREAM_ACK, "ack")
    stored, refused = _entries(senml.loads(plaintext))  # the bounded decoder
    return Ack(kid, env.sender_id, env.seq, env.kid_context, stored, refused)


def _entries(obj: object) -> tuple[tuple[Stored, ...], tuple[Refused, ...]]:
    if not isinstance(obj, dict) or not obj or not set(obj) <= {1, 2} \
            or any(type(k) is not int for k in obj):
        raise MalformedPayload("ack plaintext is not a map {? 1: stored, ? 2: refused}")
    stored, refused = obj.get(1, []), obj.get(2, [])
    if not isinstance(stored, list) or not isinstance(refused, list) \
            or (1 in obj and not stored) or (2 in obj and not refused) \
            or len(stored) + len(refused) > MAX_ENTRIES:
        raise MalformedPayload(f"ack lists are not non-empty arrays of at most {MAX_ENTRIES}")
    st: list[Stored] = []
    for e in stored:
        if not (isinstance(e, list) and len(e) == 2 and _seq_digest(e)):
            raise MalformedPayload("stored entry is not [seq, 8-byte digest]")
        st.append((e[0], e[1]))
    rf: list[Refused] = []
    for e in refused:
        if not (isinstance(e, list) and len(e) == 3 and _seq_digest(e)
                and isinstance(e[2], str) and _REASON.fullmatch(e[2])):
            raise MalformedPayload("refused entry is not [seq, 8-byte digest, reason]")
        rf.append((e[0], e[1], e[2]))
    return tuple(st), tuple(rf)


def _seq_digest(e: list[object]) -> bool:
    s, d = e[0], e[1]
    return (type(s) is int and 0 <= s <= MAX_SEQ and type(d) is bytes
            and len(d) == DIGEST_LEN)

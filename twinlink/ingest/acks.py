"""What the twin answers for a committed batch: end-to-end acks (:mod:`twinlink.ack`, v2).

:class:`Acknowledger` turns the results of :meth:`Twin.open_many` into sealed acks, one or more
per device context: *stored* entries for new readings and for duplicates the store confirms
(same (kid, epoch, seq) with the same digest), *refused* entries for frames that authenticated
and were refused for good (:data:`twinlink.ack.PERMANENT_REFUSALS`). It holds this ingest
process's random twin Sender ID and counts Partial IVs in memory per device context, so no
database state is involved and no two processes share a nonce. Transports only carry the bytes:
:mod:`twinlink.ingest.mqtt` publishes them, :mod:`twinlink.ingest.serial` writes them back on
the port. Not thread-safe: one caller thread (the ingest's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import ack as _ack
from ..oscore import MAX_SEQ
from ..twin import FrameInfo, Reading, Result, Twin

__all__ = ["Acknowledger", "Answer"]

log = logging.getLogger("twinlink.ingest")

#: Entries being collected for one (kid, kid context): seq -> digest, seq -> (digest, reason).
_Book = dict[tuple[bytes, "bytes | None"], tuple[dict[int, bytes], dict[int, tuple[bytes, str]]]]


@dataclass
class Answer:
    """What one batch's results come to: the acks to send, as (device kid, ack bytes), and
    counts of the results by kind."""

    acks: list[tuple[bytes, bytes]] = field(default_factory=list)
    stored: int = 0  # new readings
    duplicates: int = 0  # copies of stored frames (re-acknowledged once the store confirms)
    refused: int = 0  # every other refusal
    nacks: int = 0  # refusals answered: authenticated and permanent


class Acknowledger:
    """Seals the acks of committed batches for ``twin`` (see the module docstring).

    ``max_entries`` bounds the entries per ack (at most :data:`twinlink.ack.MAX_ENTRIES`; a
    serial link with a small maximum frame wants fewer).
    """

    def __init__(self, twin: Twin, max_entries: int = _ack.MAX_ENTRIES) -> None:
        if not 1 <= max_entries <= _ack.MAX_ENTRIES:
            raise ValueError(f"max_entries must be 1 to {_ack.MAX_ENTRIES}")
        self.twin = twin
        self.max_entries = max_entries
        #: This process's twin Sender ID: random, never stored, never reused.
        self.sender_id = os.urandom(_ack.SID_LEN)
        self._piv: dict[tuple[bytes, bytes], int] = {}  # (kid, ack key) -> next Partial IV

    def __repr__(self) -> str:
        return f"Acknowledger(sender_id={self.sender_id.hex()}, contexts={len(self._piv)})"

    def answer(self, results: Sequence[Result]) -> Answer:
        """The acks for one committed batch. Never raises: a failure to read the store or to
        seal costs only the acks of that device context (logged); the device resends and is
        answered then."""
        out = Answer()
        book: _Book = {}
        duplicates: list[FrameInfo] = []
        for r in results:
            if isinstance(r, Reading):
                out.stored += 1
                if len(r.digest) == _ack.DIGEST_LEN:
                    book.setdefault((r.kid, r.id_context), ({}, {}))[0][r.seq] = r.digest
                continue
            info = _named(r)
            if info is not None and info.duplicate:
                out.duplicates += 1
                duplicates.append(info)
                continue
            out.refused += 1
            # Only a frame that authenticated is answered: a NACK for a forgery would tell a
            # forger which guesses the twin looked at, and could dead-letter a genuine frame.
            if info is not None and info.authenticated and r.reason in _ack.PERMANENT_REFUSALS:
                assert info.kid is not None and info.seq is not None
                book.setdefault((info.kid, info.id_context), ({}, {}))[1][info.seq] = (
                    info.digest, r.reason)
                out.nacks += 1
        self._confirm_duplicates(duplicates, book)
        for (kid, kid_context), (stored, refused) in book.items():
            out.acks += self._seal(kid, kid_context, stored, refused)
        return out

    def _confirm_duplicates(self, dups: list[FrameInfo], book: _Book) -> None:
        """Acknowledge a duplicate only if the store holds that very frame: its (kid, epoch,
        seq) with the same digest."""
        groups: dict[tuple[bytes, int], list[tuple[int, FrameInfo]]] = {}
        for info in dups:
            # No epoch (not classified against the store): not confirmed; the resend will be.
            if info.kid is not None and info.seq is not None and info.epoch is not None:
                groups.setdefault((info.kid, info.epoch), []).append((info.seq, info))
        for (kid, epoch), infos in groups.items():
            try:
                held = self.twin.store.stored(kid, epoch, [seq for seq, _ in infos])
            except Exception:
                log.exception("ingest: looking up duplicates of %s failed; not re-acknowledged",
                              kid.hex())
                continue
            for seq, i in infos:
                if held.get(seq) == i.digest:
                    book.setdefault((kid, i.id_context), ({}, {}))[0][seq] = i.digest

    def _next_piv(self, kid: bytes, key: bytes) -> int:
        k = (kid, key)
        piv = self._piv.get(k, 0)
        if piv > MAX_SEQ:
            # 2^40 acks to one device context from one process: this Sender ID is spent. Take
            # a fresh one (fresh keys, counters from 0); this ack is lost, the resend heals it.
            self.sender_id, self._piv = os.urandom(_ack.SID_LEN), {}
            raise RuntimeError("ack sequence numbers of this twin Sender ID exhausted")
        self._piv[k] = piv + 1
        return piv

    def _seal(self, kid: bytes, kid_context: bytes | None, stored: dict[int, bytes],
              refused: dict[int, tuple[bytes, str]]) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        try:
            ctx = self.twin.ack_context(kid, _ack.sender_id_for(self.sender_id, kid),
                                        kid_context)
            entries = sorted([(s, 0, d, "") for s, d in stored.items()]
                             + [(s, 1, d, r) for s, (d, r) in refused.items()])
            for i in range(0, len(entries), self.max_entries):
                part = entries[i:i + self.max_entries]
                out.append((kid, _ack.seal_ack(
                    ctx, kid, self._next_piv(kid, ctx.key),
                    [(s, d) for s, k, d, _ in part if k == 0],
                    [(s, d, r) for s, k, d, r in part if k == 1], kid_context)))
        except Exception:
            log.exception("ingest: acknowledging device %s end to end failed", kid.hex())
        return out


def _named(r: Result) -> FrameInfo | None:
    """The refused frame's info if it names a frame (kid, seq and digest), else None."""
    info = getattr(r, "frame", None)
    if (isinstance(info, FrameInfo) and info.kid is not None and info.seq is not None
            and len(info.digest) == _ack.DIGEST_LEN):
        return info
    return None

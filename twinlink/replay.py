"""Replay protection: the receiver's sliding window and the sender's durable sequence numbers.

Receiver (RFC 8613 §7.4): :class:`ReplayWindow` keeps the highest accepted sequence number and a
bitfield of the ``size`` numbers at and below it. ``check`` never mutates; ``update`` is called
only after the frame verified and decrypted, in the transaction that stores the reading.

Sender (RFC 8613 Appendix B.1.1): :class:`SequenceStore`. Before a sequence number divisible by
K is used, it is stored durably (temp file, fsync, ``os.replace``, fsync of the directory) in one
of two alternating slots, so a torn write leaves the other slot intact. After a restart the
sender begins at stored + K + F, stores that start before using it, and never goes past 2**40-1.
An exclusive ``flock`` keeps a second process from sealing with the same identity. State that
cannot be proven (lost, corrupt, copied, restored) is never resumed: the sender starts a fresh
security context instead (Appendix B.2 direction), so no nonce is ever used twice.
"""

from __future__ import annotations

import fcntl
import os
import zlib
from pathlib import Path
from typing import NamedTuple

from .errors import Replay, SequenceExhausted, StateError, StateLocked, TooOld
from .fileio import atomic_write, read_regular
from .oscore import MAX_SEQ

DEFAULT_WINDOW = 64
DEFAULT_CHUNK = 1024


class ReplayWindow:
    """Sliding window over sequence numbers; ``top`` is -1 until the first accept."""

    __slots__ = ("bits", "size", "top")

    def __init__(self, size: int = DEFAULT_WINDOW, top: int = -1, bits: int = 0) -> None:
        if size < 1 or size % 8:
            raise ValueError("window size must be a positive multiple of 8")
        self.size, self.top, self.bits = size, top, bits & ((1 << size) - 1)

    def check(self, seq: int) -> None:
        """Raise :class:`Replay` or :class:`TooOld` if ``seq`` must be refused; never mutates."""
        if seq > self.top:
            return
        delta = self.top - seq
        if delta >= self.size:
            raise TooOld(f"sequence number {seq} is below the replay window (top {self.top})")
        if (self.bits >> delta) & 1:
            raise Replay(f"sequence number {seq} was already accepted")

    def update(self, seq: int) -> None:
        """Mark ``seq`` accepted (call only after :meth:`check` passed and the frame verified)."""
        if seq > self.top:
            shift = seq - self.top
            self.bits = (
                ((self.bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            )
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)

    def accept(self, seq: int) -> None:
        """check, then update."""
        self.check(seq)
        self.update(seq)

    def to_bytes(self) -> bytes:
        return self.bits.to_bytes(self.size // 8, "big")

    @classmethod
    def from_state(cls, size: int, top: int, bits: bytes) -> ReplayWindow:
        return cls(size, top, int.from_bytes(bits, "big"))

    @classmethod
    def anchored(cls, size: int, floor: int) -> ReplayWindow:
        """A window that accepts only sequence numbers >= ``floor`` (operator re-anchoring)."""
        return cls(size, floor - 1, (1 << size) - 1) if floor > 0 else cls(size)

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, top={self.top})"


_SLOT_MAGIC = "twinlink-seq/2"
#: Length of the random ID Context a device picks when it renews its security context.
RENEWED_CONTEXT_LEN = 8


def _slot_text(gen: int, value: int, id_context: bytes | None, identity: str) -> bytes:
    """One slot: ``twinlink-seq/2 <gen> <value> <ID Context hex or -> <identity> <crc32>``."""
    ctx = "-" if id_context is None else id_context.hex()
    body = f"{_SLOT_MAGIC} {gen} {value} {ctx} {identity}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


class _Slot(NamedTuple):
    gen: int
    value: int
    id_context: bytes | None
    identity: str


def _slot_value(raw: bytes) -> _Slot | None:
    try:
        magic, gen, value, ctx, identity, crc = raw.decode().split()
        body = f"{magic} {gen} {value} {ctx} {identity}"
        if magic != _SLOT_MAGIC or int(crc, 16) != zlib.crc32(body.encode()):
            return None
        return _Slot(int(gen), int(value), None if ctx == "-" else bytes.fromhex(ctx), identity)
    except (ValueError, UnicodeDecodeError):
        return None


class SequenceStore:
    """Durable, lock-protected sender sequence numbers for one identity, with its context.

    ``path`` is a prefix: the store uses ``path.lock``, ``path.a`` and ``path.b``. Each slot
    records, besides the reserved value, the ID Context in use and the *identity* of this
    state: (device, inode, ctime) of the lock file, which a copy or a restore from backup
    cannot keep. State that cannot be proven to be this very state — missing, unreadable,
    corrupt, of another identity (copied, restored), or of the older slot format — is never
    resumed: the store *renews* the context (RFC 8613 Appendix B.2 direction): a fresh random
    ID Context, sequence numbers from 0, stored before first use. ``renew="always"`` renews on
    every open (for media that can be rolled back by a snapshot, which no file check can see).

    ``renewable=False`` (a lite device, which holds derived keys for one context only) never
    renews: missing state is accepted only when ``fresh`` says the identity was never used, and
    anything else raises :class:`StateError`.
    """

    def __init__(
        self, path: str | os.PathLike[str], chunk: int = DEFAULT_CHUNK, margin: int = 1, *,
        renew: str = "auto", renewable: bool = True, base_context: bytes | None = None,
        fresh: bool = True,
    ) -> None:
        if chunk < 1 or margin < 1:
            raise ValueError("chunk and margin must be positive")
        if renew not in ("auto", "always"):
            raise ValueError("renew must be 'auto' or 'always'")
        self.path = Path(path)
        self.chunk, self.margin = chunk, margin
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StateLocked(
                f"another process is sealing with this identity (lock {self.path}.lock)"
            ) from None
        self._slot = 0
        self._gen = 0
        #: Why the context was renewed at open ("" if the stored state was resumed).
        self.renewed = ""
        try:
            st = os.fstat(self._lock_fd)
            self.identity = f"{st.st_dev:x}:{st.st_ino:x}:{st.st_ctime_ns:x}"
            slot, why = self._load()
            if renew == "always" and not why:
                why = "renewal on every start requested"
            if not why:
                assert slot is not None
                self.id_context = slot.id_context
                # Skip the chunk that may have been in use, and store the new start before
                # any number from it is used.
                self._next = min(slot.value + chunk + margin, MAX_SEQ + 1)
            elif not renewable:
                if slot is None and why == "no sequence state" and fresh:
                    self.id_context, self._next = base_context, 0
                else:
                    raise StateError(
                        f"sequence state {self.path} cannot be trusted ({why}) and this device "
                        "cannot renew its security context (lite profile): re-provision it")
            else:
                self.renewed = why
                self.id_context, self._next = os.urandom(RENEWED_CONTEXT_LEN), 0
            self._persisted = -1
            if self._next <= MAX_SEQ:
                self._persist(self._next)
        except BaseException:
            self.close()
            raise

    def _slots(self) -> tuple[Path, Path]:
        return Path(f"{self.path}.a"), Path(f"{self.path}.b")

    def _load(self) -> tuple[_Slot | None, str]:
        """The newest valid slot, and why it cannot be resumed ("" if it can)."""
        best: _Slot | None = None
        present = 0
        for i, slot in enumerate(self._slots()):
            try:
                raw, _ = read_regular(slot, 4096)
            except FileNotFoundError:
                continue
            except OSError:
                present += 1
                continue
            present += 1
            v = _slot_value(raw)
            if v is not None and (best is None or v.gen > best.gen):
                best = v
                self._slot = 1 - i  # next write goes to the other slot
        if best is None:
            return None, ("sequence state unreadable or of an older format" if present
                          else "no sequence state")
        self._gen = best.gen
        if best.identity != self.identity:
            return best, "sequence state was copied or restored from a backup"
        return best, ""

    def _persist(self, value: int) -> None:
        self._gen += 1
        atomic_write(self._slots()[self._slot],
                     _slot_text(self._gen, value, self.id_context, self.identity), 0o600)
        self._slot = 1 - self._slot
        self._persisted = value

    @property
    def next_seq(self) -> int:
        """The sequence number the next :meth:`take` returns."""
        return self._next

    def take(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive sequence numbers; return the first. Durable before return."""
        if self._lock_fd < 0:
            raise StateError("sequence store is closed")
        first = self._next
        last = first + n - 1
        if n < 1 or last > MAX_SEQ:
            raise SequenceExhausted("sequence numbers exhausted for this security context; re-key")
        boundary = last - last % self.chunk  # largest multiple of K in [first, last], if any
        if boundary >= first and boundary > self._persisted:
            self._persist(boundary)
        self._next = last + 1
        return first

    def close(self) -> None:
        if self._lock_fd >= 0:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> SequenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

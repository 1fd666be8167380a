"""Durable sequence numbers for flash (RFC 8613 Appendix B.1.1), never reused.

Before a sequence number divisible by ``chunk`` (K) is used, it is written to one of two
alternating slots; after a restart the sender begins at stored + K + margin and stores that start
before using it. A power cut at any instant therefore skips at most K + margin numbers and never
repeats one (a repeated number is a repeated nonce). One flash write per K frames: pick K from
your flash's endurance and your frame rate (K=256 at one frame a second is ~340 writes a day,
spread over two files by the file system's wear levelling).

The slot text is the same as ``twinlink.replay.SequenceStore``'s: "twinlink-seq/1 <n> <crc32>".
"""

import binascii

from .frame import MAX_SEQ

_MAGIC = "twinlink-seq/1"


def slot_text(value):
    body = _MAGIC + " " + str(value)
    return (body + " %08x\n" % (binascii.crc32(body.encode()) & 0xFFFFFFFF)).encode()


def slot_value(raw):
    """The value stored in a slot, or None if the slot is torn or foreign."""
    try:
        magic, value, crc = raw.decode().split()
        body = magic + " " + value
        if magic != _MAGIC or int(crc, 16) != binascii.crc32(body.encode()) & 0xFFFFFFFF:
            return None
        return int(value)
    except (ValueError, UnicodeError):
        return None


class FileSlots:
    """Two slot files ``prefix.a`` / ``prefix.b`` on the board's file system (littlefs, FAT).

    A slot is written to a temporary file and renamed over the old one; littlefs renames
    atomically. On FAT, where rename onto an existing file fails, the old slot is removed
    first — the other slot still holds a valid value, which is why there are two.
    """

    def __init__(self, prefix):
        self.paths = (prefix + ".a", prefix + ".b")

    def read(self, i):
        try:
            with open(self.paths[i], "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def write(self, i, data):
        import os

        path = self.paths[i]
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if hasattr(os, "fsync"):  # CPython; MicroPython flushes on close
                os.fsync(fh.fileno())
        try:
            os.rename(tmp, path)
        except OSError:
            try:
                os.remove(path)
            except OSError:
                pass
            os.rename(tmp, path)
        if hasattr(os, "sync"):
            os.sync()


class SeqStore:
    """Hands out sequence numbers; ``slots`` has ``read(i) -> bytes|None`` and ``write(i, b)``."""

    def __init__(self, slots, chunk=256, margin=1):
        if chunk < 1 or margin < 1:
            raise ValueError("chunk and margin must be positive")
        self.slots = slots
        self.chunk = chunk
        self._slot = 0
        best = None
        present = 0
        for i in (0, 1):
            raw = slots.read(i)
            if raw is None:
                continue
            present += 1
            v = slot_value(raw)
            if v is not None and (best is None or v > best):
                best = v
                self._slot = 1 - i
        if present and best is None:
            raise ValueError("sequence state is corrupt; refusing to guess (re-provision)")
        self.next = 0 if best is None else min(best + chunk + margin, MAX_SEQ + 1)
        self._persisted = -1
        if self.next <= MAX_SEQ:
            self._persist(self.next)

    def _persist(self, value):
        self.slots.write(self._slot, slot_text(value))
        self._slot = 1 - self._slot
        self._persisted = value

    def take(self):
        """The next sequence number; durable before it is returned. Raises at 2**40."""
        seq = self.next
        if seq > MAX_SEQ:
            raise OverflowError("sequence numbers exhausted for this key; re-provision")
        if seq % self.chunk == 0 and seq > self._persisted:
            self._persist(seq)
        self.next = seq + 1
        return seq

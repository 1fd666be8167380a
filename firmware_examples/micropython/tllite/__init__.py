"""tllite: a twinlink *lite* sender in pure MicroPython.

    sender = LiteSender(load_bundle("/lite.device"), FileSlots("/tl_seq"))
    uart.write(sender.record([("temp", 21.5)], time=unix_time()))

The board needs no Ed25519 and no X25519: ``twinlink provision NAME --lite`` derives the
ChaCha20-Poly1305 key and Common IV on the provisioning host and puts them in the bundle. The
twin accepts these frames only from devices registered as lite and stores them with provenance
"aead-only".
"""

import json

from . import cbor, wire
from .frame import seal_lite
from .seq import FileSlots, SeqStore

__all__ = ["FileSlots", "LiteSender", "SeqStore", "load_bundle", "unix_time"]

VERSION = "0.1.0"


def load_bundle(path):
    """Read a bundle written by ``twinlink provision --lite`` (JSON)."""
    with open(path) as fh:
        return json.load(fh)


def unix_time():
    """Seconds since 1970 as an int, whatever the port's epoch (some boards count from 2000).

    Returns None if the clock is obviously unset (before 2020): better no time than a wrong one.
    """
    import time

    t = time.time()
    if time.gmtime(0)[0] == 2000:
        t += 946684800
    return int(t) if t >= 1577836800 else None


class LiteSender:
    """Seals readings as lite frames with durable, never-reused sequence numbers."""

    def __init__(self, bundle, slots, chunk=None):
        lite = bundle.get("lite")
        if bundle.get("profile") != "lite" or not lite:
            raise ValueError("not a lite bundle: provision the device with 'twinlink provision "
                             "NAME --lite'")
        self.name = bundle["name"]
        self.kid = bytes.fromhex(bundle["kid"])
        self._key = bytes.fromhex(lite["key"])
        self._iv = bytes.fromhex(lite["common_iv"])
        if not 1 <= len(self.kid) <= 6 or len(self._key) != 32 or len(self._iv) != 12:
            raise ValueError("bundle has a malformed kid, key or Common IV")
        settings = bundle.get("settings") or {}
        self.seq = SeqStore(slots, chunk or int(settings.get("sequence_chunk") or 256))

    def __repr__(self):
        return f"LiteSender(name={self.name!r}, kid={self.kid.hex()})"

    def seal_raw(self, plaintext):
        """Seal an already CBOR-encoded plaintext with the next sequence number."""
        return seal_lite(self._key, self._iv, self.kid, self.seq.take(), plaintext)

    def seal(self, pairs, time=None, units=None):
        """Seal a reading: a list of (name, value) pairs (or a dict, order not kept)."""
        return self.seal_raw(cbor.senml(pairs, time, units))

    def record(self, pairs, time=None, units=None, flush_prefix=False):
        """Seal a reading and return the UART bytes: COBS(frame || CRC-16) 0x00."""
        return wire.record(self.seal(pairs, time, units), flush_prefix)

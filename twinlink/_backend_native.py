"""The native backend: the C core in ``native/`` through the cffi extension ``twinlink._native``.

This is the only module that imports ``twinlink._native``. It implements
:class:`twinlink.frametypes.FrameBackend` (same bytes and exception classes as
:mod:`twinlink._backend_pure`; the differential tests hold it to that), plus COBS, CRC-16,
HKDF/derivation and a replay :class:`Window` backed by the C routines.

At import the C crypto adapter is bound to the libsodium inside PyNaCl: the addresses of the
few functions the core needs are read from PyNaCl's ``nacl/_sodium`` module with ctypes and
handed to the C side once (see ``native/tl_crypto_pynacl.h`` for why a table and not
RTLD_GLOBAL). Any failure raises ImportError, so :mod:`twinlink.backends` falls back to pure.

Arguments are valid by contract (:mod:`twinlink.frame` checks them once). Each frame operation
is one C call into ``native/tl_py.c`` on a buffer sized by the matching ``tlpy_*_size``; every
C error code goes through :func:`_raise` and the one table :data:`_ERRORS`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any, NoReturn

import nacl._sodium as _sodium

from . import errors
from ._native import ffi as _ffi
from ._native import lib as _lib
from .frametypes import Parsed

__all__ = ["NAME", "Window", "check_payload", "cobs_decode", "cobs_encode", "crc16", "decrypt",
           "derive", "hkdf_sha256", "open_frame", "parse", "seal", "seal_lite", "seal_many",
           "verify"]

NAME = "native"


def _bind() -> None:
    dll = ctypes.CDLL(_sodium.__file__)  # already loaded by PyNaCl: same handle, no reload
    addrs = []
    for i in range(_lib.TL_PYNACL_NFUNCS):
        name = _ffi.string(_lib.tl_pynacl_names[i]).decode()
        try:
            addrs.append(ctypes.cast(getattr(dll, name), ctypes.c_void_p).value or 0)
        except AttributeError:
            raise ImportError(f"PyNaCl's libsodium does not export {name}") from None
    if _lib.tl_crypto_pynacl_bind(_ffi.new("uintptr_t[]", addrs)) != _lib.TL_OK:
        raise ImportError("cannot bind the C core to PyNaCl's libsodium")


_bind()

# tl_err (native/tl_error.h) -> exception class. TL_E_RANGE reaches Python only for a frame
# that would be too large (frame.py checks every argument first); TL_E_BUFFER and TL_E_CRYPTO
# mean a bug here or a broken libsodium, never bad input.
_ERRORS: dict[int, tuple[type[Exception], str]] = {
    _lib.TL_E_MALFORMED: (errors.MalformedFrame, "not a well-formed twinlink/1 frame"),
    _lib.TL_E_BAD_SIGNATURE: (errors.BadSignature,
                              "signature does not verify under the device key"),
    _lib.TL_E_DECRYPT: (errors.DecryptionFailed, "AEAD tag does not verify"),
    _lib.TL_E_REPLAY: (errors.Replay, "sequence number was already accepted"),
    _lib.TL_E_TOO_OLD: (errors.TooOld, "sequence number is below the replay window"),
    _lib.TL_E_RANGE: (ValueError, "frame would exceed the maximum frame size"),
    _lib.TL_E_BUFFER: (RuntimeError, "internal error: buffer too small"),
    _lib.TL_E_CRYPTO: (RuntimeError, "crypto adapter failure"),
    _lib.TL_E_LINE: (errors.LineError, "COBS record is not decodable"),
    _lib.TL_E_PAYLOAD: (errors.MalformedPayload, "payload is not the CBOR a reading may hold"),
}
#: tl_payload_reason -> its text (native/tl_cbor_check.c; cbor.PAYLOAD_REASONS has the same).
_PAYLOAD_REASONS = tuple(_ffi.string(_lib.tl_cbor_check_reason(i)).decode()
                         for i in range(_lib.TL_PAYLOAD_NREASONS))

_alloc = _ffi.new_allocator(should_clear_after_alloc=False)
_NULL = _ffi.NULL
_unpack = _ffi.unpack
# The per-frame C entry points, looked up once (a cffi lib attribute costs a lookup per call).
_seal_size, _seal, _seal_lite = _lib.tlpy_seal_size, _lib.tlpy_seal, _lib.tlpy_seal_lite
_open_size, _open, _parse = _lib.tlpy_open_size, _lib.tlpy_open, _lib.tlpy_parse
_verify_size, _verify = _lib.tlpy_verify_size, _lib.tlpy_verify
_decrypt_size, _decrypt = _lib.tlpy_decrypt_size, _lib.tlpy_decrypt
_check, _CHECK_SMALL = _lib.tlpy_check_payload, _lib.TLPY_CHECK_SMALL


def _raise(rc: int) -> NoReturn:
    """Raise the exception mapped to ``-rc`` (a tlpy_* result) or ``rc`` (a tl_err)."""
    cls, msg = _ERRORS.get(abs(rc), (RuntimeError, f"unknown C error {abs(rc)}"))
    raise cls(msg)


def seal(sign_sk: bytes, kid: bytes, key: bytes, common_iv: bytes, stream: bytes,
         seq: int, plaintext: bytes, kid_context: bytes | None = None) -> bytes:
    """Seal ``plaintext`` as a twinlink/1 frame with sequence number ``seq``."""
    n, s = len(plaintext), len(stream)
    cap = _seal_size(n, s)
    buf = _alloc("char[]", cap)
    if kid_context is None:
        rc = _seal(buf, cap, sign_sk, kid, len(kid), _NULL, 0, key, common_iv, stream, s, seq,
                   plaintext, n)
    else:
        rc = _seal(buf, cap, sign_sk, kid, len(kid), kid_context, len(kid_context), key,
                   common_iv, stream, s, seq, plaintext, n)
    if rc < 0:
        _raise(rc)
    return _unpack(buf, rc)


def seal_many(sign_sk: bytes, kid: bytes, key: bytes, common_iv: bytes, stream: bytes,
              first_seq: int, plaintexts: Sequence[bytes],
              kid_context: bytes | None = None) -> list[bytes]:
    """Seal ``plaintexts`` with consecutive sequence numbers in one C call (all or none)."""
    count = len(plaintexts)
    if not count:
        return []
    joined = b"".join(plaintexts)
    lens = list(map(len, plaintexts))
    cap = _lib.tlpy_seal_many_size(len(joined), max(lens), count, len(stream))
    buf = _alloc("char[]", cap)
    flens = _alloc("size_t[]", count)
    kc = _NULL if kid_context is None else kid_context
    start = _lib.tlpy_seal_many(buf, cap, flens, sign_sk, kid, len(kid), kc,
                                0 if kid_context is None else len(kid_context), key, common_iv,
                                stream, len(stream), first_seq, joined, lens, count)
    if start < 0:
        _raise(start)
    out = _ffi.buffer(buf, cap)
    frames = []
    for flen in _unpack(flens, count):
        frames.append(out[start:start + flen])
        start += flen
    return frames


def seal_lite(kid: bytes, key: bytes, common_iv: bytes, stream: bytes, seq: int,
              plaintext: bytes) -> bytes:
    """Seal ``plaintext`` as a lite-profile frame (COSE_Encrypt0 only, kid unprotected)."""
    n, s = len(plaintext), len(stream)
    cap = _seal_size(n, s)
    buf = _alloc("char[]", cap)
    rc = _seal_lite(buf, cap, kid, len(kid), key, common_iv, stream, s, seq, plaintext, n)
    if rc < 0:
        _raise(rc)
    return _unpack(buf, rc)


def _frame_bytes(frame: object) -> bytes:
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise errors.MalformedFrame("frame must be bytes")
    return bytes(frame)


def _parsed(frame: bytes, p: Any) -> Parsed:
    """A :class:`Parsed` sliced out of ``frame`` at the offsets of a ``tlpy_parsed *``."""
    kid_at, piv_at, prot_at, enc0_at, ct_at, sig_at = (
        p.kid_at, p.piv_at, p.prot_at, p.enc0_at, p.ct_at, p.sig_at)
    kc_len = p.kid_context_len
    return Parsed(p.kind, frame[kid_at:kid_at + p.kid_len], frame[piv_at:piv_at + p.piv_len],
                  p.seq, p.alg, frame[prot_at:prot_at + p.prot_len],
                  frame[enc0_at:enc0_at + p.enc0_len], frame[ct_at:ct_at + p.ct_len],
                  frame[sig_at:sig_at + p.sig_len],
                  frame[p.kid_context_at:p.kid_context_at + kc_len] if kc_len else None)


def parse(frame: bytes) -> Parsed:
    """Strictly parse a twinlink/1 or lite frame; raise :class:`MalformedFrame` otherwise."""
    if type(frame) is not bytes:
        frame = _frame_bytes(frame)
    o = _alloc("tlpy_parsed *")
    rc = _parse(o, frame, len(frame))
    if rc != 0:
        _raise(rc)
    return _parsed(frame, o)


def verify(parsed: Parsed, sign_pk: bytes, stream: bytes) -> None:
    """Check the Ed25519 signature of a parsed twinlink/1 frame; raise :class:`BadSignature`."""
    prot, kid, piv, enc0, sig = parsed.prot, parsed.kid, parsed.piv, parsed.enc0, parsed.sig
    cap = _verify_size(len(prot), len(kid), len(piv), len(enc0), len(stream))
    work = _alloc("char[]", cap)
    rc = _verify(work, cap, prot, len(prot), kid, len(kid), piv, len(piv), enc0, len(enc0), sig,
                 len(sig), sign_pk, stream, len(stream))
    if rc != 0:
        _raise(rc)


def decrypt(parsed: Parsed, key: bytes, common_iv: bytes, stream: bytes) -> bytes:
    """Decrypt the Encrypt0 layer; raise :class:`DecryptionFailed` if the tag does not verify."""
    kid, piv, ct = parsed.kid, parsed.piv, parsed.ct
    cap = _decrypt_size(len(ct), len(kid), len(piv), len(stream))
    buf = _alloc("char[]", cap)
    rc = _decrypt(buf, cap, kid, len(kid), piv, len(piv), ct, len(ct), key, common_iv, stream,
                  len(stream))
    if rc < 0:
        _raise(rc)
    return _unpack(buf, rc)


def open_frame(frame: bytes, sign_pk: bytes | None, key: bytes, common_iv: bytes,
               stream: bytes) -> tuple[Parsed, bytes]:
    """Parse, verify (twinlink/1; a signed frame needs ``sign_pk``) and decrypt, in one C call."""
    if type(frame) is not bytes:
        frame = _frame_bytes(frame)
    n, s = len(frame), len(stream)
    cap = _open_size(n, s)
    buf = _alloc("char[]", cap)
    o = _alloc("tlpy_parsed *")
    rc = _open(buf, cap, o, frame, n, _NULL if sign_pk is None else sign_pk, key, common_iv,
               stream, s)
    if rc < 0:
        _raise(rc)
    return _parsed(frame, o), _unpack(buf, rc)


def check_payload(plaintext: bytes) -> None:
    """Refuse a payload outside the CBOR a reading may hold; raise :class:`MalformedPayload`."""
    n = len(plaintext)
    if n <= _CHECK_SMALL:
        rc = _check(_NULL, 0, plaintext, n)  # the work array lives on the C stack
    else:
        work_n = _lib.tl_cbor_check_work(n)
        rc = _check(_alloc("uint32_t[]", work_n), work_n, plaintext, n)
    if rc:
        if rc > 0:
            raise errors.MalformedPayload(_PAYLOAD_REASONS[rc])
        _raise(rc)


# ---------------------------------------------------------------------------------------------
# Extras backed by the same C core: serial-line framing, key schedule, replay window. Called
# directly on the core's API (tl_cobs.h, tl_crc.h, tl_oscore.h, tl_window.h).

def _ensure(rc: int) -> None:
    if rc != _lib.TL_OK:
        _raise(rc)


def _sized(fn_name: str, data: bytes) -> bytes:
    """Run a core function of the (out, &out_len, in, in_len) shape: size query, then call."""
    fn = getattr(_lib, fn_name)
    n = _ffi.new("size_t *")
    _ensure(fn(_NULL, n, data, len(data)))
    out = _ffi.new("char[]", max(n[0], 1))
    _ensure(fn(out, n, data, len(data)))
    return _unpack(out, n[0])


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter); same bytes as :mod:`twinlink.transport.framing`."""
    return _sized("tl_cobs_encode", data)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS record (without its 0x00 delimiter); raise :class:`LineError`."""
    return _sized("tl_cobs_decode", data)


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE, equal to ``binascii.crc_hqx(data, crc)``."""
    return int(_lib.tl_crc16(_ffi.from_buffer(data), len(data), crc))


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) in C; same as :func:`twinlink.oscore.hkdf_sha256`."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF output length out of range")
    okm = _ffi.new("char[]", length)
    _ensure(_lib.tl_hkdf_sha256(okm, length, salt, len(salt), ikm, len(ikm), info, len(info)))
    out = _unpack(okm, length)
    _ffi.memmove(okm, bytes(length), length)
    return out


def derive(master_secret: bytes, sender_id: bytes, master_salt: bytes = b"",
           id_context: bytes | None = None) -> tuple[bytes, bytes]:
    """(Sender Key, Common IV) as :func:`twinlink.oscore.derive_context` derives them.

    The C core bounds ``sender_id`` to 6 bytes and ``id_context`` to 64 (ValueError beyond).
    """
    ctx = b"" if id_context is None else id_context
    key = _ffi.new("char[]", _lib.TL_KEY_LEN)
    iv = _ffi.new("char[]", _lib.TL_IV_LEN)
    rc = _lib.tl_oscore_derive(key, iv, master_secret, len(master_secret), master_salt,
                               len(master_salt), sender_id, len(sender_id),
                               id_context is not None, ctx, len(ctx))
    out = _unpack(key, _lib.TL_KEY_LEN), _unpack(iv, _lib.TL_IV_LEN)
    _ffi.memmove(key, bytes(_lib.TL_KEY_LEN), _lib.TL_KEY_LEN)
    _ensure(rc)
    return out


_MAX_SEQ = (1 << 40) - 1


class Window:
    """Replay window in C with the decisions of :class:`twinlink.replay.ReplayWindow`.

    ``size`` <= 64 is one 64-bit word; larger sizes use an RFC 6479 ring. ``check`` raises
    :class:`Replay` / :class:`TooOld` and never mutates; ``update`` marks a verified frame.
    """

    __slots__ = ("_ring", "_w")

    def __init__(self, size: int = 64, top: int = -1, bits: bytes | None = None) -> None:
        if size < 1 or size % 8 or size > 1 << 20:
            raise ValueError("window size must be a positive multiple of 8")
        nblocks = int(_lib.tl_window_blocks(size))
        self._ring = _ffi.new("uint64_t[]", max(nblocks, 1))
        self._w = _ffi.new("tl_window *")
        _ensure(_lib.tl_window_init(self._w, size, self._ring, nblocks))
        if top != -1 or bits is not None:
            raw = bits if bits is not None else bytes(size // 8)
            _ensure(_lib.tl_window_import(self._w, top, _ffi.from_buffer(raw), len(raw)))

    @property
    def size(self) -> int:
        return int(self._w.size)

    @property
    def top(self) -> int:
        return int(self._w.top)

    def check(self, seq: int) -> None:
        """Raise :class:`Replay` or :class:`TooOld` if ``seq`` must be refused."""
        if not 0 <= seq <= _MAX_SEQ:
            raise ValueError("sequence number out of range")
        _ensure(_lib.tl_window_check(self._w, seq))

    def update(self, seq: int) -> None:
        """Mark ``seq`` accepted (after it verified); :class:`TooOld` below the window."""
        if not 0 <= seq <= _MAX_SEQ:
            raise ValueError("sequence number out of range")
        _ensure(_lib.tl_window_update(self._w, seq))

    def accept(self, seq: int) -> None:
        """check, then update."""
        self.check(seq)
        self.update(seq)

    def to_bytes(self) -> bytes:
        """The bitfield, as :meth:`twinlink.replay.ReplayWindow.to_bytes` writes it."""
        n = self.size // 8
        out = _ffi.new("char[]", n)
        _ensure(_lib.tl_window_export(out, n, self._w))
        return _unpack(out, n)

    def __repr__(self) -> str:
        return f"Window(size={self.size}, top={self.top})"

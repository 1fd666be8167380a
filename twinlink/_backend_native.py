"""The native backend: the C core in ``native/`` through the cffi extension ``twinlink._native``.

This is the only module that imports ``twinlink._native``. It exposes exactly the surface of
:mod:`twinlink._backend_pure` (same functions, arguments, bytes and exception classes; the
differential tests hold it to that), plus COBS, CRC-16, HKDF/derivation and a replay
:class:`Window` backed by the C routines.

At import the C crypto adapter is bound to the libsodium inside PyNaCl: the addresses of the
few functions the core needs are read from PyNaCl's ``nacl/_sodium`` module with ctypes and
handed to the C side once (see ``native/tl_crypto_pynacl.h`` for why a table and not
RTLD_GLOBAL). Any failure raises ImportError, so :mod:`twinlink.backend` falls back to pure.

Arguments are ``bytes`` (a frame to parse may also be bytearray/memoryview). Every C return
code goes through :func:`_ensure` and the one table :data:`_ERRORS`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable

import nacl._sodium as _sodium

from . import errors
from ._backend_pure import (
    KIND_LITE,
    KIND_SIGNED,
    MAX_FRAME,
    SIG_LEN,
    TAG_LEN,
    Parsed,
)
from ._native import ffi as _ffi
from ._native import lib as _lib

__all__ = ["KIND_LITE", "KIND_SIGNED", "MAX_FRAME", "NAME", "SIG_LEN", "TAG_LEN", "Parsed",
           "Window", "cobs_decode", "cobs_encode", "crc16", "decrypt", "derive", "hkdf_sha256",
           "open_frame", "parse", "seal", "seal_lite", "seal_many", "verify"]

NAME = "native"
_MAX_SEQ = (1 << 40) - 1


def _bind() -> None:
    dll = ctypes.CDLL(_sodium.__file__)  # already loaded by PyNaCl: same handle, no reload
    addrs = []
    for i in range(_lib.TL_PYNACL_NFUNCS):
        name = _ffi.string(_lib.tl_pynacl_names[i]).decode()
        try:
            addrs.append(ctypes.cast(getattr(dll, name), ctypes.c_void_p).value or 0)
        except AttributeError:
            raise ImportError(f"PyNaCl's libsodium does not export {name}") from None
    if _lib.tl_crypto_pynacl_bind(_ffi.new("uintptr_t[]", addrs)) != 0:
        raise ImportError("cannot bind the C core to PyNaCl's libsodium")


_bind()

# tl_err -> exception class (native/tl_error.h). TL_E_BUFFER and TL_E_CRYPTO mean a bug here or
# a broken libsodium, never bad input.
_ERRORS: dict[int, tuple[type[Exception], str]] = {
    1: (errors.MalformedFrame, "not a well-formed twinlink/1 frame"),
    2: (errors.BadSignature, "signature does not verify under the device key"),
    3: (errors.DecryptionFailed, "AEAD tag does not verify"),
    4: (errors.Replay, "sequence number was already accepted"),
    5: (errors.TooOld, "sequence number is below the replay window"),
    6: (ValueError, "kid must be 1 to 6 bytes, seq at most 2**40-1, frames at most 65535 bytes"),
    7: (RuntimeError, "internal error: buffer too small"),
    8: (RuntimeError, "crypto adapter failure"),
    9: (errors.LineError, "COBS record is not decodable"),
}

_alloc = _ffi.new_allocator(should_clear_after_alloc=False)
_NULL = _ffi.NULL


def _ensure(rc: int) -> int:
    """Pass a non-negative C result through; raise the mapped exception for ``-tl_err``."""
    if rc >= 0:
        return rc
    cls, msg = _ERRORS.get(-rc, (RuntimeError, f"unknown C error {-rc}"))
    raise cls(msg)


def _b(x: object) -> bytes:
    """bytes from any bytes-like argument (as the pure path accepts); TypeError otherwise."""
    return x if type(x) is bytes else bytes(memoryview(x))  # type: ignore[arg-type]


def _kid(x: object) -> bytes:
    """The kid as bytes; the pure path takes bytes or bytearray (it pads with ``rjust``)."""
    if type(x) is bytes:
        return x
    if not isinstance(x, (bytes, bytearray)):
        raise TypeError("kid must be bytes")
    return bytes(x)


def _check_args(kid: bytes, key: bytes, common_iv: bytes, seq: int) -> None:
    """The pure path's argument checks, in its order and with its exception classes."""
    if not isinstance(seq, int):
        raise TypeError("sequence number must be an int")
    if not 1 <= len(kid) <= 6:
        raise ValueError("kid must be 1 to 6 bytes")
    if len(key) != 32 or len(common_iv) != 12:
        raise ValueError("key must be 32 bytes and common IV 12 bytes")
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError("sequence number out of range")


def _check_sk(sign_sk: bytes) -> None:
    if type(sign_sk) is not bytes:
        raise TypeError("sign_sk must be bytes")
    if len(sign_sk) != 64:
        raise ValueError("sign_sk must be the 64-byte libsodium Ed25519 secret key")


def seal(sign_sk: bytes, kid: bytes, key: bytes, common_iv: bytes, stream: bytes,
         seq: int, plaintext: bytes) -> bytes:
    """Seal ``plaintext`` as a twinlink/1 frame with sequence number ``seq``."""
    # The hot path: the common case costs one combined test, helpers only on the rare path.
    if not (type(seq) is int and 0 < len(kid) < 7 and len(key) == 32 and len(common_iv) == 12
            and 0 <= seq <= _MAX_SEQ):
        _check_args(kid, key, common_iv, seq)
    if type(kid) is not bytes or type(common_iv) is not bytes or type(stream) is not bytes:
        kid, common_iv, stream = _kid(kid), _b(common_iv), _b(stream)
    if type(sign_sk) is not bytes or len(sign_sk) != 64:
        _check_sk(sign_sk)
    n, s = len(plaintext), len(stream)
    cap = 2 * n + 2 * s + 320  # TL_SEAL_FRAME_BOUND(n) + TL_SEAL_WORK_BOUND(n, s)
    buf = _alloc("char[]", cap)
    rc = _lib.tlpy_seal(buf, cap, sign_sk, kid, len(kid), key, common_iv, stream, s, seq,
                        plaintext, n)
    return _ffi.unpack(buf, _ensure(rc))  # type: ignore[no-any-return]


def seal_many(sign_sk: bytes, kid: bytes, key: bytes, common_iv: bytes, stream: bytes,
              first_seq: int, plaintexts: Iterable[bytes]) -> list[bytes]:
    """Seal ``plaintexts`` with consecutive sequence numbers in one C call."""
    pts = plaintexts if isinstance(plaintexts, list) else list(plaintexts)
    if not pts:
        return []
    count = len(pts)
    _check_args(kid, key, common_iv, first_seq)
    if first_seq + count - 1 > _MAX_SEQ:
        raise ValueError("sequence number out of range")
    kid, common_iv, stream = _kid(kid), _b(common_iv), _b(stream)
    _check_sk(sign_sk)
    for p in pts:
        if type(p) is not bytes:  # as PyNaCl refuses: bytes only, TypeError otherwise
            raise TypeError("plaintexts must be bytes")
    joined = b"".join(pts)
    lens = list(map(len, pts))
    max_pt, s = max(lens), len(stream)
    wcap = max_pt + 2 * s + 192  # TL_SEAL_WORK_BOUND(max_pt, s)
    cap = wcap + len(joined) + 128 * count
    buf = _alloc("char[]", cap)
    flens = _alloc("size_t[]", count)
    start = _ensure(_lib.tlpy_seal_many(buf, cap, flens, sign_sk, kid, len(kid), key, common_iv,
                                        stream, s, first_seq, joined, lens, count, max_pt))
    out = _ffi.buffer(buf, cap)
    frames = []
    for flen in _ffi.unpack(flens, count):
        frames.append(out[start:start + flen])
        start += flen
    return frames


def seal_lite(kid: bytes, key: bytes, common_iv: bytes, stream: bytes, seq: int,
              plaintext: bytes) -> bytes:
    """Seal ``plaintext`` as a lite-profile frame (COSE_Encrypt0 only, kid unprotected)."""
    _check_args(kid, key, common_iv, seq)
    kid, common_iv, stream = _kid(kid), _b(common_iv), _b(stream)
    n, s = len(plaintext), len(stream)
    cap = 2 * n + 2 * s + 320
    buf = _alloc("char[]", cap)
    rc = _lib.tlpy_seal_lite(buf, cap, kid, len(kid), key, common_iv, stream, s, seq,
                             plaintext, n)
    return _ffi.unpack(buf, _ensure(rc))  # type: ignore[no-any-return]


def _frame_bytes(frame: object) -> bytes:
    if type(frame) is bytes:
        return frame
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise errors.MalformedFrame("frame must be bytes")
    return bytes(frame)


def _parsed(frame: bytes, o: object) -> Parsed:
    kind, alg, a, b, c, d, e, f, g, h, i, j, k, m = _ffi.unpack(o, 14)
    return Parsed(kind, frame[a:a + b], frame[c:c + d], alg, frame[e:e + f], frame[g:g + h],
                  frame[i:i + j], frame[k:k + m])


def parse(frame: bytes) -> Parsed:
    """Strictly parse a twinlink/1 or lite frame; raise :class:`MalformedFrame` otherwise."""
    frame = _frame_bytes(frame)
    o = _alloc("long long[14]")
    _ensure(-_lib.tlpy_parse(o, frame, len(frame)))
    return _parsed(frame, o)


def verify(parsed: Parsed, sign_pk: bytes, stream: bytes) -> None:
    """Check the Ed25519 signature of a parsed twinlink/1 frame; raise :class:`BadSignature`."""
    prot, kid, piv, enc0 = _b(parsed.prot), _b(parsed.kid), _b(parsed.piv), _b(parsed.enc0)
    sig, stream = _b(parsed.sig), _b(stream)
    cap = len(prot) + len(enc0) + len(kid) + len(piv) + 2 * len(stream) + 128
    work = _alloc("char[]", cap)
    _ensure(-_lib.tlpy_verify(work, cap, prot, len(prot), kid, len(kid), piv, len(piv), enc0,
                              len(enc0), sig, len(sig), sign_pk, len(sign_pk), stream,
                              len(stream)))


def decrypt(parsed: Parsed, key: bytes, common_iv: bytes, stream: bytes) -> bytes:
    """Decrypt the Encrypt0 layer; raise :class:`DecryptionFailed` if the tag does not verify."""
    kid, piv, ct = _b(parsed.kid), _b(parsed.piv), _b(parsed.ct)
    common_iv, stream = _b(common_iv), _b(stream)
    if type(key) is not bytes:  # PyNaCl refuses it inside decrypt: DecryptionFailed
        key = b""
    cap = 2 * len(ct) + len(kid) + len(piv) + 2 * len(stream) + 128
    buf = _alloc("char[]", cap)
    rc = _lib.tlpy_decrypt(buf, cap, kid, len(kid), piv, len(piv), ct, len(ct), key, len(key),
                           common_iv, len(common_iv), stream, len(stream))
    return _ffi.unpack(buf, _ensure(rc))  # type: ignore[no-any-return]


def open_frame(frame: bytes, sign_pk: bytes | None, key: bytes, common_iv: bytes,
               stream: bytes) -> tuple[Parsed, bytes]:
    """Parse, verify (twinlink/1; a signed frame needs ``sign_pk``) and decrypt, in one C call."""
    frame = _frame_bytes(frame)
    if type(common_iv) is not bytes or type(stream) is not bytes:
        common_iv, stream = _b(common_iv), _b(stream)
    if type(key) is not bytes:  # PyNaCl refuses it inside decrypt: DecryptionFailed there
        key = b""
    n, s = len(frame), len(stream)
    cap = 2 * n + 2 * s + 128  # plaintext area (<= n) + TL_OPEN_WORK_BOUND(n, s)
    buf = _alloc("char[]", cap)
    o = _alloc("long long[14]")
    if sign_pk is not None and type(sign_pk) is not bytes:
        # PyNaCl refuses a non-bytes key with TypeError, but only when it verifies: lite
        # frames never do, malformed frames fail first.
        if parse(frame).kind == KIND_SIGNED:
            raise TypeError("sign_pk must be bytes")
        sign_pk = None
    if sign_pk is None:
        rc = _lib.tlpy_open(buf, cap, o, frame, n, _NULL, 0, key, len(key), common_iv,
                            len(common_iv), stream, s)
    else:
        rc = _lib.tlpy_open(buf, cap, o, frame, n, sign_pk, len(sign_pk), key, len(key),
                            common_iv, len(common_iv), stream, s)
    pt = _ffi.unpack(buf, _ensure(rc))
    return _parsed(frame, o), pt


# ---------------------------------------------------------------------------------------------
# Extras backed by the same C core: serial-line framing, key schedule, replay window.

def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter); same bytes as :mod:`twinlink.transport.framing`."""
    cap = len(data) + len(data) // 254 + 1
    buf = _alloc("char[]", cap)
    return _ffi.unpack(buf, _ensure(_lib.tlpy_cobs_encode(buf, cap, data, len(data))))  # type: ignore[no-any-return]


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS record (without its 0x00 delimiter); raise :class:`LineError`."""
    cap = len(data) + 1
    buf = _alloc("char[]", cap)
    return _ffi.unpack(buf, _ensure(_lib.tlpy_cobs_decode(buf, cap, data, len(data))))  # type: ignore[no-any-return]


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE, equal to ``binascii.crc_hqx(data, crc)``."""
    return int(_lib.tl_crc16(_ffi.from_buffer(data), len(data), crc))


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) in C; same as :func:`twinlink.oscore.hkdf_sha256`."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF output length out of range")
    okm = _ffi.new("char[]", length)
    _ensure(-_lib.tlpy_hkdf(okm, length, salt, len(salt), ikm, len(ikm), info, len(info)))
    out = _ffi.unpack(okm, length)
    _ffi.memmove(okm, bytes(length), length)
    return out  # type: ignore[no-any-return]


def derive(master_secret: bytes, sender_id: bytes, master_salt: bytes = b"",
           id_context: bytes | None = None) -> tuple[bytes, bytes]:
    """(Sender Key, Common IV) as :func:`twinlink.oscore.derive_context` derives them.

    The C core bounds ``sender_id`` to 6 bytes and ``id_context`` to 64 (ValueError beyond).
    """
    ctx = b"" if id_context is None else id_context
    out = _ffi.new("char[44]")
    _ensure(-_lib.tlpy_derive(out, master_secret, len(master_secret), master_salt,
                              len(master_salt), sender_id, len(sender_id),
                              id_context is not None, ctx, len(ctx)))
    raw = _ffi.unpack(out, 44)
    _ffi.memmove(out, bytes(44), 44)
    return raw[:32], raw[32:]


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
        _ensure(-_lib.tl_window_init(self._w, size, self._ring, nblocks))
        if top != -1 or bits is not None:
            raw = bits if bits is not None else bytes(size // 8)
            buf = _ffi.from_buffer(raw)
            _ensure(-_lib.tl_window_import(self._w, top, buf, len(raw)))

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
        _ensure(-_lib.tl_window_check(self._w, seq))

    def update(self, seq: int) -> None:
        """Mark ``seq`` accepted (after it verified); :class:`TooOld` below the window."""
        if not 0 <= seq <= _MAX_SEQ:
            raise ValueError("sequence number out of range")
        _ensure(-_lib.tl_window_update(self._w, seq))

    def accept(self, seq: int) -> None:
        """check, then update."""
        self.check(seq)
        self.update(seq)

    def to_bytes(self) -> bytes:
        """The bitfield, as :meth:`twinlink.replay.ReplayWindow.to_bytes` writes it."""
        n = self.size // 8
        out = _ffi.new("uint8_t[]", n)
        _ensure(-_lib.tl_window_export(out, n, self._w))
        return _ffi.unpack(_ffi.cast("char *", out), n)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Window(size={self.size}, top={self.top})"

"""ChaCha20-Poly1305 (RFC 8439) in plain MicroPython, for boards without ``cryptolib``.

Only encryption is needed on the sender. ChaCha20 works on 16-bit halves of its words so that
nothing is heap-allocated (see ``_qr``); Poly1305 uses MicroPython's arbitrary-precision ints
(every port built with MICROPY_LONGINT_IMPL_MPZ, i.e. all the usual ones). Not constant-time at
the interpreter level: see README, "What this does not protect".
"""

import struct

_M = 0xFFFFFFFF
_P = (1 << 130) - 5
_RMASK = 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF


def _qr(x, a, b, c, d):
    """The ChaCha quarter round on 16-bit halves: x[2i] is the low half of word i.

    MicroPython's small ints are 31-bit on 32-bit ports, so a full 32-bit word would be a heap
    allocated long int; halves keep every intermediate value small and the seal allocation-free.
    """
    a2, b2, c2, d2 = 2 * a, 2 * b, 2 * c, 2 * d
    # a += b; d ^= a; d <<<= 16
    lo = x[a2] + x[b2]
    al, ah = lo & 0xFFFF, (x[a2 + 1] + x[b2 + 1] + (lo >> 16)) & 0xFFFF
    dl, dh = x[d2 + 1] ^ ah, x[d2] ^ al
    # c += d; b ^= c; b <<<= 12
    lo = x[c2] + dl
    cl, ch = lo & 0xFFFF, (x[c2 + 1] + dh + (lo >> 16)) & 0xFFFF
    bl, bh = x[b2] ^ cl, x[b2 + 1] ^ ch
    bl, bh = ((bl << 12) | (bh >> 4)) & 0xFFFF, ((bh << 12) | (bl >> 4)) & 0xFFFF
    # a += b; d ^= a; d <<<= 8
    lo = al + bl
    al, ah = lo & 0xFFFF, (ah + bh + (lo >> 16)) & 0xFFFF
    dl, dh = dl ^ al, dh ^ ah
    dl, dh = ((dl << 8) | (dh >> 8)) & 0xFFFF, ((dh << 8) | (dl >> 8)) & 0xFFFF
    # c += d; b ^= c; b <<<= 7
    lo = cl + dl
    cl, ch = lo & 0xFFFF, (ch + dh + (lo >> 16)) & 0xFFFF
    bl, bh = bl ^ cl, bh ^ ch
    bl, bh = ((bl << 7) | (bh >> 9)) & 0xFFFF, ((bh << 7) | (bl >> 9)) & 0xFFFF
    x[a2], x[a2 + 1], x[b2], x[b2 + 1] = al, ah, bl, bh
    x[c2], x[c2 + 1], x[d2], x[d2 + 1] = cl, ch, dl, dh


_ROUNDS = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
           (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))
_SIGMA_H = struct.unpack("<8H", b"expand 32-byte k")


def _block(key_h, counter, nonce_h):
    """One 64-byte ChaCha20 keystream block; key and nonce as little-endian 16-bit halves."""
    s = list(_SIGMA_H) + key_h + [counter & 0xFFFF, (counter >> 16) & 0xFFFF] + nonce_h
    x = list(s)
    for _ in range(10):
        for a, b, c, d in _ROUNDS:
            _qr(x, a, b, c, d)
    out = bytearray(64)
    for i in range(0, 32, 2):
        lo = x[i] + s[i]
        hi = (x[i + 1] + s[i + 1] + (lo >> 16)) & 0xFFFF
        lo &= 0xFFFF
        j = 2 * i
        out[j], out[j + 1], out[j + 2], out[j + 3] = lo & 0xFF, lo >> 8, hi & 0xFF, hi >> 8
    return out


def _words(key, nonce):
    if len(key) != 32 or len(nonce) != 12:
        raise ValueError("key must be 32 bytes and nonce 12 bytes")
    return list(struct.unpack("<16H", key)), list(struct.unpack("<6H", nonce))


def chacha20_xor(key, counter, nonce, data):
    """XOR ``data`` with the ChaCha20 keystream starting at block ``counter``."""
    kw, nw = _words(key, nonce)
    out = bytearray(data)
    for off in range(0, len(out), 64):
        ks = _block(kw, (counter + off // 64) & _M, nw)
        for i in range(min(64, len(out) - off)):
            out[off + i] ^= ks[i]
    return bytes(out)


def poly1305(key, msg):
    """The Poly1305 one-time authenticator (RFC 8439 §2.5) of ``msg`` under a 32-byte key."""
    r = int.from_bytes(key[:16], "little") & _RMASK
    s = int.from_bytes(key[16:32], "little")
    acc = 0
    for off in range(0, len(msg), 16):
        n = int.from_bytes(msg[off:off + 16] + b"\x01", "little")
        acc = ((acc + n) * r) % _P
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _pad16(n):
    return b"\x00" * ((16 - n % 16) % 16)


def encrypt(key, nonce, plaintext, aad=b""):
    """AEAD_CHACHA20_POLY1305 (RFC 8439 §2.8): return ciphertext || 16-byte tag."""
    kw, nw = _words(key, nonce)
    otk = _block(kw, 0, nw)[:32]
    ct = chacha20_xor(key, 1, nonce, plaintext)
    mac = (aad + _pad16(len(aad)) + ct + _pad16(len(ct))
           + struct.pack("<QQ", len(aad), len(ct)))
    return ct + poly1305(bytes(otk), mac)

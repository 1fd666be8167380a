/* twinlink C core: the one error enum.
 *
 * The numbers are stable: the CPython binding (twinlink/_backend_native.py) maps each to one
 * exception class, and firmware may log them. Append new codes; never renumber.
 */
#ifndef TL_ERROR_H
#define TL_ERROR_H

typedef enum {
    TL_OK = 0,
    TL_E_MALFORMED = 1,     /* not a strict, deterministically encoded twinlink/1 or lite frame */
    TL_E_BAD_SIGNATURE = 2, /* Ed25519 signature does not verify (or no key for a signed frame) */
    TL_E_DECRYPT = 3,       /* ChaCha20-Poly1305 tag does not verify, or key/nonce unusable */
    TL_E_REPLAY = 4,        /* sequence number already accepted */
    TL_E_TOO_OLD = 5,       /* sequence number below the replay window */
    TL_E_RANGE = 6,         /* an argument is out of range (kid length, seq, frame size, ...) */
    TL_E_BUFFER = 7,        /* caller's output or work buffer is too small */
    TL_E_CRYPTO = 8,        /* the crypto adapter failed (unbound, or a primitive refused) */
    TL_E_LINE = 9,          /* COBS record is not decodable (line noise) */
    TL_E_PAYLOAD = 10       /* a decrypted payload is not the CBOR a reading may hold */
} tl_err;

#endif

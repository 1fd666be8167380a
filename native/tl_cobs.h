/* twinlink C core: COBS (Cheshire & Baker) record encoding for the serial link.
 *
 * Same bytes as twinlink/transport/framing.py and the PyPI `cobs` package: a full 254-byte
 * block at the very end gets no trailing 01 code byte; the empty string encodes to 01.
 * Decoding is strict: a zero byte, or a code running past the end, is TL_E_LINE. The 0x00 frame delimiter is the
 * caller's. out NULL: *out_len = exact size needed; else capacity in, length out. */
#ifndef TL_COBS_H
#define TL_COBS_H

#include <stddef.h>
#include <stdint.h>

/* Upper bound of the encoded size. */
#define TL_COBS_BOUND(n) ((size_t)(n) + (size_t)(n) / 254u + 1u)

int tl_cobs_encode(uint8_t *out, size_t *out_len, const uint8_t *in, size_t in_len);
int tl_cobs_decode(uint8_t *out, size_t *out_len, const uint8_t *in, size_t in_len);

#endif

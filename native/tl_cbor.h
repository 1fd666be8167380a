/* Internal: the few deterministic CBOR heads (RFC 8949 §4.2.1) the fixed twinlink/1 shapes
 * need. Writing only; parsing lives in tl_frame.c. Not part of the public API. */
#ifndef TL_CBOR_H
#define TL_CBOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TL_CBOR_UINT 0u
#define TL_CBOR_NINT 1u
#define TL_CBOR_BSTR 2u
#define TL_CBOR_TSTR 3u
#define TL_CBOR_ARRAY 4u
#define TL_CBOR_MAP 5u
#define TL_CBOR_TAG 6u

/* Length of the shortest head for argument v. */
static inline size_t tl_cbor_head_len(uint64_t v)
{
    return v < 24u ? 1u : v < 0x100u ? 2u : v < 0x10000u ? 3u : v < 0x100000000u ? 5u : 9u;
}

/* Write the shortest head; returns its length. */
static inline size_t tl_cbor_put_head(uint8_t *out, unsigned major, uint64_t v)
{
    size_t n = tl_cbor_head_len(v), i;
    uint8_t mt = (uint8_t)(major << 5);
    if (n == 1) {
        out[0] = (uint8_t)(mt | v);
        return 1;
    }
    out[0] = (uint8_t)(mt | (n == 2 ? 24u : n == 3 ? 25u : n == 5 ? 26u : 27u));
    for (i = n - 1; i >= 1; i--) {
        out[i] = (uint8_t)(v & 0xFFu);
        v >>= 8;
    }
    return n;
}

/* Write a definite byte string (head + bytes); returns the total length. */
static inline size_t tl_cbor_put_bstr(uint8_t *out, const uint8_t *b, size_t len)
{
    size_t h = tl_cbor_put_head(out, TL_CBOR_BSTR, len);
    if (len) {
        memcpy(out + h, b, len);
    }
    return h + len;
}

#endif

/* Internal: CBOR heads (RFC 8949 §3). Writing: the deterministic (shortest) heads the fixed
 * twinlink/1 shapes need. Reading: the one head decoder of the core, shared by the frame
 * parser (tl_frame.c, shortest form required) and the payload validator (tl_cbor_check.c,
 * any length). Not part of the public API. */
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
#define TL_CBOR_SIMPLE 7u

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

/* Decode the head at buf[*pos] (pos < end required for success): major type, additional
 * information and argument (0 for additional information 28..31, which the caller refuses),
 * and advance *pos past it. Returns 0 if the head runs past end (nothing written), else 1. */
static inline int tl_cbor_read_head(const uint8_t *buf, size_t end, size_t *pos,
                                    unsigned *major, unsigned *ai, uint64_t *arg)
{
    size_t p = *pos, n, i;
    uint64_t v = 0;
    unsigned a;
    if (p >= end) {
        return 0;
    }
    a = buf[p] & 0x1Fu;
    if (a >= 24 && a <= 27) {
        n = (size_t)1 << (a - 24);
        if (end - p - 1 < n) {
            return 0;
        }
        for (i = 1; i <= n; i++) {
            v = (v << 8) | buf[p + i];
        }
        p += n;
    } else if (a < 24) {
        v = a;
    }
    *major = buf[*pos] >> 5;
    *ai = a;
    *arg = v;
    *pos = p + 1;
    return 1;
}

#endif

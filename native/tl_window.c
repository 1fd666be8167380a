/* Replay window: shift register up to 64, RFC 6479 ring beyond. See tl_window.h. */
#include <string.h>

#include "tl_error.h"
#include "tl_oscore.h"
#include "tl_window.h"

size_t tl_window_blocks(uint32_t size)
{
    size_t need, n = 1;
    if (size <= 64) {
        return 0;
    }
    /* Blocks the window can straddle, plus the one being cleared for the new top. */
    need = (size_t)(size - 1) / 64 + 2;
    while (n < need) {
        n <<= 1;
    }
    return n;
}

int tl_window_init(tl_window *w, uint32_t size, uint64_t *ring, size_t nblocks)
{
    size_t need = tl_window_blocks(size);
    if (size == 0 || size % 8 != 0 || (need && (ring == NULL || nblocks < need))) {
        return TL_E_RANGE;
    }
    w->top = -1;
    w->size = size;
    w->bits = 0;
    w->nblocks = (uint32_t)need;
    w->ring = need ? ring : NULL;
    if (need) {
        memset(ring, 0, need * sizeof *ring);
    }
    return TL_OK;
}

static int is_set(const tl_window *w, uint64_t seq)
{
    uint64_t d = (uint64_t)w->top - seq;
    if (w->nblocks == 0) {
        return (int)((w->bits >> d) & 1u);
    }
    return (int)((w->ring[(seq >> 6) & (w->nblocks - 1)] >> (seq & 63u)) & 1u);
}

int tl_window_check(const tl_window *w, uint64_t seq)
{
    if (seq > TL_MAX_SEQ) {
        return TL_E_RANGE;
    }
    if (w->top < 0 || seq > (uint64_t)w->top) {
        return TL_OK;
    }
    if ((uint64_t)w->top - seq >= w->size) {
        return TL_E_TOO_OLD;
    }
    return is_set(w, seq) ? TL_E_REPLAY : TL_OK;
}

int tl_window_update(tl_window *w, uint64_t seq)
{
    uint64_t shift, mask, b, from, to;
    int rc = tl_window_check(w, seq);
    if (rc == TL_E_TOO_OLD || rc == TL_E_RANGE) {
        return rc;
    }
    mask = w->size >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << w->size) - 1);
    if (w->top >= 0 && seq <= (uint64_t)w->top) {
        if (w->nblocks == 0) {
            w->bits |= (uint64_t)1 << ((uint64_t)w->top - seq);
        } else {
            w->ring[(seq >> 6) & (w->nblocks - 1)] |= (uint64_t)1 << (seq & 63u);
        }
        return TL_OK;
    }
    if (w->nblocks == 0) {
        shift = w->top < 0 ? 64 : seq - (uint64_t)w->top;
        w->bits = shift < 64 ? (((w->bits << shift) | 1u) & mask) : 1u;
    } else {
        if (w->top >= 0) {
            from = ((uint64_t)w->top >> 6) + 1;
            to = seq >> 6;
            if (to >= from && to - from >= w->nblocks) {
                memset(w->ring, 0, (size_t)w->nblocks * sizeof *w->ring);
            } else {
                for (b = from; b <= to; b++) {
                    w->ring[b & (w->nblocks - 1)] = 0;
                }
            }
        }
        w->ring[(seq >> 6) & (w->nblocks - 1)] |= (uint64_t)1 << (seq & 63u);
    }
    w->top = (int64_t)seq;
    return TL_OK;
}

int tl_window_export(uint8_t *out, size_t out_len, const tl_window *w)
{
    uint32_t d;
    if (out_len != w->size / 8) {
        return TL_E_BUFFER;
    }
    memset(out, 0, out_len);
    if (w->top < 0) {
        return TL_OK;
    }
    for (d = 0; d < w->size && (int64_t)d <= w->top; d++) {
        if (is_set(w, (uint64_t)w->top - d)) {
            out[out_len - 1 - d / 8] |= (uint8_t)(1u << (d % 8));
        }
    }
    return TL_OK;
}

int tl_window_import(tl_window *w, int64_t top, const uint8_t *in, size_t in_len)
{
    uint32_t d;
    uint64_t seq;
    if (in_len != w->size / 8 || top < -1 || top > (int64_t)TL_MAX_SEQ) {
        return TL_E_RANGE;
    }
    w->top = top;
    w->bits = 0;
    if (w->nblocks) {
        memset(w->ring, 0, (size_t)w->nblocks * sizeof *w->ring);
    }
    if (top < 0) {
        return TL_OK;
    }
    for (d = 0; d < w->size && (int64_t)d <= top; d++) {
        if (in[in_len - 1 - d / 8] & (1u << (d % 8))) {
            seq = (uint64_t)top - d;
            if (w->nblocks == 0) {
                w->bits |= (uint64_t)1 << d;
            } else {
                w->ring[(seq >> 6) & (w->nblocks - 1)] |= (uint64_t)1 << (seq & 63u);
            }
        }
    }
    return TL_OK;
}

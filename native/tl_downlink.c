/* Downlink frames for firmware: strict envelope parse, AEAD open, bounded desired-state reader.
 * See tl_downlink.h and docs/PROTOCOL.md §20. No heap; everything on the caller's buffers or a
 * small fixed stack array. */
#include <string.h>

#include "tl_cbor.h"
#include "tl_crypto.h"
#include "tl_downlink.h"
#include "tl_error.h"
#include "tl_frame.h"
#include "tl_oscore.h"

/* ["Encrypt0", h'A1011818', ...: the Enc_structure up to external_aad */
static const uint8_t ENC_AAD_PREFIX[15] = {0x83, 0x68, 'E', 'n', 'c', 'r', 'y', 'p',
                                           't',  '0',  0x44, 0xA1, 0x01, 0x18, 0x18};
static const uint8_t STREAM_C[1] = {'c'};
#define MAX_DEPTH 8u
#define MAX_KEY 64u

/* A definite-length head with its shortest encoding; 0 if not. */
static int head(const uint8_t *b, size_t end, size_t *pos, unsigned *major, uint64_t *arg)
{
    unsigned ai;
    size_t start = *pos;
    if (!tl_cbor_read_head(b, end, pos, major, &ai, arg) || ai > 27) {
        return 0;
    }
    /* shortest form: the argument must need the width used (simple/float heads excepted) */
    if (*major != TL_CBOR_SIMPLE && ai >= 24 && tl_cbor_head_len(*arg) != *pos - start) {
        return 0;
    }
    return 1;
}

static int bstr(const uint8_t *b, size_t end, size_t *pos, const uint8_t **out, size_t *len)
{
    unsigned major;
    uint64_t n;
    if (!head(b, end, pos, &major, &n) || major != TL_CBOR_BSTR || n > end - *pos) {
        return 0;
    }
    *out = b + *pos;
    *len = (size_t)n;
    *pos += (size_t)n;
    return 1;
}

static int expect(const uint8_t *b, size_t end, size_t *pos, unsigned major, uint64_t value)
{
    unsigned m;
    uint64_t v;
    return head(b, end, pos, &m, &v) && m == major && v == value;
}

int tl_downlink_parse(tl_downlink *d, const uint8_t *frame, size_t frame_len)
{
    size_t pos = 0, len;
    unsigned major;
    uint64_t n;
    const uint8_t *p;
    tl_downlink out;
    if (frame == NULL || frame_len > TL_DOWNLINK_MAX_FRAME) {
        return TL_E_MALFORMED;
    }
    memset(&out, 0, sizeof out);
    if (!expect(frame, frame_len, &pos, TL_CBOR_TAG, 16) ||
        !expect(frame, frame_len, &pos, TL_CBOR_ARRAY, 3) ||
        !bstr(frame, frame_len, &pos, &p, &len) || len != 4 ||
        memcmp(p, ENC_AAD_PREFIX + 11, 4) != 0 ||
        !head(frame, frame_len, &pos, &major, &n) || major != TL_CBOR_MAP || (n != 2 && n != 3) ||
        !expect(frame, frame_len, &pos, TL_CBOR_UINT, 4) ||
        !bstr(frame, frame_len, &pos, &p, &len) || len != 0 ||
        !expect(frame, frame_len, &pos, TL_CBOR_UINT, 6) ||
        !bstr(frame, frame_len, &pos, &p, &len) || len < 1 || len > 5 || (len > 1 && p[0] == 0)) {
        return TL_E_MALFORMED;
    }
    memcpy(out.piv, p, len);
    out.piv_len = len;
    for (size_t i = 0; i < len; i++) {
        out.seq = (out.seq << 8) | p[i];
    }
    if (n == 3) {
        if (!expect(frame, frame_len, &pos, TL_CBOR_UINT, 10) ||
            !bstr(frame, frame_len, &pos, &out.kid_context, &out.kid_context_len) ||
            out.kid_context_len < 1 || out.kid_context_len > TL_MAX_KID_CONTEXT_LEN) {
            return TL_E_MALFORMED;
        }
    }
    if (!bstr(frame, frame_len, &pos, &out.ct, &out.ct_len) || out.ct_len < TL_TAG_LEN ||
        pos != frame_len) {
        return TL_E_MALFORMED;
    }
    *d = out;
    return TL_OK;
}

int tl_downlink_open(uint8_t *pt, size_t *pt_len, const tl_downlink *d, const uint8_t key[32],
                     const uint8_t common_iv[12], const uint8_t *kid, size_t kid_len,
                     const uint8_t *kid_context, size_t kid_context_len)
{
    uint8_t aad[15 + 2 + 32];
    uint8_t nonce[12];
    size_t ext_len, n, mlen;
    int rc;
    if (d == NULL || pt_len == NULL || kid == NULL || kid_len < 1 || kid_len > TL_MAX_KID_LEN) {
        return TL_E_RANGE;
    }
    /* Only the device's current context: another one is not this device's to open. */
    if ((kid_context == NULL) != (d->kid_context == NULL) ||
        (kid_context != NULL && (kid_context_len != d->kid_context_len ||
                                 memcmp(kid_context, d->kid_context, kid_context_len) != 0))) {
        return TL_E_DECRYPT;
    }
    mlen = d->ct_len - TL_TAG_LEN;
    if (mlen > TL_DOWNLINK_MAX_PT) {
        return TL_E_RANGE;
    }
    if (pt == NULL || *pt_len < mlen) {
        return TL_E_BUFFER;
    }
    memcpy(aad, ENC_AAD_PREFIX, sizeof ENC_AAD_PREFIX);
    ext_len = sizeof aad - sizeof ENC_AAD_PREFIX - 1;
    rc = tl_oscore_external_aad(aad + sizeof ENC_AAD_PREFIX + 1, &ext_len, kid, kid_len, d->piv,
                                d->piv_len, STREAM_C, sizeof STREAM_C);
    if (rc != TL_OK || ext_len > 23) {
        return TL_E_RANGE;
    }
    aad[sizeof ENC_AAD_PREFIX] = (uint8_t)(0x40 + ext_len); /* bstr head: always < 24 bytes */
    n = sizeof ENC_AAD_PREFIX + 1 + ext_len;
    rc = tl_oscore_nonce(nonce, common_iv, NULL, 0, d->piv, d->piv_len);
    if (rc != TL_OK) {
        return rc;
    }
    if (tl_crypto_aead_decrypt(pt, d->ct, mlen, d->ct + mlen, aad, n, nonce, key) != 0) {
        return TL_E_DECRYPT;
    }
    *pt_len = mlen;
    return TL_OK;
}

/* half -> double without libm: exact for every binary16 value. */
static double half_to_double(uint16_t h)
{
    unsigned exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    double v;
    int e;
    if (exp == 0) {
        v = (double)mant;
        e = -24;
    } else if (exp == 31) {
        return 0.0; /* inf/nan: refused by the caller through kind OTHER */
    } else {
        v = (double)(mant | 0x400u);
        e = (int)exp - 25;
    }
    for (; e > 0; e--) {
        v *= 2.0;
    }
    for (; e < 0; e++) {
        v /= 2.0;
    }
    return (h & 0x8000u) ? -v : v;
}

/* Skip one data item of any shape, depth at most MAX_DEPTH, with a fixed-size stack. */
static int skip(const uint8_t *b, size_t end, size_t *pos)
{
    uint64_t todo[MAX_DEPTH + 1];
    size_t depth = 0;
    todo[0] = 1;
    while (1) {
        unsigned major;
        uint64_t arg;
        while (todo[depth] == 0) {
            if (depth == 0) {
                return 1;
            }
            depth--;
        }
        todo[depth]--;
        if (!head(b, end, pos, &major, &arg)) {
            return 0;
        }
        if (major == TL_CBOR_BSTR || major == TL_CBOR_TSTR) {
            if (arg > end - *pos) {
                return 0;
            }
            *pos += (size_t)arg;
        } else if (major == TL_CBOR_ARRAY || major == TL_CBOR_MAP || major == TL_CBOR_TAG) {
            uint64_t items = major == TL_CBOR_TAG ? 1 : arg;
            if (major == TL_CBOR_MAP) {
                if (arg > (end - *pos) / 2) {
                    return 0;
                }
                items = arg * 2;
            } else if (items > end - *pos) {
                return 0;
            }
            if (depth == MAX_DEPTH) {
                return 0;
            }
            todo[++depth] = items;
        }
    }
}

int tl_desired_begin(tl_desired *d, const uint8_t *pt, size_t pt_len)
{
    size_t pos = 0;
    unsigned major;
    uint64_t n, version;
    if (pt == NULL || pt_len > TL_DOWNLINK_MAX_PT ||
        !expect(pt, pt_len, &pos, TL_CBOR_MAP, 3) || !expect(pt, pt_len, &pos, TL_CBOR_UINT, 1) ||
        !expect(pt, pt_len, &pos, TL_CBOR_TSTR, 7) || pt_len - pos < 7 ||
        memcmp(pt + pos, "desired", 7) != 0) {
        return TL_E_PAYLOAD;
    }
    pos += 7;
    if (!expect(pt, pt_len, &pos, TL_CBOR_UINT, 2) || !head(pt, pt_len, &pos, &major, &version) ||
        major != TL_CBOR_UINT || !expect(pt, pt_len, &pos, TL_CBOR_UINT, 3) ||
        !head(pt, pt_len, &pos, &major, &n) || major != TL_CBOR_MAP || n == 0 ||
        n > (pt_len - pos) / 2) {
        return TL_E_PAYLOAD;
    }
    d->buf = pt;
    d->end = pt_len;
    d->pos = pos;
    d->left = n;
    d->version = version;
    return TL_OK;
}

int tl_desired_next(tl_desired *d, tl_desired_item *it)
{
    unsigned major, ai;
    uint64_t arg;
    size_t start;
    memset(it, 0, sizeof *it);
    if (d->left == 0) {
        return d->pos == d->end ? TL_OK : TL_E_PAYLOAD; /* nothing may follow the map */
    }
    if (!head(d->buf, d->end, &d->pos, &major, &arg) || major != TL_CBOR_TSTR || arg < 1 ||
        arg > MAX_KEY || arg > d->end - d->pos) {
        return TL_E_PAYLOAD;
    }
    it->key = d->buf + d->pos;
    it->key_len = (size_t)arg;
    d->pos += (size_t)arg;
    start = d->pos;
    if (!tl_cbor_read_head(d->buf, d->end, &d->pos, &major, &ai, &arg) || ai > 27) {
        return TL_E_PAYLOAD;
    }
    if (major == TL_CBOR_UINT && arg <= (uint64_t)INT64_MAX) {
        it->kind = TL_VAL_INT;
        it->i = (int64_t)arg;
    } else if (major == TL_CBOR_NINT && arg <= (uint64_t)INT64_MAX) {
        it->kind = TL_VAL_INT;
        it->i = -1 - (int64_t)arg;
    } else if (major == TL_CBOR_TSTR) {
        if (arg > d->end - d->pos) {
            return TL_E_PAYLOAD;
        }
        it->kind = TL_VAL_TEXT;
        it->text = d->buf + d->pos;
        it->text_len = (size_t)arg;
        d->pos += (size_t)arg;
    } else if (major == TL_CBOR_SIMPLE && (ai == 20 || ai == 21)) {
        it->kind = TL_VAL_BOOL;
        it->i = ai == 21;
    } else if (major == TL_CBOR_SIMPLE && ai == 22) {
        it->kind = TL_VAL_NULL;
    } else if (major == TL_CBOR_SIMPLE && ai >= 25 && ai <= 27) {
        it->kind = TL_VAL_FLOAT;
        if (ai == 25) {
            if (((arg >> 10) & 0x1Fu) == 31) {
                it->kind = TL_VAL_OTHER;
            }
            it->f = half_to_double((uint16_t)arg);
        } else if (ai == 26) {
            uint32_t u = (uint32_t)arg;
            float f;
            memcpy(&f, &u, sizeof f);
            it->f = (double)f;
        } else {
            memcpy(&it->f, &arg, sizeof it->f);
        }
        if (it->kind == TL_VAL_FLOAT && !(it->f == it->f && it->f - it->f == 0.0)) {
            it->kind = TL_VAL_OTHER; /* inf, nan */
        }
    } else {
        d->pos = start;
        if (!skip(d->buf, d->end, &d->pos)) {
            return TL_E_PAYLOAD;
        }
        it->kind = TL_VAL_OTHER;
    }
    d->left--;
    return TL_OK;
}

/* twinlink/1 and lite frames: seal, strict parse, verify, decrypt, open. See tl_frame.h. */
#include <string.h>

#include "tl_cbor.h"
#include "tl_crypto.h"
#include "tl_error.h"
#include "tl_frame.h"
#include "tl_oscore.h"

static const uint8_t ENC0_PROT[4] = {0xA1, 0x01, 0x18, 0x18}; /* {1: 24} ChaCha20/Poly1305 */
/* ["Encrypt0", h'A1011818', ...: the Enc_structure up to external_aad */
static const uint8_t ENC_AAD_PREFIX[15] = {0x83, 0x68, 'E', 'n', 'c', 'r', 'y', 'p',
                                           't',  '0',  0x44, 0xA1, 0x01, 0x18, 0x18};
/* ["Signature1", ...: the Sig_structure up to the protected header */
static const uint8_t SIG1_PREFIX[12] = {0x84, 0x6A, 'S', 'i', 'g', 'n',
                                        'a',  't',  'u', 'r', 'e', '1'};

/* Bytes of a bstr of length n, head included. */
static size_t bstr_len(size_t n)
{
    return tl_cbor_head_len(n) + n;
}

/* Guard for size arithmetic: nothing a frame carries comes near this. */
#define TL_LEN_LIMIT ((size_t)1 << 28)

/* ---------------------------------------------------------------------------------------- */
/* Sizes of everything one seal writes. */
typedef struct {
    uint8_t piv[5];
    size_t piv_len;
    size_t ct_len;   /* pt_len + 16 */
    size_t aad_len;  /* bstr(external_aad), head included */
    size_t prot_len; /* outer protected header content */
    size_t enc0_len; /* Encrypt0 (signed profile) content */
    size_t frame_len;
    size_t tbs_len;
    size_t work_len;
} seal_plan;

static int plan_seal(seal_plan *z, int lite, size_t kid_len, size_t kid_context_len,
                     uint64_t seq, size_t stream_len, size_t pt_len)
{
    size_t a0;
    if (kid_len < 1 || kid_len > TL_MAX_KID_LEN || kid_context_len > TL_MAX_KID_CONTEXT_LEN) {
        return TL_E_RANGE;
    }
    z->piv_len = tl_piv_encode(z->piv, seq);
    if (z->piv_len == 0 || pt_len > TL_MAX_FRAME || stream_len > TL_LEN_LIMIT) {
        return TL_E_RANGE;
    }
    z->ct_len = pt_len + TL_TAG_LEN;
    a0 = 6 + bstr_len(kid_len) + bstr_len(z->piv_len) + bstr_len(stream_len);
    z->aad_len = bstr_len(a0);
    z->prot_len = 4 + bstr_len(kid_len) + (kid_context_len ? 1 + bstr_len(kid_context_len) : 0);
    if (lite) {
        z->enc0_len = 0;
        z->frame_len = 2 + 5 + 2 + bstr_len(kid_len) + 1 + bstr_len(z->piv_len) +
                       bstr_len(z->ct_len);
        z->tbs_len = 0;
    } else {
        z->enc0_len = 2 + 5 + 2 + bstr_len(z->piv_len) + bstr_len(z->ct_len);
        z->frame_len = 2 + bstr_len(z->prot_len) + 1 + bstr_len(z->enc0_len) + 2 + TL_SIG_LEN;
        z->tbs_len = sizeof SIG1_PREFIX + bstr_len(z->prot_len) + z->aad_len +
                     bstr_len(z->enc0_len);
    }
    z->work_len = z->tbs_len + sizeof ENC_AAD_PREFIX + z->aad_len;
    if (z->frame_len > TL_MAX_FRAME) {
        return TL_E_RANGE;
    }
    return TL_OK;
}

/* Plan a seal and settle what needs no writing: 1 if the caller returns *rc now (a range
 * error, the NULL-frame size query answered, or a short buffer), 0 to go on and write. */
static int begin_seal(seal_plan *z, int *rc, int lite, size_t kid_len, size_t kid_context_len,
                      uint64_t seq, size_t stream_len, size_t pt_len, const uint8_t *frame,
                      size_t *frame_len, size_t work_len)
{
    *rc = plan_seal(z, lite, kid_len, kid_context_len, seq, stream_len, pt_len);
    if (*rc != TL_OK) {
        return 1;
    }
    if (frame == NULL) {
        *frame_len = z->frame_len;
        return 1;
    }
    if (*frame_len < z->frame_len || work_len < z->work_len) {
        *rc = TL_E_BUFFER;
        return 1;
    }
    return 0;
}

/* A kid context's length for the plan: 0 when absent (NULL); present but empty is no valid
 * ID Context (TL_E_RANGE). */
static int kid_context_length(const uint8_t *kid_context, size_t *len)
{
    if (kid_context == NULL) {
        *len = 0;
    } else if (*len == 0) {
        return TL_E_RANGE;
    }
    return TL_OK;
}

/* bstr(external_aad): [1, [24, -8], kid, PIV, stream]. */
static size_t put_aad(uint8_t *out, const uint8_t *kid, size_t kid_len, const uint8_t *piv,
                      size_t piv_len, const uint8_t *stream, size_t stream_len)
{
    size_t a0 = 6 + bstr_len(kid_len) + bstr_len(piv_len) + bstr_len(stream_len);
    size_t n = tl_cbor_put_head(out, TL_CBOR_BSTR, a0);
    size_t len = a0;
    (void)tl_oscore_external_aad(out + n, &len, kid, kid_len, piv, piv_len, stream, stream_len);
    return n + len;
}

/* Outer protected header {1: -8, 4: kid} or {1: -8, 4: kid, 10: kid_context}. */
static size_t put_prot(uint8_t *out, const uint8_t *kid, size_t kid_len,
                       const uint8_t *kid_context, size_t kid_context_len)
{
    size_t n;
    out[0] = kid_context_len ? 0xA3 : 0xA2;
    out[1] = 0x01;
    out[2] = 0x27;
    out[3] = 0x04;
    n = 4 + tl_cbor_put_bstr(out + 4, kid, kid_len);
    if (kid_context_len) {
        out[n++] = 0x0A;
        n += tl_cbor_put_bstr(out + n, kid_context, kid_context_len);
    }
    return n;
}

int tl_seal(uint8_t *frame, size_t *frame_len, uint8_t *work, size_t work_len,
            const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len, const uint8_t key[32],
            const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len, uint64_t seq,
            const uint8_t *pt, size_t pt_len)
{
    return tl_seal_ctx(frame, frame_len, work, work_len, sign_sk, kid, kid_len, NULL, 0, key,
                       common_iv, stream, stream_len, seq, pt, pt_len);
}

int tl_seal_ctx(uint8_t *frame, size_t *frame_len, uint8_t *work, size_t work_len,
                const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len,
                const uint8_t *kid_context, size_t kid_context_len, const uint8_t key[32],
                const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len,
                uint64_t seq, const uint8_t *pt, size_t pt_len)
{
    seal_plan z;
    uint8_t nonce[12], sig[64];
    size_t n, enc0_at, aad_at, ct_at, f;
    int rc = kid_context_length(kid_context, &kid_context_len);

    if (rc != TL_OK || begin_seal(&z, &rc, 0, kid_len, kid_context_len, seq, stream_len, pt_len,
                                  frame, frame_len, work_len)) {
        return rc;
    }
    /* work = ToBeSigned || Enc_structure:
     *   ["Signature1", bstr(prot), bstr(external_aad), bstr(enc0)] */
    memcpy(work, SIG1_PREFIX, sizeof SIG1_PREFIX);
    n = sizeof SIG1_PREFIX;
    n += tl_cbor_put_head(work + n, TL_CBOR_BSTR, z.prot_len);
    n += put_prot(work + n, kid, kid_len, kid_context, kid_context_len);
    aad_at = n;
    n += put_aad(work + n, kid, kid_len, z.piv, z.piv_len, stream, stream_len);
    n += tl_cbor_put_head(work + n, TL_CBOR_BSTR, z.enc0_len);
    enc0_at = n;
    work[n++] = 0xD0; /* 16( */
    work[n++] = 0x83;
    work[n++] = 0x44;
    memcpy(work + n, ENC0_PROT, 4);
    n += 4;
    work[n++] = 0xA1; /* {6: PIV} */
    work[n++] = 0x06;
    n += tl_cbor_put_bstr(work + n, z.piv, z.piv_len);
    n += tl_cbor_put_head(work + n, TL_CBOR_BSTR, z.ct_len);
    ct_at = n;
    n += z.ct_len;
    memcpy(work + n, ENC_AAD_PREFIX, sizeof ENC_AAD_PREFIX);
    memcpy(work + n + sizeof ENC_AAD_PREFIX, work + aad_at, z.aad_len);

    (void)tl_oscore_nonce(nonce, common_iv, kid, kid_len, z.piv, z.piv_len);
    rc = tl_crypto_aead_encrypt(work + ct_at, work + ct_at + pt_len, pt, pt_len, work + n,
                                sizeof ENC_AAD_PREFIX + z.aad_len, nonce, key);
    if (rc == 0) {
        rc = tl_crypto_sign(sig, work, z.tbs_len, sign_sk);
    }
    if (rc != 0) {
        return TL_E_CRYPTO;
    }
    /* frame = 18([bstr(prot), {}, bstr(enc0), bstr(sig)]) */
    frame[0] = 0xD2;
    frame[1] = 0x84;
    f = 2;
    f += tl_cbor_put_head(frame + f, TL_CBOR_BSTR, z.prot_len);
    f += put_prot(frame + f, kid, kid_len, kid_context, kid_context_len);
    frame[f++] = 0xA0;
    f += tl_cbor_put_bstr(frame + f, work + enc0_at, z.enc0_len);
    frame[f++] = 0x58;
    frame[f++] = 0x40;
    memcpy(frame + f, sig, 64);
    *frame_len = f + 64;
    return TL_OK;
}

int tl_seal_many(uint8_t *frames, size_t *frames_len, size_t frame_lens[], uint8_t *work,
                 size_t work_len, const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len,
                 const uint8_t *kid_context, size_t kid_context_len, const uint8_t key[32],
                 const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len,
                 uint64_t first_seq, const uint8_t *pts, const size_t pt_lens[], size_t n)
{
    seal_plan z;
    size_t i, total = 0, max_work = 0, off = 0, in = 0, len;
    int rc = kid_context_length(kid_context, &kid_context_len);

    if (rc != TL_OK) {
        return rc;
    }
    if (n > 0 && (first_seq > TL_MAX_SEQ || n - 1 > TL_MAX_SEQ - first_seq)) {
        return TL_E_RANGE;
    }
    for (i = 0; i < n; i++) {
        rc = plan_seal(&z, 0, kid_len, kid_context_len, first_seq + i, stream_len, pt_lens[i]);
        if (rc != TL_OK) {
            return rc;
        }
        total += z.frame_len;
        if (z.work_len > max_work) {
            max_work = z.work_len;
        }
    }
    if (frames == NULL) {
        *frames_len = total;
        return TL_OK;
    }
    if (*frames_len < total || work_len < max_work) {
        return TL_E_BUFFER;
    }
    for (i = 0; i < n; i++) {
        len = total - off;
        rc = tl_seal_ctx(frames + off, &len, work, work_len, sign_sk, kid, kid_len, kid_context,
                         kid_context_len, key, common_iv, stream, stream_len, first_seq + i,
                         pts + in, pt_lens[i]);
        if (rc != TL_OK) {
            return rc;
        }
        frame_lens[i] = len;
        off += len;
        in += pt_lens[i];
    }
    *frames_len = total;
    return TL_OK;
}

int tl_seal_lite(uint8_t *frame, size_t *frame_len, uint8_t *work, size_t work_len,
                 const uint8_t *kid, size_t kid_len, const uint8_t key[32],
                 const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len,
                 uint64_t seq, const uint8_t *pt, size_t pt_len)
{
    seal_plan z;
    uint8_t nonce[12];
    size_t f, a;
    int rc;

    if (begin_seal(&z, &rc, 1, kid_len, 0, seq, stream_len, pt_len, frame, frame_len,
                   work_len)) {
        return rc;
    }
    memcpy(work, ENC_AAD_PREFIX, sizeof ENC_AAD_PREFIX);
    a = sizeof ENC_AAD_PREFIX;
    a += put_aad(work + a, kid, kid_len, z.piv, z.piv_len, stream, stream_len);
    (void)tl_oscore_nonce(nonce, common_iv, kid, kid_len, z.piv, z.piv_len);

    /* frame = 16([h'A1011818', {4: kid, 6: PIV}, ct||tag]) */
    frame[0] = 0xD0;
    frame[1] = 0x83;
    frame[2] = 0x44;
    memcpy(frame + 3, ENC0_PROT, 4);
    frame[7] = 0xA2;
    frame[8] = 0x04;
    f = 9;
    f += tl_cbor_put_bstr(frame + f, kid, kid_len);
    frame[f++] = 0x06;
    f += tl_cbor_put_bstr(frame + f, z.piv, z.piv_len);
    f += tl_cbor_put_head(frame + f, TL_CBOR_BSTR, z.ct_len);
    if (tl_crypto_aead_encrypt(frame + f, frame + f + pt_len, pt, pt_len, work, a, nonce, key)) {
        tl_crypto_wipe(frame, z.frame_len);
        return TL_E_CRYPTO;
    }
    *frame_len = f + z.ct_len;
    return TL_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Strict reader over hostile bytes: the C twin of twinlink.cbor.Reader. */
typedef struct {
    const uint8_t *buf;
    size_t pos, end;
} reader;

static int rd_head(reader *r, unsigned *major, uint64_t *arg)
{
    unsigned ai;
    if (!tl_cbor_read_head(r->buf, r->end, &r->pos, major, &ai, arg) || ai > 27) {
        return TL_E_MALFORMED; /* truncated, indefinite length or reserved */
    }
    if (ai >= 24 && *arg < (ai == 24 ? 24u : (uint64_t)1 << (4u << (ai - 24)))) {
        return TL_E_MALFORMED; /* not the shortest form */
    }
    return TL_OK;
}

static int rd_expect(reader *r, unsigned major, uint64_t arg)
{
    unsigned m;
    uint64_t a;
    if (rd_head(r, &m, &a) != TL_OK || m != major || a != arg) {
        return TL_E_MALFORMED;
    }
    return TL_OK;
}

static int rd_bytes(reader *r, size_t min_len, size_t max_len, const uint8_t **out,
                    size_t *out_len)
{
    unsigned m;
    uint64_t a;
    if (rd_head(r, &m, &a) != TL_OK || m != TL_CBOR_BSTR || a > r->end - r->pos ||
        a < min_len || a > max_len) {
        return TL_E_MALFORMED;
    }
    *out = r->buf + r->pos;
    *out_len = (size_t)a;
    r->pos += (size_t)a;
    return TL_OK;
}

/* [h'A1011818', {6: piv} | {4: kid, 6: piv}, ct] */
static int rd_enc0_body(reader *r, int lite, tl_parsed *p)
{
    const uint8_t *prot;
    size_t prot_len;
    if (rd_expect(r, TL_CBOR_ARRAY, 3) || rd_bytes(r, 0, (size_t)-1, &prot, &prot_len) ||
        prot_len != 4 || memcmp(prot, ENC0_PROT, 4) != 0) {
        return TL_E_MALFORMED;
    }
    if (lite) {
        if (rd_expect(r, TL_CBOR_MAP, 2) || rd_expect(r, TL_CBOR_UINT, 4) ||
            rd_bytes(r, 1, TL_MAX_KID_LEN, &p->kid, &p->kid_len)) {
            return TL_E_MALFORMED;
        }
    } else if (rd_expect(r, TL_CBOR_MAP, 1)) {
        return TL_E_MALFORMED;
    }
    if (rd_expect(r, TL_CBOR_UINT, 6) || rd_bytes(r, 1, TL_MAX_PIV_LEN, &p->piv, &p->piv_len) ||
        rd_bytes(r, TL_TAG_LEN, (size_t)-1, &p->ct, &p->ct_len)) {
        return TL_E_MALFORMED;
    }
    return TL_OK;
}

int tl_parse(tl_parsed *out, const uint8_t *frame, size_t frame_len)
{
    tl_parsed p;
    reader r, s;
    unsigned major;
    uint64_t arg, tag, entries;
    size_t i;

    if (frame_len > TL_MAX_FRAME) {
        return TL_E_MALFORMED;
    }
    memset(&p, 0, sizeof p);
    r.buf = frame;
    r.pos = 0;
    r.end = frame_len;
    if (rd_head(&r, &major, &tag) || major != TL_CBOR_TAG || (tag != 16 && tag != 18)) {
        return TL_E_MALFORMED;
    }
    if (tag == 16) {
        if (rd_enc0_body(&r, 1, &p) || r.pos != r.end) {
            return TL_E_MALFORMED;
        }
        p.kind = TL_KIND_LITE;
        p.alg = TL_ALG_CHACHA20_POLY1305;
        p.enc0 = frame;
        p.enc0_len = frame_len;
    } else {
        if (rd_expect(&r, TL_CBOR_ARRAY, 4) ||
            rd_bytes(&r, 1, TL_MAX_PROT_LEN, &p.prot, &p.prot_len)) {
            return TL_E_MALFORMED;
        }
        /* Exactly {1: alg, 4: kid} or {1: alg, 4: kid, 10: kid_context}, in that order. */
        s.buf = p.prot;
        s.pos = 0;
        s.end = p.prot_len;
        if (rd_head(&s, &major, &entries) || major != TL_CBOR_MAP ||
            (entries != 2 && entries != 3) || rd_expect(&s, TL_CBOR_UINT, 1) ||
            rd_head(&s, &major, &arg) || major != TL_CBOR_NINT || (arg != 7 && arg != 18) ||
            rd_expect(&s, TL_CBOR_UINT, 4) || rd_bytes(&s, 1, TL_MAX_KID_LEN, &p.kid, &p.kid_len) ||
            (entries == 3 && (rd_expect(&s, TL_CBOR_UINT, 10) ||
                              rd_bytes(&s, 1, TL_MAX_KID_CONTEXT_LEN, &p.kid_context,
                                       &p.kid_context_len))) ||
            s.pos != s.end) {
            return TL_E_MALFORMED;
        }
        p.alg = -1 - (int)arg; /* -8 EdDSA, -19 Ed25519 */
        if (rd_expect(&r, TL_CBOR_MAP, 0) || rd_bytes(&r, 0, (size_t)-1, &p.enc0, &p.enc0_len) ||
            rd_bytes(&r, TL_SIG_LEN, TL_SIG_LEN, &p.sig, &p.sig_len) || r.pos != r.end) {
            return TL_E_MALFORMED;
        }
        s.buf = p.enc0;
        s.pos = 0;
        s.end = p.enc0_len;
        if (rd_expect(&s, TL_CBOR_TAG, 16) || rd_enc0_body(&s, 0, &p) || s.pos != s.end) {
            return TL_E_MALFORMED;
        }
        p.kind = TL_KIND_SIGNED;
    }
    if (p.piv_len > 1 && p.piv[0] == 0) { /* Partial IV with a leading zero */
        return TL_E_MALFORMED;
    }
    for (i = 0; i < p.piv_len; i++) {
        p.seq = (p.seq << 8) | p.piv[i];
    }
    *out = p;
    return TL_OK;
}

/* ---------------------------------------------------------------------------------------- */

int tl_verify(uint8_t *work, size_t work_len, const tl_parsed *p, const uint8_t sign_pk[32],
              const uint8_t *stream, size_t stream_len)
{
    size_t a0, need, n;
    if (p->sig_len != TL_SIG_LEN || p->kid_len > TL_LEN_LIMIT || p->piv_len > TL_LEN_LIMIT ||
        p->prot_len > TL_LEN_LIMIT || p->enc0_len > TL_LEN_LIMIT || stream_len > TL_LEN_LIMIT) {
        return TL_E_BAD_SIGNATURE;
    }
    a0 = 6 + bstr_len(p->kid_len) + bstr_len(p->piv_len) + bstr_len(stream_len);
    need = sizeof SIG1_PREFIX + bstr_len(p->prot_len) + bstr_len(a0) + bstr_len(p->enc0_len);
    if (work_len < need) {
        return TL_E_BUFFER;
    }
    memcpy(work, SIG1_PREFIX, sizeof SIG1_PREFIX);
    n = sizeof SIG1_PREFIX;
    n += tl_cbor_put_bstr(work + n, p->prot, p->prot_len);
    n += put_aad(work + n, p->kid, p->kid_len, p->piv, p->piv_len, stream, stream_len);
    n += tl_cbor_put_bstr(work + n, p->enc0, p->enc0_len);
    return tl_crypto_verify(p->sig, work, n, sign_pk) == 0 ? TL_OK : TL_E_BAD_SIGNATURE;
}

int tl_decrypt(uint8_t *pt, size_t *pt_len, uint8_t *work, size_t work_len, const tl_parsed *p,
               const uint8_t key[32], const uint8_t common_iv[12], const uint8_t *stream,
               size_t stream_len)
{
    uint8_t nonce[12];
    size_t a0, need, mlen, a;
    if (p->ct_len < TL_TAG_LEN ||
        tl_oscore_nonce(nonce, common_iv, p->kid, p->kid_len, p->piv, p->piv_len) != TL_OK ||
        stream_len > TL_LEN_LIMIT) {
        return TL_E_DECRYPT;
    }
    mlen = p->ct_len - TL_TAG_LEN;
    if (pt == NULL) {
        *pt_len = mlen;
        return TL_OK;
    }
    a0 = 6 + bstr_len(p->kid_len) + bstr_len(p->piv_len) + bstr_len(stream_len);
    need = sizeof ENC_AAD_PREFIX + bstr_len(a0);
    if (*pt_len < mlen || work_len < need) {
        return TL_E_BUFFER;
    }
    memcpy(work, ENC_AAD_PREFIX, sizeof ENC_AAD_PREFIX);
    a = sizeof ENC_AAD_PREFIX;
    a += put_aad(work + a, p->kid, p->kid_len, p->piv, p->piv_len, stream, stream_len);
    if (tl_crypto_aead_decrypt(pt, p->ct, mlen, p->ct + mlen, work, a, nonce, key) != 0) {
        return TL_E_DECRYPT;
    }
    *pt_len = mlen;
    return TL_OK;
}

int tl_open(uint8_t *pt, size_t *pt_len, tl_parsed *p, uint8_t *work, size_t work_len,
            const uint8_t *frame, size_t frame_len, const uint8_t *sign_pk, const uint8_t key[32],
            const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len)
{
    tl_parsed q;
    int rc = tl_parse(&q, frame, frame_len);
    if (rc != TL_OK) {
        return rc;
    }
    if (pt == NULL) {
        *pt_len = q.ct_len - TL_TAG_LEN;
        *p = q;
        return TL_OK;
    }
    if (q.kind == TL_KIND_SIGNED) {
        if (sign_pk == NULL) {
            return TL_E_BAD_SIGNATURE;
        }
        rc = tl_verify(work, work_len, &q, sign_pk, stream, stream_len);
        if (rc != TL_OK) {
            return rc;
        }
    }
    rc = tl_decrypt(pt, pt_len, work, work_len, &q, key, common_iv, stream, stream_len);
    if (rc == TL_OK) {
        *p = q;
    }
    return rc;
}

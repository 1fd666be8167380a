/* The CPython binding's C side: whole frame operations in one call. See tl_py.h. */
#include "tl_py.h"

#include <string.h>

#include "tl_cbor_check.h"
#include "tl_error.h"
#include "tl_frame.h"

static long long result(int rc, size_t n)
{
    return rc == TL_OK ? (long long)n : -(long long)rc;
}

static void to_offsets(tlpy_parsed *o, const tl_parsed *p, const uint8_t *base)
{
    o->kind = p->kind;
    o->alg = p->alg;
    o->seq = p->seq;
    o->kid_at = (size_t)(p->kid - base);
    o->kid_len = p->kid_len;
    o->kid_context_at = p->kid_context ? (size_t)(p->kid_context - base) : 0;
    o->kid_context_len = p->kid_context_len;
    o->piv_at = (size_t)(p->piv - base);
    o->piv_len = p->piv_len;
    o->prot_at = p->prot ? (size_t)(p->prot - base) : 0;
    o->prot_len = p->prot_len;
    o->enc0_at = (size_t)(p->enc0 - base);
    o->enc0_len = p->enc0_len;
    o->ct_at = (size_t)(p->ct - base);
    o->ct_len = p->ct_len;
    o->sig_at = p->sig ? (size_t)(p->sig - base) : 0;
    o->sig_len = p->sig_len;
}

/* A parsed frame with only the kid and Partial IV set, for verify and decrypt to fill in. */
static tl_parsed with_ids(const uint8_t *kid, size_t kid_len, const uint8_t *piv,
                          size_t piv_len)
{
    tl_parsed p;
    memset(&p, 0, sizeof p);
    p.kid = kid;
    p.kid_len = kid_len;
    p.piv = piv;
    p.piv_len = piv_len;
    return p;
}

size_t tlpy_seal_size(size_t pt_len, size_t stream_len)
{
    if (pt_len > TL_MAX_FRAME) { /* refused by the size check before anything is written */
        return 0;
    }
    return TL_SEAL_FRAME_BOUND(pt_len) + TL_SEAL_WORK_BOUND(pt_len, stream_len);
}

long long tlpy_seal(uint8_t *buf, size_t buf_len, const uint8_t sign_sk[64], const uint8_t *kid,
                    size_t kid_len, const uint8_t *kid_context, size_t kid_context_len,
                    const uint8_t key[32], const uint8_t common_iv[12], const uint8_t *stream,
                    size_t stream_len, uint64_t seq, const uint8_t *pt, size_t pt_len)
{
    size_t n = 0; /* the exact frame size first: range errors before the buffer check */
    int rc = tl_seal_ctx(NULL, &n, NULL, 0, sign_sk, kid, kid_len, kid_context, kid_context_len,
                         key, common_iv, stream, stream_len, seq, pt, pt_len);
    if (rc != TL_OK) {
        return -(long long)rc;
    }
    if (buf_len < n) {
        return -TL_E_BUFFER;
    }
    rc = tl_seal_ctx(buf, &n, buf + n, buf_len - n, sign_sk, kid, kid_len, kid_context,
                     kid_context_len, key, common_iv, stream, stream_len, seq, pt, pt_len);
    return result(rc, n);
}

long long tlpy_seal_lite(uint8_t *buf, size_t buf_len, const uint8_t *kid, size_t kid_len,
                         const uint8_t key[32], const uint8_t common_iv[12],
                         const uint8_t *stream, size_t stream_len, uint64_t seq,
                         const uint8_t *pt, size_t pt_len)
{
    size_t n = 0;
    int rc = tl_seal_lite(NULL, &n, NULL, 0, kid, kid_len, key, common_iv, stream, stream_len,
                          seq, pt, pt_len);
    if (rc != TL_OK) {
        return -(long long)rc;
    }
    if (buf_len < n) {
        return -TL_E_BUFFER;
    }
    rc = tl_seal_lite(buf, &n, buf + n, buf_len - n, kid, kid_len, key, common_iv, stream,
                      stream_len, seq, pt, pt_len);
    return result(rc, n);
}

size_t tlpy_seal_many_size(size_t pts_len, size_t max_pt, size_t n, size_t stream_len)
{
    if (max_pt > TL_MAX_FRAME) {
        return 0;
    }
    return TL_SEAL_WORK_BOUND(max_pt, stream_len) + pts_len + n * TL_SEAL_FRAME_BOUND(0);
}

long long tlpy_seal_many(uint8_t *buf, size_t buf_len, size_t frame_lens[],
                         const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len,
                         const uint8_t *kid_context, size_t kid_context_len,
                         const uint8_t key[32], const uint8_t common_iv[12],
                         const uint8_t *stream, size_t stream_len, uint64_t first_seq,
                         const uint8_t *pts, const size_t pt_lens[], size_t n)
{
    size_t i, max_pt = 0, work_len, total = 0;
    int rc;
    for (i = 0; i < n; i++) {
        max_pt = pt_lens[i] > max_pt ? pt_lens[i] : max_pt;
    }
    /* Range errors (seq, frame size) before the buffer check, as in tlpy_seal. */
    rc = tl_seal_many(NULL, &total, frame_lens, NULL, 0, sign_sk, kid, kid_len, kid_context,
                      kid_context_len, key, common_iv, stream, stream_len, first_seq, pts,
                      pt_lens, n);
    if (rc != TL_OK) {
        return -(long long)rc;
    }
    work_len = TL_SEAL_WORK_BOUND(max_pt, stream_len);
    if (buf_len < work_len || buf_len - work_len < total) {
        return -TL_E_BUFFER;
    }
    total = buf_len - work_len;
    rc = tl_seal_many(buf + work_len, &total, frame_lens, buf, work_len, sign_sk, kid, kid_len,
                      kid_context, kid_context_len, key, common_iv, stream, stream_len,
                      first_seq, pts, pt_lens, n);
    return result(rc, work_len); /* the frames start after the work area */
}

int tlpy_parse(tlpy_parsed *out, const uint8_t *frame, size_t frame_len)
{
    tl_parsed p;
    int rc = tl_parse(&p, frame, frame_len);
    if (rc == TL_OK) {
        to_offsets(out, &p, frame);
    }
    return rc;
}

size_t tlpy_open_size(size_t frame_len, size_t stream_len)
{
    if (frame_len > TL_MAX_FRAME) { /* malformed: refused before the buffer is used */
        return 0;
    }
    return frame_len + TL_OPEN_WORK_BOUND(frame_len, stream_len);
}

long long tlpy_open(uint8_t *buf, size_t buf_len, tlpy_parsed *out, const uint8_t *frame,
                    size_t frame_len, const uint8_t *sign_pk, const uint8_t key[32],
                    const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len)
{
    tl_parsed p;
    /* Plaintext area first (a plaintext is shorter than its frame), then the work area; one
     * parse, and a short buffer is reported only after the frame parsed (TL_E_BUFFER). */
    size_t n = frame_len < buf_len ? frame_len : buf_len;
    int rc;
    if (buf == NULL) { /* tl_open would only parse: never report an unchecked frame as opened */
        return -TL_E_BUFFER;
    }
    rc = tl_open(buf, &n, &p, buf + n, buf_len - n, frame, frame_len, sign_pk, key,
                     common_iv, stream, stream_len);
    if (rc == TL_OK) {
        to_offsets(out, &p, frame);
    }
    return result(rc, n);
}

size_t tlpy_verify_size(size_t prot_len, size_t kid_len, size_t piv_len, size_t enc0_len,
                        size_t stream_len)
{
    /* The fields all lie inside one frame, so their sum stands in for its length. */
    return TL_OPEN_WORK_BOUND(prot_len + kid_len + piv_len + enc0_len, stream_len);
}

int tlpy_verify(uint8_t *work, size_t work_len, const uint8_t *prot, size_t prot_len,
                const uint8_t *kid, size_t kid_len, const uint8_t *piv, size_t piv_len,
                const uint8_t *enc0, size_t enc0_len, const uint8_t *sig, size_t sig_len,
                const uint8_t sign_pk[32], const uint8_t *stream, size_t stream_len)
{
    tl_parsed p = with_ids(kid, kid_len, piv, piv_len);
    p.prot = prot;
    p.prot_len = prot_len;
    p.enc0 = enc0;
    p.enc0_len = enc0_len;
    p.sig = sig;
    p.sig_len = sig_len;
    return tl_verify(work, work_len, &p, sign_pk, stream, stream_len);
}

size_t tlpy_decrypt_size(size_t ct_len, size_t kid_len, size_t piv_len, size_t stream_len)
{
    return ct_len + TL_OPEN_WORK_BOUND(kid_len + piv_len, stream_len);
}

long long tlpy_decrypt(uint8_t *buf, size_t buf_len, const uint8_t *kid, size_t kid_len,
                       const uint8_t *piv, size_t piv_len, const uint8_t *ct, size_t ct_len,
                       const uint8_t key[32], const uint8_t common_iv[12],
                       const uint8_t *stream, size_t stream_len)
{
    tl_parsed p = with_ids(kid, kid_len, piv, piv_len);
    size_t n = 0;
    int rc;
    p.ct = ct;
    p.ct_len = ct_len;
    rc = tl_decrypt(NULL, &n, NULL, 0, &p, key, common_iv, stream, stream_len);
    if (rc != TL_OK) {
        return -(long long)rc;
    }
    if (buf_len < n) {
        return -TL_E_BUFFER;
    }
    rc = tl_decrypt(buf, &n, buf + n, buf_len - n, &p, key, common_iv, stream, stream_len);
    return result(rc, n);
}

int tlpy_check_payload(uint32_t *work, size_t work_n, const uint8_t *data, size_t len)
{
    uint32_t small[TLPY_CHECK_SMALL / 2 + TL_PAYLOAD_MAX_DEPTH + 1];
    int reason = TL_PAYLOAD_OK, rc;
    if (work == NULL && len <= TLPY_CHECK_SMALL) {
        work = small;
        work_n = sizeof small / sizeof small[0];
    }
    rc = tl_cbor_check(&reason, work, work_n, data, len);
    return rc == TL_E_PAYLOAD ? reason : -rc;
}

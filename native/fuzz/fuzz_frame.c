/* libFuzzer target: the frame parser and open path on hostile bytes, through the core and
 * through the CPython binding's C side (tl_py.c), plus the payload validator and COBS
 * decoding.
 * Invariants: no crash or sanitizer report; a parsed frame's fields lie inside the input and
 * re-parse identically; the binding agrees with the core (same verdict, same offsets, same
 * plaintext); an opened frame's plaintext fits; the payload validator gives one verdict
 * with any large-enough work array, accepts nothing over 16384 bytes, and its binding
 * wrapper agrees; COBS decode -> encode -> decode is the identity. Fixed keys: opening reaches verify/decrypt whenever the structure is valid. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tl_cbor_check.h"
#include "../tl_cobs.h"
#include "../tl_crypto.h"
#include "../tl_error.h"
#include "../tl_frame.h"
#include "../tl_py.h"
#include "../tests/golden.h"

int tl_crypto_sodium_init(void);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const uint8_t *p, size_t n, const uint8_t *data, size_t size)
{
    return n == 0 || (p >= data && p + n <= data + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static uint8_t pt[TL_MAX_FRAME + 1], work[TL_OPEN_WORK_BOUND(TL_MAX_FRAME, 1)];
    static uint8_t dec[TL_MAX_FRAME + 1], enc[TL_COBS_BOUND(TL_MAX_FRAME + 1)];
    static uint8_t pybuf[TL_MAX_FRAME + TL_OPEN_WORK_BOUND(TL_MAX_FRAME, 1)];
    static uint32_t keys[TL_MAX_FRAME / 2 + 16];
    tl_parsed p, q;
    tlpy_parsed o;
    size_t n, cap;
    int parsed, opened, reason, reason2, rc;
    long long m;

    if (!ready) {
        if (tl_crypto_sodium_init() != 0) {
            abort();
        }
        ready = 1;
    }
    parsed = tl_parse(&p, data, size) == TL_OK;
    if (tlpy_parse(&o, data, size) != (parsed ? TL_OK : TL_E_MALFORMED) ||
        (parsed && (o.kid_at + o.kid_len > size || o.piv_at + o.piv_len > size ||
                    o.ct_at + o.ct_len > size || o.enc0_at + o.enc0_len > size ||
                    o.sig_at + o.sig_len > size || o.prot_at + o.prot_len > size ||
                    o.kid_context_at + o.kid_context_len > size ||
                    o.kid_context_len != p.kid_context_len ||
                    data + o.kid_at != p.kid || o.seq != p.seq || o.kind != p.kind))) {
        abort();
    }
    if (parsed) {
        if (!inside(p.kid, p.kid_len, data, size) || !inside(p.piv, p.piv_len, data, size) ||
            !inside(p.ct, p.ct_len, data, size) || !inside(p.enc0, p.enc0_len, data, size) ||
            !inside(p.sig, p.sig_len, data, size) || p.ct_len < TL_TAG_LEN ||
            !inside(p.kid_context, p.kid_context_len, data, size) ||
            (p.kid_context == NULL) != (p.kid_context_len == 0) ||
            p.kid_context_len > TL_MAX_KID_CONTEXT_LEN ||
            (p.kind == TL_KIND_LITE && p.kid_context != NULL) ||
            p.kid_len < 1 || p.kid_len > 6 || p.piv_len < 1 || p.piv_len > 5) {
            abort();
        }
        if (tl_parse(&q, data, size) != TL_OK || memcmp(&p, &q, sizeof p) != 0) {
            abort();
        }
    }
    n = sizeof pt;
    opened = tl_open(pt, &n, &p, work, sizeof work, data, size, golden_pk, golden_key,
                     golden_iv, golden_stream, sizeof golden_stream) == TL_OK;
    if (opened && n + TL_TAG_LEN > size) {
        abort();
    }
    cap = tlpy_open_size(size, sizeof golden_stream);
    if (cap > sizeof pybuf) {
        abort();
    }
    m = tlpy_open(pybuf, cap, &o, data, size, golden_pk, golden_key, golden_iv, golden_stream,
                  sizeof golden_stream);
    if ((m >= 0) != opened || (opened && ((size_t)m != n || memcmp(pybuf, pt, n) != 0))) {
        abort();
    }
    rc = tl_cbor_check(&reason, keys, sizeof keys / sizeof keys[0], data, size);
    if ((rc != TL_OK && rc != TL_E_PAYLOAD) || (rc == TL_OK) != (reason == TL_PAYLOAD_OK) ||
        reason < 0 || reason >= TL_PAYLOAD_NREASONS || (rc == TL_OK && size > TL_PAYLOAD_MAX)) {
        abort();
    }
    if (tl_cbor_check(&reason2, keys, tl_cbor_check_work(size), data, size) != rc ||
        reason2 != reason ||
        tlpy_check_payload(size <= TLPY_CHECK_SMALL ? NULL : keys,
                           size <= TLPY_CHECK_SMALL ? 0 : sizeof keys / sizeof keys[0], data,
                           size) != reason) {
        abort();
    }
    if (size <= TL_MAX_FRAME) {
        n = sizeof dec;
        if (tl_cobs_decode(dec, &n, data, size) == TL_OK) {
            size_t e = sizeof enc, d2 = sizeof pt;
            if (tl_cobs_encode(enc, &e, dec, n) != TL_OK ||
                tl_cobs_decode(pt, &d2, enc, e) != TL_OK || d2 != n || memcmp(pt, dec, n)) {
                abort();
            }
        }
    }
    return 0;
}

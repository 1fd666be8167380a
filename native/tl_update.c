/* Firmware-update manifests: strict parsing, Ed25519 signature, checks, streaming SHA-256.
 * The rules (and the order in which they are checked, which decides the reason reported for
 * an input that breaks several) are twinlink/update/manifest.py's; docs/UPDATES.md states
 * them. No heap; recursion only in skip(), bounded by EXT_MAX_DEPTH. */
#include "tl_update.h"

#include <string.h>

#include "tl_cbor.h"
#include "tl_error.h"

#define EXT_MAX_DEPTH 8u
#define MAJOR_SIMPLE 7u
#define COSE_SIGN1_TAG 18u
/* CBOR arguments of negative integers: -1 - n. */
#define NARG_EDDSA 7u    /* -8 */
#define NARG_ED25519 18u /* -19 */
#define NARG_SHA256 15u  /* -16 */

typedef struct {
    const uint8_t *p;
    size_t pos;
    size_t end;
} rd;

static void rd_init(rd *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->pos = 0;
    r->end = len;
}

/* One head in shortest form; indefinite lengths and reserved values are malformed. */
static int rd_head(rd *r, unsigned *major, uint64_t *arg)
{
    unsigned ai;
    size_t n, i;
    uint64_t v = 0;
    if (r->pos >= r->end) {
        return TL_E_MALFORMED;
    }
    *major = (unsigned)(r->p[r->pos] >> 5);
    ai = r->p[r->pos] & 0x1Fu;
    r->pos++;
    if (ai < 24u) {
        *arg = ai;
        return TL_OK;
    }
    if (ai > 27u) {
        return TL_E_MALFORMED;
    }
    n = (size_t)1 << (ai - 24u);
    if (r->end - r->pos < n) {
        return TL_E_MALFORMED;
    }
    for (i = 0; i < n; i++) {
        v = (v << 8) | r->p[r->pos + i];
    }
    r->pos += n;
    if (v < (n == 1u ? 24u : (uint64_t)1 << (4u * n))) {
        return TL_E_MALFORMED;
    }
    *arg = v;
    return TL_OK;
}

static int rd_expect(rd *r, unsigned major, uint64_t arg)
{
    unsigned mj;
    uint64_t a;
    int rc = rd_head(r, &mj, &a);
    return rc ? rc : (mj == major && a == arg) ? TL_OK : TL_E_MALFORMED;
}

/* A byte string of min..max bytes (or a text string, for want == TL_CBOR_TSTR). */
static int rd_string(rd *r, unsigned want, const uint8_t **out, size_t *len, size_t min,
                     size_t max)
{
    unsigned mj;
    uint64_t n;
    int rc = rd_head(r, &mj, &n);
    if (rc) {
        return rc;
    }
    if (mj != want || n > r->end - r->pos || n < min || n > max) {
        return TL_E_MALFORMED;
    }
    *out = r->p + r->pos;
    *len = (size_t)n;
    r->pos += (size_t)n;
    return TL_OK;
}

static int rd_uint(rd *r, uint64_t *v)
{
    unsigned mj;
    int rc = rd_head(r, &mj, v);
    return rc ? rc : mj == TL_CBOR_UINT ? TL_OK : TL_E_MALFORMED;
}

/* Map labels: integers, strictly increasing in the bytewise order of their encodings (the
 * deterministic order, which also excludes duplicates). */
typedef struct {
    const uint8_t *prev;
    size_t prev_len;
} labels;

static int rd_label(rd *r, labels *l, int *negative, uint64_t *label)
{
    size_t start = r->pos, len, common;
    unsigned mj;
    int rc = rd_head(r, &mj, label), cmp;
    if (rc) {
        return rc;
    }
    if (mj != TL_CBOR_UINT && mj != TL_CBOR_NINT) {
        return TL_E_MALFORMED;
    }
    len = r->pos - start;
    if (l->prev != NULL) {
        common = len < l->prev_len ? len : l->prev_len;
        cmp = memcmp(r->p + start, l->prev, common);
        if (cmp < 0 || (cmp == 0 && len <= l->prev_len)) {
            return TL_E_MALFORMED;
        }
    }
    l->prev = r->p + start;
    l->prev_len = len;
    *negative = mj == TL_CBOR_NINT;
    return TL_OK;
}

/* Skip an extension value: integers, strings, arrays, maps, false/true/null; no tags, no
 * floats; nested at most EXT_MAX_DEPTH deep. */
static int skip(rd *r, unsigned depth)
{
    unsigned mj;
    uint64_t n, i;
    int rc;
    if (depth > EXT_MAX_DEPTH) {
        return TL_E_MALFORMED;
    }
    rc = rd_head(r, &mj, &n);
    if (rc) {
        return rc;
    }
    switch (mj) {
    case TL_CBOR_UINT:
    case TL_CBOR_NINT:
        return TL_OK;
    case TL_CBOR_BSTR:
    case TL_CBOR_TSTR:
        if (n > r->end - r->pos) {
            return TL_E_MALFORMED;
        }
        r->pos += (size_t)n;
        return TL_OK;
    case TL_CBOR_ARRAY:
    case TL_CBOR_MAP:
        /* Each item takes at least one byte, so a huge count fails at the end of input. */
        for (i = 0; i < n; i++) {
            rc = skip(r, depth + 1u);
            if (!rc && mj == TL_CBOR_MAP) {
                rc = skip(r, depth + 1u);
            }
            if (rc) {
                return rc;
            }
        }
        return TL_OK;
    case MAJOR_SIMPLE:
        return (n >= 20u && n <= 22u) ? TL_OK : TL_E_MALFORMED;
    default: /* tags */
        return TL_E_MALFORMED;
    }
}

/* Well-formed UTF-8 (Unicode table 3-7: no overlongs, surrogates or values past U+10FFFF). */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0, k, more;
    while (i < n) {
        uint8_t c = s[i], lo = 0x80u, hi = 0xBFu;
        if (c < 0x80u) {
            i++;
            continue;
        }
        if (c >= 0xC2u && c <= 0xDFu) {
            more = 1;
        } else if (c >= 0xE0u && c <= 0xEFu) {
            more = 2;
            lo = c == 0xE0u ? 0xA0u : 0x80u;
            hi = c == 0xEDu ? 0x9Fu : 0xBFu;
        } else if (c >= 0xF0u && c <= 0xF4u) {
            more = 3;
            lo = c == 0xF0u ? 0x90u : 0x80u;
            hi = c == 0xF4u ? 0x8Fu : 0xBFu;
        } else {
            return 0;
        }
        if (n - i <= more) {
            return 0;
        }
        for (k = 1; k <= more; k++) {
            uint8_t b = s[i + k];
            if (b < (k == 1u ? lo : 0x80u) || b > (k == 1u ? hi : 0xBFu)) {
                return 0;
            }
        }
        i += more + 1u;
    }
    return 1;
}

static int parse_protected(tl_manifest *m, const uint8_t *prot, size_t len)
{
    rd r;
    unsigned mj;
    uint64_t a;
    size_t kid_len;
    int rc;
    rd_init(&r, prot, len);
    if ((rc = rd_expect(&r, TL_CBOR_MAP, 2)) || (rc = rd_expect(&r, TL_CBOR_UINT, 1)) ||
        (rc = rd_head(&r, &mj, &a))) {
        return rc;
    }
    if (mj != TL_CBOR_NINT || (a != NARG_EDDSA && a != NARG_ED25519)) {
        return TL_E_MALFORMED;
    }
    m->alg = a == NARG_EDDSA ? -8 : -19;
    if ((rc = rd_expect(&r, TL_CBOR_UINT, 4)) ||
        (rc = rd_string(&r, TL_CBOR_BSTR, &m->key_id, &kid_len, TL_UPDATE_KEY_ID_LEN,
                        TL_UPDATE_KEY_ID_LEN))) {
        return rc;
    }
    return r.pos == r.end ? TL_OK : TL_E_MALFORMED;
}

static int parse_digest(rd *r, tl_manifest *m)
{
    unsigned mj;
    uint64_t a;
    size_t len;
    int rc;
    if ((rc = rd_expect(r, TL_CBOR_ARRAY, 2)) || (rc = rd_head(r, &mj, &a))) {
        return rc;
    }
    if (mj != TL_CBOR_UINT && mj != TL_CBOR_NINT) {
        return TL_E_MALFORMED;
    }
    if (mj != TL_CBOR_NINT || a != NARG_SHA256) {
        return TL_E_UPDATE_CRITICAL;
    }
    return rd_string(r, TL_CBOR_BSTR, &m->digest, &len, 32, 32);
}

/* Image parameters: SUIT vendor-id 1, class-id 2, image-digest 3, image-size 14, uri 21. */
static int parse_image(rd *r, tl_manifest *m)
{
    labels l = {NULL, 0};
    unsigned mj, seen = 0;
    uint64_t n, i, label;
    size_t len;
    int neg, rc = rd_head(r, &mj, &n);
    if (rc) {
        return rc;
    }
    if (mj != TL_CBOR_MAP) {
        return TL_E_MALFORMED;
    }
    for (i = 0; i < n; i++) {
        if ((rc = rd_label(r, &l, &neg, &label))) {
            return rc;
        }
        if (neg) {
            rc = skip(r, 1);
        } else if (label == 1u) {
            rc = rd_string(r, TL_CBOR_BSTR, &m->vendor_id, &len, 16, 16);
            seen |= 1u;
        } else if (label == 2u) {
            rc = rd_string(r, TL_CBOR_BSTR, &m->class_id, &len, 16, 16);
            seen |= 2u;
        } else if (label == 3u) {
            rc = parse_digest(r, m);
            seen |= 4u;
        } else if (label == 14u) {
            rc = rd_uint(r, &m->image_size);
            seen |= 8u;
        } else if (label == 21u) {
            rc = rd_string(r, TL_CBOR_TSTR, &m->uri, &m->uri_len, 1, TL_UPDATE_MAX_URI);
            if (!rc && !utf8_ok(m->uri, m->uri_len)) {
                rc = TL_E_MALFORMED;
            }
        } else {
            return TL_E_UPDATE_CRITICAL;
        }
        if (rc) {
            return rc;
        }
    }
    return seen == 15u ? TL_OK : TL_E_MALFORMED;
}

static int parse_next_keys(rd *r, tl_manifest *m)
{
    unsigned mj;
    uint64_t n;
    size_t i, j, len;
    int rc = rd_head(r, &mj, &n);
    if (rc) {
        return rc;
    }
    if (mj != TL_CBOR_ARRAY || n < 1u || n > TL_UPDATE_MAX_KEYS) {
        return TL_E_MALFORMED;
    }
    for (i = 0; i < (size_t)n; i++) {
        if ((rc = rd_string(r, TL_CBOR_BSTR, &m->next_keys[i], &len, 32, 32))) {
            return rc;
        }
        for (j = 0; j < i; j++) {
            if (memcmp(m->next_keys[i], m->next_keys[j], 32) == 0) {
                return TL_E_MALFORMED;
            }
        }
    }
    m->n_next_keys = (size_t)n;
    return TL_OK;
}

/* The manifest map: version 1, seq 2, image 3, next keys 4; other non-negative labels are
 * critical (refused), negative ones skipped. */
static int parse_payload(tl_manifest *m)
{
    labels l = {NULL, 0};
    rd r;
    unsigned mj, seen = 0;
    uint64_t n, i, label, version;
    int neg, rc;
    rd_init(&r, m->payload, m->payload_len);
    if ((rc = rd_head(&r, &mj, &n))) {
        return rc;
    }
    if (mj != TL_CBOR_MAP) {
        return TL_E_MALFORMED;
    }
    for (i = 0; i < n; i++) {
        if ((rc = rd_label(&r, &l, &neg, &label))) {
            return rc;
        }
        if (neg) {
            rc = skip(&r, 1);
        } else if (label == 1u) {
            rc = rd_uint(&r, &version);
            if (!rc && version != 1u) {
                rc = TL_E_UPDATE_CRITICAL;
            }
            seen |= 1u;
        } else if (label == 2u) {
            rc = rd_uint(&r, &m->seq);
            seen |= 2u;
        } else if (label == 3u) {
            rc = parse_image(&r, m);
            seen |= 4u;
        } else if (label == 4u) {
            rc = parse_next_keys(&r, m);
        } else {
            return TL_E_UPDATE_CRITICAL;
        }
        if (rc) {
            return rc;
        }
    }
    if (r.pos != r.end) {
        return TL_E_MALFORMED;
    }
    return seen == 7u ? TL_OK : TL_E_MALFORMED;
}

int tl_update_parse(tl_manifest *m, const uint8_t *buf, size_t len)
{
    tl_manifest t;
    rd r;
    size_t sig_len;
    int rc;
    if (buf == NULL || len > TL_UPDATE_MAX_MANIFEST) {
        return TL_E_MALFORMED;
    }
    memset(&t, 0, sizeof t);
    rd_init(&r, buf, len);
    if ((rc = rd_expect(&r, TL_CBOR_TAG, COSE_SIGN1_TAG)) ||
        (rc = rd_expect(&r, TL_CBOR_ARRAY, 4)) ||
        (rc = rd_string(&r, TL_CBOR_BSTR, &t.prot, &t.prot_len, 1, len))) {
        return rc;
    }
    if ((rc = parse_protected(&t, t.prot, t.prot_len)) ||
        (rc = rd_expect(&r, TL_CBOR_MAP, 0)) ||
        (rc = rd_string(&r, TL_CBOR_BSTR, &t.payload, &t.payload_len, 1, len)) ||
        (rc = rd_string(&r, TL_CBOR_BSTR, &t.sig, &sig_len, 64, 64))) {
        return rc;
    }
    if (r.pos != r.end) {
        return TL_E_MALFORMED;
    }
    if ((rc = parse_payload(&t))) {
        return rc;
    }
    *m = t;
    return TL_OK;
}

int tl_update_key_id(uint8_t id[TL_UPDATE_KEY_ID_LEN], const uint8_t pk[32])
{
    tl_sha256_state st;
    uint8_t h[32];
    if (tl_crypto_sha256_init(&st) || tl_crypto_sha256_update(&st, pk, 32) ||
        tl_crypto_sha256_final(&st, h)) {
        return TL_E_CRYPTO;
    }
    memcpy(id, h, TL_UPDATE_KEY_ID_LEN);
    return TL_OK;
}

/* RFC 9052 Sig_structure ["Signature1", protected, h'', payload]; returns its length. */
static size_t sig_structure(uint8_t *out, const tl_manifest *m)
{
    static const uint8_t ctx[] = {0x84, 0x6A, 'S', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', '1'};
    size_t n = sizeof ctx;
    memcpy(out, ctx, sizeof ctx);
    n += tl_cbor_put_bstr(out + n, m->prot, m->prot_len);
    out[n++] = 0x40; /* external_aad: h'' */
    n += tl_cbor_put_bstr(out + n, m->payload, m->payload_len);
    return n;
}

int tl_update_authenticate(tl_manifest *m, uint8_t *work, size_t work_len, const uint8_t *buf,
                           size_t len, const uint8_t (*keys)[32], size_t nkeys)
{
    tl_manifest t;
    uint8_t id[TL_UPDATE_KEY_ID_LEN];
    size_t i, need;
    int rc = tl_update_parse(&t, buf, len);
    if (rc) {
        return rc;
    }
    for (i = 0; i < nkeys; i++) {
        if ((rc = tl_update_key_id(id, keys[i]))) {
            return rc;
        }
        if (memcmp(id, t.key_id, sizeof id) == 0) {
            break;
        }
    }
    if (i == nkeys) {
        return TL_E_UPDATE_UNTRUSTED;
    }
    need = 13u + tl_cbor_head_len(t.prot_len) + t.prot_len + tl_cbor_head_len(t.payload_len) +
           t.payload_len;
    if (work == NULL || work_len < need) {
        return TL_E_BUFFER;
    }
    if (tl_crypto_verify(t.sig, work, sig_structure(work, &t), keys[i]) != 0) {
        return TL_E_BAD_SIGNATURE;
    }
    *m = t;
    return TL_OK;
}

int tl_update_check(int *same, const tl_manifest *m, const uint8_t vendor_id[16],
                    const uint8_t class_id[16], uint64_t max_image,
                    const tl_update_installed *installed)
{
    if (memcmp(m->vendor_id, vendor_id, 16) != 0) {
        return TL_E_UPDATE_VENDOR;
    }
    if (memcmp(m->class_id, class_id, 16) != 0) {
        return TL_E_UPDATE_CLASS;
    }
    if (m->image_size > max_image) {
        return TL_E_UPDATE_TOO_LARGE;
    }
    if (installed == NULL || m->seq > installed->seq) {
        *same = 0;
        return TL_OK;
    }
    if (m->seq < installed->seq) {
        return TL_E_UPDATE_ROLLBACK;
    }
    if (memcmp(m->digest, installed->digest, 32) != 0 || m->image_size != installed->size) {
        return TL_E_UPDATE_CONFLICT;
    }
    *same = 1;
    return TL_OK;
}

int tl_update_image_init(tl_update_image *st, const tl_manifest *m)
{
    if (tl_crypto_sha256_init(&st->sha)) {
        return TL_E_CRYPTO;
    }
    memcpy(st->digest, m->digest, 32);
    st->size = m->image_size;
    st->received = 0;
    return TL_OK;
}

int tl_update_image_update(tl_update_image *st, const uint8_t *chunk, size_t len)
{
    if ((uint64_t)len > st->size - st->received) {
        return TL_E_UPDATE_SIZE;
    }
    if (tl_crypto_sha256_update(&st->sha, chunk, len)) {
        return TL_E_CRYPTO;
    }
    st->received += len;
    return TL_OK;
}

int tl_update_image_final(tl_update_image *st)
{
    uint8_t h[32], diff = 0;
    size_t i;
    if (st->received != st->size) {
        return TL_E_UPDATE_SIZE;
    }
    if (tl_crypto_sha256_final(&st->sha, h)) {
        return TL_E_CRYPTO;
    }
    for (i = 0; i < sizeof h; i++) { /* constant time */
        diff = (uint8_t)(diff | (h[i] ^ st->digest[i]));
    }
    return diff ? TL_E_UPDATE_DIGEST : TL_OK;
}

const char *tl_update_reason(int code)
{
    switch (code) {
    case TL_OK:
        return "ok";
    case TL_E_MALFORMED:
        return "malformed_manifest";
    case TL_E_BAD_SIGNATURE:
        return "bad_signature";
    case TL_E_UPDATE_UNTRUSTED:
        return "untrusted_key";
    case TL_E_UPDATE_VENDOR:
        return "wrong_vendor";
    case TL_E_UPDATE_CLASS:
        return "wrong_class";
    case TL_E_UPDATE_ROLLBACK:
        return "rollback";
    case TL_E_UPDATE_CONFLICT:
        return "seq_conflict";
    case TL_E_UPDATE_DIGEST:
        return "digest_mismatch";
    case TL_E_UPDATE_SIZE:
        return "size_mismatch";
    case TL_E_UPDATE_TOO_LARGE:
        return "image_too_large";
    case TL_E_UPDATE_CRITICAL:
        return "unknown_critical";
    default:
        return "error";
    }
}

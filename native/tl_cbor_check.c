/* The strict payload validator; see tl_cbor_check.h. */
#include <string.h>

#include "tl_cbor.h"
#include "tl_cbor_check.h"
#include "tl_error.h"

#define INT_MAX_ARG 0x7FFFFFFFFFFFFFFFu /* 2^63-1: both 2^63-1 and -1-(2^63-1) = -2^63 */

static const char *const REASONS[TL_PAYLOAD_NREASONS] = {
    "ok",
    "payload exceeds 16384 bytes",
    "truncated CBOR item",
    "bytes after the CBOR item",
    "indefinite-length item",
    "reserved CBOR head",
    "CBOR tag",
    "integer outside the 64-bit signed range",
    "text string is not valid UTF-8",
    "map key is not an integer or text string",
    "duplicate map key",
    "simple value other than false, true or null",
    "float is NaN or infinite",
    "nested more than 8 deep",
};

const char *tl_cbor_check_reason(int reason)
{
    return reason >= 0 && reason < TL_PAYLOAD_NREASONS ? REASONS[reason] : "unknown reason";
}

size_t tl_cbor_check_work(size_t len)
{
    /* Every recorded key is a distinct item of at least one byte, and all but the keys of the
     * open maps (at most one per level) are followed by a value of at least one byte. */
    return len / 2 + TL_PAYLOAD_MAX_DEPTH + 1;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0, k, need;
    uint32_t cp;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07u;
        } else {
            return 0;
        }
        if (n - i - 1 < need) {
            return 0;
        }
        for (k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0u) != 0x80u) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if ((need == 2 && (cp < 0x800u || (cp >= 0xD800u && cp <= 0xDFFFu))) ||
            (need == 3 && (cp < 0x10000u || cp > 0x10FFFFu))) {
            return 0;
        }
        i += need + 1;
    }
    return 1;
}

/* A map key (integer or text string) at data[at], decoded for comparison. */
typedef struct {
    unsigned major;
    uint64_t arg;
    const uint8_t *text;
} key;

static key key_at(const uint8_t *data, size_t len, uint32_t at)
{
    key k;
    unsigned ai;
    size_t pos = at;
    (void)tl_cbor_read_head(data, len, &pos, &k.major, &ai, &k.arg); /* checked when recorded */
    k.text = data + pos;
    return k;
}

/* A total order on keys; 0 exactly when they decode to the same value. */
static int key_cmp(const uint8_t *data, size_t len, uint32_t a, uint32_t b)
{
    key x = key_at(data, len, a), y = key_at(data, len, b);
    int c;
    if (x.major != y.major) {
        return x.major < y.major ? -1 : 1;
    }
    if (x.arg != y.arg) { /* the integer, or the text's length */
        return x.arg < y.arg ? -1 : 1;
    }
    if (x.major != TL_CBOR_TSTR || x.arg == 0) {
        return 0;
    }
    c = memcmp(x.text, y.text, (size_t)x.arg);
    return c < 0 ? -1 : c > 0;
}

static void sift_down(const uint8_t *data, size_t len, uint32_t *k, size_t root, size_t n)
{
    size_t child;
    uint32_t t;
    while ((child = 2 * root + 1) < n) {
        if (child + 1 < n && key_cmp(data, len, k[child], k[child + 1]) < 0) {
            child++;
        }
        if (key_cmp(data, len, k[root], k[child]) >= 0) {
            return;
        }
        t = k[root];
        k[root] = k[child];
        k[child] = t;
        root = child;
    }
}

/* Heap sort the n key offsets (no recursion, O(n log n) whatever the keys), then look for two
 * equal neighbours. */
static int has_duplicate(const uint8_t *data, size_t len, uint32_t *k, size_t n)
{
    size_t i;
    uint32_t t;
    if (n < 2) {
        return 0;
    }
    for (i = n / 2; i-- > 0;) {
        sift_down(data, len, k, i, n);
    }
    for (i = n - 1; i > 0; i--) {
        t = k[0];
        k[0] = k[i];
        k[i] = t;
        sift_down(data, len, k, 0, i);
    }
    for (i = 1; i < n; i++) {
        if (key_cmp(data, len, k[i - 1], k[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Checks of one item's head; the content of a string, nothing of a container's items. */
static int check_head(const uint8_t *data, size_t len, size_t *pos, int is_key, size_t depth,
                      unsigned *major, uint64_t *count)
{
    unsigned ai;
    uint64_t arg;
    size_t left;
    if (!tl_cbor_read_head(data, len, pos, major, &ai, &arg)) {
        return TL_PAYLOAD_TRUNCATED;
    }
    if (ai == 31) {
        return TL_PAYLOAD_INDEFINITE;
    }
    if (ai > 27) {
        return TL_PAYLOAD_RESERVED;
    }
    if (is_key && *major != TL_CBOR_UINT && *major != TL_CBOR_NINT && *major != TL_CBOR_TSTR) {
        return TL_PAYLOAD_KEY_TYPE;
    }
    left = len - *pos;
    *count = 0;
    switch (*major) {
    case TL_CBOR_UINT:
    case TL_CBOR_NINT:
        return arg > INT_MAX_ARG ? TL_PAYLOAD_INT_RANGE : TL_PAYLOAD_OK;
    case TL_CBOR_BSTR:
    case TL_CBOR_TSTR:
        if (arg > left) {
            return TL_PAYLOAD_TRUNCATED;
        }
        if (*major == TL_CBOR_TSTR && !utf8_ok(data + *pos, (size_t)arg)) {
            return TL_PAYLOAD_UTF8;
        }
        *pos += (size_t)arg;
        return TL_PAYLOAD_OK;
    case TL_CBOR_ARRAY:
    case TL_CBOR_MAP:
        if (depth >= TL_PAYLOAD_MAX_DEPTH) {
            return TL_PAYLOAD_DEPTH;
        }
        /* every item takes at least one byte */
        if (*major == TL_CBOR_ARRAY ? arg > left : arg > left / 2) {
            return TL_PAYLOAD_TRUNCATED;
        }
        *count = *major == TL_CBOR_MAP ? 2 * arg : arg;
        return TL_PAYLOAD_OK;
    case TL_CBOR_TAG:
        return TL_PAYLOAD_TAG;
    default: /* major 7 */
        if (ai >= 20 && ai <= 22) {
            return TL_PAYLOAD_OK; /* false, true, null */
        }
        if (ai == 25) {
            return (arg & 0x7C00u) == 0x7C00u ? TL_PAYLOAD_FLOAT : TL_PAYLOAD_OK;
        }
        if (ai == 26) {
            return (arg & 0x7F800000u) == 0x7F800000u ? TL_PAYLOAD_FLOAT : TL_PAYLOAD_OK;
        }
        if (ai == 27) {
            return (arg & 0x7FF0000000000000u) == 0x7FF0000000000000u ? TL_PAYLOAD_FLOAT
                                                                      : TL_PAYLOAD_OK;
        }
        return TL_PAYLOAD_SIMPLE;
    }
}

int tl_cbor_check(int *reason, uint32_t *work, size_t work_n, const uint8_t *data, size_t len)
{
    struct {
        uint64_t left;   /* items (keys and values for a map) still to read */
        size_t keys_at;  /* where this map's keys start in work */
        unsigned is_map;
    } open[TL_PAYLOAD_MAX_DEPTH];
    size_t depth = 0, pos = 0, nkeys = 0, at;
    unsigned major;
    uint64_t count;
    int r, is_key;

    if (work_n < tl_cbor_check_work(len)) {
        return TL_E_BUFFER;
    }
    if (len > TL_PAYLOAD_MAX) {
        *reason = TL_PAYLOAD_TOO_LONG;
        return TL_E_PAYLOAD;
    }
    do {
        /* A map's items alternate key, value: a key when an even number is left. */
        is_key = depth > 0 && open[depth - 1].is_map && open[depth - 1].left % 2 == 0;
        at = pos;
        r = check_head(data, len, &pos, is_key, depth, &major, &count);
        if (r != TL_PAYLOAD_OK) {
            *reason = r;
            return TL_E_PAYLOAD;
        }
        if (is_key) {
            if (nkeys >= work_n) {
                return TL_E_BUFFER;
            }
            work[nkeys++] = (uint32_t)at;
        }
        if (count > 0) { /* a non-empty container: read its items next */
            open[depth].left = count;
            open[depth].keys_at = nkeys;
            open[depth].is_map = major == TL_CBOR_MAP;
            depth++;
            continue;
        }
        /* An item is complete: count it in its container, closing every container it fills. */
        while (depth > 0 && --open[depth - 1].left == 0) {
            depth--;
            if (open[depth].is_map) {
                if (has_duplicate(data, len, work + open[depth].keys_at,
                                  nkeys - open[depth].keys_at)) {
                    *reason = TL_PAYLOAD_DUPLICATE_KEY;
                    return TL_E_PAYLOAD;
                }
                nkeys = open[depth].keys_at;
            }
        }
    } while (depth > 0);
    if (pos != len) {
        *reason = TL_PAYLOAD_TRAILING;
        return TL_E_PAYLOAD;
    }
    *reason = TL_PAYLOAD_OK;
    return TL_OK;
}

/* COBS encode/decode; see tl_cobs.h. One pass each; with out NULL the same pass only counts. */
#include <string.h>

#include "tl_cobs.h"
#include "tl_error.h"

int tl_cobs_encode(uint8_t *out, size_t *out_len, const uint8_t *in, size_t in_len)
{
    size_t i, start = 0, n = 0, cap = out ? *out_len : 0, run;
    int final_zero = 1; /* a run that ended in a full 0xFF block gets no trailing code */

    /* Two passes when writing: count first, so a short buffer leaves out untouched. */
    for (i = 0; i < in_len; i++) {
        if (in[i] == 0) {
            final_zero = 1;
            n += 1 + (i - start);
            start = i + 1;
        } else if (i - start == 0xFD) {
            final_zero = 0;
            n += 1 + (i + 1 - start);
            start = i + 1;
        }
    }
    if (in_len != start || final_zero) {
        n += 1 + (in_len - start);
    }
    if (out == NULL) {
        *out_len = n;
        return TL_OK;
    }
    if (cap < n) {
        return TL_E_BUFFER;
    }
    n = 0;
    start = 0;
    final_zero = 1;
    for (i = 0; i < in_len; i++) {
        if (in[i] == 0) {
            final_zero = 1;
            run = i - start;
            out[n++] = (uint8_t)(run + 1);
            memcpy(out + n, in + start, run);
            n += run;
            start = i + 1;
        } else if (i - start == 0xFD) {
            final_zero = 0;
            run = i + 1 - start;
            out[n++] = 0xFF;
            memcpy(out + n, in + start, run);
            n += run;
            start = i + 1;
        }
    }
    if (in_len != start || final_zero) {
        run = in_len - start;
        out[n++] = (uint8_t)(run + 1);
        if (run) {
            memcpy(out + n, in + start, run);
        }
        n += run;
    }
    *out_len = n;
    return TL_OK;
}

/* One pass that validates and (if out) writes; returns the decoded length via *n. */
static int decode_pass(uint8_t *out, size_t *n_out, const uint8_t *in, size_t in_len)
{
    size_t idx = 0, n = 0, code, j;
    if (in_len == 0) {
        *n_out = 0;
        return TL_OK;
    }
    for (;;) {
        code = in[idx];
        if (code == 0 || code - 1 > in_len - idx - 1) {
            return TL_E_LINE; /* zero byte, or the code runs past the end */
        }
        idx++;
        for (j = 0; j < code - 1; j++) {
            if (in[idx + j] == 0) {
                return TL_E_LINE;
            }
        }
        if (out) {
            memcpy(out + n, in + idx, code - 1);
        }
        n += code - 1;
        idx += code - 1;
        if (idx >= in_len) {
            break;
        }
        if (code < 0xFF) {
            if (out) {
                out[n] = 0;
            }
            n++;
        }
    }
    *n_out = n;
    return TL_OK;
}

int tl_cobs_decode(uint8_t *out, size_t *out_len, const uint8_t *in, size_t in_len)
{
    size_t n;
    int rc = decode_pass(NULL, &n, in, in_len);
    if (rc != TL_OK) {
        return rc;
    }
    if (out == NULL) {
        *out_len = n;
        return TL_OK;
    }
    if (*out_len < n) {
        return TL_E_BUFFER;
    }
    (void)decode_pass(out, &n, in, in_len);
    *out_len = n;
    return TL_OK;
}

/* libFuzzer target: the update-manifest parser and authenticator on hostile bytes.
 * Invariants: no crash or sanitizer report; every pointer of a parsed manifest lies inside the
 * input; parsing is deterministic; a manifest that authenticates also parses. Fixed trusted
 * key (the golden update key), so valid structures reach the signature check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tl_crypto.h"
#include "../tl_error.h"
#include "../tl_update.h"
#include "../tests/update_golden.h"

int tl_crypto_sodium_init(void);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const uint8_t *p, size_t n, const uint8_t *data, size_t size)
{
    return p == NULL ? n == 0 : (p >= data && p + n <= data + size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    static uint8_t work[TL_UPDATE_WORK_BOUND(TL_UPDATE_MAX_MANIFEST)];
    tl_manifest m, again;
    size_t i;
    int rc;

    if (!ready) {
        if (tl_crypto_sodium_init() != 0) {
            abort();
        }
        ready = 1;
    }
    rc = tl_update_parse(&m, data, size);
    if (rc != TL_OK && rc != TL_E_MALFORMED && rc != TL_E_UPDATE_CRITICAL) {
        abort();
    }
    if (rc == TL_OK) {
        if (!inside(m.vendor_id, 16, data, size) || !inside(m.class_id, 16, data, size) ||
            !inside(m.digest, 32, data, size) || !inside(m.key_id, 8, data, size) ||
            !inside(m.uri, m.uri_len, data, size) || !inside(m.sig, 64, data, size) ||
            !inside(m.payload, m.payload_len, data, size) || m.n_next_keys > 4u) {
            abort();
        }
        for (i = 0; i < m.n_next_keys; i++) {
            if (!inside(m.next_keys[i], 32, data, size)) {
                abort();
            }
        }
        if (tl_update_parse(&again, data, size) != TL_OK || memcmp(&m, &again, sizeof m) != 0) {
            abort();
        }
    }
    if (tl_update_authenticate(&again, work, sizeof work, data, size, &ug_update_pk, 1) ==
            TL_OK && rc != TL_OK) {
        abort();
    }
    return 0;
}

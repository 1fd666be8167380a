/* What every C test runner in native/tests shares: a CHECK that counts and reports without
 * stopping (so one run lists every failure), a hex reader for the golden vectors, and the
 * libsodium backend's init. Each runner is one translation unit, hence the statics. */
#ifndef TL_TESTS_CHECK_H
#define TL_TESTS_CHECK_H

#include <stdint.h>
#include <stdio.h>

int tl_crypto_sodium_init(void);

static int failures, checks;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failures++;                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                             \
    } while (0)

/* Decode the hex string into out (the caller sizes it); returns the number of bytes. */
static inline size_t unhex(uint8_t *out, const char *hex)
{
    size_t n = 0;
    unsigned v;
    while (hex[0] && hex[1] && sscanf(hex, "%2x", &v) == 1) {
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return n;
}

#endif

/* C test runner for the update-manifest verifier (make -C native test-update), against
 * libsodium under ASan + UBSan. The golden manifests and their verdicts come from
 * tests/vectors/update-golden.json (update_golden.h, written by scripts/make_update_vectors.py);
 * the rest are the checks that need an installed state or an image. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../tl_crypto.h"
#include "../tl_error.h"
#include "../tl_update.h"
#include "update_golden.h"

#include "check.h"

#define NVEC (sizeof ug_manifests / sizeof ug_manifests[0])

static uint8_t work[TL_UPDATE_WORK_BOUND(TL_UPDATE_MAX_MANIFEST)];
static const uint8_t (*const trusted)[32] = &ug_update_pk;

static size_t find(const char *name)
{
    size_t i;
    for (i = 0; i < NVEC; i++) {
        if (strcmp(ug_manifests[i].name, name) == 0) {
            return i;
        }
    }
    fprintf(stderr, "no vector %s\n", name);
    failures++;
    return 0;
}

/* What a fresh device (nothing installed, no capacity limit) says about a manifest. */
static int verdict(const uint8_t *data, size_t len)
{
    tl_manifest m;
    int same = -1, rc = tl_update_authenticate(&m, work, sizeof work, data, len, trusted, 1);
    if (rc == TL_OK) {
        rc = tl_update_check(&same, &m, ug_vendor_id, ug_class_id, TL_UPDATE_NO_LIMIT, NULL);
        if (rc == TL_OK && same != 0) {
            return -1;
        }
    }
    return rc;
}

static void test_golden_verdicts(void)
{
    size_t i;
    for (i = 0; i < NVEC; i++) {
        int rc = verdict(ug_manifests[i].data, ug_manifests[i].len);
        if (rc != ug_manifests[i].expect) {
            fprintf(stderr, "%s: got %s, want %s\n", ug_manifests[i].name, tl_update_reason(rc),
                    tl_update_reason(ug_manifests[i].expect));
        }
        CHECK(rc == ug_manifests[i].expect);
    }
}

static void test_fields(void)
{
    tl_manifest m;
    uint8_t id[TL_UPDATE_KEY_ID_LEN];
    size_t b = find("basic"), r = find("uri-and-rotation"), l = find("largest-basic");
    static const char uri[] = "https://updates.example.com/pump-v2/2.bin";

    CHECK(tl_update_parse(&m, ug_manifests[b].data, ug_manifests[b].len) == TL_OK);
    CHECK(m.seq == 1u && m.image_size == sizeof ug_image && m.uri == NULL &&
          m.n_next_keys == 0u && m.alg == -8);
    CHECK(memcmp(m.vendor_id, ug_vendor_id, 16) == 0 && memcmp(m.class_id, ug_class_id, 16) == 0);
    CHECK(tl_update_key_id(id, ug_update_pk) == TL_OK && memcmp(id, m.key_id, sizeof id) == 0);

    CHECK(tl_update_parse(&m, ug_manifests[r].data, ug_manifests[r].len) == TL_OK);
    CHECK(m.seq == 2u && m.uri_len == sizeof uri - 1u && memcmp(m.uri, uri, m.uri_len) == 0);
    CHECK(m.n_next_keys == 1u && memcmp(m.next_keys[0], ug_next_pk, 32) == 0);

    CHECK(tl_update_parse(&m, ug_manifests[l].data, ug_manifests[l].len) == TL_OK);
    CHECK(m.seq == UINT64_MAX && m.image_size == UINT64_MAX);
    CHECK(ug_manifests[b].len <= 256u && ug_manifests[l].len <= 256u);
}

static void test_keys_and_buffers(void)
{
    uint8_t keys[2][32];
    tl_manifest m, untouched;
    size_t b = find("basic");
    const uint8_t *d = ug_manifests[b].data;
    size_t n = ug_manifests[b].len;

    memcpy(keys[0], ug_next_pk, 32);
    memcpy(keys[1], ug_update_pk, 32);
    /* The key is found by its id wherever it is in the list; alone, the next key is no use. */
    CHECK(tl_update_authenticate(&m, work, sizeof work, d, n, (const uint8_t(*)[32])keys, 2) ==
          TL_OK);
    CHECK(tl_update_authenticate(&m, work, sizeof work, d, n, (const uint8_t(*)[32])keys, 1) ==
          TL_E_UPDATE_UNTRUSTED);
    CHECK(tl_update_authenticate(&m, work, sizeof work, d, n, trusted, 0) ==
          TL_E_UPDATE_UNTRUSTED);
    /* The bound is enough; one byte less than the Sig_structure is not; a failure leaves the
     * output alone. */
    CHECK(tl_update_authenticate(&m, work, TL_UPDATE_WORK_BOUND(n), d, n, trusted, 1) == TL_OK);
    memset(&untouched, 0x5A, sizeof untouched);
    memcpy(&m, &untouched, sizeof m);
    CHECK(tl_update_authenticate(&m, work, n - 57u, d, n, trusted, 1) == TL_E_BUFFER);
    CHECK(tl_update_authenticate(&m, NULL, 0, d, n, trusted, 1) == TL_E_BUFFER);
    CHECK(tl_update_parse(&m, d, n - 1u) == TL_E_MALFORMED);
    CHECK(memcmp(&m, &untouched, sizeof m) == 0);
    CHECK(tl_update_parse(&m, NULL, 0) == TL_E_MALFORMED);
}

static void test_installed_state(void)
{
    tl_manifest m;
    tl_update_installed inst;
    size_t b = find("basic");
    int same = -1;
    CHECK(tl_update_authenticate(&m, work, sizeof work, ug_manifests[b].data,
                                 ug_manifests[b].len, trusted, 1) == TL_OK);
    memcpy(inst.digest, m.digest, 32);
    inst.size = m.image_size;
    inst.seq = 0;
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_class_id, TL_UPDATE_NO_LIMIT, &inst) ==
              TL_OK && same == 0);
    inst.seq = 1;
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_class_id, TL_UPDATE_NO_LIMIT, &inst) ==
              TL_OK && same == 1);
    inst.digest[31] ^= 1u;
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_class_id, TL_UPDATE_NO_LIMIT, &inst) ==
          TL_E_UPDATE_CONFLICT);
    inst.digest[31] ^= 1u;
    inst.size++;
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_class_id, TL_UPDATE_NO_LIMIT, &inst) ==
          TL_E_UPDATE_CONFLICT);
    inst.seq = 2;
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_class_id, TL_UPDATE_NO_LIMIT, &inst) ==
          TL_E_UPDATE_ROLLBACK);
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_class_id, sizeof ug_image, NULL) == TL_OK);
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_class_id, sizeof ug_image - 1u, NULL) ==
          TL_E_UPDATE_TOO_LARGE);
    /* vendor is checked before class, class before capacity and seq */
    CHECK(tl_update_check(&same, &m, ug_class_id, ug_vendor_id, 0, &inst) == TL_E_UPDATE_VENDOR);
    CHECK(tl_update_check(&same, &m, ug_vendor_id, ug_vendor_id, 0, &inst) == TL_E_UPDATE_CLASS);
}

static int stream(const tl_manifest *m, const uint8_t *img, size_t len, size_t chunk)
{
    tl_update_image st;
    size_t off;
    int rc = tl_update_image_init(&st, m);
    for (off = 0; rc == TL_OK && off < len; off += chunk) {
        rc = tl_update_image_update(&st, img + off, len - off < chunk ? len - off : chunk);
    }
    return rc ? rc : tl_update_image_final(&st);
}

static void test_image(void)
{
    static uint8_t img[sizeof ug_image + 1];
    tl_manifest m;
    tl_update_image st;
    size_t b = find("basic"), chunk;
    CHECK(tl_update_parse(&m, ug_manifests[b].data, ug_manifests[b].len) == TL_OK);
    memcpy(img, ug_image, sizeof ug_image);
    for (chunk = 1; chunk <= sizeof ug_image; chunk = chunk * 3u + 1u) {
        CHECK(stream(&m, img, sizeof ug_image, chunk) == TL_OK);
    }
    CHECK(stream(&m, img, sizeof ug_image - 1u, 64) == TL_E_UPDATE_SIZE);  /* truncated */
    CHECK(stream(&m, img, sizeof img, 64) == TL_E_UPDATE_SIZE);            /* oversize */
    img[100] ^= 0x80u;
    CHECK(stream(&m, img, sizeof ug_image, 64) == TL_E_UPDATE_DIGEST);
    img[100] ^= 0x80u;
    /* An oversize chunk is refused whole and hashes nothing: the right bytes still pass. */
    CHECK(tl_update_image_init(&st, &m) == TL_OK);
    CHECK(tl_update_image_update(&st, img, sizeof img) == TL_E_UPDATE_SIZE && st.received == 0u);
    CHECK(tl_update_image_update(&st, img, sizeof ug_image) == TL_OK);
    CHECK(tl_update_image_update(&st, img, 1) == TL_E_UPDATE_SIZE);
    CHECK(tl_update_image_final(&st) == TL_OK);
}

/* Every truncation and every single-bit flip of a valid manifest is refused (and the
 * sanitizers watch every read). */
static void test_mutations(void)
{
    static uint8_t buf[TL_UPDATE_MAX_MANIFEST + 1];
    tl_manifest m;
    size_t b = find("uri-and-rotation"), n = ug_manifests[b].len, i;
    unsigned bit;
    int ok_flips = 0;
    for (i = 0; i < n; i++) {
        CHECK(verdict(ug_manifests[b].data, i) != TL_OK);
    }
    memcpy(buf, ug_manifests[b].data, n);
    for (i = 0; i < n; i++) {
        for (bit = 0; bit < 8u; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            ok_flips += verdict(buf, n) == TL_OK;
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    CHECK(ok_flips == 0);
    memset(buf, 0, sizeof buf);
    CHECK(tl_update_parse(&m, buf, sizeof buf) == TL_E_MALFORMED); /* over the maximum */
}

static void test_reasons(void)
{
    CHECK(strcmp(tl_update_reason(TL_E_UPDATE_CRITICAL), "unknown_critical") == 0);
    CHECK(strcmp(tl_update_reason(TL_E_MALFORMED), "malformed_manifest") == 0);
    CHECK(strcmp(tl_update_reason(12345), "error") == 0);
}

int main(void)
{
    if (tl_crypto_sodium_init() != 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 2;
    }
    test_golden_verdicts();
    test_fields();
    test_keys_and_buffers();
    test_installed_state();
    test_image();
    test_mutations();
    test_reasons();
    printf("update: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}

/* C test runner for tl_downlink (make -C native test-downlink, ASan + UBSan, libsodium): the
 * golden vectors of docs/PROTOCOL.md §20, refusals (another device, another context, every bit
 * flip, every truncation) and the bounded desired-state reader. */
#include <stdio.h>
#include <string.h>

#include "../tl_crypto.h"
#include "../tl_downlink.h"
#include "../tl_error.h"
#include "../tl_window.h"
#include "downlink_golden.h"

#include "check.h"

typedef struct {
    uint8_t kid[6], ctx[16], key[32], iv[12], pt[2048], frame[4096];
    size_t kid_len, ctx_len, pt_len, frame_len;
} vec;

static void load(vec *v, const downlink_vector *g)
{
    v->kid_len = unhex(v->kid, g->kid);
    v->ctx_len = unhex(v->ctx, g->kid_context);
    (void)unhex(v->key, g->downlink_key);
    (void)unhex(v->iv, g->common_iv);
    v->pt_len = unhex(v->pt, g->plaintext);
    v->frame_len = unhex(v->frame, g->frame);
}

static int open_vec(const vec *v, const uint8_t *frame, size_t len, uint8_t *pt, size_t *pt_len)
{
    tl_downlink d;
    int rc = tl_downlink_parse(&d, frame, len);
    if (rc != TL_OK) {
        return rc;
    }
    return tl_downlink_open(pt, pt_len, &d, v->key, v->iv, v->kid, v->kid_len,
                            v->ctx_len ? v->ctx : NULL, v->ctx_len);
}

static void test_golden(void)
{
    size_t i;
    for (i = 0; i < sizeof DOWNLINK_VECTORS / sizeof DOWNLINK_VECTORS[0]; i++) {
        static vec v;
        uint8_t pt[2048], other[6] = {2};
        size_t pt_len = sizeof pt;
        tl_downlink d;
        load(&v, &DOWNLINK_VECTORS[i]);
        CHECK(tl_downlink_parse(&d, v.frame, v.frame_len) == TL_OK);
        CHECK(d.seq == DOWNLINK_VECTORS[i].seq);
        CHECK(open_vec(&v, v.frame, v.frame_len, pt, &pt_len) == TL_OK);
        CHECK(pt_len == v.pt_len && memcmp(pt, v.pt, pt_len) == 0);
        /* another device (kid in the AAD), another context, no context */
        pt_len = sizeof pt;
        CHECK(tl_downlink_open(pt, &pt_len, &d, v.key, v.iv, other, 1,
                               v.ctx_len ? v.ctx : NULL, v.ctx_len) == TL_E_DECRYPT);
        CHECK(tl_downlink_open(pt, &pt_len, &d, v.key, v.iv, v.kid, v.kid_len,
                               v.ctx_len ? NULL : other, v.ctx_len ? 0 : 1) == TL_E_DECRYPT);
        pt_len = 4;
        CHECK(tl_downlink_open(pt, &pt_len, &d, v.key, v.iv, v.kid, v.kid_len,
                               v.ctx_len ? v.ctx : NULL, v.ctx_len) == TL_E_BUFFER);
    }
}

static void test_every_mutation_is_refused(void)
{
    static vec v;
    uint8_t pt[2048];
    size_t i, pt_len;
    unsigned bit;
    load(&v, &DOWNLINK_VECTORS[0]);
    for (i = 0; i < v.frame_len; i++) {
        for (bit = 0; bit < 8; bit++) {
            v.frame[i] ^= (uint8_t)(1u << bit);
            pt_len = sizeof pt;
            CHECK(open_vec(&v, v.frame, v.frame_len, pt, &pt_len) != TL_OK);
            v.frame[i] ^= (uint8_t)(1u << bit);
        }
    }
    for (i = 0; i < v.frame_len; i++) {
        pt_len = sizeof pt;
        CHECK(open_vec(&v, v.frame, i, pt, &pt_len) != TL_OK);
    }
    pt_len = sizeof pt;
    CHECK(open_vec(&v, v.frame, v.frame_len, pt, &pt_len) == TL_OK);
}

static void test_desired_reader(void)
{
    static vec v;
    tl_desired d;
    tl_desired_item it;
    int seen_interval = 0, seen_mode = 0;
    load(&v, &DOWNLINK_VECTORS[0]);
    CHECK(tl_desired_begin(&d, v.pt, v.pt_len) == TL_OK);
    CHECK(d.version == DOWNLINK_VECTORS[0].seq);
    while (tl_desired_next(&d, &it) == TL_OK && it.key != NULL) {
        if (it.key_len == 8 && memcmp(it.key, "interval", 8) == 0) {
            seen_interval = it.kind == TL_VAL_INT && it.i == 30;
        } else if (it.key_len == 4 && memcmp(it.key, "mode", 4) == 0) {
            seen_mode = it.kind == TL_VAL_TEXT && it.text_len == 3 &&
                        memcmp(it.text, "eco", 3) == 0;
        }
    }
    CHECK(seen_interval && seen_mode);
    /* the command vector is not a desired state */
    load(&v, &DOWNLINK_VECTORS[1]);
    CHECK(tl_desired_begin(&d, v.pt, v.pt_len) == TL_E_PAYLOAD);
    {
        /* {1: "desired", 2: 1, 3: {"a": [1, [2]], "b": 1.5, "c": -3, "d": true, "e": null}} */
        static const uint8_t nested[] = {
            0xa3, 0x01, 0x67, 'd', 'e', 's', 'i', 'r', 'e', 'd', 0x02, 0x01, 0x03, 0xa5,
            0x61, 'a', 0x82, 0x01, 0x81, 0x02, 0x61, 'b', 0xf9, 0x3e, 0x00,
            0x61, 'c', 0x22, 0x61, 'd', 0xf5, 0x61, 'e', 0xf6};
        tl_val_kind want[] = {TL_VAL_OTHER, TL_VAL_FLOAT, TL_VAL_INT, TL_VAL_BOOL, TL_VAL_NULL};
        size_t k = 0;
        CHECK(tl_desired_begin(&d, nested, sizeof nested) == TL_OK);
        while (tl_desired_next(&d, &it) == TL_OK && it.key != NULL && k < 5) {
            CHECK(it.kind == want[k]);
            k++;
        }
        CHECK(k == 5);
        CHECK(it.key == NULL);
        /* every truncation is refused somewhere, never read past the end (ASan) */
        for (k = 0; k < sizeof nested; k++) {
            int rc = tl_desired_begin(&d, nested, k);
            while (rc == TL_OK) {
                rc = tl_desired_next(&d, &it);
                if (rc == TL_OK && it.key == NULL) {
                    break;
                }
            }
            CHECK(rc != TL_OK);
        }
    }
    {
        /* nesting deeper than 8 is refused */
        uint8_t deep[64] = {0xa3, 0x01, 0x67, 'd', 'e', 's', 'i', 'r', 'e', 'd',
                            0x02, 0x01, 0x03, 0xa1, 0x61, 'a'};
        size_t n = 16, j;
        for (j = 0; j < 12; j++) {
            deep[n++] = 0x81;
        }
        deep[n++] = 0x00;
        CHECK(tl_desired_begin(&d, deep, n) == TL_OK);
        CHECK(tl_desired_next(&d, &it) == TL_E_PAYLOAD);
    }
}

static void test_window_refuses_replay(void)
{
    uint64_t ring[2];
    tl_window w;
    CHECK(tl_window_init(&w, 64, ring, tl_window_blocks(64)) == TL_OK);
    CHECK(tl_window_check(&w, DOWNLINK_VECTORS[0].seq) == TL_OK);
    CHECK(tl_window_update(&w, DOWNLINK_VECTORS[0].seq) == TL_OK);
    CHECK(tl_window_check(&w, DOWNLINK_VECTORS[0].seq) == TL_E_REPLAY);
    CHECK(tl_window_check(&w, DOWNLINK_VECTORS[0].seq - 64) == TL_E_TOO_OLD);
}

int main(void)
{
    if (tl_crypto_sodium_init() != 0) {
        fprintf(stderr, "libsodium init failed\n");
        return 2;
    }
    test_golden();
    test_every_mutation_is_refused();
    test_desired_reader();
    test_window_refuses_replay();
    printf("tl_downlink: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}

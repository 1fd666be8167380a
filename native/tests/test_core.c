/* C test runner for the twinlink core, built against libsodium under ASan + UBSan
 * (make -C native test). Public vectors are hardcoded with their source noted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tl_cbor_check.h"
#include "../tl_cobs.h"
#include "../tl_crc.h"
#include "../tl_crypto.h"
#include "../tl_error.h"
#include "../tl_frame.h"
#include "../tl_oscore.h"
#include "../tl_py.h"
#include "../tl_window.h"
#include "golden.h"

#include "check.h"

static int eq_hex(const uint8_t *got, size_t len, const char *hex)
{
    uint8_t want[512];
    size_t n = unhex(want, hex);
    return n == len && memcmp(got, want, n) == 0;
}

static void test_hkdf_rfc5869(void)
{
    /* RFC 5869 Appendix A.1 (Test Case 1, SHA-256). */
    uint8_t ikm[22], salt[13], info[10], okm[42];
    unhex(ikm, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
    unhex(salt, "000102030405060708090a0b0c");
    unhex(info, "f0f1f2f3f4f5f6f7f8f9");
    CHECK(tl_hkdf_sha256(okm, 42, salt, 13, ikm, 22, info, 10) == TL_OK);
    CHECK(eq_hex(okm, 42, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                          "34007208d5b887185865"));
    CHECK(tl_hkdf_sha256(okm, 0, salt, 13, ikm, 22, info, 10) == TL_E_RANGE);
    CHECK(tl_hkdf_sha256(okm, 255 * 32 + 1, salt, 13, ikm, 22, info, 10) == TL_E_RANGE);
}

static void test_oscore_rfc8613(void)
{
    /* RFC 8613 Appendix C.1.1 (tests/vectors/rfc8613-oscore.json, derivation_c_1_1):
     * AES-CCM-16-64-128 (alg 10), so key 16 bytes and IV 13; the derivation is the same. */
    uint8_t secret[16], salt[8], info[64], out[32], rid = 0x01, n12[12], iv12[12];
    size_t info_len = sizeof info, need = 0;
    unhex(secret, "0102030405060708090a0b0c0d0e0f10");
    unhex(salt, "9e7ca92223786340");
    CHECK(tl_oscore_info(info, &info_len, NULL, 0, 0, NULL, 0, 10, "Key", 16) == TL_OK);
    CHECK(eq_hex(info, info_len, "8540f60a634b657910"));
    CHECK(tl_oscore_info(NULL, &need, NULL, 0, 0, NULL, 0, 10, "Key", 16) == TL_OK);
    CHECK(need == info_len);
    CHECK(tl_hkdf_sha256(out, 16, salt, 8, secret, 16, info, info_len) == TL_OK);
    CHECK(eq_hex(out, 16, "f0910ed7295e6ad4b54fc793154302ff"));
    info_len = sizeof info;
    CHECK(tl_oscore_info(info, &info_len, &rid, 1, 0, NULL, 0, 10, "Key", 16) == TL_OK);
    CHECK(tl_hkdf_sha256(out, 16, salt, 8, secret, 16, info, info_len) == TL_OK);
    CHECK(eq_hex(out, 16, "ffb14e093c94c9cac9471648b4f98710"));
    info_len = sizeof info;
    CHECK(tl_oscore_info(info, &info_len, NULL, 0, 0, NULL, 0, 10, "IV", 13) == TL_OK);
    CHECK(tl_hkdf_sha256(out, 13, salt, 8, secret, 16, info, info_len) == TL_OK);
    CHECK(eq_hex(out, 13, "4622d4dd6d944168eefb54987c"));
    /* Nonce layout (RFC 8613 §5.2) on a 12-byte IV: len(id) | padded id | padded PIV. */
    memset(iv12, 0, 12);
    {
        uint8_t piv = 0x14, id = 0x01;
        CHECK(tl_oscore_nonce(n12, iv12, &id, 1, &piv, 1) == TL_OK);
        CHECK(eq_hex(n12, 12, "010000000000010000000014"));
        CHECK(tl_oscore_nonce(n12, iv12, golden_kid, 7, &piv, 1) == TL_E_RANGE);
    }
}

static void test_piv(void)
{
    uint8_t piv[5];
    CHECK(tl_piv_encode(piv, 0) == 1 && piv[0] == 0);
    CHECK(tl_piv_encode(piv, 255) == 1 && piv[0] == 0xFF);
    CHECK(tl_piv_encode(piv, 256) == 2 && piv[0] == 1 && piv[1] == 0);
    CHECK(tl_piv_encode(piv, TL_MAX_SEQ) == 5 && piv[0] == 0xFF);
    CHECK(tl_piv_encode(piv, TL_MAX_SEQ + 1) == 0);
}

static void test_cobs_crc(void)
{
    /* Known answers: Cheshire & Baker examples (as on Wikipedia) and the cobs package. */
    static const struct {
        const char *in, *out;
    } kat[] = {
        {"", "01"},
        {"00", "0101"},
        {"0000", "010101"},
        {"11220033", "0311220233"},
        {"11223344", "0511223344"},
        {"11000000", "0211010101"},
    };
    uint8_t in[600], out[700], back[700];
    size_t i, n, m, len;
    for (i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        len = unhex(in, kat[i].in);
        n = sizeof out;
        CHECK(tl_cobs_encode(out, &n, in, len) == TL_OK && eq_hex(out, n, kat[i].out));
        m = sizeof back;
        CHECK(tl_cobs_decode(back, &m, out, n) == TL_OK && m == len && !memcmp(back, in, len));
    }
    for (i = 0; i < 254; i++) {
        in[i] = (uint8_t)(i + 1); /* 01..FE: one full block, no trailing code byte */
    }
    n = 0;
    CHECK(tl_cobs_encode(NULL, &n, in, 254) == TL_OK && n == 255);
    n = sizeof out;
    CHECK(tl_cobs_encode(out, &n, in, 254) == TL_OK && n == 255 && out[0] == 0xFF);
    m = sizeof back;
    CHECK(tl_cobs_decode(back, &m, out, n) == TL_OK && m == 254 && !memcmp(back, in, 254));
    n = 254; /* one short: untouched, TL_E_BUFFER */
    memset(out, 0xAA, sizeof out);
    CHECK(tl_cobs_encode(out, &n, in, 254) == TL_E_BUFFER && out[0] == 0xAA && n == 254);
    m = sizeof back;
    CHECK(tl_cobs_decode(back, &m, (const uint8_t *)"\x02\x00", 2) == TL_E_LINE);
    CHECK(tl_cobs_decode(back, &m, (const uint8_t *)"\x05\x11", 2) == TL_E_LINE);
    CHECK(tl_cobs_decode(back, &m, (const uint8_t *)"\x00", 1) == TL_E_LINE);
    /* CRC-16/CCITT-FALSE check value. */
    CHECK(tl_crc16((const uint8_t *)"123456789", 9, TL_CRC16_INIT) == 0x29B1);
    CHECK(tl_crc16(NULL, 0, TL_CRC16_INIT) == 0xFFFF);
}

static void window_case(uint32_t size)
{
    uint64_t ring[64];
    uint8_t state[128];
    tl_window w, r;
    CHECK(tl_window_init(&w, size, ring, 64) == TL_OK);
    CHECK(tl_window_check(&w, 0) == TL_OK);
    CHECK(tl_window_update(&w, 0) == TL_OK);
    CHECK(tl_window_check(&w, 0) == TL_E_REPLAY);
    CHECK(tl_window_update(&w, 10) == TL_OK);
    CHECK(tl_window_check(&w, 5) == TL_OK);
    CHECK(tl_window_check(&w, 10) == TL_E_REPLAY);
    CHECK(tl_window_update(&w, 5) == TL_OK);
    CHECK(tl_window_check(&w, 5) == TL_E_REPLAY);
    CHECK(tl_window_update(&w, 10 + size - 1) == TL_OK);
    CHECK(tl_window_check(&w, 10) == TL_E_REPLAY); /* still inside: top - 10 = size - 1 */
    CHECK(tl_window_check(&w, 9) == TL_E_TOO_OLD);
    CHECK(tl_window_update(&w, 9) == TL_E_TOO_OLD);
    CHECK(tl_window_update(&w, 5000) == TL_OK); /* jump far: everything old is gone */
    CHECK(tl_window_check(&w, 5000 - size + 1) == TL_OK);
    CHECK(tl_window_check(&w, 5000 - size) == TL_E_TOO_OLD);
    CHECK(tl_window_update(&w, 4999) == TL_OK);
    CHECK(tl_window_export(state, size / 8, &w) == TL_OK);
    CHECK((state[size / 8 - 1] & 3) == 3);
    {
        uint64_t ring2[64];
        CHECK(tl_window_init(&r, size, ring2, 64) == TL_OK);
        CHECK(tl_window_import(&r, w.top, state, size / 8) == TL_OK);
        CHECK(tl_window_check(&r, 4999) == TL_E_REPLAY);
        CHECK(tl_window_check(&r, 4998) == TL_OK);
    }
}

static void test_window(void)
{
    uint64_t ring[2];
    tl_window w;
    window_case(8);
    window_case(64);
    window_case(72);
    window_case(128);
    window_case(1024);
    CHECK(tl_window_init(&w, 0, ring, 2) == TL_E_RANGE);
    CHECK(tl_window_init(&w, 12, ring, 2) == TL_E_RANGE);
    CHECK(tl_window_init(&w, 1024, ring, 2) == TL_E_RANGE); /* ring too short */
    CHECK(tl_window_blocks(64) == 0 && tl_window_blocks(128) == 4);
}

static void test_frames(void)
{
    uint8_t frame[1024], work[1024], pt[1024], mutated[1024];
    size_t n = 0, m, i;
    tl_parsed p;

    /* NULL output: the exact size. */
    CHECK(tl_seal(NULL, &n, NULL, 0, golden_sk, golden_kid, sizeof golden_kid, golden_key,
                  golden_iv, golden_stream, 1, GOLDEN_SEQ, golden_pt, sizeof golden_pt) == TL_OK);
    CHECK(n == sizeof golden_signed);
    /* Golden bytes from the Python reference. */
    n = sizeof frame;
    CHECK(tl_seal(frame, &n, work, sizeof work, golden_sk, golden_kid, sizeof golden_kid,
                  golden_key, golden_iv, golden_stream, 1, GOLDEN_SEQ, golden_pt,
                  sizeof golden_pt) == TL_OK);
    CHECK(n == sizeof golden_signed && memcmp(frame, golden_signed, n) == 0);
    n = sizeof frame;
    CHECK(tl_seal_lite(frame, &n, work, sizeof work, golden_kid, sizeof golden_kid, golden_key,
                       golden_iv, golden_stream, 1, GOLDEN_LITE_SEQ, golden_pt,
                       sizeof golden_pt) == TL_OK);
    CHECK(n == sizeof golden_lite && memcmp(frame, golden_lite, n) == 0);
    {
        uint8_t many[1024], x[300];
        size_t lens[2], pl[2] = {0, 300}, total = sizeof many;
        memset(x, 'x', sizeof x);
        CHECK(tl_seal_many(many, &total, lens, work, sizeof work, golden_sk, golden_kid,
                           sizeof golden_kid, NULL, 0, golden_key, golden_iv, golden_stream, 1,
                           255, x, pl, 2) == TL_OK);
        CHECK(lens[0] == sizeof golden_many0 && !memcmp(many, golden_many0, lens[0]));
        CHECK(lens[1] == sizeof golden_many1 &&
              !memcmp(many + lens[0], golden_many1, lens[1]));
        CHECK(total == lens[0] + lens[1]);
        CHECK(tl_seal_many(many, &total, lens, work, sizeof work, golden_sk, golden_kid,
                           sizeof golden_kid, NULL, 0, golden_key, golden_iv, golden_stream, 1,
                           TL_MAX_SEQ, x, pl, 2) == TL_E_RANGE);
    }
    /* Range checks, and outputs untouched on failure. */
    memset(frame, 0xAA, sizeof frame);
    n = sizeof frame;
    CHECK(tl_seal(frame, &n, work, sizeof work, golden_sk, golden_kid, 7, golden_key, golden_iv,
                  golden_stream, 1, 1, golden_pt, sizeof golden_pt) == TL_E_RANGE);
    CHECK(tl_seal(frame, &n, work, sizeof work, golden_sk, golden_kid, 0, golden_key, golden_iv,
                  golden_stream, 1, 1, golden_pt, sizeof golden_pt) == TL_E_RANGE);
    CHECK(tl_seal(frame, &n, work, sizeof work, golden_sk, golden_kid, 2, golden_key, golden_iv,
                  golden_stream, 1, TL_MAX_SEQ + 1, golden_pt, sizeof golden_pt) == TL_E_RANGE);
    n = 10;
    CHECK(tl_seal(frame, &n, work, sizeof work, golden_sk, golden_kid, 2, golden_key, golden_iv,
                  golden_stream, 1, 1, golden_pt, sizeof golden_pt) == TL_E_BUFFER);
    CHECK(n == 10 && frame[0] == 0xAA && frame[sizeof frame - 1] == 0xAA);

    /* Open the golden frames. */
    m = 0;
    CHECK(tl_open(NULL, &m, &p, NULL, 0, golden_signed, sizeof golden_signed, golden_pk,
                  golden_key, golden_iv, golden_stream, 1) == TL_OK);
    CHECK(m == sizeof golden_pt);
    m = sizeof pt;
    CHECK(tl_open(pt, &m, &p, work, sizeof work, golden_signed, sizeof golden_signed, golden_pk,
                  golden_key, golden_iv, golden_stream, 1) == TL_OK);
    CHECK(m == sizeof golden_pt && !memcmp(pt, golden_pt, m));
    CHECK(p.kind == TL_KIND_SIGNED && p.seq == GOLDEN_SEQ && p.alg == -8 && p.kid_len == 2);
    m = sizeof pt;
    CHECK(tl_open(pt, &m, &p, work, sizeof work, golden_lite, sizeof golden_lite, NULL,
                  golden_key, golden_iv, golden_stream, 1) == TL_OK);
    CHECK(p.kind == TL_KIND_LITE && p.seq == GOLDEN_LITE_SEQ && p.alg == 24);
    m = sizeof pt;
    CHECK(tl_open(pt, &m, &p, work, sizeof work, golden_signed, sizeof golden_signed, NULL,
                  golden_key, golden_iv, golden_stream, 1) == TL_E_BAD_SIGNATURE);
    CHECK(tl_open(pt, &m, &p, work, sizeof work, golden_signed, sizeof golden_signed, golden_pk,
                  golden_key, golden_iv, (const uint8_t *)"a", 1) == TL_E_BAD_SIGNATURE);
    CHECK(tl_open(pt, &m, &p, work, sizeof work, golden_lite, sizeof golden_lite, NULL,
                  golden_pk, golden_iv, golden_stream, 1) == TL_E_DECRYPT);
    CHECK(tl_open(pt, &m, &p, work, 8, golden_signed, sizeof golden_signed, golden_pk,
                  golden_key, golden_iv, golden_stream, 1) == TL_E_BUFFER);

    /* Every truncation is malformed; every bit flip is refused. */
    for (i = 0; i < sizeof golden_signed; i++) {
        CHECK(tl_parse(&p, golden_signed, i) == TL_E_MALFORMED);
    }
    for (i = 0; i < sizeof golden_signed * 8; i++) {
        memcpy(mutated, golden_signed, sizeof golden_signed);
        mutated[i / 8] ^= (uint8_t)(1u << (i % 8));
        m = sizeof pt;
        CHECK(tl_open(pt, &m, &p, work, sizeof work, mutated, sizeof golden_signed, golden_pk,
                      golden_key, golden_iv, golden_stream, 1) != TL_OK);
    }
    for (i = 0; i < sizeof golden_lite * 8; i++) {
        memcpy(mutated, golden_lite, sizeof golden_lite);
        mutated[i / 8] ^= (uint8_t)(1u << (i % 8));
        m = sizeof pt;
        CHECK(tl_open(pt, &m, &p, work, sizeof work, mutated, sizeof golden_lite, NULL,
                      golden_key, golden_iv, golden_stream, 1) != TL_OK);
    }
    /* Non-shortest head for the Sign1 tag; trailing byte; empty input. */
    mutated[0] = 0xD8;
    mutated[1] = 0x12;
    memcpy(mutated + 2, golden_signed + 1, sizeof golden_signed - 1);
    CHECK(tl_parse(&p, mutated, sizeof golden_signed + 1) == TL_E_MALFORMED);
    memcpy(mutated, golden_signed, sizeof golden_signed);
    mutated[sizeof golden_signed] = 0;
    CHECK(tl_parse(&p, mutated, sizeof golden_signed + 1) == TL_E_MALFORMED);
    CHECK(tl_parse(&p, golden_signed, 0) == TL_E_MALFORMED);
}

/* Kid context (label 10 in the outer protected header): golden bytes, strict parse of every
 * near-miss of the header, and the signature covering it. */
static uint8_t kc_frame[512];

/* golden_signed_kctx with its protected header replaced by prot (the signature is not redone:
 * the parse must refuse before any cryptography). Returns the frame length. */
static size_t with_prot(const uint8_t *prot, size_t prot_len)
{
    const size_t old_len = sizeof golden_signed_kctx, at = 3;
    size_t old_prot = golden_signed_kctx[2] & 0x1Fu, n = 0;
    kc_frame[n++] = 0xD2;
    kc_frame[n++] = 0x84;
    if (prot_len >= 24) {
        kc_frame[n++] = 0x58;
    }
    kc_frame[n++] = (uint8_t)(prot_len >= 24 ? prot_len : 0x40u | prot_len);
    memcpy(kc_frame + n, prot, prot_len);
    n += prot_len;
    memcpy(kc_frame + n, golden_signed_kctx + at + old_prot, old_len - at - old_prot);
    return n + old_len - at - old_prot;
}

static void test_kid_context(void)
{
    uint8_t frame[1024], work[1024], pt[1024], prot[40], many[2048];
    uint8_t ctx17[17] = {0}, x[3] = {1, 2, 3}, kid6[6] = {1, 2, 3, 4, 5, 6};
    size_t n = 0, m, lens[2], pl[2] = {3, 0}, total;
    tl_parsed p;

    CHECK(tl_seal_ctx(NULL, &n, NULL, 0, golden_sk, golden_kid, sizeof golden_kid,
                      golden_kid_context, sizeof golden_kid_context, golden_key, golden_iv,
                      golden_stream, 1, GOLDEN_SEQ, golden_pt, sizeof golden_pt) == TL_OK);
    CHECK(n == sizeof golden_signed_kctx);
    n = sizeof frame;
    CHECK(tl_seal_ctx(frame, &n, work, sizeof work, golden_sk, golden_kid, sizeof golden_kid,
                      golden_kid_context, sizeof golden_kid_context, golden_key, golden_iv,
                      golden_stream, 1, GOLDEN_SEQ, golden_pt, sizeof golden_pt) == TL_OK);
    CHECK(n == sizeof golden_signed_kctx && !memcmp(frame, golden_signed_kctx, n));
    /* NULL kid context: exactly tl_seal's (base context) bytes */
    n = sizeof frame;
    CHECK(tl_seal_ctx(frame, &n, work, sizeof work, golden_sk, golden_kid, sizeof golden_kid,
                      NULL, 5, golden_key, golden_iv, golden_stream, 1, GOLDEN_SEQ, golden_pt,
                      sizeof golden_pt) == TL_OK);
    CHECK(n == sizeof golden_signed && !memcmp(frame, golden_signed, n));
    /* empty or 17 bytes: out of range */
    CHECK(tl_seal_ctx(frame, &n, work, sizeof work, golden_sk, golden_kid, sizeof golden_kid,
                      ctx17, 0, golden_key, golden_iv, golden_stream, 1, 1, golden_pt,
                      sizeof golden_pt) == TL_E_RANGE);
    CHECK(tl_seal_ctx(frame, &n, work, sizeof work, golden_sk, golden_kid, sizeof golden_kid,
                      ctx17, 17, golden_key, golden_iv, golden_stream, 1, 1, golden_pt,
                      sizeof golden_pt) == TL_E_RANGE);
    n = sizeof frame;
    CHECK(tl_seal_ctx(frame, &n, work, sizeof work, golden_sk, kid6, 6, ctx17, 16,
                      golden_key, golden_iv, golden_stream, 1, TL_MAX_SEQ, golden_pt,
                      sizeof golden_pt) == TL_OK);
    CHECK(n <= TL_SEAL_FRAME_BOUND(sizeof golden_pt) && frame[2] == 0x58 &&
          frame[3] == TL_MAX_PROT_LEN); /* the longest protected header */
    CHECK(tl_parse(&p, frame, n) == TL_OK && p.kid_context_len == 16 && p.kid_len == 6);
    total = sizeof many;
    CHECK(tl_seal_many(many, &total, lens, work, sizeof work, golden_sk, golden_kid,
                       sizeof golden_kid, golden_kid_context, sizeof golden_kid_context,
                       golden_key, golden_iv, golden_stream, 1, GOLDEN_SEQ, x, pl, 2) == TL_OK);
    CHECK(tl_parse(&p, many + lens[0], lens[1]) == TL_OK && p.seq == GOLDEN_SEQ + 1 &&
          p.kid_context_len == sizeof golden_kid_context);

    /* opens; the parse names the context; the signature covers it */
    m = sizeof pt;
    CHECK(tl_open(pt, &m, &p, work, sizeof work, golden_signed_kctx, sizeof golden_signed_kctx,
                  golden_pk, golden_key, golden_iv, golden_stream, 1) == TL_OK);
    CHECK(m == sizeof golden_pt && !memcmp(pt, golden_pt, m));
    CHECK(p.kid_context_len == sizeof golden_kid_context &&
          !memcmp(p.kid_context, golden_kid_context, p.kid_context_len));
    CHECK(tl_parse(&p, golden_signed, sizeof golden_signed) == TL_OK && p.kid_context == NULL &&
          p.kid_context_len == 0);
    memcpy(frame, golden_signed_kctx, sizeof golden_signed_kctx);
    frame[14] ^= 1; /* inside the kid context: parses, but the signature no longer verifies */
    m = sizeof pt;
    CHECK(tl_parse(&p, frame, sizeof golden_signed_kctx) == TL_OK);
    CHECK(tl_open(pt, &m, &p, work, sizeof work, frame, sizeof golden_signed_kctx, golden_pk,
                  golden_key, golden_iv, golden_stream, 1) == TL_E_BAD_SIGNATURE);

    /* Every other shape of the protected map is malformed (shape 0 is the good one). */
    {
        static const char *const shapes[] = {
            "a3012704420a0b0a489a3f01c27d5e6b88",     /* {1: -8, 4: kid, 10: ctx} */
            "a2012704420a0b0a489a3f01c27d5e6b88",     /* count 2, an entry left over */
            "a4012704420a0b0a489a3f01c27d5e6b88",     /* count 4, an entry missing */
            "a3012704420a0b04489a3f01c27d5e6b88",     /* label 4 twice */
            "a3012704420a0b0b489a3f01c27d5e6b88",     /* label 11 */
            "a301270a489a3f01c27d5e6b8804420a0b",     /* reordered: 10 before 4 */
            "a30a489a3f01c27d5e6b88012704420a0b",     /* reordered: 10 first */
            "a3012704420a0b0a40",                     /* empty kid context */
            "a3012704420a0b0a51000102030405060708090a0b0c0d0e0f10", /* 17 bytes */
            "a3012704420a0b0a01",                     /* not a bstr: uint */
            "a3012704420a0b0a6161",                   /* not a bstr: tstr */
            "a3012704420a0b0af6",                     /* not a bstr: null */
            "a3012704420a0b0a58089a3f01c27d5e6b88",   /* bstr head not in shortest form */
            "a3012704420a0b180a489a3f01c27d5e6b88",   /* label 10 not in shortest form */
            "a3012704420a0b0a5f489a3f01c27d5e6b88ff", /* indefinite-length kid context */
            "a3012704420a0b0a489a3f01c27d5e6b8800",   /* trailing byte */
            "a3012704420a0b0a489a3f01c27d5e6b",       /* truncated */
        };
        size_t i;
        for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            n = with_prot(prot, unhex(prot, shapes[i]));
            CHECK((tl_parse(&p, kc_frame, n) == TL_OK) == (i == 0));
        }
    }
    /* A lite frame never carries label 10: its map must be exactly {4: kid, 6: PIV}. */
    {
        static const uint8_t lite_kc[] = {0xD0, 0x83, 0x44, 0xA1, 0x01, 0x18, 0x18, 0xA3, 0x04,
                                          0x41, 0x01, 0x06, 0x41, 0x07, 0x0A, 0x41, 0x09, 0x50,
                                          0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        CHECK(tl_parse(&p, lite_kc, sizeof lite_kc) == TL_E_MALFORMED);
    }
}

/* The binding's C side (tl_py.c): same bytes as the core, offsets inside the frame, sizes
 * from the size functions always enough, errors as -tl_err. */
static void test_binding(void)
{
    uint8_t buf[4096], x[300];
    size_t cap = tlpy_seal_size(sizeof golden_pt, 1), lens[2], pl[2] = {0, 300};
    long long n;
    tlpy_parsed o;

    CHECK(cap <= sizeof buf);
    n = tlpy_seal(buf, cap, golden_sk, golden_kid, sizeof golden_kid, NULL, 0, golden_key,
                  golden_iv,
                  golden_stream, 1, GOLDEN_SEQ, golden_pt, sizeof golden_pt);
    CHECK(n == (long long)sizeof golden_signed && !memcmp(buf, golden_signed, (size_t)n));
    n = tlpy_seal(buf, 10, golden_sk, golden_kid, sizeof golden_kid, NULL, 0, golden_key,
                  golden_iv,
                  golden_stream, 1, GOLDEN_SEQ, golden_pt, sizeof golden_pt);
    CHECK(n == -TL_E_BUFFER);
    n = tlpy_seal(buf, cap, golden_sk, golden_kid, 7, NULL, 0, golden_key, golden_iv,
                  golden_stream, 1, GOLDEN_SEQ, golden_pt, sizeof golden_pt);
    CHECK(n == -TL_E_RANGE);
    CHECK(tlpy_seal_size(TL_MAX_FRAME + 1u, 1) == 0);
    n = tlpy_seal_lite(buf, cap, golden_kid, sizeof golden_kid, golden_key, golden_iv,
                       golden_stream, 1, GOLDEN_LITE_SEQ, golden_pt, sizeof golden_pt);
    CHECK(n == (long long)sizeof golden_lite && !memcmp(buf, golden_lite, (size_t)n));

    memset(x, 'x', sizeof x);
    cap = tlpy_seal_many_size(300, 300, 2, 1);
    CHECK(cap <= sizeof buf);
    n = tlpy_seal_many(buf, cap, lens, golden_sk, golden_kid, sizeof golden_kid, NULL, 0,
                       golden_key, golden_iv, golden_stream, 1, 255, x, pl, 2);
    CHECK(n >= 0 && lens[0] == sizeof golden_many0 && lens[1] == sizeof golden_many1);
    CHECK(n >= 0 && (size_t)n + lens[0] + lens[1] <= cap &&
          !memcmp(buf + n, golden_many0, lens[0]) &&
          !memcmp(buf + n + lens[0], golden_many1, lens[1]));
    CHECK(tlpy_seal_many(buf, cap, lens, golden_sk, golden_kid, sizeof golden_kid, NULL, 0,
                         golden_key, golden_iv, golden_stream, 1, TL_MAX_SEQ, x, pl,
                         2) == -TL_E_RANGE);
    CHECK(tlpy_seal_many(buf, 100, lens, golden_sk, golden_kid, sizeof golden_kid, NULL, 0,
                         golden_key, golden_iv, golden_stream, 1, 255, x, pl, 2) == -TL_E_BUFFER);

    CHECK(tlpy_parse(&o, golden_signed, sizeof golden_signed) == TL_OK);
    CHECK(o.kind == TL_KIND_SIGNED && o.seq == GOLDEN_SEQ && o.alg == -8);
    CHECK(o.kid_len == sizeof golden_kid &&
          !memcmp(golden_signed + o.kid_at, golden_kid, o.kid_len));
    CHECK(o.sig_len == 64 && o.sig_at + 64 == sizeof golden_signed);
    CHECK(o.ct_at + o.ct_len <= o.enc0_at + o.enc0_len && o.prot_at + o.prot_len <= o.enc0_at);
    CHECK(tlpy_verify_size(o.prot_len, o.kid_len, o.piv_len, o.enc0_len, 1) <= sizeof buf);
    CHECK(tlpy_verify(buf, sizeof buf, golden_signed + o.prot_at, o.prot_len,
                      golden_signed + o.kid_at, o.kid_len, golden_signed + o.piv_at, o.piv_len,
                      golden_signed + o.enc0_at, o.enc0_len, golden_signed + o.sig_at,
                      o.sig_len, golden_pk, golden_stream, 1) == TL_OK);
    CHECK(tlpy_verify(buf, sizeof buf, golden_signed + o.prot_at, o.prot_len,
                      golden_signed + o.kid_at, o.kid_len, golden_signed + o.piv_at, o.piv_len,
                      golden_signed + o.enc0_at, o.enc0_len, golden_signed + o.sig_at,
                      o.sig_len, golden_pk, (const uint8_t *)"a", 1) == TL_E_BAD_SIGNATURE);
    cap = tlpy_decrypt_size(o.ct_len, o.kid_len, o.piv_len, 1);
    CHECK(cap <= sizeof buf);
    n = tlpy_decrypt(buf, cap, golden_signed + o.kid_at, o.kid_len, golden_signed + o.piv_at,
                     o.piv_len, golden_signed + o.ct_at, o.ct_len, golden_key, golden_iv,
                     golden_stream, 1);
    CHECK(n == (long long)sizeof golden_pt && !memcmp(buf, golden_pt, sizeof golden_pt));
    n = tlpy_decrypt(buf, cap, golden_signed + o.kid_at, o.kid_len, golden_signed + o.piv_at,
                     o.piv_len, golden_signed + o.ct_at, o.ct_len, golden_pk, golden_iv,
                     golden_stream, 1);
    CHECK(n == -TL_E_DECRYPT);

    cap = tlpy_open_size(sizeof golden_signed, 1);
    CHECK(cap <= sizeof buf);
    memset(&o, 0, sizeof o);
    n = tlpy_open(buf, cap, &o, golden_signed, sizeof golden_signed, golden_pk, golden_key,
                  golden_iv, golden_stream, 1);
    CHECK(n == (long long)sizeof golden_pt && !memcmp(buf, golden_pt, sizeof golden_pt));
    CHECK(o.kind == TL_KIND_SIGNED && o.seq == GOLDEN_SEQ);
    n = tlpy_open(buf, cap, &o, golden_lite, sizeof golden_lite, NULL, golden_key, golden_iv,
                  golden_stream, 1);
    CHECK(n == (long long)sizeof golden_pt && o.kind == TL_KIND_LITE && o.sig_len == 0);
    CHECK(tlpy_open(buf, cap, &o, golden_signed, sizeof golden_signed, NULL, golden_key,
                    golden_iv, golden_stream, 1) == -TL_E_BAD_SIGNATURE);
    CHECK(tlpy_open(buf, 16, &o, golden_signed, sizeof golden_signed, golden_pk, golden_key,
                    golden_iv, golden_stream, 1) == -TL_E_BUFFER);
    CHECK(tlpy_open(buf, 16, &o, golden_signed, 5, golden_pk, golden_key, golden_iv,
                    golden_stream, 1) == -TL_E_MALFORMED);
    CHECK(tlpy_open(NULL, 0, &o, golden_signed, sizeof golden_signed, golden_pk, golden_key,
                    golden_iv, golden_stream, 1) == -TL_E_BUFFER);
    CHECK(tlpy_open_size(TL_MAX_FRAME + 1u, 1) == 0);
}

/* The payload validator: one case per rule, in document order, and the binding wrapper. */
static void test_payload_check(void)
{
    static const struct {
        const char *hex;
        int reason;
    } cases[] = {
        {"00", TL_PAYLOAD_OK},
        {"1b7fffffffffffffff", TL_PAYLOAD_OK},              /* 2^63-1 */
        {"3b7fffffffffffffff", TL_PAYLOAD_OK},              /* -2^63 */
        {"1b8000000000000000", TL_PAYLOAD_INT_RANGE},       /* 2^63 */
        {"3b8000000000000000", TL_PAYLOAD_INT_RANGE},       /* -2^63-1 */
        {"1800", TL_PAYLOAD_OK},                            /* non-shortest heads are fine */
        {"5a0000000161", TL_PAYLOAD_OK},
        {"6a68c3a9", TL_PAYLOAD_TRUNCATED},
        {"62c3a9", TL_PAYLOAD_OK},                          /* "é" */
        {"62c0af", TL_PAYLOAD_UTF8},                        /* overlong */
        {"63eda080", TL_PAYLOAD_UTF8},                      /* surrogate */
        {"64f4900000", TL_PAYLOAD_UTF8},                    /* above U+10FFFF */
        {"80", TL_PAYLOAD_OK},
        {"a0", TL_PAYLOAD_OK},
        {"a200010102", TL_PAYLOAD_OK},
        {"a2000118000002", TL_PAYLOAD_DUPLICATE_KEY},       /* 0 and 0x1800: one key */
        {"a26161006161", TL_PAYLOAD_TRUNCATED},
        {"a261610078016101", TL_PAYLOAD_DUPLICATE_KEY},     /* "a" twice, one long head */
        {"a2616101616101", TL_PAYLOAD_DUPLICATE_KEY},       /* "a" twice */
        {"a200002000", TL_PAYLOAD_OK},                      /* 0 and -1: two keys */
        {"a1f400", TL_PAYLOAD_KEY_TYPE},
        {"a14100", TL_PAYLOAD_KEY_TYPE},                    /* bstr key */
        {"a1c00000", TL_PAYLOAD_KEY_TYPE},                  /* tagged key */
        {"a1fb7ff800000000000000", TL_PAYLOAD_KEY_TYPE},
        {"c11a00000000", TL_PAYLOAD_TAG},
        {"c249010000000000000000", TL_PAYLOAD_TAG},         /* bignum */
        {"d81c80", TL_PAYLOAD_TAG},                         /* shared reference */
        {"f4", TL_PAYLOAD_OK}, {"f5", TL_PAYLOAD_OK}, {"f6", TL_PAYLOAD_OK},
        {"f7", TL_PAYLOAD_SIMPLE},                          /* undefined */
        {"f0", TL_PAYLOAD_SIMPLE},
        {"f820", TL_PAYLOAD_SIMPLE},
        {"f93c00", TL_PAYLOAD_OK},
        {"f97c00", TL_PAYLOAD_FLOAT}, {"f9fc00", TL_PAYLOAD_FLOAT}, {"f97e00", TL_PAYLOAD_FLOAT},
        {"fa7f800000", TL_PAYLOAD_FLOAT}, {"fa47c35000", TL_PAYLOAD_OK},
        {"fb7ff0000000000000", TL_PAYLOAD_FLOAT}, {"fbfff8000000000000", TL_PAYLOAD_FLOAT},
        {"fb3ff0000000000000", TL_PAYLOAD_OK},
        {"9f00ff", TL_PAYLOAD_INDEFINITE},
        {"5f4100ff", TL_PAYLOAD_INDEFINITE},
        {"ff", TL_PAYLOAD_INDEFINITE},
        {"1c", TL_PAYLOAD_RESERVED},
        {"", TL_PAYLOAD_TRUNCATED},
        {"19", TL_PAYLOAD_TRUNCATED},
        {"8200", TL_PAYLOAD_TRUNCATED},
        {"9bffffffffffffffff00", TL_PAYLOAD_TRUNCATED},    /* huge count */
        {"0000", TL_PAYLOAD_TRAILING},
        {"8181818181818180", TL_PAYLOAD_OK},                /* 8 deep */
        {"818181818181818180", TL_PAYLOAD_DEPTH},           /* 9 deep */
        {"a1008181818181818180", TL_PAYLOAD_DEPTH},
        {"82c000a10000", TL_PAYLOAD_TAG},                   /* first violation wins */
        {"a2000000c000", TL_PAYLOAD_TAG},                   /* ... before the duplicate */
    };
    uint8_t buf[64], big[TL_PAYLOAD_MAX + 1];
    uint32_t work[TL_PAYLOAD_MAX / 2 + 16];
    size_t i, n;
    int reason;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        n = unhex(buf, cases[i].hex);
        reason = -1;
        CHECK(tl_cbor_check(&reason, work, sizeof work / sizeof work[0], buf, n) ==
              (cases[i].reason ? TL_E_PAYLOAD : TL_OK));
        CHECK(reason == cases[i].reason);
        CHECK(tlpy_check_payload(NULL, 0, buf, n) == cases[i].reason);
        if (reason != cases[i].reason) {
            fprintf(stderr, "  case %s: reason %d, want %d\n", cases[i].hex, reason,
                    cases[i].reason);
        }
    }
    CHECK(tl_cbor_check(&reason, work, 1, buf, 40) == TL_E_BUFFER);
    CHECK(strcmp(tl_cbor_check_reason(TL_PAYLOAD_DUPLICATE_KEY), "duplicate map key") == 0);
    CHECK(strcmp(tl_cbor_check_reason(99), "unknown reason") == 0);

    /* A map of 4095 distinct int keys nearly fills the maximum: its keys are sorted, not
     * compared pairwise. */
    n = 0;
    big[n++] = 0xB9; /* map, 2-byte count: 4095 entries of 4 bytes, 19 hh ll f6 */
    big[n++] = 0x0F;
    big[n++] = 0xFF;
    for (i = 0; i < 4095; i++) {
        big[n++] = 0x19;
        big[n++] = (uint8_t)(i >> 8);
        big[n++] = (uint8_t)i;
        big[n++] = 0xF6;
    }
    CHECK(n <= TL_PAYLOAD_MAX);
    CHECK(tl_cbor_check(&reason, work, sizeof work / sizeof work[0], big, n) == TL_E_BUFFER ||
          reason == TL_PAYLOAD_OK);
    CHECK(tl_cbor_check_work(n) <= sizeof work / sizeof work[0]);
    CHECK(tl_cbor_check(&reason, work, tl_cbor_check_work(n), big, n) == TL_OK);
    CHECK(tlpy_check_payload(work, tl_cbor_check_work(n), big, n) == 0);
    CHECK(tlpy_check_payload(NULL, 0, big, n) == -TL_E_BUFFER); /* too big for the stack */
    big[n - 4 + 1] = 0; /* the last key now equals key 0 */
    big[n - 4 + 2] = 0;
    CHECK(tl_cbor_check(&reason, work, tl_cbor_check_work(n), big, n) == TL_E_PAYLOAD &&
          reason == TL_PAYLOAD_DUPLICATE_KEY);
    memset(big, 0, sizeof big);
    CHECK(tl_cbor_check(&reason, work, sizeof work / sizeof work[0], big,
                        TL_PAYLOAD_MAX + 1) == TL_E_PAYLOAD && reason == TL_PAYLOAD_TOO_LONG);
}

int main(void)
{
    if (tl_crypto_sodium_init() != 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 2;
    }
    test_hkdf_rfc5869();
    test_oscore_rfc8613();
    test_piv();
    test_cobs_crc();
    test_window();
    test_frames();
    test_binding();
    test_kid_context();
    test_payload_check();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}

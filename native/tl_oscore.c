/* OSCORE key schedule, nonce and external_aad; see tl_oscore.h. */
#include <string.h>

#include "tl_cbor.h"
#include "tl_crypto.h"
#include "tl_error.h"
#include "tl_oscore.h"

int tl_hkdf_sha256(uint8_t *okm, size_t okm_len, const uint8_t *salt, size_t salt_len,
                   const uint8_t *ikm, size_t ikm_len, const uint8_t *info, size_t info_len)
{
    static const uint8_t zero_salt[32] = {0};
    tl_hmac_sha256_state st;
    uint8_t prk[32], block[32];
    size_t done = 0, take;
    uint8_t counter = 1;
    int bad = 0;

    if (okm_len == 0 || okm_len > 255u * 32u) {
        return TL_E_RANGE;
    }
    if (salt_len == 0) {
        salt = zero_salt;
        salt_len = sizeof zero_salt;
    }
    bad |= tl_crypto_hmac_init(&st, salt, salt_len);
    bad |= tl_crypto_hmac_update(&st, ikm, ikm_len);
    bad |= tl_crypto_hmac_final(&st, prk);
    while (!bad && done < okm_len) {
        bad |= tl_crypto_hmac_init(&st, prk, sizeof prk);
        if (counter > 1) {
            bad |= tl_crypto_hmac_update(&st, block, sizeof block);
        }
        bad |= tl_crypto_hmac_update(&st, info, info_len);
        bad |= tl_crypto_hmac_update(&st, &counter, 1);
        bad |= tl_crypto_hmac_final(&st, block);
        take = okm_len - done < sizeof block ? okm_len - done : sizeof block;
        memcpy(okm + done, block, take);
        done += take;
        counter++;
    }
    tl_crypto_wipe(&st, sizeof st);
    tl_crypto_wipe(prk, sizeof prk);
    tl_crypto_wipe(block, sizeof block);
    if (bad) {
        tl_crypto_wipe(okm, okm_len);
        return TL_E_CRYPTO;
    }
    return TL_OK;
}

int tl_oscore_info(uint8_t *out, size_t *out_len, const uint8_t *id, size_t id_len,
                   int has_id_context, const uint8_t *id_context, size_t id_context_len,
                   int alg_aead, const char *type, size_t length)
{
    size_t type_len = strlen(type);
    uint64_t alg_arg = alg_aead >= 0 ? (uint64_t)alg_aead : (uint64_t)(-1 - (int64_t)alg_aead);
    unsigned alg_major = alg_aead >= 0 ? TL_CBOR_UINT : TL_CBOR_NINT;
    size_t need = 1 + tl_cbor_head_len(id_len) + id_len +
                  (has_id_context ? tl_cbor_head_len(id_context_len) + id_context_len : 1) +
                  tl_cbor_head_len(alg_arg) + tl_cbor_head_len(type_len) + type_len +
                  tl_cbor_head_len(length);
    size_t n = 0;

    if (out == NULL) {
        *out_len = need;
        return TL_OK;
    }
    if (*out_len < need) {
        return TL_E_BUFFER;
    }
    out[n++] = 0x85;
    n += tl_cbor_put_bstr(out + n, id, id_len);
    if (has_id_context) {
        n += tl_cbor_put_bstr(out + n, id_context, id_context_len);
    } else {
        out[n++] = 0xF6;
    }
    n += tl_cbor_put_head(out + n, alg_major, alg_arg);
    n += tl_cbor_put_head(out + n, TL_CBOR_TSTR, type_len);
    memcpy(out + n, type, type_len);
    n += type_len;
    n += tl_cbor_put_head(out + n, TL_CBOR_UINT, length);
    *out_len = n;
    return TL_OK;
}

/* Both info arrays are short unless id_context is long; hash it in pieces instead of bounding
 * it: info = prefix || bstr(id_context) || suffix, fed to HKDF-Expand as one string. The
 * simplest correct route with no heap is a stack buffer sized for the common case and a
 * TL_E_RANGE beyond it; OSCORE ID Contexts are short (this build allows 64 bytes). */
#define TL_MAX_ID_CONTEXT 64
#define TL_INFO_MAX (1 + 9 + TL_MAX_KID_LEN + 9 + TL_MAX_ID_CONTEXT + 9 + 1 + 3 + 9)

int tl_oscore_derive(uint8_t key[32], uint8_t common_iv[12], const uint8_t *secret,
                     size_t secret_len, const uint8_t *salt, size_t salt_len, const uint8_t *id,
                     size_t id_len, int has_id_context, const uint8_t *id_context,
                     size_t id_context_len)
{
    uint8_t info[TL_INFO_MAX], k[32], iv[12];
    size_t info_len;
    int rc;

    if (id_len > TL_MAX_KID_LEN || (has_id_context && id_context_len > TL_MAX_ID_CONTEXT)) {
        return TL_E_RANGE;
    }
    info_len = sizeof info;
    rc = tl_oscore_info(info, &info_len, id, id_len, has_id_context, id_context, id_context_len,
                        TL_ALG_CHACHA20_POLY1305, "Key", 32);
    if (rc == TL_OK) {
        rc = tl_hkdf_sha256(k, 32, salt, salt_len, secret, secret_len, info, info_len);
    }
    if (rc == TL_OK) {
        info_len = sizeof info;
        rc = tl_oscore_info(info, &info_len, NULL, 0, has_id_context, id_context,
                            id_context_len, TL_ALG_CHACHA20_POLY1305, "IV", 12);
    }
    if (rc == TL_OK) {
        rc = tl_hkdf_sha256(iv, 12, salt, salt_len, secret, secret_len, info, info_len);
    }
    if (rc == TL_OK) {
        memcpy(key, k, 32);
        memcpy(common_iv, iv, 12);
    }
    tl_crypto_wipe(k, sizeof k);
    tl_crypto_wipe(iv, sizeof iv);
    return rc;
}

size_t tl_piv_encode(uint8_t piv[5], uint64_t seq)
{
    size_t n = 1, i;
    if (seq > TL_MAX_SEQ) {
        return 0;
    }
    while (n < 5 && (seq >> (8 * n)) != 0) {
        n++;
    }
    for (i = 0; i < n; i++) {
        piv[n - 1 - i] = (uint8_t)(seq >> (8 * i));
    }
    return n;
}

int tl_oscore_nonce(uint8_t nonce[12], const uint8_t common_iv[12], const uint8_t *id,
                    size_t id_len, const uint8_t *piv, size_t piv_len)
{
    uint8_t block[12];
    size_t i;
    if (id_len > TL_MAX_KID_LEN || piv_len > TL_MAX_PIV_LEN) {
        return TL_E_RANGE;
    }
    memset(block, 0, sizeof block);
    block[0] = (uint8_t)id_len;
    if (id_len) {
        memcpy(block + 1 + (TL_MAX_KID_LEN - id_len), id, id_len);
    }
    if (piv_len) {
        memcpy(block + 12 - piv_len, piv, piv_len);
    }
    for (i = 0; i < 12; i++) {
        nonce[i] = (uint8_t)(block[i] ^ common_iv[i]);
    }
    return TL_OK;
}

int tl_oscore_external_aad(uint8_t *out, size_t *out_len, const uint8_t *kid, size_t kid_len,
                           const uint8_t *piv, size_t piv_len, const uint8_t *stream,
                           size_t stream_len)
{
    static const uint8_t prefix[6] = {0x85, 0x01, 0x82, 0x18, 0x18, 0x27};
    size_t need = sizeof prefix + tl_cbor_head_len(kid_len) + kid_len +
                  tl_cbor_head_len(piv_len) + piv_len + tl_cbor_head_len(stream_len) + stream_len;
    size_t n;
    if (out == NULL) {
        *out_len = need;
        return TL_OK;
    }
    if (*out_len < need) {
        return TL_E_BUFFER;
    }
    memcpy(out, prefix, sizeof prefix);
    n = sizeof prefix;
    n += tl_cbor_put_bstr(out + n, kid, kid_len);
    n += tl_cbor_put_bstr(out + n, piv, piv_len);
    n += tl_cbor_put_bstr(out + n, stream, stream_len);
    *out_len = n;
    return TL_OK;
}

/* twinlink C core: the OSCORE-derived symmetric layer (RFC 8613) — HKDF-SHA256 on
 * HMAC-SHA256, the key schedule, the AEAD nonce and external_aad. Mirrors twinlink/oscore.py
 * byte for byte. */
#ifndef TL_OSCORE_H
#define TL_OSCORE_H

#include <stddef.h>
#include <stdint.h>

#define TL_KEY_LEN 32
#define TL_IV_LEN 12
#define TL_MAX_KID_LEN 6 /* OSCORE limit for a 12-byte nonce */
#define TL_MAX_PIV_LEN 5
#define TL_MAX_SEQ ((((uint64_t)1) << 40) - 1)
#define TL_ALG_CHACHA20_POLY1305 24

/* RFC 5869 HKDF-SHA256. An empty salt means 32 zero bytes. okm_len in 1..8160.
 * Returns TL_OK or TL_E_RANGE / TL_E_CRYPTO; PRK and HMAC state are wiped. */
int tl_hkdf_sha256(uint8_t *okm, size_t okm_len, const uint8_t *salt, size_t salt_len,
                   const uint8_t *ikm, size_t ikm_len, const uint8_t *info, size_t info_len);

/* The RFC 8613 §3.2.1 info array [id, id_context, alg_aead, type, L]. id_context is CBOR null
 * when has_id_context is 0. type is "Key" or "IV". out NULL: *out_len = exact size needed.
 * Otherwise *out_len is the capacity on entry and the length on success. */
int tl_oscore_info(uint8_t *out, size_t *out_len, const uint8_t *id, size_t id_len,
                   int has_id_context, const uint8_t *id_context, size_t id_context_len,
                   int alg_aead, const char *type, size_t length);

/* Sender Key of the endpoint whose Sender ID is id, and the Common IV, for ChaCha20-Poly1305. */
int tl_oscore_derive(uint8_t key[32], uint8_t common_iv[12], const uint8_t *secret,
                     size_t secret_len, const uint8_t *salt, size_t salt_len, const uint8_t *id,
                     size_t id_len, int has_id_context, const uint8_t *id_context,
                     size_t id_context_len);

/* Partial IV of seq: big-endian, no leading zeros, 0 -> 00. Returns its length (1..5), or 0
 * if seq > TL_MAX_SEQ. */
size_t tl_piv_encode(uint8_t piv[5], uint64_t seq);

/* nonce = Common IV XOR (len(id) || zero-padded id || zero-padded PIV). TL_E_RANGE if the id
 * is longer than 6 bytes or the PIV longer than 5. */
int tl_oscore_nonce(uint8_t nonce[12], const uint8_t common_iv[12], const uint8_t *id,
                    size_t id_len, const uint8_t *piv, size_t piv_len);

/* external_aad = [1, [24, -8], kid, PIV, stream] in CBOR (the bstr content, without the outer
 * bstr head). out NULL: *out_len = exact size needed. */
int tl_oscore_external_aad(uint8_t *out, size_t *out_len, const uint8_t *kid, size_t kid_len,
                           const uint8_t *piv, size_t piv_len, const uint8_t *stream,
                           size_t stream_len);

#endif

/* Crypto adapter over libsodium, linked directly (-lsodium). The caller runs sodium_init()
 * once at start-up (tl_crypto_sodium_init() does it). */
#include <sodium.h>

#include "tl_crypto.h"

/* C99 compile-time check: the opaque state must hold libsodium's. */
typedef char tl_hmac_state_fits[(sizeof(tl_hmac_sha256_state) >=
                                  sizeof(crypto_auth_hmacsha256_state)) ? 1 : -1];
typedef char tl_sha256_state_fits[(sizeof(tl_sha256_state) >=
                                   sizeof(crypto_hash_sha256_state)) ? 1 : -1];

int tl_crypto_sodium_init(void);

int tl_crypto_sodium_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

int tl_crypto_sign(uint8_t sig[64], const uint8_t *m, size_t mlen, const uint8_t sk[64])
{
    return crypto_sign_detached(sig, NULL, m, mlen, sk);
}

int tl_crypto_verify(const uint8_t sig[64], const uint8_t *m, size_t mlen, const uint8_t pk[32])
{
    return crypto_sign_verify_detached(sig, m, mlen, pk);
}

int tl_crypto_aead_encrypt(uint8_t *c, uint8_t tag[16], const uint8_t *m, size_t mlen,
                           const uint8_t *ad, size_t adlen, const uint8_t nonce[12],
                           const uint8_t key[32])
{
    return crypto_aead_chacha20poly1305_ietf_encrypt_detached(c, tag, NULL, m, mlen, ad, adlen,
                                                              NULL, nonce, key);
}

int tl_crypto_aead_decrypt(uint8_t *m, const uint8_t *c, size_t clen, const uint8_t tag[16],
                           const uint8_t *ad, size_t adlen, const uint8_t nonce[12],
                           const uint8_t key[32])
{
    return crypto_aead_chacha20poly1305_ietf_decrypt_detached(m, NULL, c, clen, tag, ad, adlen,
                                                              nonce, key);
}

int tl_crypto_hmac_init(tl_hmac_sha256_state *st, const uint8_t *key, size_t keylen)
{
    return crypto_auth_hmacsha256_init((crypto_auth_hmacsha256_state *)(void *)st, key, keylen);
}

int tl_crypto_hmac_update(tl_hmac_sha256_state *st, const uint8_t *m, size_t mlen)
{
    return crypto_auth_hmacsha256_update((crypto_auth_hmacsha256_state *)(void *)st, m, mlen);
}

int tl_crypto_hmac_final(tl_hmac_sha256_state *st, uint8_t mac[32])
{
    return crypto_auth_hmacsha256_final((crypto_auth_hmacsha256_state *)(void *)st, mac);
}

int tl_crypto_sha256_init(tl_sha256_state *st)
{
    return crypto_hash_sha256_init((crypto_hash_sha256_state *)(void *)st);
}

int tl_crypto_sha256_update(tl_sha256_state *st, const uint8_t *m, size_t mlen)
{
    return crypto_hash_sha256_update((crypto_hash_sha256_state *)(void *)st, m, mlen);
}

int tl_crypto_sha256_final(tl_sha256_state *st, uint8_t out[32])
{
    return crypto_hash_sha256_final((crypto_hash_sha256_state *)(void *)st, out);
}

int tl_crypto_x25519(uint8_t shared[32], const uint8_t sk[32], const uint8_t pk[32])
{
    return crypto_scalarmult_curve25519(shared, sk, pk);
}

int tl_crypto_ed25519_pk_to_x25519(uint8_t x_pk[32], const uint8_t ed_pk[32])
{
    return crypto_sign_ed25519_pk_to_curve25519(x_pk, ed_pk);
}

int tl_crypto_ed25519_sk_to_x25519(uint8_t x_sk[32], const uint8_t ed_sk[64])
{
    return crypto_sign_ed25519_sk_to_curve25519(x_sk, ed_sk);
}

void tl_crypto_wipe(void *p, size_t n)
{
    sodium_memzero(p, n);
}

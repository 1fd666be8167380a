/* twinlink C core: the crypto adapter, and the only crypto the core ever calls.
 *
 * One implementation is linked per build:
 *   tl_crypto_sodium.c  links libsodium directly (firmware and host C builds, -lsodium);
 *   tl_crypto_pynacl.c  calls the libsodium inside PyNaCl through a function table that the
 *                       CPython binding fills at import (no sodium.h, no -lsodium needed).
 * A board port implements these functions over its own library. Every function returns 0 on
 * success and non-zero on failure, like libsodium.
 */
#ifndef TL_CRYPTO_H
#define TL_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

/* Opaque HMAC-SHA256 state, big enough (and aligned enough) for libsodium's 208-byte
 * crypto_auth_hmacsha256_state; each adapter checks that it fits. */
typedef struct {
    uint64_t opaque[32];
} tl_hmac_sha256_state;

/* Opaque SHA-256 state, big enough for libsodium's 104-byte crypto_hash_sha256_state; streaming,
 * so a firmware image can be hashed chunk by chunk as it arrives. */
typedef struct {
    uint64_t opaque[16];
} tl_sha256_state;

/* Ed25519 detached signature; sk is libsodium's 64-byte form (seed || public key). */
int tl_crypto_sign(uint8_t sig[64], const uint8_t *m, size_t mlen, const uint8_t sk[64]);
/* 0 if sig is a valid Ed25519 signature of m under pk. */
int tl_crypto_verify(const uint8_t sig[64], const uint8_t *m, size_t mlen, const uint8_t pk[32]);

/* ChaCha20-Poly1305-IETF, detached tag. c may equal m (in place). */
int tl_crypto_aead_encrypt(uint8_t *c, uint8_t tag[16], const uint8_t *m, size_t mlen,
                           const uint8_t *ad, size_t adlen, const uint8_t nonce[12],
                           const uint8_t key[32]);
/* Writes m only if the tag verifies (libsodium zeroes m on failure, never partial plaintext). */
int tl_crypto_aead_decrypt(uint8_t *m, const uint8_t *c, size_t clen, const uint8_t tag[16],
                           const uint8_t *ad, size_t adlen, const uint8_t nonce[12],
                           const uint8_t key[32]);

int tl_crypto_hmac_init(tl_hmac_sha256_state *st, const uint8_t *key, size_t keylen);
int tl_crypto_hmac_update(tl_hmac_sha256_state *st, const uint8_t *m, size_t mlen);
int tl_crypto_hmac_final(tl_hmac_sha256_state *st, uint8_t mac[32]);

int tl_crypto_sha256_init(tl_sha256_state *st);
int tl_crypto_sha256_update(tl_sha256_state *st, const uint8_t *m, size_t mlen);
int tl_crypto_sha256_final(tl_sha256_state *st, uint8_t out[32]);

/* X25519; fails on an all-zero result (low-order point). */
int tl_crypto_x25519(uint8_t shared[32], const uint8_t sk[32], const uint8_t pk[32]);
int tl_crypto_ed25519_pk_to_x25519(uint8_t x_pk[32], const uint8_t ed_pk[32]);
int tl_crypto_ed25519_sk_to_x25519(uint8_t x_sk[32], const uint8_t ed_sk[64]);

/* Wipe a buffer that held a secret; never optimised away. */
void tl_crypto_wipe(void *p, size_t n);

#endif

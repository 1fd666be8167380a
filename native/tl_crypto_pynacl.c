/* Crypto adapter over PyNaCl's libsodium, through a function table (see tl_crypto_pynacl.h).
 * The prototypes below are libsodium 1.0.x's public API, declared here so that the build needs
 * no sodium.h. Until tl_crypto_pynacl_bind() succeeds every primitive fails closed. */
#include <stddef.h>
#include <string.h>

#include "tl_crypto.h"
#include "tl_crypto_pynacl.h"
#include "tl_error.h"

typedef unsigned long long ull;

typedef int (*fn_init)(void);
typedef int (*fn_sign)(unsigned char *, ull *, const unsigned char *, ull, const unsigned char *);
typedef int (*fn_verify)(const unsigned char *, const unsigned char *, ull, const unsigned char *);
typedef int (*fn_aead_enc)(unsigned char *, unsigned char *, ull *, const unsigned char *, ull,
                           const unsigned char *, ull, const unsigned char *,
                           const unsigned char *, const unsigned char *);
typedef int (*fn_aead_dec)(unsigned char *, unsigned char *, const unsigned char *, ull,
                           const unsigned char *, const unsigned char *, ull,
                           const unsigned char *, const unsigned char *);
typedef int (*fn_hmac_init)(void *, const unsigned char *, size_t);
typedef int (*fn_hmac_update)(void *, const unsigned char *, ull);
typedef int (*fn_hmac_final)(void *, unsigned char *);
typedef size_t (*fn_size)(void);
typedef int (*fn_3)(unsigned char *, const unsigned char *, const unsigned char *);
typedef int (*fn_2)(unsigned char *, const unsigned char *);
typedef void (*fn_memzero)(void *, size_t);
typedef int (*fn_sha_init)(void *);
typedef int (*fn_sha_update)(void *, const unsigned char *, ull);
typedef int (*fn_sha_final)(void *, unsigned char *);

const char *const tl_pynacl_names[TL_PYNACL_NFUNCS] = {
    "sodium_init",
    "crypto_sign_detached",
    "crypto_sign_verify_detached",
    "crypto_aead_chacha20poly1305_ietf_encrypt_detached",
    "crypto_aead_chacha20poly1305_ietf_decrypt_detached",
    "crypto_auth_hmacsha256_init",
    "crypto_auth_hmacsha256_update",
    "crypto_auth_hmacsha256_final",
    "crypto_auth_hmacsha256_statebytes",
    "crypto_scalarmult_curve25519",
    "crypto_sign_ed25519_pk_to_curve25519",
    "crypto_sign_ed25519_sk_to_curve25519",
    "sodium_memzero",
    "crypto_hash_sha256_init",
    "crypto_hash_sha256_update",
    "crypto_hash_sha256_final",
    "crypto_hash_sha256_statebytes",
};

static struct {
    int bound;
    fn_sign sign;
    fn_verify verify;
    fn_aead_enc aead_enc;
    fn_aead_dec aead_dec;
    fn_hmac_init hmac_init;
    fn_hmac_update hmac_update;
    fn_hmac_final hmac_final;
    fn_3 x25519;
    fn_2 pk_to_x;
    fn_2 sk_to_x;
    fn_memzero memzero;
    fn_sha_init sha_init;
    fn_sha_update sha_update;
    fn_sha_final sha_final;
} S;

int tl_crypto_pynacl_bind(const uintptr_t addrs[TL_PYNACL_NFUNCS])
{
    size_t i;
    for (i = 0; i < TL_PYNACL_NFUNCS; i++) {
        if (addrs[i] == 0) {
            return TL_E_CRYPTO;
        }
    }
    if (((fn_init)addrs[0])() < 0) {
        return TL_E_CRYPTO;
    }
    if (((fn_size)addrs[8])() > sizeof(tl_hmac_sha256_state) ||
        ((fn_size)addrs[16])() > sizeof(tl_sha256_state)) {
        return TL_E_CRYPTO;
    }
    S.sign = (fn_sign)addrs[1];
    S.verify = (fn_verify)addrs[2];
    S.aead_enc = (fn_aead_enc)addrs[3];
    S.aead_dec = (fn_aead_dec)addrs[4];
    S.hmac_init = (fn_hmac_init)addrs[5];
    S.hmac_update = (fn_hmac_update)addrs[6];
    S.hmac_final = (fn_hmac_final)addrs[7];
    S.x25519 = (fn_3)addrs[9];
    S.pk_to_x = (fn_2)addrs[10];
    S.sk_to_x = (fn_2)addrs[11];
    S.memzero = (fn_memzero)addrs[12];
    S.sha_init = (fn_sha_init)addrs[13];
    S.sha_update = (fn_sha_update)addrs[14];
    S.sha_final = (fn_sha_final)addrs[15];
    S.bound = 1;
    return TL_OK;
}

int tl_crypto_sign(uint8_t sig[64], const uint8_t *m, size_t mlen, const uint8_t sk[64])
{
    return S.bound ? S.sign(sig, NULL, m, (ull)mlen, sk) : -1;
}

int tl_crypto_verify(const uint8_t sig[64], const uint8_t *m, size_t mlen, const uint8_t pk[32])
{
    return S.bound ? S.verify(sig, m, (ull)mlen, pk) : -1;
}

int tl_crypto_aead_encrypt(uint8_t *c, uint8_t tag[16], const uint8_t *m, size_t mlen,
                           const uint8_t *ad, size_t adlen, const uint8_t nonce[12],
                           const uint8_t key[32])
{
    return S.bound ? S.aead_enc(c, tag, NULL, m, (ull)mlen, ad, (ull)adlen, NULL, nonce, key)
                   : -1;
}

int tl_crypto_aead_decrypt(uint8_t *m, const uint8_t *c, size_t clen, const uint8_t tag[16],
                           const uint8_t *ad, size_t adlen, const uint8_t nonce[12],
                           const uint8_t key[32])
{
    return S.bound ? S.aead_dec(m, NULL, c, (ull)clen, tag, ad, (ull)adlen, nonce, key) : -1;
}

int tl_crypto_hmac_init(tl_hmac_sha256_state *st, const uint8_t *key, size_t keylen)
{
    return S.bound ? S.hmac_init(st, key, keylen) : -1;
}

int tl_crypto_hmac_update(tl_hmac_sha256_state *st, const uint8_t *m, size_t mlen)
{
    return S.bound ? S.hmac_update(st, m, (ull)mlen) : -1;
}

int tl_crypto_hmac_final(tl_hmac_sha256_state *st, uint8_t mac[32])
{
    return S.bound ? S.hmac_final(st, mac) : -1;
}

int tl_crypto_sha256_init(tl_sha256_state *st)
{
    return S.bound ? S.sha_init(st) : -1;
}

int tl_crypto_sha256_update(tl_sha256_state *st, const uint8_t *m, size_t mlen)
{
    return S.bound ? S.sha_update(st, m, (ull)mlen) : -1;
}

int tl_crypto_sha256_final(tl_sha256_state *st, uint8_t out[32])
{
    return S.bound ? S.sha_final(st, out) : -1;
}

int tl_crypto_x25519(uint8_t shared[32], const uint8_t sk[32], const uint8_t pk[32])
{
    return S.bound ? S.x25519(shared, sk, pk) : -1;
}

int tl_crypto_ed25519_pk_to_x25519(uint8_t x_pk[32], const uint8_t ed_pk[32])
{
    return S.bound ? S.pk_to_x(x_pk, ed_pk) : -1;
}

int tl_crypto_ed25519_sk_to_x25519(uint8_t x_sk[32], const uint8_t ed_sk[64])
{
    return S.bound ? S.sk_to_x(x_sk, ed_sk) : -1;
}

void tl_crypto_wipe(void *p, size_t n)
{
    if (S.bound) {
        S.memzero(p, n);
    } else {
        volatile uint8_t *v = (volatile uint8_t *)p;
        while (n--) {
            *v++ = 0;
        }
    }
}

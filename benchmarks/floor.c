/* The libsodium floor of one frame, looped in C: what sealing or opening costs with no Python
 * and no framing at all. Built at benchmark time (bench_frame.CFloor: gcc -O2 -shared ...
 * -lsodium, the libsodium-dev headers) and loaded with ctypes.
 *
 *   seal = crypto_aead_chacha20poly1305_ietf_encrypt (the plaintext, the frame's Enc_structure
 *          as AAD) + crypto_sign_detached (the frame's ToBeSigned)
 *   open = crypto_sign_verify_detached + crypto_aead_chacha20poly1305_ietf_decrypt
 *
 * on the exact bytes of a real frame, passed in by the caller (Ed25519 verification time
 * depends on the signature and key, so the floor verifies the very frame the contenders
 * open).
 *
 * The four primitives are called through pointers that default to the linked libsodium;
 * floor_bind() points them at another copy (PyNaCl's, the one twinlink's native backend
 * calls), so the floor can be measured on exactly the same code. Returns ns per frame. */
#define _POSIX_C_SOURCE 200112L /* clock_gettime, CLOCK_THREAD_CPUTIME_ID */
#include <sodium.h>
#include <stdlib.h>
#include <time.h>

typedef int (*enc_fn)(unsigned char *, unsigned long long *, const unsigned char *,
                      unsigned long long, const unsigned char *, unsigned long long,
                      const unsigned char *, const unsigned char *, const unsigned char *);
typedef int (*dec_fn)(unsigned char *, unsigned long long *, unsigned char *,
                      const unsigned char *, unsigned long long, const unsigned char *,
                      unsigned long long, const unsigned char *, const unsigned char *);
typedef int (*sign_fn)(unsigned char *, unsigned long long *, const unsigned char *,
                       unsigned long long, const unsigned char *);
typedef int (*verify_fn)(const unsigned char *, const unsigned char *, unsigned long long,
                         const unsigned char *);

static enc_fn enc = crypto_aead_chacha20poly1305_ietf_encrypt;
static dec_fn dec = crypto_aead_chacha20poly1305_ietf_decrypt;
static sign_fn sign = crypto_sign_detached;
static verify_fn verify = crypto_sign_verify_detached;

static clockid_t clock_id = CLOCK_MONOTONIC;

int floor_bind(void *e, void *d, void *s, void *v);
void floor_cpu_clock(int on);
double floor_seal(size_t iters, const unsigned char *pt, size_t pt_len,
                  const unsigned char *aad, size_t aad_len, const unsigned char nonce[12],
                  const unsigned char key[32], const unsigned char *tbs, size_t tbs_len,
                  const unsigned char sk[64]);
double floor_open(size_t iters, const unsigned char sig[64], const unsigned char *tbs,
                  size_t tbs_len, const unsigned char pk[32], const unsigned char *ct,
                  size_t ct_len, const unsigned char *aad, size_t aad_len,
                  const unsigned char nonce[12], const unsigned char key[32]);
const char *floor_version(void);

int floor_bind(void *e, void *d, void *s, void *v)
{
    if (!e || !d || !s || !v) {
        return -1;
    }
    enc = (enc_fn)e;
    dec = (dec_fn)d;
    sign = (sign_fn)s;
    verify = (verify_fn)v;
    return 0;
}

/* Time with this thread's CPU clock (on a shared machine: not the time others take). */
void floor_cpu_clock(int on)
{
    clock_id = on ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
}

const char *floor_version(void)
{
    return sodium_version_string();
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

double floor_seal(size_t iters, const unsigned char *pt, size_t pt_len,
                  const unsigned char *aad, size_t aad_len, const unsigned char nonce[12],
                  const unsigned char key[32], const unsigned char *tbs, size_t tbs_len,
                  const unsigned char sk[64])
{
    unsigned char *ct = malloc(pt_len + 16), sig[64];
    unsigned long long ct_len;
    size_t i;
    double t0, t1;
    int bad = 0;
    if (ct == NULL || iters == 0) {
        free(ct);
        return -1.0;
    }
    t0 = now_ns();
    for (i = 0; i < iters; i++) {
        bad |= enc(ct, &ct_len, pt, pt_len, aad, aad_len, NULL, nonce, key);
        bad |= sign(sig, NULL, tbs, tbs_len, sk);
    }
    t1 = now_ns();
    free(ct);
    return bad ? -1.0 : (t1 - t0) / (double)iters;
}

double floor_open(size_t iters, const unsigned char sig[64], const unsigned char *tbs,
                  size_t tbs_len, const unsigned char pk[32], const unsigned char *ct,
                  size_t ct_len, const unsigned char *aad, size_t aad_len,
                  const unsigned char nonce[12], const unsigned char key[32])
{
    unsigned char *pt = malloc(ct_len);
    unsigned long long pt_len;
    size_t i;
    double t0, t1;
    int bad = 0;
    if (pt == NULL || iters == 0 || ct_len < 16) {
        free(pt);
        return -1.0;
    }
    t0 = now_ns();
    for (i = 0; i < iters; i++) {
        bad |= verify(sig, tbs, tbs_len, pk);
        bad |= dec(pt, &pt_len, NULL, ct, ct_len, aad, aad_len, nonce, key);
    }
    t1 = now_ns();
    free(pt);
    return bad ? -1.0 : (t1 - t0) / (double)iters;
}

"""cffi (API mode) builder of ``twinlink._native``: the C core in ``native/`` plus a thin glue.

The core is compiled with the PyNaCl crypto adapter (``native/tl_crypto_pynacl.c``), which
needs no ``sodium.h`` and no ``-lsodium``: :mod:`twinlink._backend_native` hands it the
addresses of the libsodium functions inside PyNaCl's extension at import. A C compiler is all
a build needs. Run via ``setup.py`` (``cffi_modules``) or directly for an in-place build.

The ``tlpy_*`` glue below exists only for the binding: it takes ``char *`` arguments (cffi
passes a ``bytes`` object's buffer without copying), checks argument lengths in the order the
pure backend would fail on them, and returns ``length >= 0`` or ``-tl_err`` in one integer, so
one Python-to-C crossing does one whole operation.
"""

from __future__ import annotations

import os

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
NATIVE = os.path.join(_ROOT, "native")
SOURCES = ["tl_frame.c", "tl_oscore.c", "tl_window.c", "tl_cobs.c", "tl_crc.c",
           "tl_crypto_pynacl.c"]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]

CDEF = """
#define TL_PYNACL_NFUNCS 17
extern const char *const tl_pynacl_names[17];
int tl_crypto_pynacl_bind(const uintptr_t addrs[17]);

typedef struct {
    int64_t top;
    uint32_t size;
    uint32_t nblocks;
    uint64_t bits;
    uint64_t *ring;
} tl_window;
size_t tl_window_blocks(uint32_t size);
int tl_window_init(tl_window *w, uint32_t size, uint64_t *ring, size_t nblocks);
int tl_window_check(const tl_window *w, uint64_t seq);
int tl_window_update(tl_window *w, uint64_t seq);
int tl_window_export(uint8_t *out, size_t out_len, const tl_window *w);
int tl_window_import(tl_window *w, int64_t top, const uint8_t *in, size_t in_len);

uint16_t tl_crc16(const uint8_t *data, size_t len, uint16_t crc);

long long tlpy_seal(char *buf, size_t cap, const char *sk, const char *kid, size_t kid_len,
                    const char *key, const char *iv, const char *stream, size_t stream_len,
                    uint64_t seq, const char *pt, size_t pt_len);
long long tlpy_seal_lite(char *buf, size_t cap, const char *kid, size_t kid_len,
                         const char *key, const char *iv, const char *stream,
                         size_t stream_len, uint64_t seq, const char *pt, size_t pt_len);
long long tlpy_seal_many(char *buf, size_t cap, size_t frame_lens[], const char *sk,
                         const char *kid, size_t kid_len, const char *key, const char *iv,
                         const char *stream, size_t stream_len, uint64_t first_seq,
                         const char *pts, const size_t pt_lens[], size_t n, size_t max_pt);
int tlpy_parse(long long o[14], const char *frame, size_t frame_len);
long long tlpy_open(char *buf, size_t cap, long long o[14], const char *frame,
                    size_t frame_len, const char *pk, size_t pk_len, const char *key,
                    size_t key_len, const char *iv, size_t iv_len, const char *stream,
                    size_t stream_len);
int tlpy_verify(char *work, size_t cap, const char *prot, size_t prot_len, const char *kid,
                size_t kid_len, const char *piv, size_t piv_len, const char *enc0,
                size_t enc0_len, const char *sig, size_t sig_len, const char *pk,
                size_t pk_len, const char *stream, size_t stream_len);
long long tlpy_decrypt(char *buf, size_t cap, const char *kid, size_t kid_len, const char *piv,
                       size_t piv_len, const char *ct, size_t ct_len, const char *key,
                       size_t key_len, const char *iv, size_t iv_len, const char *stream,
                       size_t stream_len);
long long tlpy_cobs_encode(char *out, size_t cap, const char *in, size_t in_len);
long long tlpy_cobs_decode(char *out, size_t cap, const char *in, size_t in_len);
int tlpy_hkdf(char *okm, size_t okm_len, const char *salt, size_t salt_len, const char *ikm,
              size_t ikm_len, const char *info, size_t info_len);
int tlpy_derive(char *key_iv, const char *secret, size_t secret_len, const char *salt,
                size_t salt_len, const char *id, size_t id_len, int has_ctx, const char *ctx,
                size_t ctx_len);
"""

GLUE = r"""
#include <stdint.h>
#include <stddef.h>
#include "tl_error.h"
#include "tl_frame.h"
#include "tl_oscore.h"
#include "tl_window.h"
#include "tl_cobs.h"
#include "tl_crc.h"
#include "tl_crypto_pynacl.h"

#define U(p) ((const uint8_t *)(const void *)(p))
#define W(p) ((uint8_t *)(void *)(p))

static long long tlpy_seal(char *buf, size_t cap, const char *sk, const char *kid,
                           size_t kid_len, const char *key, const char *iv, const char *stream,
                           size_t stream_len, uint64_t seq, const char *pt, size_t pt_len)
{
    size_t fcap = TL_SEAL_FRAME_BOUND(pt_len), n = fcap;
    int rc;
    if (cap < fcap) {
        return -TL_E_BUFFER;
    }
    rc = tl_seal(W(buf), &n, W(buf) + fcap, cap - fcap, U(sk), U(kid), kid_len, U(key), U(iv),
                 U(stream), stream_len, seq, U(pt), pt_len);
    return rc ? -(long long)rc : (long long)n;
}

static long long tlpy_seal_lite(char *buf, size_t cap, const char *kid, size_t kid_len,
                                const char *key, const char *iv, const char *stream,
                                size_t stream_len, uint64_t seq, const char *pt, size_t pt_len)
{
    size_t fcap = TL_SEAL_FRAME_BOUND(pt_len), n = fcap;
    int rc;
    if (cap < fcap) {
        return -TL_E_BUFFER;
    }
    rc = tl_seal_lite(W(buf), &n, W(buf) + fcap, cap - fcap, U(kid), kid_len, U(key), U(iv),
                      U(stream), stream_len, seq, U(pt), pt_len);
    return rc ? -(long long)rc : (long long)n;
}

static long long tlpy_seal_many(char *buf, size_t cap, size_t frame_lens[], const char *sk,
                                const char *kid, size_t kid_len, const char *key,
                                const char *iv, const char *stream, size_t stream_len,
                                uint64_t first_seq, const char *pts, const size_t pt_lens[],
                                size_t n, size_t max_pt)
{
    size_t wcap = TL_SEAL_WORK_BOUND(max_pt, stream_len), total;
    int rc;
    if (cap < wcap) {
        return -TL_E_BUFFER;
    }
    total = cap - wcap;
    rc = tl_seal_many(W(buf) + wcap, &total, frame_lens, W(buf), wcap, U(sk), U(kid), kid_len,
                      U(key), U(iv), U(stream), stream_len, first_seq, U(pts), pt_lens, n);
    return rc ? -(long long)rc : (long long)wcap;  /* frames start after the work area */
}

static void offsets(long long o[14], const tl_parsed *p, const char *base)
{
    const uint8_t *b = U(base);
    o[0] = p->kind;
    o[1] = p->alg;
    o[2] = p->kid - b;
    o[3] = (long long)p->kid_len;
    o[4] = p->piv - b;
    o[5] = (long long)p->piv_len;
    o[6] = p->prot ? p->prot - b : 0;
    o[7] = (long long)p->prot_len;
    o[8] = p->enc0 - b;
    o[9] = (long long)p->enc0_len;
    o[10] = p->ct - b;
    o[11] = (long long)p->ct_len;
    o[12] = p->sig ? p->sig - b : 0;
    o[13] = (long long)p->sig_len;
}

static int tlpy_parse(long long o[14], const char *frame, size_t frame_len)
{
    tl_parsed p;
    int rc = tl_parse(&p, U(frame), frame_len);
    if (rc == TL_OK) {
        offsets(o, &p, frame);
    }
    return rc;
}

/* buf = plaintext area (frame_len bytes) || work. Same check order as the pure open_frame. */
static long long tlpy_open(char *buf, size_t cap, long long o[14], const char *frame,
                           size_t frame_len, const char *pk, size_t pk_len, const char *key,
                           size_t key_len, const char *iv, size_t iv_len, const char *stream,
                           size_t stream_len)
{
    tl_parsed p;
    size_t n = frame_len;
    int rc = tl_parse(&p, U(frame), frame_len);
    if (rc != TL_OK) {
        return -(long long)rc;
    }
    if (cap < frame_len) {
        return -TL_E_BUFFER;
    }
    if (p.kind == TL_KIND_SIGNED) {
        if (pk == NULL || pk_len != 32) {
            return -TL_E_BAD_SIGNATURE;
        }
        rc = tl_verify(W(buf) + frame_len, cap - frame_len, &p, U(pk), U(stream), stream_len);
        if (rc != TL_OK) {
            return -(long long)rc;
        }
    }
    if (key_len != 32 || iv_len != 12) {
        return -TL_E_DECRYPT;
    }
    rc = tl_decrypt(W(buf), &n, W(buf) + frame_len, cap - frame_len, &p, U(key), U(iv),
                    U(stream), stream_len);
    if (rc != TL_OK) {
        return -(long long)rc;
    }
    offsets(o, &p, frame);
    return (long long)n;
}

static int tlpy_verify(char *work, size_t cap, const char *prot, size_t prot_len,
                       const char *kid, size_t kid_len, const char *piv, size_t piv_len,
                       const char *enc0, size_t enc0_len, const char *sig, size_t sig_len,
                       const char *pk, size_t pk_len, const char *stream, size_t stream_len)
{
    tl_parsed p;
    if (pk_len != 32) {
        return TL_E_BAD_SIGNATURE;
    }
    p.prot = U(prot);
    p.prot_len = prot_len;
    p.kid = U(kid);
    p.kid_len = kid_len;
    p.piv = U(piv);
    p.piv_len = piv_len;
    p.enc0 = U(enc0);
    p.enc0_len = enc0_len;
    p.sig = U(sig);
    p.sig_len = sig_len;
    return tl_verify(W(work), cap, &p, U(pk), U(stream), stream_len);
}

static long long tlpy_decrypt(char *buf, size_t cap, const char *kid, size_t kid_len,
                              const char *piv, size_t piv_len, const char *ct, size_t ct_len,
                              const char *key, size_t key_len, const char *iv, size_t iv_len,
                              const char *stream, size_t stream_len)
{
    tl_parsed p;
    size_t n = ct_len;
    int rc;
    if (key_len != 32 || iv_len != 12) {
        return -TL_E_DECRYPT;
    }
    if (cap < ct_len) {
        return -TL_E_BUFFER;
    }
    p.kid = U(kid);
    p.kid_len = kid_len;
    p.piv = U(piv);
    p.piv_len = piv_len;
    p.ct = U(ct);
    p.ct_len = ct_len;
    rc = tl_decrypt(W(buf), &n, W(buf) + ct_len, cap - ct_len, &p, U(key), U(iv), U(stream),
                    stream_len);
    return rc ? -(long long)rc : (long long)n;
}

static long long tlpy_cobs_encode(char *out, size_t cap, const char *in, size_t in_len)
{
    size_t n = cap;
    int rc = tl_cobs_encode(W(out), &n, U(in), in_len);
    return rc ? -(long long)rc : (long long)n;
}

static long long tlpy_cobs_decode(char *out, size_t cap, const char *in, size_t in_len)
{
    size_t n = cap;
    int rc = tl_cobs_decode(W(out), &n, U(in), in_len);
    return rc ? -(long long)rc : (long long)n;
}

static int tlpy_hkdf(char *okm, size_t okm_len, const char *salt, size_t salt_len,
                     const char *ikm, size_t ikm_len, const char *info, size_t info_len)
{
    return tl_hkdf_sha256(W(okm), okm_len, U(salt), salt_len, U(ikm), ikm_len, U(info),
                          info_len);
}

static int tlpy_derive(char *key_iv, const char *secret, size_t secret_len, const char *salt,
                       size_t salt_len, const char *id, size_t id_len, int has_ctx,
                       const char *ctx, size_t ctx_len)
{
    return tl_oscore_derive(W(key_iv), W(key_iv) + 32, U(secret), secret_len, U(salt),
                            salt_len, U(id), id_len, has_ctx, U(ctx), ctx_len);
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "twinlink._native",
    GLUE,
    # Relative paths: setuptools wants them relative to setup.py (the project root).
    sources=[os.path.relpath(os.path.join(NATIVE, s), _ROOT) for s in SOURCES],
    include_dirs=[os.path.relpath(NATIVE, _ROOT)],
    extra_compile_args=CFLAGS,
)

if __name__ == "__main__":  # in-place build for development: python twinlink/_native_build.py
    os.chdir(_ROOT)
    ffibuilder.compile(tmpdir=os.path.join(_ROOT, "build", "cffi"), target=None, verbose=False)

/* twinlink C core: the CPython binding's C side (twinlink/_backend_native.py via cffi).
 *
 * One Python-to-C crossing per frame operation: each tlpy_* call does a whole seal, parse,
 * verify, decrypt or open, with the output and the work area in ONE caller buffer (the binding
 * allocates it, sized by the matching tlpy_*_size function, so Python holds no size formula),
 * and returns `length >= 0` or `-tl_err` in one integer.
 *
 * Arguments are assumed valid: twinlink/frame.py checks types and sizes once (kid 1..6 bytes,
 * key 32, IV 12, sk 64, pk 32, seq <= 2^40-1) before any backend runs. What these functions
 * refuse is about the frame: malformed, bad signature, decryption failure, too large.
 *
 * cdef-friendly: _native_build.py hands the declarations below (comments and preprocessor
 * lines stripped, integer #defines kept) to cffi as they are, so this header is the binding's
 * only declaration of the interface. Keep it to plain declarations: no function-like macros.
 */
#ifndef TL_PY_H
#define TL_PY_H

#include <stddef.h>
#include <stdint.h>

/* A parsed frame as offsets into the frame bytes (the binding slices a Python bytes object). */
typedef struct {
    int kind; /* TL_KIND_SIGNED (1) or TL_KIND_LITE (2) */
    int alg;  /* -8 or -19 (twinlink/1), 24 (lite) */
    uint64_t seq;
    size_t kid_at;
    size_t kid_len;
    size_t kid_context_at; /* kid_context_len 0: no kid context (the base context) */
    size_t kid_context_len;
    size_t piv_at;
    size_t piv_len;
    size_t prot_at; /* prot_len 0 for a lite frame */
    size_t prot_len;
    size_t enc0_at;
    size_t enc0_len;
    size_t ct_at;
    size_t ct_len;
    size_t sig_at; /* sig_len 0 for a lite frame */
    size_t sig_len;
} tlpy_parsed;

/* Buffer size tlpy_seal and tlpy_seal_lite need for a plaintext of pt_len bytes. */
size_t tlpy_seal_size(size_t pt_len, size_t stream_len);

/* Seal a twinlink/1 frame into buf; returns its length (the frame starts at buf[0]).
 * kid_context NULL: the base context (no label 10). */
long long tlpy_seal(uint8_t *buf, size_t buf_len, const uint8_t sign_sk[64], const uint8_t *kid,
                    size_t kid_len, const uint8_t *kid_context, size_t kid_context_len,
                    const uint8_t key[32], const uint8_t common_iv[12], const uint8_t *stream,
                    size_t stream_len, uint64_t seq, const uint8_t *pt, size_t pt_len);

/* Seal a lite frame into buf; returns its length. */
long long tlpy_seal_lite(uint8_t *buf, size_t buf_len, const uint8_t *kid, size_t kid_len,
                         const uint8_t key[32], const uint8_t common_iv[12],
                         const uint8_t *stream, size_t stream_len, uint64_t seq,
                         const uint8_t *pt, size_t pt_len);

/* Buffer size tlpy_seal_many needs for n plaintexts of pts_len bytes in all, the longest
 * max_pt bytes. */
size_t tlpy_seal_many_size(size_t pts_len, size_t max_pt, size_t n, size_t stream_len);

/* Seal n plaintexts (concatenated in pts, lengths in pt_lens) with seqs first_seq, ... into
 * buf; frame_lens[i] receives each length. Returns the offset in buf where the frames start,
 * back to back. Nothing is sealed unless all fit (seq range, frame size). */
long long tlpy_seal_many(uint8_t *buf, size_t buf_len, size_t frame_lens[],
                         const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len,
                         const uint8_t *kid_context, size_t kid_context_len,
                         const uint8_t key[32], const uint8_t common_iv[12],
                         const uint8_t *stream, size_t stream_len, uint64_t first_seq,
                         const uint8_t *pts, const size_t pt_lens[], size_t n);

/* Strictly parse a frame: 0 (TL_OK) and *out written, or TL_E_MALFORMED. */
int tlpy_parse(tlpy_parsed *out, const uint8_t *frame, size_t frame_len);

/* Buffer size tlpy_open needs for a frame of frame_len bytes (plaintext area || work). */
size_t tlpy_open_size(size_t frame_len, size_t stream_len);

/* Parse, verify (a signed frame; sign_pk NULL -> TL_E_BAD_SIGNATURE) and decrypt, in the
 * order of twinlink/_backend_pure.py's open_frame. Returns the plaintext length (plaintext at
 * buf[0]) and writes *out. */
long long tlpy_open(uint8_t *buf, size_t buf_len, tlpy_parsed *out, const uint8_t *frame,
                    size_t frame_len, const uint8_t *sign_pk, const uint8_t key[32],
                    const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len);

/* Work size tlpy_verify needs for a parsed frame with these field lengths. */
size_t tlpy_verify_size(size_t prot_len, size_t kid_len, size_t piv_len, size_t enc0_len,
                        size_t stream_len);

/* Check the signature of a parsed frame given by its fields: 0 or TL_E_BAD_SIGNATURE. */
int tlpy_verify(uint8_t *work, size_t work_len, const uint8_t *prot, size_t prot_len,
                const uint8_t *kid, size_t kid_len, const uint8_t *piv, size_t piv_len,
                const uint8_t *enc0, size_t enc0_len, const uint8_t *sig, size_t sig_len,
                const uint8_t sign_pk[32], const uint8_t *stream, size_t stream_len);

/* Buffer size tlpy_decrypt needs (plaintext area || work). */
size_t tlpy_decrypt_size(size_t ct_len, size_t kid_len, size_t piv_len, size_t stream_len);

/* Decrypt a parsed frame's ciphertext; returns the plaintext length (plaintext at buf[0]). */
long long tlpy_decrypt(uint8_t *buf, size_t buf_len, const uint8_t *kid, size_t kid_len,
                       const uint8_t *piv, size_t piv_len, const uint8_t *ct, size_t ct_len,
                       const uint8_t key[32], const uint8_t common_iv[12],
                       const uint8_t *stream, size_t stream_len);

/* Payloads of at most this many bytes are checked with a work array on the C stack. */
#define TLPY_CHECK_SMALL 256

/* Validate a decrypted payload (tl_cbor_check.h): 0 if acceptable, the tl_payload_reason
 * (> 0) if refused, -TL_E_BUFFER if work is too small. work may be NULL (work_n 0) for a
 * payload of at most TLPY_CHECK_SMALL bytes; otherwise tl_cbor_check_work(len) entries. */
int tlpy_check_payload(uint32_t *work, size_t work_n, const uint8_t *data, size_t len);

#endif

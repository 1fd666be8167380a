/* twinlink C core: seal, parse, verify, decrypt and open exactly the twinlink/1 and lite
 * frame shapes (see twinlink/_backend_pure.py, the reference these match byte for byte).
 *
 *   twinlink/1: 18([ prot, {}, 16([h'A1011818', {6: PIV}, ct||tag]), sig ])
 *       prot = h'A2 01 27 04 <kid>'                        base context
 *            | h'A3 01 27 04 <kid> 0A <kid_context>'       with an ID Context (1..16 bytes),
 *                                                          COSE "kid context" (RFC 8613 §6.1)
 *   lite:       16([ h'A1011818', {4: kid, 6: PIV}, ct||tag ])   (never a kid context)
 *
 * Conventions: outputs first; caller-owned buffers, no heap. For a function with an
 * (out, out_len) pair, out == NULL sets *out_len to the exact size needed; otherwise *out_len
 * is the capacity on entry and the length written on success. On failure *out_len and the
 * output are not written; the exceptions are a crypto-adapter failure in the middle of a seal
 * (what was written is wiped) and a failed decryption (libsodium zeroes the plaintext buffer,
 * never fills it partially). Output, work and input buffers must not overlap.
 * Ed25519 signs its message whole, so building or checking the ToBeSigned needs a contiguous
 * work buffer: pass one of at least the matching TL_*_WORK_BOUND bytes (the exact need is
 * checked; TL_E_BUFFER if short). Work buffers hold only public bytes.
 */
#ifndef TL_FRAME_H
#define TL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define TL_MAX_FRAME 65535u
#define TL_KIND_SIGNED 1
#define TL_KIND_LITE 2
#define TL_TAG_LEN 16u
#define TL_SIG_LEN 64u
#define TL_MAX_KID_CONTEXT_LEN 16u
/* Longest outer protected header: A3 01 27 04 <bstr kid: 7> 0A <bstr kid_context: 17>. */
#define TL_MAX_PROT_LEN 29u

/* Upper bounds (exact sizes are checked inside). */
#define TL_SEAL_FRAME_BOUND(pt_len) ((size_t)(pt_len) + 160u)
#define TL_SEAL_WORK_BOUND(pt_len, stream_len) ((size_t)(pt_len) + 2u * (size_t)(stream_len) + 192u)
#define TL_OPEN_WORK_BOUND(frame_len, stream_len) ((size_t)(frame_len) + 2u * (size_t)(stream_len) + 128u)

/* A frame that passed strict structural parsing. Pointers point into the parsed frame (for a
 * lite frame enc0 is the whole frame and prot/sig are NULL with length 0). */
typedef struct {
    int kind; /* TL_KIND_SIGNED or TL_KIND_LITE */
    int alg;  /* -8 or -19 for twinlink/1, 24 for lite */
    uint64_t seq;
    const uint8_t *kid;
    size_t kid_len;
    const uint8_t *kid_context; /* NULL (length 0) unless the protected header carries one */
    size_t kid_context_len;
    const uint8_t *piv;
    size_t piv_len;
    const uint8_t *prot;
    size_t prot_len;
    const uint8_t *enc0;
    size_t enc0_len;
    const uint8_t *ct; /* ciphertext || 16-byte tag */
    size_t ct_len;
    const uint8_t *sig;
    size_t sig_len;
} tl_parsed;

/* Seal pt as a twinlink/1 frame with sequence number seq. kid is 1..6 bytes, seq at most
 * 2^40-1, the frame at most TL_MAX_FRAME bytes (TL_E_RANGE otherwise). */
int tl_seal(uint8_t *frame, size_t *frame_len, uint8_t *work, size_t work_len,
            const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len, const uint8_t key[32],
            const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len, uint64_t seq,
            const uint8_t *pt, size_t pt_len);

/* tl_seal with the security context's ID Context carried as kid_context (1..16 bytes,
 * TL_E_RANGE otherwise) in the protected header, so the signature covers it. kid_context
 * NULL: the base context, exactly tl_seal's bytes. */
int tl_seal_ctx(uint8_t *frame, size_t *frame_len, uint8_t *work, size_t work_len,
                const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len,
                const uint8_t *kid_context, size_t kid_context_len, const uint8_t key[32],
                const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len,
                uint64_t seq, const uint8_t *pt, size_t pt_len);

/* Seal n plaintexts (concatenated in pts, lengths in pt_lens) with seq first_seq, first_seq+1,
 * ... back to back into frames; frame_lens[i] receives each length. Everything is validated
 * before anything is written. work must hold TL_SEAL_WORK_BOUND of the longest plaintext.
 * kid_context as in tl_seal_ctx (NULL: none). */
int tl_seal_many(uint8_t *frames, size_t *frames_len, size_t frame_lens[], uint8_t *work,
                 size_t work_len, const uint8_t sign_sk[64], const uint8_t *kid, size_t kid_len,
                 const uint8_t *kid_context, size_t kid_context_len, const uint8_t key[32],
                 const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len,
                 uint64_t first_seq, const uint8_t *pts, const size_t pt_lens[], size_t n);

/* Seal pt as a lite frame (COSE_Encrypt0, kid unprotected, no signature). */
int tl_seal_lite(uint8_t *frame, size_t *frame_len, uint8_t *work, size_t work_len,
                 const uint8_t *kid, size_t kid_len, const uint8_t key[32],
                 const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len,
                 uint64_t seq, const uint8_t *pt, size_t pt_len);

/* Strict structural parse: shortest heads, definite lengths, every length bounded, no
 * recursion. TL_E_MALFORMED on any deviation; *p is written only on success. */
int tl_parse(tl_parsed *p, const uint8_t *frame, size_t frame_len);

/* Check the Ed25519 signature of a parsed twinlink/1 frame: TL_OK or TL_E_BAD_SIGNATURE. */
int tl_verify(uint8_t *work, size_t work_len, const tl_parsed *p, const uint8_t sign_pk[32],
              const uint8_t *stream, size_t stream_len);

/* Decrypt the Encrypt0 layer: TL_OK or TL_E_DECRYPT. pt NULL: *pt_len = ct_len - 16. */
int tl_decrypt(uint8_t *pt, size_t *pt_len, uint8_t *work, size_t work_len, const tl_parsed *p,
               const uint8_t key[32], const uint8_t common_iv[12], const uint8_t *stream,
               size_t stream_len);

/* Parse, verify (twinlink/1; a signed frame with sign_pk NULL is TL_E_BAD_SIGNATURE; lite
 * frames are not signed) and decrypt. *p is written on success. pt NULL: parse only and set
 * *pt_len to the plaintext size. No replay check: see tl_window.h. */
int tl_open(uint8_t *pt, size_t *pt_len, tl_parsed *p, uint8_t *work, size_t work_len,
            const uint8_t *frame, size_t frame_len, const uint8_t *sign_pk, const uint8_t key[32],
            const uint8_t common_iv[12], const uint8_t *stream, size_t stream_len);

#endif

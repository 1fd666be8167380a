/* twinlink C core: firmware-update manifests (docs/UPDATES.md), verified with no heap.
 *
 * A manifest is a COSE_Sign1 (Ed25519) over a SUIT-shaped map: sequence number, vendor-id,
 * class-id, SHA-256 digest and size of the image, optional URI and next update keys. The
 * parser is strict and fails closed exactly as twinlink/update/manifest.py does (same inputs
 * accepted, same reason for each refusal). Crypto only through tl_crypto.h; caller-owned
 * buffers; the parsed manifest points into the caller's manifest buffer.
 *
 * Use, as a chunked transfer arrives:
 *   tl_update_authenticate()   parse + signature by a trusted update key
 *   tl_update_check()          vendor, class, capacity, seq against what is installed
 *   tl_update_image_init/update/final()   streaming SHA-256 and size over the image chunks
 * then persist the new seq before reporting success or booting the image.
 */
#ifndef TL_UPDATE_H
#define TL_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "tl_crypto.h"

#define TL_UPDATE_MAX_MANIFEST 1024u
#define TL_UPDATE_MAX_KEYS 4u
#define TL_UPDATE_KEY_ID_LEN 8u
#define TL_UPDATE_MAX_URI 255u
/* Work buffer tl_update_authenticate needs for a manifest of mlen bytes (the Sig_structure is
 * 56 bytes shorter than the manifest it is built from). */
#define TL_UPDATE_WORK_BOUND(mlen) ((size_t)(mlen))
/* tl_update_check: no capacity limit. */
#define TL_UPDATE_NO_LIMIT UINT64_MAX

/* Update refusals, numbered apart from tl_error.h's frame codes so that neither list can
 * collide with the other as both grow. A malformed manifest is TL_E_MALFORMED (1), a bad
 * signature TL_E_BAD_SIGNATURE (2). The reason strings are twinlink.update's. */
#define TL_E_UPDATE_UNTRUSTED 32 /* "untrusted_key": no trusted key has the manifest's key id */
#define TL_E_UPDATE_VENDOR 33    /* "wrong_vendor" */
#define TL_E_UPDATE_CLASS 34     /* "wrong_class" */
#define TL_E_UPDATE_ROLLBACK 35  /* "rollback": seq below the installed one */
#define TL_E_UPDATE_CONFLICT 36  /* "seq_conflict": installed seq, another image */
#define TL_E_UPDATE_DIGEST 37    /* "digest_mismatch" */
#define TL_E_UPDATE_SIZE 38      /* "size_mismatch": image truncated or oversize */
#define TL_E_UPDATE_TOO_LARGE 39 /* "image_too_large": announced size over capacity */
#define TL_E_UPDATE_CRITICAL 40  /* "unknown_critical": field/version/algorithm not understood */

typedef struct {
    uint64_t seq;
    uint64_t image_size;
    const uint8_t *vendor_id; /* 16 bytes (UUID) */
    const uint8_t *class_id;  /* 16 bytes (UUID) */
    const uint8_t *digest;    /* 32 bytes, SHA-256 of the image */
    const uint8_t *key_id;    /* 8 bytes: SHA-256(signing public key)[0..8] */
    const uint8_t *uri;       /* NULL when absent; not NUL-terminated */
    size_t uri_len;
    const uint8_t *next_keys[TL_UPDATE_MAX_KEYS]; /* 32 bytes each: rotate to these keys */
    size_t n_next_keys;
    int alg; /* -8 or -19 */
    const uint8_t *prot;
    size_t prot_len;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *sig; /* 64 bytes */
} tl_manifest;

/* What the device has installed (its persisted record). */
typedef struct {
    uint64_t seq;
    uint64_t size;
    uint8_t digest[32];
} tl_update_installed;

typedef struct {
    tl_sha256_state sha;
    uint8_t digest[32];
    uint64_t size;
    uint64_t received;
} tl_update_image;

/* The key id a manifest names a key by: SHA-256(pk)[0..8]. */
int tl_update_key_id(uint8_t id[TL_UPDATE_KEY_ID_LEN], const uint8_t pk[32]);

/* Strict parse, no signature check. TL_OK, TL_E_MALFORMED or TL_E_UPDATE_CRITICAL; on failure
 * *m is not written. */
int tl_update_parse(tl_manifest *m, const uint8_t *buf, size_t len);

/* Parse, then verify the signature under the trusted key (of nkeys) whose key id the manifest
 * names. work: TL_UPDATE_WORK_BOUND(len) bytes. TL_OK, the parse errors,
 * TL_E_UPDATE_UNTRUSTED, TL_E_BAD_SIGNATURE, TL_E_BUFFER or TL_E_CRYPTO. */
int tl_update_authenticate(tl_manifest *m, uint8_t *work, size_t work_len, const uint8_t *buf,
                           size_t len, const uint8_t (*keys)[32], size_t nkeys);

/* Is an authenticated manifest for this device and newer than what is installed (installed
 * NULL: nothing yet)? TL_OK with *same = 1 when it repeats the installed seq with the same
 * image (an idempotent no-op), *same = 0 when it is newer; else TL_E_UPDATE_VENDOR, _CLASS,
 * _TOO_LARGE (size over max_image), _ROLLBACK or _CONFLICT, in that order. */
int tl_update_check(int *same, const tl_manifest *m, const uint8_t vendor_id[16],
                    const uint8_t class_id[16], uint64_t max_image,
                    const tl_update_installed *installed);

/* Streaming image check. init copies digest and size, so the manifest buffer may be reused.
 * update returns TL_E_UPDATE_SIZE (and hashes nothing) if the chunk would exceed the size;
 * final returns TL_E_UPDATE_SIZE for a short image, TL_E_UPDATE_DIGEST for a wrong one. */
int tl_update_image_init(tl_update_image *st, const tl_manifest *m);
int tl_update_image_update(tl_update_image *st, const uint8_t *chunk, size_t len);
int tl_update_image_final(tl_update_image *st);

/* twinlink.update's reason string for a code ("malformed_manifest", "rollback", ...). */
const char *tl_update_reason(int code);

#endif

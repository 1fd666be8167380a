/* twinlink downlink (docs/PROTOCOL.md §20) for firmware: open a desired-state or command frame
 * from the twin and read a desired state's {key: value} map, with no heap and bounded work.
 *
 *   downlink = 16([h'A1011818', {4: h'', 6: PIV, ? 10: kid_context}, ciphertext])
 *
 * The caller derives the twin->device key with tl_oscore_derive(..., id = h'', ...) for its
 * current context, checks the PIV against its own persisted window (tl_window, size 64) before
 * acting, and persists the PIV before applying anything.
 */
#ifndef TL_DOWNLINK_H
#define TL_DOWNLINK_H

#include <stddef.h>
#include <stdint.h>

/* Largest downlink plaintext the protocol allows (a device may accept less). */
#define TL_DOWNLINK_MAX_PT 2048u
/* Largest downlink frame accepted on input. */
#define TL_DOWNLINK_MAX_FRAME 8192u

/* A downlink frame's envelope, parsed strictly but not authenticated; pointers into the frame. */
typedef struct {
    uint8_t piv[5];
    size_t piv_len;
    uint64_t seq;
    const uint8_t *kid_context; /* NULL: absent (the base context) */
    size_t kid_context_len;
    const uint8_t *ct; /* ciphertext || 16-byte tag */
    size_t ct_len;
} tl_downlink;

/* Parse the envelope: TL_E_MALFORMED unless exactly the shape above, shortest heads. */
int tl_downlink_parse(tl_downlink *d, const uint8_t *frame, size_t frame_len);

/* Authenticate and decrypt for device kid whose current ID Context is kid_context (NULL for
 * the base one): TL_E_DECRYPT if the frame names another context, is for another device,
 * forged or altered (pt unwritten); TL_E_BUFFER if *pt_len (capacity on entry) is too small;
 * TL_E_RANGE for a plaintext above TL_DOWNLINK_MAX_PT. On success *pt_len is the length. */
int tl_downlink_open(uint8_t *pt, size_t *pt_len, const tl_downlink *d, const uint8_t key[32],
                     const uint8_t common_iv[12], const uint8_t *kid, size_t kid_len,
                     const uint8_t *kid_context, size_t kid_context_len);

typedef enum {
    TL_VAL_INT = 1,   /* i */
    TL_VAL_FLOAT = 2, /* f */
    TL_VAL_BOOL = 3,  /* i: 0 or 1 */
    TL_VAL_TEXT = 4,  /* text, text_len (UTF-8, not NUL-terminated) */
    TL_VAL_NULL = 5,
    TL_VAL_OTHER = 6  /* an array, map or integer beyond int64: skipped, for the caller to reject */
} tl_val_kind;

typedef struct {
    const uint8_t *key; /* NULL at the end of the map */
    size_t key_len;
    tl_val_kind kind;
    int64_t i;
    double f;
    const uint8_t *text;
    size_t text_len;
} tl_desired_item;

/* A cursor over a desired state's map. */
typedef struct {
    const uint8_t *buf;
    size_t end;
    size_t pos;
    uint64_t left; /* entries not yet read */
    uint64_t version;
} tl_desired;

/* Start reading a plaintext {1: "desired", 2: version, 3: {+ tstr => value}}: TL_E_PAYLOAD for
 * anything else (a command, another shape). */
int tl_desired_begin(tl_desired *d, const uint8_t *pt, size_t pt_len);

/* The next entry (it->key NULL once all are read); TL_E_PAYLOAD for malformed CBOR, a key
 * that is not 1-64 bytes of text, or nesting deeper than 8. */
int tl_desired_next(tl_desired *d, tl_desired_item *it);

#endif

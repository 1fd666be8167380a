/* twinlink C core: the strict validator for decrypted payloads (docs/PROTOCOL.md §13).
 *
 * A payload is authenticated but still hostile (a compromised device holds a valid key), and
 * the twin stores what it decodes in SQLite, JSON and PostgreSQL. So before any general CBOR
 * decoder sees it, a payload must be exactly what SenML in CBOR needs:
 *
 *   - one item, at most TL_PAYLOAD_MAX bytes, nothing after it; definite lengths only;
 *     heads need not be in shortest form;
 *   - integers (major 0/1) in [-2^63, 2^63-1], what a SQL bigint holds;
 *   - byte strings; text strings of valid UTF-8;
 *   - arrays; maps whose keys are integers or text strings, no two equal as decoded values
 *     (0x00 and 0x1800 are the same key);
 *   - simple values false, true, null only; half, single and double floats that are finite;
 *   - arrays and maps nested at most TL_PAYLOAD_MAX_DEPTH deep; no tags at all.
 *
 * Iterative (no recursion), no allocation: duplicate keys are found by sorting the offsets of
 * a map's keys in a caller-owned work array. twinlink/cbor.py check_payload is the same
 * validator in Python, verdict for verdict (tests/test_differential.py).
 */
#ifndef TL_CBOR_CHECK_H
#define TL_CBOR_CHECK_H

#include <stddef.h>
#include <stdint.h>

#define TL_PAYLOAD_MAX 16384
#define TL_PAYLOAD_MAX_DEPTH 8

/* Why a payload was refused. Stable numbers: the binding maps them to text, and
 * twinlink/cbor.py PAYLOAD_REASONS lists the same texts in the same order. */
typedef enum {
    TL_PAYLOAD_OK = 0,
    TL_PAYLOAD_TOO_LONG = 1,
    TL_PAYLOAD_TRUNCATED = 2,
    TL_PAYLOAD_TRAILING = 3,
    TL_PAYLOAD_INDEFINITE = 4,
    TL_PAYLOAD_RESERVED = 5,
    TL_PAYLOAD_TAG = 6,
    TL_PAYLOAD_INT_RANGE = 7,
    TL_PAYLOAD_UTF8 = 8,
    TL_PAYLOAD_KEY_TYPE = 9,
    TL_PAYLOAD_DUPLICATE_KEY = 10,
    TL_PAYLOAD_SIMPLE = 11,
    TL_PAYLOAD_FLOAT = 12,
    TL_PAYLOAD_DEPTH = 13
} tl_payload_reason;

#define TL_PAYLOAD_NREASONS 14

/* Entries of the work array tl_cbor_check needs for a payload of len bytes. */
size_t tl_cbor_check_work(size_t len);

/* TL_OK if data[0..len) is an acceptable payload; otherwise TL_E_PAYLOAD with *reason set
 * (the first violation in document order; a duplicate key is found when its map ends), or
 * TL_E_BUFFER if work holds fewer than tl_cbor_check_work(len) entries. */
int tl_cbor_check(int *reason, uint32_t *work, size_t work_n, const uint8_t *data, size_t len);

/* A short English text for a reason (never NULL). */
const char *tl_cbor_check_reason(int reason);

#endif

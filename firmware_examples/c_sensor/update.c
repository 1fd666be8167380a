/* Firmware update on the device: everything in static buffers, sized from tl_update.h. */
#include "update.h"

#include <string.h>

#include "hal_update.h"
#include "tl_crc.h"
#include "tl_crypto.h"
#include "tl_error.h"

/* Install record, two copies written alternately (like seq.c's slots):
 *   0 "TLUR" | 4 generation (4, BE) | 8 seq (8) | 16 size (8) | 24 digest (32) |
 *   56 handed-off flag (1) | 57 number of rotated keys (1, 0 = the config's) |
 *   58 keys (4 x 32) | 186 zero (4) | 190 CRC-16 of bytes 0..189 */
#define REC_CRC_AT 190u

typedef struct {
    int have;
    uint32_t generation;
    unsigned next_slot;
    tl_update_installed inst;
    int handed_off;
    uint8_t keys[TL_UPDATE_MAX_KEYS][32];
    size_t n_keys;
} record_t;

static update_cfg_t cfg;
static record_t rec;
static uint8_t cfg_blob[UPDATE_CFG_LEN + 1u];
static uint8_t manifest[TL_UPDATE_MAX_MANIFEST + 1u];
static size_t manifest_len;
static uint8_t work[TL_UPDATE_WORK_BOUND(TL_UPDATE_MAX_MANIFEST)];
static uint8_t chunk[UPDATE_CHUNK];
static uint8_t rbuf[HAL_UPDATE_RECORD_SIZE];

static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8u * (n - 1u - i)));
    }
}

static uint64_t get_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static int crc_ok(const uint8_t *b, size_t at)
{
    uint16_t crc = tl_crc16(b, at, TL_CRC16_INIT);
    return b[at] == (uint8_t)(crc >> 8) && b[at + 1u] == (uint8_t)(crc & 0xFFu);
}

int update_config_parse(update_cfg_t *c, const uint8_t *blob, size_t len)
{
    if (len != UPDATE_CFG_LEN || memcmp(blob, "TLUC", 4) != 0 || !crc_ok(blob, 165) ||
        blob[4] < 1u || blob[4] > TL_UPDATE_MAX_KEYS) {
        return -1;
    }
    c->n_keys = blob[4];
    memcpy(c->keys, blob + 5, sizeof c->keys);
    memcpy(c->vendor_id, blob + 133, 16);
    memcpy(c->class_id, blob + 149, 16);
    return 0;
}

static int record_unpack(record_t *r, const uint8_t *b)
{
    if (memcmp(b, "TLUR", 4) != 0 || !crc_ok(b, REC_CRC_AT) || b[57] > TL_UPDATE_MAX_KEYS) {
        return -1;
    }
    r->generation = (uint32_t)get_be(b + 4, 4);
    r->inst.seq = get_be(b + 8, 8);
    r->inst.size = get_be(b + 16, 8);
    memcpy(r->inst.digest, b + 24, 32);
    r->handed_off = b[56] != 0u;
    r->n_keys = b[57];
    memcpy(r->keys, b + 58, sizeof r->keys);
    r->have = 1;
    return 0;
}

/* The newest valid copy wins; copies present but none valid: refuse (never guess "nothing
 * installed", which would re-open rollbacks). */
static int record_load(void)
{
    record_t r;
    unsigned i, present = 0;
    memset(&rec, 0, sizeof rec);
    for (i = 0; i < 2u; i++) {
        int rc = hal_update_record_read(i, rbuf);
        if (rc == 1) {
            continue;
        }
        if (rc != 0) {
            return UPDATE_E_STORAGE;
        }
        present++;
        if (record_unpack(&r, rbuf) == 0 && (!rec.have || r.generation > rec.generation)) {
            rec = r;
            rec.next_slot = i ^ 1u;
        }
    }
    return (present > 0u && !rec.have) ? UPDATE_E_STORAGE : TL_OK;
}

static int record_store(void)
{
    uint16_t crc;
    memset(rbuf, 0, sizeof rbuf);
    memcpy(rbuf, "TLUR", 4);
    put_be(rbuf + 4, rec.generation, 4);
    put_be(rbuf + 8, rec.inst.seq, 8);
    put_be(rbuf + 16, rec.inst.size, 8);
    memcpy(rbuf + 24, rec.inst.digest, 32);
    rbuf[56] = (uint8_t)(rec.handed_off != 0);
    rbuf[57] = (uint8_t)rec.n_keys;
    memcpy(rbuf + 58, rec.keys, sizeof rec.keys);
    crc = tl_crc16(rbuf, REC_CRC_AT, TL_CRC16_INIT);
    rbuf[REC_CRC_AT] = (uint8_t)(crc >> 8);
    rbuf[REC_CRC_AT + 1u] = (uint8_t)(crc & 0xFFu);
    if (hal_update_record_write(rec.next_slot, rbuf) != 0) {
        return UPDATE_E_STORAGE;
    }
    rec.next_slot ^= 1u;
    return TL_OK;
}

static int load_inputs(void)
{
    size_t len = 0;
    if (hal_update_config_read(cfg_blob, sizeof cfg_blob, &len) != 0 ||
        update_config_parse(&cfg, cfg_blob, len) != 0 ||
        hal_update_manifest_read(manifest, sizeof manifest, &manifest_len) != 0) {
        return UPDATE_E_STORAGE;
    }
    return record_load();
}

/* Authenticate under the current update keys (rotated ones if a manifest rotated them), then
 * check vendor, class, slot capacity and seq. */
static int verify_manifest(tl_manifest *m, int *same)
{
    const uint8_t(*keys)[32] = rec.n_keys ? (const uint8_t(*)[32])rec.keys
                                          : (const uint8_t(*)[32])cfg.keys;
    int rc = tl_update_authenticate(m, work, sizeof work, manifest, manifest_len, keys,
                                    rec.n_keys ? rec.n_keys : cfg.n_keys);
    return rc ? rc : tl_update_check(same, m, cfg.vendor_id, cfg.class_id, hal_slot2_capacity(),
                                     rec.have ? &rec.inst : NULL);
}

/* Stream the image through the digest (and into slot 2 when write is set). */
static int stream_image(const tl_manifest *m, int write, uint64_t *bytes)
{
    tl_update_image st;
    size_t n = 0;
    int rc = tl_update_image_init(&st, m);
    while (rc == TL_OK) {
        if (hal_update_image_next(chunk, sizeof chunk, &n) != 0) {
            return UPDATE_E_STORAGE;
        }
        if (n == 0u) {
            break;
        }
        rc = tl_update_image_update(&st, chunk, n);
        if (rc == TL_OK && write && hal_slot2_write(st.received - n, chunk, n) != 0) {
            return UPDATE_E_STORAGE;
        }
    }
    *bytes = st.received;
    return rc ? rc : tl_update_image_final(&st);
}

int update_verify_only(void)
{
    tl_manifest m;
    uint64_t bytes;
    int same = 0, rc = load_inputs();
    if (rc == TL_OK) {
        rc = verify_manifest(&m, &same);
    }
    return rc ? rc : stream_image(&m, 0, &bytes);
}

int update_apply(update_result_t *res)
{
    tl_manifest m;
    int same = 0, rc;
    memset(res, 0, sizeof *res);
    rc = load_inputs();
    if (rc == TL_OK) {
        rc = verify_manifest(&m, &same);
    }
    if (rc != TL_OK) {
        return res->code = rc;
    }
    res->seq = m.seq;
    if (same && rec.handed_off) {
        res->already = 1;
        return res->code = TL_OK;
    }
    /* Slot 2 is never handed off below unless the whole image verified. */
    if (hal_slot2_erase() != 0) {
        return res->code = UPDATE_E_STORAGE;
    }
    rc = stream_image(&m, 1, &res->bytes);
    if (rc == TL_OK && hal_slot2_flush() != 0) {
        rc = UPDATE_E_STORAGE;
    }
    if (rc != TL_OK) {
        return res->code = rc;
    }
    /* Persist the new seq (and any rotated keys) before anything is reported or booted. */
    rec.generation++;
    rec.have = 1;
    rec.inst.seq = m.seq;
    rec.inst.size = m.image_size;
    memcpy(rec.inst.digest, m.digest, 32);
    rec.handed_off = 0;
    if (m.n_next_keys) {
        size_t i;
        memset(rec.keys, 0, sizeof rec.keys);
        for (i = 0; i < m.n_next_keys; i++) {
            memcpy(rec.keys[i], m.next_keys[i], 32);
        }
        rec.n_keys = m.n_next_keys;
    }
    if (record_store() != TL_OK || hal_slot2_mark_pending() != 0) {
        return res->code = UPDATE_E_STORAGE;
    }
    rec.generation++;
    rec.handed_off = 1;
    return res->code = record_store();
}

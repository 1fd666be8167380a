#include "seq.h"

#include "hal.h"
#include "tl_crc.h"

#define MAX_SEQ ((uint64_t)1 << 40) - 1u

/* Slot layout: "TLSQ" | value (8 bytes, big-endian) | CRC-16 of the first 12 bytes | 2 zero. */
static void slot_pack(uint8_t b[HAL_SLOT_SIZE], uint64_t v)
{
    unsigned i;
    uint16_t crc;
    b[0] = 'T';
    b[1] = 'L';
    b[2] = 'S';
    b[3] = 'Q';
    for (i = 0; i < 8u; i++) {
        b[4u + i] = (uint8_t)(v >> (56u - 8u * i));
    }
    crc = tl_crc16(b, 12, TL_CRC16_INIT);
    b[12] = (uint8_t)(crc >> 8);
    b[13] = (uint8_t)(crc & 0xFFu);
    b[14] = 0;
    b[15] = 0;
}

static int slot_unpack(const uint8_t b[HAL_SLOT_SIZE], uint64_t *v)
{
    unsigned i;
    uint16_t crc = tl_crc16(b, 12, TL_CRC16_INIT);
    if (b[0] != 'T' || b[1] != 'L' || b[2] != 'S' || b[3] != 'Q' ||
        b[12] != (uint8_t)(crc >> 8) || b[13] != (uint8_t)(crc & 0xFFu)) {
        return -1;
    }
    *v = 0;
    for (i = 0; i < 8u; i++) {
        *v = (*v << 8) | b[4u + i];
    }
    return 0;
}

static int persist(seq_t *s, uint64_t v)
{
    uint8_t b[HAL_SLOT_SIZE];
    slot_pack(b, v);
    if (hal_slot_write(s->slot, b) != 0) {
        return -2;
    }
    s->slot ^= 1u;
    s->persisted = v;
    s->have_persisted = 1;
    return 0;
}

int seq_open(seq_t *s, uint32_t chunk)
{
    uint8_t b[HAL_SLOT_SIZE];
    uint64_t v, best = 0;
    unsigned i, present = 0, valid = 0;
    if (chunk == 0u) {
        return -2;
    }
    s->chunk = chunk;
    s->slot = 0;
    s->have_persisted = 0;
    s->persisted = 0;
    for (i = 0; i < 2u; i++) {
        int rc = hal_slot_read(i, b);
        if (rc == 1) {
            continue;
        }
        if (rc != 0) {
            return -2;
        }
        present++;
        if (slot_unpack(b, &v) == 0 && (valid == 0 || v > best)) {
            best = v;
            valid++;
            s->slot = i ^ 1u;
        }
    }
    if (present > 0u && valid == 0u) {
        return -1;
    }
    s->next = valid ? best + chunk + 1u : 0u;
    if (s->next > MAX_SEQ + 1u) {
        s->next = MAX_SEQ + 1u;
    }
    return s->next <= MAX_SEQ ? persist(s, s->next) : 0;
}

int seq_take(seq_t *s, uint64_t *out)
{
    uint64_t seq = s->next;
    if (seq > MAX_SEQ) {
        return -1;
    }
    if (seq % s->chunk == 0u && (!s->have_persisted || seq > s->persisted)) {
        int rc = persist(s, seq);
        if (rc != 0) {
            return rc;
        }
    }
    s->next = seq + 1u;
    *out = seq;
    return 0;
}

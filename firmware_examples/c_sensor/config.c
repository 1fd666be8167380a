#include "config.h"

#include <string.h>

#include "tl_crc.h"

int config_parse(config_t *cfg, const uint8_t *blob, size_t len)
{
    uint16_t crc;
    if (len != CONFIG_LEN || memcmp(blob, "TLC1", 4) != 0) {
        return -1;
    }
    crc = tl_crc16(blob, CONFIG_LEN - 2u, TL_CRC16_INIT);
    if (blob[108] != (uint8_t)(crc >> 8) || blob[109] != (uint8_t)(crc & 0xFFu)) {
        return -1;
    }
    if (blob[4] < 1u || blob[4] > 6u || blob[11] > 20u) {
        return -1;
    }
    cfg->kid_len = blob[4];
    memcpy(cfg->kid, blob + 5, 6);
    cfg->chunk = (uint32_t)1u << blob[11];
    memcpy(cfg->sign_sk, blob + 12, 64);
    memcpy(cfg->twin_pk, blob + 76, 32);
    return 0;
}

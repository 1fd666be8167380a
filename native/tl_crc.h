/* twinlink C core: CRC-16/CCITT-FALSE for serial records (line noise vs tampering). */
#ifndef TL_CRC_H
#define TL_CRC_H

#include <stddef.h>
#include <stdint.h>

#define TL_CRC16_INIT 0xFFFFu

/* Continue a CRC over data; start with TL_CRC16_INIT. Check value of "123456789": 0x29B1. */
uint16_t tl_crc16(const uint8_t *data, size_t len, uint16_t crc);

#endif

/* The provisioning blob a board stores next to its firmware (tools/mkconfig.py writes it from a
 * twinlink device bundle). Fixed layout, no parser needed:
 *
 *   offset  size
 *   0       4    magic "TLC1"
 *   4       1    kid length (1..6)
 *   5       6    kid, left-aligned, zero-padded
 *   11      1    sequence chunk K as log2 (e.g. 8 -> K = 256)
 *   12      64   Ed25519 secret key, libsodium form (seed || public key)
 *   76      32   the twin's X25519 public key
 *   108     2    CRC-16/CCITT-FALSE of bytes 0..107, big-endian
 *
 * The AEAD key and Common IV are derived on the device (X25519 + HKDF, tl_oscore_derive), so
 * the blob holds only what the bundle holds. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_LEN 110u

typedef struct {
    uint8_t kid[6];
    size_t kid_len;
    uint32_t chunk;
    uint8_t sign_sk[64];
    uint8_t twin_pk[32];
} config_t;

int config_parse(config_t *cfg, const uint8_t *blob, size_t len);

#endif

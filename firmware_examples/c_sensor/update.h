/* Firmware updates on the native/ core: verify a manifest (tl_update.h) and stream the image
 * into the second slot through hal_update.h, with a crash-safe install record.
 *
 * The update configuration blob (mkupdatecfg.py writes it from a device bundle):
 *
 *   offset  size
 *   0       4    magic "TLUC"
 *   4       1    number of update keys, 1..4
 *   5       128  update keys (Ed25519 public, 32 bytes each, unused ones zero)
 *   133     16   vendor-id (UUID)
 *   149     16   class-id (UUID)
 *   165     2    CRC-16/CCITT-FALSE of bytes 0..164, big-endian
 */
#ifndef UPDATE_H
#define UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "tl_update.h"

#define UPDATE_CFG_LEN 167u
#define UPDATE_CHUNK 512u
/* A HAL storage failure (not a refusal of the update). */
#define UPDATE_E_STORAGE (-1)

typedef struct {
    uint8_t keys[TL_UPDATE_MAX_KEYS][32];
    size_t n_keys;
    uint8_t vendor_id[16];
    uint8_t class_id[16];
} update_cfg_t;

typedef struct {
    int code;         /* TL_OK, a tl_update.h / tl_error.h code, or UPDATE_E_STORAGE */
    int already;      /* 1: this manifest was installed before; nothing was done */
    uint64_t seq;
    uint64_t bytes;   /* image bytes written to the second slot */
} update_result_t;

int update_config_parse(update_cfg_t *c, const uint8_t *blob, size_t len);

/* The whole update: config, record, manifest, checks, image into slot 2, record, hand-off.
 * The record (new seq) is durable before the slot is handed to the bootloader; a refusal
 * changes nothing but the (never handed-off) contents of slot 2. Returns res->code. */
int update_apply(update_result_t *res);

/* Verification only, nothing written: authenticate and check the manifest, stream the image
 * through the digest. Returns TL_OK or the refusal code (for measuring stack and speed). */
int update_verify_only(void);

/* c_sensor --update ... / --update-bench ... (see main.c's usage). */
int update_main(int argc, char **argv);

#endif

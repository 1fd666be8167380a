/* What firmware updates need from a board, beside hal.h. hal_posix_update.c implements it on a
 * POSIX host (files in the state directory); a board implements it over its flash driver and
 * its bootloader's API (MCUboot: the secondary slot and boot_set_pending()). Every function
 * returns 0 on success, non-zero on failure. */
#ifndef HAL_UPDATE_H
#define HAL_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#define HAL_UPDATE_RECORD_SIZE 192u

/* The update configuration blob (update keys, vendor-id, class-id; layout in update.h). */
int hal_update_config_read(uint8_t *buf, size_t cap, size_t *len);

/* The incoming update as the downlink delivers it: the manifest, then the image chunk by
 * chunk (*len = 0 at the end). The host build reads two files. */
int hal_update_manifest_read(uint8_t *buf, size_t cap, size_t *len);
int hal_update_image_next(uint8_t *buf, size_t cap, size_t *len);

/* The second image slot (the one not running): its capacity in bytes, erase, write at an
 * offset, flush (durable when it returns), and hand it to the bootloader for the next boot. */
uint64_t hal_slot2_capacity(void);
int hal_slot2_erase(void);
int hal_slot2_write(uint64_t offset, const uint8_t *p, size_t n);
int hal_slot2_flush(void);
int hal_slot2_mark_pending(void);

/* Two persistent records for the install record, written alternately and durably (the rules
 * of hal_slot_read/hal_slot_write in hal.h: read returns 1 if never written). */
int hal_update_record_read(unsigned slot, uint8_t buf[HAL_UPDATE_RECORD_SIZE]);
int hal_update_record_write(unsigned slot, const uint8_t buf[HAL_UPDATE_RECORD_SIZE]);

#endif

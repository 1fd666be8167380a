#ifndef HAL_POSIX_UPDATE_H
#define HAL_POSIX_UPDATE_H

#include "hal_update.h"

/* After hal_posix_init: the update configuration, manifest and image files, and the size of
 * the second slot. */
int hal_posix_update_init(const char *update_cfg, const char *manifest, const char *image,
                          uint64_t slot_capacity);

#endif

#ifndef HAL_POSIX_H
#define HAL_POSIX_H

#include "hal.h"

/* Open the UART device, the state directory (created 0700) and remember the config path. */
int hal_posix_init(const char *uart_path, const char *state_dir, const char *cfg_path);

/* A small file in the state directory: read (1 if absent), or replace durably (temp file,
 * fsync, rename, fsync of the directory). The descriptor of the state directory. */
int hal_posix_get(const char *name, uint8_t *buf, size_t n);
int hal_posix_put(const char *name, const uint8_t *buf, size_t n);
int hal_posix_state_fd(void);
/* Read up to cap bytes of the file at path (one read: the blobs are small). */
int hal_posix_read_file(const char *path, uint8_t *buf, size_t cap, size_t *len);

#endif

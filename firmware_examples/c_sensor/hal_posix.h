#ifndef HAL_POSIX_H
#define HAL_POSIX_H

#include "hal.h"

/* Open the UART device, the state directory (created 0700) and remember the config path. */
int hal_posix_init(const char *uart_path, const char *state_dir, const char *cfg_path);

#endif

/* The firmware's hardware abstraction: all it needs from a board. hal_posix.c implements it on a
 * POSIX host (a pty or serial device, two files for the sequence slots, the system clock); a
 * board port implements the same functions over its UART driver, a flash page pair and its RTC.
 * Every function returns 0 on success, non-zero on failure. */
#ifndef HAL_H
#define HAL_H

#include <stddef.h>
#include <stdint.h>

#define HAL_SLOT_SIZE 16u

/* The device configuration blob (written at provisioning; see config.h) into buf. */
int hal_config_read(uint8_t *buf, size_t cap, size_t *len);

/* Write all n bytes to the UART (blocking). */
int hal_uart_write(const uint8_t *p, size_t n);

/* Persistent storage for the sequence reservation: two slots of HAL_SLOT_SIZE bytes. read
 * returns 1 if the slot was never written. write must be durable when it returns (flash:
 * erase+program+verify; POSIX: temp file, fsync, rename, fsync of the directory). */
int hal_slot_read(unsigned slot, uint8_t buf[HAL_SLOT_SIZE]);
int hal_slot_write(unsigned slot, const uint8_t buf[HAL_SLOT_SIZE]);

/* Unix time in seconds, or 0 if the clock is not set. */
uint64_t hal_clock_unix(void);
void hal_sleep_ms(uint32_t ms);

/* The sensor: temperature in degrees Celsius. */
int hal_sensor_read(double *celsius);

#endif

/* The HAL on a POSIX host: the UART is a tty (a pty in the tests), the two sequence slots are
 * files in a state directory, the clock is the system clock, the sensor is simulated. */
#define _POSIX_C_SOURCE 200809L

#include "hal_posix.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int uart_fd = -1;
static int state_fd = -1;
static const char *config_path;
static unsigned sensor_step;

int hal_posix_init(const char *uart_path, const char *state_dir, const char *cfg_path)
{
    struct termios t;
    uart_fd = open(uart_path, O_WRONLY | O_NOCTTY);
    if (uart_fd < 0) {
        return -1;
    }
    if (tcgetattr(uart_fd, &t) == 0) { /* raw 8N1; not a tty (a file) is fine too */
        t.c_iflag = 0;
        t.c_oflag = 0;
        t.c_lflag = 0;
        t.c_cflag = (t.c_cflag & ~(tcflag_t)(CSIZE | PARENB)) | CS8 | CLOCAL;
        (void)cfsetospeed(&t, B115200);
        (void)tcsetattr(uart_fd, TCSANOW, &t);
    }
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        return -1;
    }
    state_fd = open(state_dir, O_RDONLY | O_DIRECTORY);
    config_path = cfg_path;
    return state_fd < 0 ? -1 : 0;
}

int hal_posix_read_file(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    ssize_t n;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return -1;
    }
    n = read(fd, buf, cap);
    (void)close(fd);
    if (n < 0) {
        return -1;
    }
    *len = (size_t)n;
    return 0;
}

int hal_config_read(uint8_t *buf, size_t cap, size_t *len)
{
    return hal_posix_read_file(config_path, buf, cap, len);
}

int hal_uart_write(const uint8_t *p, size_t n)
{
    while (n > 0u) {
        ssize_t w = write(uart_fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static const char *const slot_names[2] = {"seq.a", "seq.b"};

int hal_posix_get(const char *name, uint8_t *buf, size_t n)
{
    ssize_t got;
    int fd = openat(state_fd, name, O_RDONLY);
    if (fd < 0) {
        return errno == ENOENT ? 1 : -1;
    }
    memset(buf, 0, n);
    got = read(fd, buf, n); /* a short (torn) record fails its CRC */
    (void)close(fd);
    return got < 0 ? -1 : 0;
}

int hal_posix_put(const char *name, const uint8_t *buf, size_t n)
{
    char tmp[64];
    int fd;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", name) >= (int)sizeof tmp) {
        return -1;
    }
    fd = openat(state_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        return -1;
    }
    if (write(fd, buf, n) != (ssize_t)n || fsync(fd) != 0) {
        (void)close(fd);
        return -1;
    }
    if (close(fd) != 0 || renameat(state_fd, tmp, state_fd, name) != 0) {
        return -1;
    }
    return fsync(state_fd);
}

int hal_posix_state_fd(void)
{
    return state_fd;
}

int hal_slot_read(unsigned slot, uint8_t buf[HAL_SLOT_SIZE])
{
    return hal_posix_get(slot_names[slot & 1u], buf, HAL_SLOT_SIZE);
}

int hal_slot_write(unsigned slot, const uint8_t buf[HAL_SLOT_SIZE])
{
    return hal_posix_put(slot_names[slot & 1u], buf, HAL_SLOT_SIZE);
}

uint64_t hal_clock_unix(void)
{
    time_t t = time(NULL);
    return t > 0 ? (uint64_t)t : 0u;
}

void hal_sleep_ms(uint32_t ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000u);
    ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int hal_sensor_read(double *celsius)
{
    /* Simulated: a sawtooth 20.00 .. 21.75 in quarter degrees (exact in binary floats). */
    *celsius = 20.0 + 0.25 * (double)(sensor_step++ % 8u);
    return 0;
}

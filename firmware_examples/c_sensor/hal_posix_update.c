/* hal_update.h on a POSIX host: the update configuration, the incoming manifest and image are
 * files named on the command line; the second image slot is slot2.img in the state directory
 * (opened by hal_posix_init), "marked pending" by a slot2.pending file the way a bootloader
 * flag would be; the install records are update.a / update.b there. */
#define _POSIX_C_SOURCE 200809L

#include "hal_posix_update.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "hal_posix.h"

static const char *update_cfg_path, *manifest_path, *image_path;
static uint64_t capacity;
static int image_fd = -1, slot_fd = -1;

int hal_posix_update_init(const char *update_cfg, const char *manifest, const char *image,
                          uint64_t slot_capacity)
{
    update_cfg_path = update_cfg;
    manifest_path = manifest;
    image_path = image;
    capacity = slot_capacity;
    return 0;
}

int hal_update_config_read(uint8_t *buf, size_t cap, size_t *len)
{
    return hal_posix_read_file(update_cfg_path, buf, cap, len);
}

int hal_update_manifest_read(uint8_t *buf, size_t cap, size_t *len)
{
    return hal_posix_read_file(manifest_path, buf, cap, len);
}

int hal_update_image_next(uint8_t *buf, size_t cap, size_t *len)
{
    ssize_t n;
    if (image_fd < 0 && (image_fd = open(image_path, O_RDONLY)) < 0) {
        return -1;
    }
    do {
        n = read(image_fd, buf, cap);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        (void)close(image_fd);
        image_fd = -1;
    }
    *len = n > 0 ? (size_t)n : 0u;
    return n < 0 ? -1 : 0;
}

uint64_t hal_slot2_capacity(void)
{
    return capacity;
}

/* Erasing the slot also erases its hand-off flag (as erasing a flash slot erases the image
 * trailer a bootloader reads): a half-written slot is never pending. */
int hal_slot2_erase(void)
{
    if (unlinkat(hal_posix_state_fd(), "slot2.pending", 0) != 0 && errno != ENOENT) {
        return -1;
    }
    if (slot_fd >= 0) {
        (void)close(slot_fd);
    }
    slot_fd = openat(hal_posix_state_fd(), "slot2.img", O_RDWR | O_CREAT | O_TRUNC, 0600);
    return slot_fd < 0 ? -1 : 0;
}

int hal_slot2_write(uint64_t offset, const uint8_t *p, size_t n)
{
    while (n > 0u) {
        ssize_t w = pwrite(slot_fd, p, n, (off_t)offset);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
        offset += (uint64_t)w;
    }
    return 0;
}

int hal_slot2_flush(void)
{
    return (slot_fd < 0 || fsync(slot_fd) != 0) ? -1 : fsync(hal_posix_state_fd());
}

int hal_slot2_mark_pending(void)
{
    static const uint8_t flag[8] = {'P', 'E', 'N', 'D', 'I', 'N', 'G', '\n'};
    return hal_posix_put("slot2.pending", flag, sizeof flag);
}

static const char *const record_names[2] = {"update.a", "update.b"};

int hal_update_record_read(unsigned slot, uint8_t buf[HAL_UPDATE_RECORD_SIZE])
{
    return hal_posix_get(record_names[slot & 1u], buf, HAL_UPDATE_RECORD_SIZE);
}

int hal_update_record_write(unsigned slot, const uint8_t buf[HAL_UPDATE_RECORD_SIZE])
{
    return hal_posix_put(record_names[slot & 1u], buf, HAL_UPDATE_RECORD_SIZE);
}

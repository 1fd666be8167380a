/* c_sensor: firmware-style twinlink/1 sender on the native/ C core.
 *
 * Static buffers only, no heap: every buffer below is sized at compile time from the core's
 * TL_*_BOUND macros. The loop: read the sensor, encode a SenML record, seal it (Ed25519-signed
 * COSE over ChaCha20-Poly1305, tl_seal), frame it (CRC-16 + COBS + 0x00), write it to the UART.
 *
 * Host build usage:  c_sensor UART CONFIG STATE_DIR [COUNT [INTERVAL_MS]]
 *                    c_sensor --bench CONFIG N      (seal+frame N readings, report frames/s)
 *                    c_sensor --update ... / --update-bench ...   (update_main.c)
 * COUNT 0 runs until killed. Exit: 0 done, 1 usage, 2 config, 3 storage, 4 crypto, 5 UART.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "hal_posix.h"
#include "senml.h"
#include "seq.h"
#include "stackmeter.h"
#include "tl_cobs.h"
#include "tl_crc.h"
#include "tl_crypto.h"
#include "tl_error.h"
#include "tl_frame.h"
#include "tl_oscore.h"
#include "update.h"

int tl_crypto_sodium_init(void);

#define PT_MAX 48u
#define STREAM_LEN 1u
#define FRAME_MAX TL_SEAL_FRAME_BOUND(PT_MAX)
#define REC_MAX (TL_COBS_BOUND(FRAME_MAX + 2u) + 2u)

static const uint8_t stream[STREAM_LEN] = {'t'};
static config_t cfg;
static uint8_t key[32], common_iv[12];
static uint8_t cfg_blob[CONFIG_LEN + 1u];
static uint8_t pt[PT_MAX];
static uint8_t frame[FRAME_MAX + 2u];
static uint8_t work[TL_SEAL_WORK_BOUND(PT_MAX, STREAM_LEN)];
static uint8_t record[REC_MAX];
static seq_t seq;

/* Derive the pairwise context on the device: X25519(device key as X25519, twin key) -> HKDF. */
static int derive(void)
{
    uint8_t x_sk[32], secret[32];
    int rc = tl_crypto_ed25519_sk_to_x25519(x_sk, cfg.sign_sk) ||
             tl_crypto_x25519(secret, x_sk, cfg.twin_pk) ||
             tl_oscore_derive(key, common_iv, secret, 32, NULL, 0, cfg.kid, cfg.kid_len, 0, NULL,
                              0);
    tl_crypto_wipe(x_sk, sizeof x_sk);
    tl_crypto_wipe(secret, sizeof secret);
    return rc;
}

/* Seal one reading with sequence number s and frame it into record[1..]; record[0] = 0x00
 * ends any garbage on the line. Returns the record length, or 0 on failure. */
static size_t seal_record(uint64_t s, double celsius, uint64_t now)
{
    size_t frame_len = sizeof frame, rec_len = sizeof record - 1u;
    size_t pt_len = senml_encode1(pt, sizeof pt, "temp", celsius, now != 0u, (double)now);
    uint16_t crc;
    if (pt_len == 0u || tl_seal(frame, &frame_len, work, sizeof work, cfg.sign_sk, cfg.kid,
                                cfg.kid_len, key, common_iv, stream, STREAM_LEN, s, pt,
                                pt_len) != TL_OK) {
        return 0;
    }
    crc = tl_crc16(frame, frame_len, TL_CRC16_INIT);
    frame[frame_len] = (uint8_t)(crc >> 8);
    frame[frame_len + 1u] = (uint8_t)(crc & 0xFFu);
    record[0] = 0x00;
    if (tl_cobs_encode(record + 1, &rec_len, frame, frame_len + 2u) != TL_OK) {
        return 0;
    }
    record[1u + rec_len] = 0x00;
    return rec_len + 2u;
}

static int load_config(void)
{
    size_t len = 0;
    if (hal_config_read(cfg_blob, sizeof cfg_blob, &len) != 0 ||
        config_parse(&cfg, cfg_blob, len) != 0) {
        return -1;
    }
    tl_crypto_wipe(cfg_blob, sizeof cfg_blob);
    return derive();
}

/* Peak stack of one seal, measured by stack painting (stackmeter.c). */
static size_t measured_len;

static void *seal_once(void *arg)
{
    (void)arg;
    measured_len = seal_record(1, 21.5, 1700000000u);
    return NULL;
}

static size_t seal_stack_bytes(void)
{
    size_t used = stack_peak(seal_once, NULL);
    return measured_len == 0u ? 0u : used;
}

static int bench(long n)
{
    struct timespec a, b;
    double secs;
    size_t used = seal_stack_bytes();
    long i;
    if (used == 0u) {
        return 4;
    }
    (void)clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < n; i++) {
        if (seal_record((uint64_t)i, 21.5, 1700000000u) == 0) {
            return 4;
        }
    }
    (void)clock_gettime(CLOCK_MONOTONIC, &b);
    secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("{\"frames\": %ld, \"seconds\": %.6f, \"frames_per_s\": %.1f, "
           "\"seal_stack_bytes\": %zu, \"record_bytes\": %zu}\n",
           n, secs, (double)n / secs, used, seal_record(0, 21.5, 1700000000u));
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long count = 0, interval = 1000, sent;
    if (tl_crypto_sodium_init() != 0) {
        return 4;
    }
    if (argc > 1 && strncmp(argv[1], "--update", 8) == 0) {
        return update_main(argc, argv);
    }
    if (argc == 4 && strcmp(argv[1], "--bench") == 0) {
        if (hal_posix_init("/dev/null", "/tmp", argv[2]) != 0 || load_config() != 0) {
            return 2;
        }
        return bench(strtol(argv[3], NULL, 10));
    }
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s UART CONFIG STATE_DIR [COUNT [INTERVAL_MS]]\n"
                        "       %s --bench CONFIG N\n", argv[0], argv[0]);
        return 1;
    }
    if (argc > 4) {
        count = strtoul(argv[4], NULL, 10);
    }
    if (argc > 5) {
        interval = strtoul(argv[5], NULL, 10);
    }
    if (hal_posix_init(argv[1], argv[3], argv[2]) != 0) {
        fprintf(stderr, "c_sensor: cannot open %s or state dir %s\n", argv[1], argv[3]);
        return 3;
    }
    if (load_config() != 0) {
        fprintf(stderr, "c_sensor: bad config %s\n", argv[2]);
        return 2;
    }
    if (seq_open(&seq, cfg.chunk) != 0) {
        fprintf(stderr, "c_sensor: sequence state corrupt or unwritable\n");
        return 3;
    }
    for (sent = 0; count == 0u || sent < count; sent++) {
        uint64_t s;
        double celsius;
        size_t n;
        if (hal_sensor_read(&celsius) != 0) {
            continue;
        }
        if (seq_take(&seq, &s) != 0) {
            fprintf(stderr, "c_sensor: sequence numbers exhausted or storage failed\n");
            return 3;
        }
        n = seal_record(s, celsius, hal_clock_unix());
        if (n == 0u) {
            return 4;
        }
        /* Only the first record needs the leading 0x00; later ones follow a delimiter. */
        if (hal_uart_write(sent == 0u ? record : record + 1, sent == 0u ? n : n - 1u) != 0) {
            return 5;
        }
        if (interval > 0u && (count == 0u || sent + 1u < count)) {
            hal_sleep_ms((uint32_t)interval);
        }
    }
    tl_crypto_wipe(key, sizeof key);
    tl_crypto_wipe(&cfg, sizeof cfg);
    return 0;
}

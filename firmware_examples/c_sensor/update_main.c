/* c_sensor's update commands on the host (the downlink that will deliver updates is not there
 * yet, so manifest and image come from files through hal_posix_update.c):
 *
 *   c_sensor --update UPDATE_CFG STATE_DIR MANIFEST IMAGE [SLOT_BYTES]
 *       verify, write slot 2, record, hand off; prints one JSON line.
 *       Exit 0 installed (or already installed), 6 refused, 3 storage, 1 usage.
 *   c_sensor --update-bench UPDATE_CFG STATE_DIR MANIFEST IMAGE N
 *       peak stack of one verification (manifest + image digest), and N verifications timed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hal_posix.h"
#include "hal_posix_update.h"
#include "stackmeter.h"
#include "tl_error.h"
#include "update.h"

#define EXIT_REFUSED 6
#define DEFAULT_SLOT_BYTES (1024u * 1024u)

static int verify_rc;

static void *verify_once(void *arg)
{
    (void)arg;
    verify_rc = update_verify_only();
    return NULL;
}

static int bench(long n)
{
    struct timespec a, b;
    double secs;
    size_t used = stack_peak(verify_once, NULL);
    long i;
    if (used == 0u || verify_rc != TL_OK) {
        fprintf(stderr, "c_sensor: verification failed: %s\n", tl_update_reason(verify_rc));
        return EXIT_REFUSED;
    }
    (void)clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < n; i++) {
        if (update_verify_only() != TL_OK) {
            return EXIT_REFUSED;
        }
    }
    (void)clock_gettime(CLOCK_MONOTONIC, &b);
    secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("{\"verifications\": %ld, \"seconds\": %.6f, \"verifications_per_s\": %.1f, "
           "\"verify_stack_bytes\": %zu}\n", n, secs, (double)n / secs, used);
    return 0;
}

int update_main(int argc, char **argv)
{
    int is_bench = strcmp(argv[1], "--update-bench") == 0;
    unsigned long long slot = DEFAULT_SLOT_BYTES;
    update_result_t res;
    if (!((!is_bench && strcmp(argv[1], "--update") == 0 && (argc == 6 || argc == 7)) ||
          (is_bench && argc == 7))) {
        fprintf(stderr, "usage: %s --update UPDATE_CFG STATE_DIR MANIFEST IMAGE [SLOT_BYTES]\n"
                        "       %s --update-bench UPDATE_CFG STATE_DIR MANIFEST IMAGE N\n",
                argv[0], argv[0]);
        return 1;
    }
    if (!is_bench && argc == 7) {
        slot = strtoull(argv[6], NULL, 10);
    }
    if (hal_posix_init("/dev/null", argv[3], argv[2]) != 0 ||
        hal_posix_update_init(argv[2], argv[4], argv[5], (uint64_t)slot) != 0) {
        fprintf(stderr, "c_sensor: cannot open state dir %s\n", argv[3]);
        return 3;
    }
    if (is_bench) {
        return bench(strtol(argv[6], NULL, 10));
    }
    if (update_apply(&res) == TL_OK) {
        printf("{\"result\": \"%s\", \"seq\": %llu, \"bytes\": %llu}\n",
               res.already ? "already_installed" : "installed", (unsigned long long)res.seq,
               (unsigned long long)res.bytes);
        return 0;
    }
    if (res.code == UPDATE_E_STORAGE) {
        printf("{\"result\": \"error\", \"reason\": \"storage\"}\n");
        return 3;
    }
    printf("{\"result\": \"rejected\", \"reason\": \"%s\", \"code\": %d}\n",
           tl_update_reason(res.code), res.code);
    return EXIT_REFUSED;
}

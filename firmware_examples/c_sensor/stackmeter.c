#define _POSIX_C_SOURCE 200809L

#include "stackmeter.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define MEASURE_STACK (256u * 1024u)
static uint8_t measure_stack[MEASURE_STACK] __attribute__((aligned(64)));

size_t stack_peak(void *(*fn)(void *), void *arg)
{
    pthread_attr_t attr;
    pthread_t th;
    size_t i = 0;
    memset(measure_stack, 0xA5, sizeof measure_stack);
    if (pthread_attr_init(&attr) != 0 ||
        pthread_attr_setstack(&attr, measure_stack, sizeof measure_stack) != 0 ||
        pthread_create(&th, &attr, fn, arg) != 0 || pthread_join(th, NULL) != 0) {
        return 0;
    }
    while (i < sizeof measure_stack && measure_stack[i] == 0xA5) {
        i++;
    }
    return sizeof measure_stack - i;
}

#ifndef STACKMETER_H
#define STACKMETER_H

#include <stddef.h>

/* Peak stack of fn(arg): run it on a thread whose stack is a static buffer painted with a
 * pattern, then count how much of the pattern was overwritten (the stack grows down). Covers
 * the core, the crypto library and the C library as they run in this build. Returns 0 if the
 * thread could not be run. */
size_t stack_peak(void *(*fn)(void *), void *arg);

#endif

/* One-record SenML pack in deterministic CBOR: [{0: name, 2: value, -3: time}], floats in their
 * shortest exact form — the bytes twinlink.senml.encode({name: value}, time) produces. */
#ifndef SENML_H
#define SENML_H

#include <stddef.h>
#include <stdint.h>

/* Returns the encoded length, or 0 if it does not fit in cap or name is longer than 23 bytes.
 * has_time 0 omits the base time. */
size_t senml_encode1(uint8_t *out, size_t cap, const char *name, double value, int has_time,
                     double time);

#endif

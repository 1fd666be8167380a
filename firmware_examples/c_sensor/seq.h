/* Durable sequence numbers (RFC 8613 Appendix B.1.1) over the HAL's two storage slots. Before
 * a number divisible by K is used it is stored; after a restart numbering resumes at
 * stored + K + 1, and that start is stored before it is used. A reset at any instant skips at
 * most K + 1 numbers and never repeats one. */
#ifndef SEQ_H
#define SEQ_H

#include <stdint.h>

typedef struct {
    uint64_t next;
    uint64_t persisted;
    int have_persisted;
    uint32_t chunk;
    unsigned slot; /* the slot the next write goes to */
} seq_t;

/* 0 on success; -1 if both slots are present but corrupt (refuse to guess), -2 storage error. */
int seq_open(seq_t *s, uint32_t chunk);
/* 0 and *out on success; -1 when 2^40 is reached; -2 storage error. */
int seq_take(seq_t *s, uint64_t *out);

#endif

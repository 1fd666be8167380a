/* twinlink C core: the receiver's replay window (RFC 8613 §7.4), same decisions as
 * twinlink.replay.ReplayWindow.
 *
 * `size` sequence numbers at and below `top` (the highest accepted) are tracked. size <= 64 is
 * one uint64 shift register; larger windows are an RFC 6479 ring of caller-owned uint64
 * blocks (tl_window_blocks(size) of them), so advancing costs a few block clears, not a shift
 * of the whole bitmap. check never mutates; update is called only after the frame verified
 * and decrypted (and is idempotent). Persist with tl_window_export (the same bytes as
 * ReplayWindow.to_bytes) plus `top`; restore with tl_window_import. */
#ifndef TL_WINDOW_H
#define TL_WINDOW_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t top;      /* highest accepted sequence number; -1 before the first */
    uint32_t size;    /* window width, a positive multiple of 8 */
    uint32_t nblocks; /* 0: shift register in `bits`; else ring blocks in `ring` */
    uint64_t bits;    /* bit d set: top - d was accepted (size <= 64) */
    uint64_t *ring;   /* caller-owned, nblocks words, power of two (size > 64) */
} tl_window;

/* Ring blocks a window of `size` needs (0 for size <= 64). */
size_t tl_window_blocks(uint32_t size);

/* An empty window (accepts any seq). ring/nblocks are ignored for size <= 64; otherwise ring
 * must hold at least tl_window_blocks(size) words. TL_E_RANGE on a bad size or short ring. */
int tl_window_init(tl_window *w, uint32_t size, uint64_t *ring, size_t nblocks);

/* TL_OK if seq may be accepted, TL_E_REPLAY if it was, TL_E_TOO_OLD if below the window. */
int tl_window_check(const tl_window *w, uint64_t seq);

/* Mark seq accepted. TL_E_TOO_OLD (and nothing changes) if it is below the window. */
int tl_window_update(tl_window *w, uint64_t seq);

/* Bitfield as size/8 big-endian bytes, bit d (from the least significant) = top - d. */
int tl_window_export(uint8_t *out, size_t out_len, const tl_window *w);

/* Restore top and the bitfield written by tl_window_export (or ReplayWindow.to_bytes). */
int tl_window_import(tl_window *w, int64_t top, const uint8_t *in, size_t in_len);

#endif

#include "senml.h"

#include <string.h>

static size_t put_float(uint8_t *o, double x)
{
    uint64_t d;
    uint32_t f;
    float xf = (float)x;
    memcpy(&d, &x, 8);
    if ((double)xf != x) {
        unsigned i;
        o[0] = 0xFB;
        for (i = 0; i < 8u; i++) {
            o[1u + i] = (uint8_t)(d >> (56u - 8u * i));
        }
        return 9;
    }
    memcpy(&f, &xf, 4);
    {
        uint32_t sign = (f >> 31) << 15, e = (f >> 23) & 0xFFu, m = f & 0x7FFFFFu;
        int ex = (int)e - 127;
        int half_ok = 0;
        uint32_t h = 0;
        if (e == 0u && m == 0u) {
            half_ok = 1;
            h = sign;
        } else if (e != 0u && ex >= -14 && ex <= 15 && (m & 0x1FFFu) == 0u) {
            half_ok = 1;
            h = sign | ((uint32_t)(ex + 15) << 10) | (m >> 13);
        } else if (e != 0u && ex >= -24 && ex < -14) {
            uint32_t full = (1u << 23) | m;
            unsigned shift = (unsigned)(-(ex + 1));
            if ((full & ((1u << shift) - 1u)) == 0u) {
                half_ok = 1;
                h = sign | (full >> shift);
            }
        }
        if (half_ok) {
            o[0] = 0xF9;
            o[1] = (uint8_t)(h >> 8);
            o[2] = (uint8_t)(h & 0xFFu);
            return 3;
        }
    }
    o[0] = 0xFA;
    o[1] = (uint8_t)(f >> 24);
    o[2] = (uint8_t)(f >> 16);
    o[3] = (uint8_t)(f >> 8);
    o[4] = (uint8_t)f;
    return 5;
}

size_t senml_encode1(uint8_t *out, size_t cap, const char *name, double value, int has_time,
                     double time)
{
    uint8_t tmp[64];
    size_t n = 0, name_len = strlen(name);
    if (name_len == 0u || name_len > 23u) {
        return 0;
    }
    tmp[n++] = 0x81;                            /* array(1) */
    tmp[n++] = (uint8_t)(0xA0u + (has_time ? 3u : 2u)); /* map */
    tmp[n++] = 0x00;                            /* n */
    tmp[n++] = (uint8_t)(0x60u + name_len);
    memcpy(tmp + n, name, name_len);
    n += name_len;
    tmp[n++] = 0x02; /* v */
    n += put_float(tmp + n, value);
    if (has_time) {
        tmp[n++] = 0x22; /* bt (-3) */
        n += put_float(tmp + n, time);
    }
    if (n > cap) {
        return 0;
    }
    memcpy(out, tmp, n);
    return n;
}

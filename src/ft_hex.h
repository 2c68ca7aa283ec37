/* SPDX-License-Identifier: Apache-2.0
 * Fixed-width lowercase hex for ids, with strict parsing (no allocation). */
#ifndef FT_HEX_H
#define FT_HEX_H
#include <stdint.h>

static const char ft_hex_digits[] = "0123456789abcdef";

/* Writes exactly 16 lowercase hex digits of v into out. */
static inline void ft_u64_to_hex(uint64_t v, char *out) {
    for (int i = 15; i >= 0; i--) { out[i] = ft_hex_digits[v & 0xF]; v >>= 4; }
}

/* Value of one hex digit, or -1.  `lower_only` rejects A-F (W3C traceparent). */
static inline int ft_hex_value(uint32_t c, int lower_only) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (!lower_only && c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}
#endif

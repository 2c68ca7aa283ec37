/* Checks the word-at-a-time and SSE2 helpers of ft_codec.h against the scalar ones. */
#include <stdio.h>
#include <stdlib.h>
#include "ft_codec.h"

static uint64_t state = 0x9E3779B97F4A7C15ULL;
static uint64_t next(void) {   /* splitmix64 */
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int slow_hex16(const char *s, int lower_only, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        int h = ft_hex_value((unsigned char)s[i], lower_only);
        if (h < 0) return FT_INVALID;
        v = (v << 4) | (uint64_t)h;
    }
    *out = v;
    return FT_OK;
}

int main(void) {
    static const char alphabet[] = "0123456789abcdefABCDEFgxz:-\x80\xff \x00/";
    char buf[17], want[17];
    long failures = 0;
    ft_codec_init();
    for (long i = 0; i < 2000000; i++) {
        uint64_t v = next(), a = 0, b = 0;
        int ra, rb, lower = (int)(i & 1);
        {   /* big-endian integers of the binary format */
            unsigned char be[8];
            uint64_t back = 0;
            ft_put_u64be(be, v);
            for (int j = 0; j < 8; j++) back = (back << 8) | be[j];
            if (back != v || ft_get_u64be(be) != v) failures++;
        }
        ft_u64_hex(v, buf);
        ft_u64_to_hex(v, want);
        if (memcmp(buf, want, 16) != 0) failures++;
        /* mostly valid strings, with one or two bytes replaced from the alphabet */
        memcpy(buf, want, 16);
        if (i & 2) buf[next() % 16] = alphabet[next() % (sizeof alphabet - 1)];
        if (i & 4) buf[next() % 16] = alphabet[next() % (sizeof alphabet - 1)];
        ra = ft_hex16(buf, lower, &a);
        rb = slow_hex16(buf, lower, &b);
        if (ra != rb || (ra == FT_OK && a != b)) failures++;
        {   /* ft_has_upper over 1..40 bytes of random text */
            char text[40];
            ptrdiff_t n = 1 + (ptrdiff_t)(next() % 40);
            int upper = 0;
            for (ptrdiff_t j = 0; j < n; j++) {
                text[j] = (char)(next() % 4 ? 'a' + next() % 26 : next() % 256);
                upper |= text[j] >= 'A' && text[j] <= 'Z';
            }
            if (ft_has_upper(text, n) != upper) failures++;
        }
    }
    printf("%s %ld\n", failures ? "FAIL" : "OK", failures);
    return failures != 0;
}

/* SPDX-License-Identifier: Apache-2.0
 * Byte-level parsers and writers for the propagation codecs (fasttrace/_codec.pyx):
 * W3C traceparent / tracestate, B3, Jaeger uber-trace-id, percent-encoding.
 * Pure C, no Python API and no allocation: the caller hands in byte spans (the
 * UTF-8 buffer CPython already keeps for an ASCII str) and output buffers.
 * The grammars are documented at the top of _codec.pyx. */
#ifndef FT_CODEC_H
#define FT_CODEC_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "ft_hex.h"

/* Result codes shared by the parsers. */
#define FT_OK 0
#define FT_INVALID (-1)
#define FT_DUPLICATE (-2)
#define FT_TOO_MANY (-3)

/* For the small helpers of the hot paths: gcc keeps some of them out of line at -O2
 * (measured: ft_hex16 and ft_uber_parse were calls), which costs more than they do. */
#if defined(_MSC_VER)
#define FT_HOT static __forceinline
#elif defined(__GNUC__) || defined(__clang__)
#define FT_HOT static inline __attribute__((always_inline))
#else
#define FT_HOT static inline
#endif

static inline int ft_is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* Trims SP / HTAB (RFC 7230 OWS) from both ends of [*s, *s + *n). */
FT_HOT void ft_trim_ows(const char **s, ptrdiff_t *n) {
    const char *p = *s;
    ptrdiff_t len = *n;
    while (len > 0 && ft_is_ows((unsigned char)p[0])) { p++; len--; }
    while (len > 0 && ft_is_ows((unsigned char)p[len - 1])) len--;
    *s = p;
    *n = len;
}

/* Digit values for hex parsing, 0xff for anything else; filled by ft_codec_init(). */
static unsigned char ft_hex_any[256];     /* 0-9 a-f A-F */
static unsigned char ft_hex_lower[256];   /* 0-9 a-f (W3C HEXDIGLC) */
/* Two lowercase hex digits per byte value, for formatting. */
static char ft_hex_pairs[512];

/* ---- SWAR helpers: 8 bytes at a time in a uint64_t ----------------------------------- */

#if defined(_MSC_VER) && !defined(__clang__)
#include <stdlib.h>
#define ft_bswap32(x) _byteswap_ulong(x)
#define ft_bswap64(x) _byteswap_uint64(x)
#else
#define ft_bswap32(x) __builtin_bswap32(x)
#define ft_bswap64(x) __builtin_bswap64(x)
#endif

#define FT_ONES 0x0101010101010101ULL
#define FT_HIGHS 0x8080808080808080ULL

FT_HOT uint64_t ft_load8(const char *s) {
    uint64_t x;
    memcpy(&x, s, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = ft_bswap64(x);
#endif
    return x;   /* s[0] in the low byte */
}

FT_HOT void ft_store8(char *s, uint64_t x) {   /* s[0] from the low byte */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = ft_bswap64(x);
#endif
    memcpy(s, &x, 8);
}

/* High bit of each byte of x (all bytes < 0x80) set where lo <= byte <= hi. */
FT_HOT uint64_t ft_swar_in(uint64_t x, unsigned lo, unsigned hi) {
    return (x + (0x80u - lo) * FT_ONES) & ~(x + (0x7fu - hi) * FT_ONES) & FT_HIGHS;
}

/* Exactly 8 hex digits (s[0] most significant) -> *out; lower_only: no A-F.
 * Returns FT_OK or FT_INVALID; same results as the table-driven loop below. */
FT_HOT int ft_hex8(const char *s, int lower_only, uint32_t *out) {
    uint64_t x = ft_load8(s), ok, v;
    if (x & FT_HIGHS) return FT_INVALID;
    ok = ft_swar_in(x, '0', '9') | ft_swar_in(lower_only ? x : (x | 0x20 * FT_ONES), 'a', 'f');
    if (ok != FT_HIGHS) return FT_INVALID;
    /* digit: low nibble; letter (bit 6 set): low nibble + 9 */
    v = (x & 0x0f * FT_ONES) + ((x >> 6) & FT_ONES) * 9;
    /* byte 2k <- v[2k] << 4 | v[2k+1] */
    v = ((v << 4) | (v >> 8)) & 0x00ff00ff00ff00ffULL;
    v = (v | (v >> 8)) & 0x0000ffff0000ffffULL;
    v = (v | (v >> 16)) & 0xffffffffULL;
    *out = ft_bswap32((uint32_t)v);
    return FT_OK;
}

/* Exactly 16 hex digits -> *out. */
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
FT_HOT int ft_hex16(const char *s, int lower_only, uint64_t *out) {
    __m128i x = _mm_loadu_si128((const __m128i *)s);
    __m128i l = lower_only ? x : _mm_or_si128(x, _mm_set1_epi8(0x20));
    /* signed compares: bytes >= 0x80 are negative, below '0' and below 'a' */
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
                                  _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(l, _mm_set1_epi8('a' - 1)),
                                   _mm_cmplt_epi8(l, _mm_set1_epi8('f' + 1)));
    __m128i v, t;
    uint64_t r;
    if (_mm_movemask_epi8(_mm_or_si128(digit, letter)) != 0xffff) return FT_INVALID;
    /* digit value: low nibble, plus 9 for a letter */
    v = _mm_add_epi8(_mm_and_si128(x, _mm_set1_epi8(0x0f)),
                     _mm_and_si128(letter, _mm_set1_epi8(9)));
    /* 16-bit lane k holds digits 2k (low byte) and 2k+1: make it d[2k] << 4 | d[2k+1] */
    t = _mm_or_si128(_mm_slli_epi16(v, 4), _mm_srli_epi16(v, 8));
    t = _mm_and_si128(t, _mm_set1_epi16(0x00ff));
    t = _mm_packus_epi16(t, t);
    _mm_storel_epi64((__m128i *)&r, t);          /* little-endian: byte 0 is the first two digits */
    *out = ft_bswap64(r);
    return FT_OK;
}
#else
FT_HOT int ft_hex16(const char *s, int lower_only, uint64_t *out) {
    uint32_t a, b;
    if (ft_hex8(s, lower_only, &a) != FT_OK || ft_hex8(s + 8, lower_only, &b) != FT_OK)
        return FT_INVALID;
    *out = ((uint64_t)a << 32) | b;
    return FT_OK;
}
#endif

/* Whether any of the 8 bytes at s is an ASCII uppercase letter. */
FT_HOT int ft_has_upper8(const char *s) {
    uint64_t x = ft_load8(s);
    /* bytes >= 0x80 are never letters: test the low 7 bits only, then mask them out */
    uint64_t y = x & ~FT_HIGHS;
    return (ft_swar_in(y, 'A', 'Z') & ~x) != 0;
}

/* 1..16 hex digits -> *out.  Returns FT_OK or FT_INVALID. */
FT_HOT int ft_parse_hex64(const char *s, ptrdiff_t n, int lower_only, uint64_t *out) {
    const unsigned char *t = lower_only ? ft_hex_lower : ft_hex_any;
    uint64_t v = 0;
    unsigned bad = 0;
    if (n == 16) return ft_hex16(s, lower_only, out);
    if (n < 1 || n > 16) return FT_INVALID;
    for (ptrdiff_t i = 0; i < n; i++) {
        unsigned d = t[(unsigned char)s[i]];
        bad |= d;
        v = (v << 4) | (uint64_t)(d & 0xF);
    }
    if (bad & 0xF0) return FT_INVALID;
    *out = v;
    return FT_OK;
}

#if defined(__SSE2__) || defined(_M_X64)
/* Exactly 16 lowercase hex digits for v (same output as ft_u64_to_hex): both nibbles
 * of all 8 bytes at once. */
FT_HOT void ft_u64_hex(uint64_t v, char *out) {
    uint64_t be = ft_bswap64(v);                         /* most significant byte first */
    __m128i x = _mm_loadl_epi64((const __m128i *)&be);
    __m128i mask = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(x, mask);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(x, 4), mask);
    __m128i d = _mm_unpacklo_epi8(hi, lo);               /* digit values, in order */
    /* '0' + d, plus 39 more for a..f */
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(d, _mm_set1_epi8(9)), _mm_set1_epi8(39));
    _mm_storeu_si128((__m128i *)out,
                     _mm_add_epi8(_mm_add_epi8(d, _mm_set1_epi8('0')), letter));
}
#else
/* 8 lowercase hex digits for v, packed in a uint64_t (first digit in the low byte). */
FT_HOT uint64_t ft_u32_hex8(uint32_t v) {
    uint64_t x = ft_bswap32(v), d;             /* low byte: v's top byte */
    x = (x | (x << 16)) & 0x0000ffff0000ffffULL;
    x = (x | (x << 8)) & 0x00ff00ff00ff00ffULL;        /* byte 2k: k-th byte of v */
    x = ((x >> 4) & 0x000f000f000f000fULL) | ((x & 0x000f000f000f000fULL) << 8);
    /* each byte a digit value 0..15 -> '0' + d, plus 39 more for a..f */
    d = ((x + 6 * FT_ONES) >> 4) & FT_ONES;
    return x + '0' * FT_ONES + d * 39;
}

/* Exactly 16 lowercase hex digits for v (same output as ft_u64_to_hex). */
FT_HOT void ft_u64_hex(uint64_t v, char *out) {
    ft_store8(out, ft_u32_hex8((uint32_t)(v >> 32)));
    ft_store8(out + 8, ft_u32_hex8((uint32_t)v));
}
#endif

/* 1..32 hex digits -> (*hi, *lo).  Returns FT_OK or FT_INVALID. */
static inline int ft_parse_hex128(const char *s, ptrdiff_t n, int lower_only,
                                  uint64_t *hi, uint64_t *lo) {
    if (n < 1 || n > 32) return FT_INVALID;
    if (n <= 16) {
        *hi = 0;
        return ft_parse_hex64(s, n, lower_only, lo);
    }
    if (ft_parse_hex64(s, n - 16, lower_only, hi) != FT_OK) return FT_INVALID;
    return ft_parse_hex64(s + n - 16, 16, lower_only, lo);
}

/* ---- W3C traceparent (Trace Context Level 1, section 3.2) ------------------------ */

/* Parses an OWS-trimmed traceparent value.  Returns FT_OK or FT_INVALID. */
static inline int ft_traceparent_parse(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo,
                                       uint64_t *span, uint8_t *flags) {
    uint64_t version, f;
    /* shorter than 55 characters: restart the trace (spec: versioning of traceparent) */
    if (n < 55) return FT_INVALID;
    if (ft_parse_hex64(s, 2, 1, &version) != FT_OK || s[2] != '-') return FT_INVALID;
    if (version == 0xff) return FT_INVALID;
    if (version == 0 && n != 55) return FT_INVALID;
    /* a future version may carry more fields, always after a '-' */
    if (n > 55 && s[55] != '-') return FT_INVALID;
    if (ft_parse_hex128(s + 3, 32, 1, hi, lo) != FT_OK || s[35] != '-') return FT_INVALID;
    if (ft_parse_hex64(s + 36, 16, 1, span) != FT_OK || s[52] != '-') return FT_INVALID;
    if (ft_parse_hex64(s + 53, 2, 1, &f) != FT_OK) return FT_INVALID;
    if ((*hi == 0 && *lo == 0) || *span == 0) return FT_INVALID;
    *flags = (uint8_t)f;
    return FT_OK;
}

/* Writes the 55 characters of a version-00 traceparent. */
static inline void ft_traceparent_format(char *out, uint64_t hi, uint64_t lo, uint64_t span,
                                         uint8_t flags) {
    out[0] = '0'; out[1] = '0'; out[2] = '-';
    ft_u64_hex(hi, out + 3);
    ft_u64_hex(lo, out + 19);
    out[35] = '-';
    ft_u64_hex(span, out + 36);
    out[52] = '-';
    out[53] = ft_hex_digits[(flags >> 4) & 0xF];
    out[54] = ft_hex_digits[flags & 0xF];
}

/* ---- W3C tracestate ---------------------------------------------------------------- */

/* keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@" */
static inline int ft_ts_keychar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'
           || c == '*' || c == '/' || c == '@';
}

/* key = ( lcalpha / DIGIT ) 0*255( keychar ), the editor's draft grammar: "@" is an
 * ordinary key character, no longer the tenant/system separator of Level 1. */
static inline int ft_ts_key_ok(const char *k, ptrdiff_t n) {
    unsigned char c0;
    if (n < 1 || n > 256) return 0;
    c0 = (unsigned char)k[0];
    if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= '0' && c0 <= '9'))) return 0;
    for (ptrdiff_t i = 1; i < n; i++) {
        if (!ft_ts_keychar((unsigned char)k[i])) return 0;
    }
    return 1;
}

/* value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E */
static inline int ft_ts_value_ok(const char *v, ptrdiff_t n) {
    if (n < 1 || n > 256) return 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c > 0x7e || c == ',' || c == '=') return 0;
    }
    return v[n - 1] != ' ';
}

#define FT_TRACESTATE_MAX_MEMBERS 32

/* Validates a combined tracestate and writes its canonical form (members joined by
 * ',', no OWS, no empty members, a repeated key only where it first appears) to out,
 * which must hold n bytes.  Returns the number of members written (0 for an empty or
 * whitespace-only list), FT_INVALID for a malformed member, FT_TOO_MANY above 32
 * distinct keys. */
static inline int ft_tracestate_parse(const char *s, ptrdiff_t n, char *out, ptrdiff_t *out_len) {
    const char *keys[FT_TRACESTATE_MAX_MEMBERS];
    ptrdiff_t key_lens[FT_TRACESTATE_MAX_MEMBERS];
    int count = 0;
    ptrdiff_t pos = 0, w = 0;
    while (pos <= n) {
        ptrdiff_t end = pos;
        while (end < n && s[end] != ',') end++;
        {
            const char *m = s + pos;
            ptrdiff_t mn = end - pos;
            ft_trim_ows(&m, &mn);
            if (mn > 0) {
                const char *eq = memchr(m, '=', (size_t)mn);
                ptrdiff_t kn;
                int dup = 0;
                if (eq == NULL) return FT_INVALID;
                kn = eq - m;
                if (!ft_ts_key_ok(m, kn) || !ft_ts_value_ok(eq + 1, mn - kn - 1))
                    return FT_INVALID;
                for (int i = 0; i < count; i++) {
                    if (key_lens[i] == kn && memcmp(keys[i], m, (size_t)kn) == 0) {
                        dup = 1;
                        break;
                    }
                }
                /* the spec lets a vendor drop duplicates it did not generate; the
                 * left-most entry is the vendor's latest, and passing both on would make
                 * readers that reject duplicates (OpenTelemetry) drop the whole header */
                if (!dup) {
                    if (count == FT_TRACESTATE_MAX_MEMBERS) return FT_TOO_MANY;
                    keys[count] = m;
                    key_lens[count] = kn;
                    count++;
                    if (w > 0) out[w++] = ',';
                    memcpy(out + w, m, (size_t)mn);
                    w += mn;
                }
            }
        }
        pos = end + 1;
    }
    *out_len = w;
    return count;
}

/* ---- B3 (openzipkin/b3-propagation) ------------------------------------------------ */

#define FT_B3_DEFERRED (-1)
#define FT_B3_DENY 0
#define FT_B3_ACCEPT 1
#define FT_B3_DEBUG 2

/* A sampling state: "0", "1", "d".  Returns FT_B3_* or FT_INVALID. */
static inline int ft_b3_state(const char *s, ptrdiff_t n) {
    if (n != 1) return FT_INVALID;
    if (s[0] == '0') return FT_B3_DENY;
    if (s[0] == '1') return FT_B3_ACCEPT;
    if (s[0] == 'd') return FT_B3_DEBUG;
    return FT_INVALID;
}

/* A B3 trace id: 16 or 32 hex digits, not all zero. */
static inline int ft_b3_trace_id(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo) {
    if (n != 16 && n != 32) return FT_INVALID;
    if (ft_parse_hex128(s, n, 0, hi, lo) != FT_OK) return FT_INVALID;
    return (*hi == 0 && *lo == 0) ? FT_INVALID : FT_OK;
}

/* A B3 span id: 16 hex digits, not all zero. */
static inline int ft_b3_span_id(const char *s, ptrdiff_t n, uint64_t *out) {
    if (n != 16) return FT_INVALID;
    if (ft_parse_hex64(s, 16, 0, out) != FT_OK) return FT_INVALID;
    return *out == 0 ? FT_INVALID : FT_OK;
}

/* Parses a trimmed single b3 header.  Returns 1 when ids were found, 0 for the
 * sampling-only form, FT_INVALID otherwise; *state is FT_B3_*. */
static inline int ft_b3_parse(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo,
                              uint64_t *span, int *state) {
    const char *d1, *d2, *d3;
    uint64_t parent;
    if (n == 1) {
        *state = ft_b3_state(s, 1);
        return *state == FT_INVALID ? FT_INVALID : 0;
    }
    d1 = memchr(s, '-', (size_t)n);
    if (d1 == NULL) return FT_INVALID;
    if (ft_b3_trace_id(s, d1 - s, hi, lo) != FT_OK) return FT_INVALID;
    d2 = memchr(d1 + 1, '-', (size_t)(s + n - d1 - 1));
    if (d2 == NULL) {
        if (ft_b3_span_id(d1 + 1, s + n - d1 - 1, span) != FT_OK) return FT_INVALID;
        *state = FT_B3_DEFERRED;
        return 1;
    }
    if (ft_b3_span_id(d1 + 1, d2 - d1 - 1, span) != FT_OK) return FT_INVALID;
    d3 = memchr(d2 + 1, '-', (size_t)(s + n - d2 - 1));
    if (d3 == NULL) {
        *state = ft_b3_state(d2 + 1, s + n - d2 - 1);
        return *state == FT_INVALID ? FT_INVALID : 1;
    }
    *state = ft_b3_state(d2 + 1, d3 - d2 - 1);
    if (*state == FT_INVALID) return FT_INVALID;
    if (ft_b3_span_id(d3 + 1, s + n - d3 - 1, &parent) != FT_OK) return FT_INVALID;
    return 1;
}

/* X-B3-Sampled: "1"/"0" ("true"/"false" from old tracers, "d" tolerated).
 * Returns FT_B3_* or FT_INVALID. */
static inline int ft_b3_sampled(const char *s, ptrdiff_t n) {
    if (n == 1) return ft_b3_state(s, 1);
    if (n == 4 && (s[0] | 0x20) == 't' && (s[1] | 0x20) == 'r' && (s[2] | 0x20) == 'u'
        && (s[3] | 0x20) == 'e')
        return FT_B3_ACCEPT;
    if (n == 5 && (s[0] | 0x20) == 'f' && (s[1] | 0x20) == 'a' && (s[2] | 0x20) == 'l'
        && (s[3] | 0x20) == 's' && (s[4] | 0x20) == 'e')
        return FT_B3_DENY;
    return FT_INVALID;
}

/* ---- Jaeger uber-trace-id ---------------------------------------------------------- */

/* {trace-id}:{span-id}:{parent-span-id}:{flags}, hex without padding.  Returns FT_OK or
 * FT_INVALID (zero trace or span id included, as jaeger-client rejects them). */
FT_HOT int ft_uber_parse(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo,
                                uint64_t *span, uint64_t *parent, uint8_t *flags) {
    const char *c1, *c2, *c3, *end = s + n;
    uint64_t f;
    /* the usual shape, 16 or 32 digits then 16: fixed offsets, no search; anything
     * else (or anything wrong) takes the general path below, which decides */
    ptrdiff_t t = (n > 33 && s[32] == ':') ? 32 : ((n > 16 && s[16] == ':') ? 16 : 0);
    if (t != 0 && n >= t + 21 && s[t + 17] == ':') {
        const char *q = s + t + 18;
        /* the parent id is "0" from jaeger-client, jaeger-go and us (root of this hop) */
        c3 = (q[0] == '0' && q[1] == ':') ? q + 1 : q;
        while (c3 < end && *c3 != ':') c3++;
        if (c3 < end
            && (t == 32 ? ft_hex16(s, 0, hi) == FT_OK && ft_hex16(s + 16, 0, lo) == FT_OK
                        : (*hi = 0, ft_hex16(s, 0, lo) == FT_OK))
            && ft_hex16(s + t + 1, 0, span) == FT_OK
            && ft_parse_hex64(q, c3 - q, 0, parent) == FT_OK
            && ft_parse_hex64(c3 + 1, end - c3 - 1, 0, &f) == FT_OK && f <= 0xff) {
            if ((*hi == 0 && *lo == 0) || *span == 0) return FT_INVALID;
            *flags = (uint8_t)f;
            return FT_OK;
        }
    }
    c1 = memchr(s, ':', (size_t)n);
    if (c1 == NULL) return FT_INVALID;
    c2 = memchr(c1 + 1, ':', (size_t)(end - c1 - 1));
    if (c2 == NULL) return FT_INVALID;
    c3 = memchr(c2 + 1, ':', (size_t)(end - c2 - 1));
    if (c3 == NULL) return FT_INVALID;
    if (memchr(c3 + 1, ':', (size_t)(end - c3 - 1)) != NULL) return FT_INVALID;
    if (ft_parse_hex128(s, c1 - s, 0, hi, lo) != FT_OK) return FT_INVALID;
    if (ft_parse_hex64(c1 + 1, c2 - c1 - 1, 0, span) != FT_OK) return FT_INVALID;
    if (ft_parse_hex64(c2 + 1, c3 - c2 - 1, 0, parent) != FT_OK) return FT_INVALID;
    if (ft_parse_hex64(c3 + 1, end - c3 - 1, 0, &f) != FT_OK || f > 0xff) return FT_INVALID;
    if ((*hi == 0 && *lo == 0) || *span == 0) return FT_INVALID;
    *flags = (uint8_t)f;
    return FT_OK;
}

/* Writes {trace}:{span}:0:{flags} with a 16- or 32-digit trace id; returns the length. */
FT_HOT ptrdiff_t ft_uber_format(char *out, uint64_t hi, uint64_t lo, uint64_t span,
                                       uint8_t flags) {
    ptrdiff_t w = 0;
    if (hi != 0) { ft_u64_hex(hi, out); w = 16; }
    ft_u64_hex(lo, out + w); w += 16;
    out[w++] = ':';
    ft_u64_hex(span, out + w); w += 16;
    out[w++] = ':';
    out[w++] = '0';
    out[w++] = ':';
    if (flags >= 16) out[w++] = ft_hex_digits[(flags >> 4) & 0xF];
    out[w++] = ft_hex_digits[flags & 0xF];
    return w;
}

/* ---- percent-encoding (RFC 3986 section 2.1) ---------------------------------------- */

/* Character classes, one bit each, for bytes below 0x80. */
#define FT_CC_TCHAR 1         /* RFC 7230 token characters */
#define FT_CC_BAGGAGE 2       /* W3C baggage-octet */
#define FT_CC_UNRESERVED 4    /* RFC 3986 unreserved */

static unsigned char ft_cc_table[256];

/* Fills ft_cc_table; called once when _codec is imported. */
static inline void ft_codec_init(void) {
    for (int c = 0; c < 256; c++) {
        int h = ft_hex_value((unsigned)c, 0);
        ft_hex_any[c] = (unsigned char)(h < 0 ? 0xff : h);
        h = ft_hex_value((unsigned)c, 1);
        ft_hex_lower[c] = (unsigned char)(h < 0 ? 0xff : h);
        ft_hex_pairs[2 * c] = ft_hex_digits[c >> 4];
        ft_hex_pairs[2 * c + 1] = ft_hex_digits[c & 0xF];
    }
    for (int c = 0; c < 256; c++) {
        unsigned r = 0;
        if (c < 0x80 && c > 0x20 && c != 0x7f) {
            int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
            if (alnum || strchr("!#$%&'*+-.^_`|~", c)) r |= FT_CC_TCHAR;
            if (c != '"' && c != ',' && c != ';' && c != '\\') r |= FT_CC_BAGGAGE;
            if (alnum || strchr("-._~", c)) r |= FT_CC_UNRESERVED;
        }
        ft_cc_table[c] = (unsigned char)r;
    }
}

static inline unsigned ft_char_class(unsigned char c) { return ft_cc_table[c]; }

/* Whether every byte of s has class `cls`. */
static inline int ft_all_in_class(const char *s, ptrdiff_t n, unsigned cls) {
    for (ptrdiff_t i = 0; i < n; i++) {
        if (!(ft_char_class((unsigned char)s[i]) & cls)) return 0;
    }
    return 1;
}

/* Bytes kept as they are when encoding: class `cls`, except '%' (the escape itself)
 * and '+' (form decoders such as OpenTelemetry Python's read it as a space). */
static inline int ft_pct_keep(unsigned char c, unsigned cls) {
    return c != '%' && c != '+' && (ft_char_class(c) & cls);
}

/* Length of the percent-encoding of s. */
static inline ptrdiff_t ft_pct_encoded_len(const char *s, ptrdiff_t n, unsigned cls) {
    ptrdiff_t len = 0;
    for (ptrdiff_t i = 0; i < n; i++) len += ft_pct_keep((unsigned char)s[i], cls) ? 1 : 3;
    return len;
}

/* Writes the percent-encoding of s (uppercase hex digits, RFC 3986 section 2.1). */
static inline ptrdiff_t ft_pct_encode(const char *s, ptrdiff_t n, unsigned cls, char *out) {
    static const char upper[] = "0123456789ABCDEF";
    ptrdiff_t w = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (ft_pct_keep(c, cls)) {
            out[w++] = (char)c;
        } else {
            out[w++] = '%';
            out[w++] = upper[c >> 4];
            out[w++] = upper[c & 0xF];
        }
    }
    return w;
}

/* Decodes %XX escapes (either case) into out (n bytes suffice); a '%' not followed by
 * two hex digits is kept as it is, as urllib.parse.unquote does; with plus_is_space, a
 * '+' becomes a space (form decoding, urllib.parse.unquote_plus).  Returns the length. */
static inline ptrdiff_t ft_pct_decode_ex(const char *s, ptrdiff_t n, int plus_is_space, char *out) {
    ptrdiff_t w = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            int h = ft_hex_value((unsigned char)s[i + 1], 0);
            int l = ft_hex_value((unsigned char)s[i + 2], 0);
            if (h >= 0 && l >= 0) {
                out[w++] = (char)((h << 4) | l);
                i += 2;
                continue;
            }
        }
        out[w++] = (plus_is_space && s[i] == '+') ? ' ' : s[i];
    }
    return w;
}

static inline ptrdiff_t ft_pct_decode(const char *s, ptrdiff_t n, char *out) {
    return ft_pct_decode_ex(s, n, 0, out);
}

/* Whether s holds an ASCII uppercase letter. */
FT_HOT int ft_has_upper(const char *s, ptrdiff_t n) {
    if (n >= 8) {
        /* 8 bytes at a time; the last (possibly overlapping) 8 bytes cover the tail */
        for (ptrdiff_t i = 0; i + 8 < n; i += 8) {
            if (ft_has_upper8(s + i)) return 1;
        }
        return ft_has_upper8(s + n - 8);
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        if (s[i] >= 'A' && s[i] <= 'Z') return 1;
    }
    return 0;
}

/* ASCII lowercase copy of s into out (n bytes). */
static inline void ft_ascii_lower(const char *s, ptrdiff_t n, char *out) {
    for (ptrdiff_t i = 0; i < n; i++) {
        char c = s[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
}

/* Case-insensitive ASCII prefix test; `prefix` is lowercase. */
static inline int ft_has_prefix_ci(const char *s, ptrdiff_t n, const char *prefix, ptrdiff_t pn) {
    if (n < pn) return 0;
    for (ptrdiff_t i = 0; i < pn; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        if (c != prefix[i]) return 0;
    }
    return 1;
}

/* Header-name tests for the carrier scan, 8 bytes at a time.  For a letter L,
 * (b | 0x20) == lower(L) holds exactly for b in {L, upper(L)}. */
#define FT_LIT8(a, b, c, d, e, f, g, h)                                                 \
    ((uint64_t)(unsigned char)(a) | (uint64_t)(unsigned char)(b) << 8                   \
     | (uint64_t)(unsigned char)(c) << 16 | (uint64_t)(unsigned char)(d) << 24          \
     | (uint64_t)(unsigned char)(e) << 32 | (uint64_t)(unsigned char)(f) << 40          \
     | (uint64_t)(unsigned char)(g) << 48 | (uint64_t)(unsigned char)(h) << 56)

/* "uberctx-" prefix, ASCII case-insensitive (same as ft_has_prefix_ci). */
FT_HOT int ft_is_uberctx(const char *s, ptrdiff_t n) {
    if (n < 8) return 0;
    return (ft_load8(s) | 0x0020202020202020ULL) == FT_LIT8('u', 'b', 'e', 'r', 'c', 't', 'x', '-');
}

/* "jaeger-" prefix, ASCII case-insensitive (same as ft_has_prefix_ci). */
FT_HOT int ft_is_jaeger(const char *s, ptrdiff_t n) {
    uint64_t x = 0;
    if (n < 7) return 0;
    memcpy(&x, s, 7);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = ft_bswap64(x);
#endif
    return (x | 0x0000202020202020ULL) == FT_LIT8('j', 'a', 'e', 'g', 'e', 'r', '-', 0);
}

/* Exactly "uber-trace-id" (lowercase). */
FT_HOT int ft_is_uber_trace_id(const char *s, ptrdiff_t n) {
    return n == 13 && ft_load8(s) == FT_LIT8('u', 'b', 'e', 'r', '-', 't', 'r', 'a')
           && ft_load8(s + 5) == FT_LIT8('t', 'r', 'a', 'c', 'e', '-', 'i', 'd');
}

/* ---- big-endian integers for the binary format --------------------------------------- */

/* One unaligned 8-byte move and a byte swap (gcc at -O2 did not merge the byte loop). */
FT_HOT void ft_put_u64be(unsigned char *p, uint64_t v) {
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    v = ft_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

FT_HOT uint64_t ft_get_u64be(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    v = ft_bswap64(v);
#endif
    return v;
}
#endif

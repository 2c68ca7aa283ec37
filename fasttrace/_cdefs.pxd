# SPDX-License-Identifier: Apache-2.0
# The only file that names the C headers in src/.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "ft_clock.h" nogil:
    # only fasttrace/_span.pyx calls these two (the others use its now_ns(): each
    # module including the header would have its own, uncalibrated, clock state)
    void ft_clock_init()
    int64_t ft_now_ns()
    int64_t ft_system_now_ns()
    int64_t ft_monotonic_ns()
    int64_t ft_coarse_monotonic_ns()
    int ft_clock_uses_tsc()

cdef extern from "ft_rand.h" nogil:
    void ft_rng_init()
    int ft_fork_gen()
    uint64_t ft_rand64()
    uint64_t ft_rand_nonzero()

cdef extern from "ft_pytype.h":
    int ft_type_adopt(object type, object api_base, Py_ssize_t dictoffset,
                      void (*before_dealloc)(object) noexcept) except -1
    void ft_instance_dict_init(object o) noexcept

cdef extern from "ft_pyutil.h":
    void ft_list_set(list lst, Py_ssize_t i, object value) noexcept
    void ft_list_move(list dst, Py_ssize_t j, list src, Py_ssize_t i) noexcept
    void ft_list_swap(list lst, Py_ssize_t a, Py_ssize_t b) noexcept
    # NULL (an exception set) raises, as for any object a function returns
    dict ft_log_snapshot(dict d, Py_ssize_t max_len, int *plain)
    void ft_yield() noexcept nogil
    void ft_prefetch(const void *p) noexcept nogil

# Propagation codecs (fasttrace/_carrier.pyx and the format modules); see src/ft_codec.h.
from libc.stddef cimport ptrdiff_t

cdef extern from "ft_codec.h" nogil:
    enum:
        FT_OK
        FT_INVALID
        FT_DUPLICATE
        FT_TOO_MANY
        FT_B3_DEFERRED
        FT_B3_DENY
        FT_B3_ACCEPT
        FT_B3_DEBUG
        FT_CC_TCHAR
        FT_CC_BAGGAGE
        FT_CC_UNRESERVED
    void ft_codec_init()
    void ft_trim_ows(const char **s, ptrdiff_t *n)
    int ft_traceparent_parse(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo,
                             uint64_t *span, unsigned char *flags)
    void ft_traceparent_format(char *out, uint64_t hi, uint64_t lo, uint64_t span,
                               unsigned char flags)
    int ft_tracestate_parse(const char *s, ptrdiff_t n, char *out, ptrdiff_t *out_len)
    int ft_b3_parse(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo, uint64_t *span,
                    int *state)
    int ft_b3_trace_id(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo)
    int ft_b3_span_id(const char *s, ptrdiff_t n, uint64_t *out)
    int ft_b3_sampled(const char *s, ptrdiff_t n)
    int ft_uber_parse(const char *s, ptrdiff_t n, uint64_t *hi, uint64_t *lo, uint64_t *span,
                      uint64_t *parent, unsigned char *flags)
    ptrdiff_t ft_uber_format(char *out, uint64_t hi, uint64_t lo, uint64_t span,
                              unsigned char flags)
    int ft_all_in_class(const char *s, ptrdiff_t n, unsigned cls)
    ptrdiff_t ft_pct_encoded_len(const char *s, ptrdiff_t n, unsigned cls)
    ptrdiff_t ft_pct_encode(const char *s, ptrdiff_t n, unsigned cls, char *out)
    ptrdiff_t ft_pct_decode(const char *s, ptrdiff_t n, char *out)
    int ft_has_upper(const char *s, ptrdiff_t n)
    void ft_ascii_lower(const char *s, ptrdiff_t n, char *out)
    int ft_has_prefix_ci(const char *s, ptrdiff_t n, const char *prefix, ptrdiff_t pn)
    void ft_put_u64be(unsigned char *p, uint64_t v)
    uint64_t ft_get_u64be(const unsigned char *p)

# SPDX-License-Identifier: Apache-2.0
# The growable write buffer every wire encoder writes into, with its integer encodings.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from fasttrace._pyapi cimport PyErr_Clear, PyUnicode_AsUTF8AndSize

cdef struct WBuf:
    unsigned char *p
    Py_ssize_t n
    Py_ssize_t cap
    Py_ssize_t unprintable      # values sent as a placeholder (fasttrace._text)

cdef int wb_init(WBuf *b, Py_ssize_t cap) except -1
cdef void wb_free(WBuf *b) noexcept
cdef int wb_grow(WBuf *b, Py_ssize_t need) except -1
cdef bytes wb_take(WBuf *b)
cdef object wb_text(WBuf *b, object value)
cdef object wb_plain(WBuf *b, object s)


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define ft_wb_full(b, need) __builtin_expect(!!((b)->n + (need) > (b)->cap), 0)
    #else
    #define ft_wb_full(b, need) ((b)->n + (need) > (b)->cap)
    #endif
    """
    # the buffer lacks room for `need` more bytes (rarely true: hinted so to the compiler)
    bint wb_full "ft_wb_full" (WBuf *b, Py_ssize_t need) noexcept nogil


cdef inline int wb_reserve(WBuf *b, Py_ssize_t need) except -1:
    if wb_full(b, need):
        return wb_grow(b, need)
    return 0


cdef inline int w_byte(WBuf *b, unsigned char v) except -1:
    if wb_full(b, 1):
        wb_grow(b, 1)
    b.p[b.n] = v
    b.n += 1
    return 0


cdef inline int w_raw(WBuf *b, const void *src, Py_ssize_t n) except -1:
    if wb_full(b, n):
        wb_grow(b, n)
    memcpy(b.p + b.n, src, n)
    b.n += n
    return 0


cdef inline int w_varint(WBuf *b, uint64_t v) except -1:
    if wb_full(b, 10):
        wb_grow(b, 10)
    cdef unsigned char *p = b.p + b.n
    while v >= 0x80:
        p[0] = <unsigned char>(v | 0x80)
        v >>= 7
        p += 1
    p[0] = <unsigned char>v
    b.n = p + 1 - b.p
    return 0


cdef inline int w_be(WBuf *b, uint64_t v, int nbytes) except -1:
    if wb_full(b, nbytes):
        wb_grow(b, nbytes)
    cdef int k
    for k in range(nbytes):
        b.p[b.n + k] = <unsigned char>(v >> (8 * (nbytes - 1 - k)))
    b.n += nbytes
    return 0


cdef inline int w_le64(WBuf *b, uint64_t v) except -1:
    if wb_full(b, 8):
        wb_grow(b, 8)
    cdef int k
    for k in range(8):
        b.p[b.n + k] = <unsigned char>(v >> (8 * k))
    b.n += 8
    return 0


cdef inline uint64_t zigzag64(int64_t v) noexcept:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)


cdef inline uint64_t zigzag32(int32_t v) noexcept:
    return <uint32_t>((<uint32_t>v << 1) ^ <uint32_t>(v >> 31))


cdef inline int varint_len(uint64_t v) noexcept:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline const char *str_utf8(object s, Py_ssize_t *n) noexcept:
    """The UTF-8 CPython keeps on a str (or subclass: its characters, read without calling
    its methods); NULL, with no error set, when it has lone surrogates."""
    cdef const char *p = PyUnicode_AsUTF8AndSize(s, n)
    if p == NULL:
        PyErr_Clear()
    return p

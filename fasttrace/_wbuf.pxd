# SPDX-License-Identifier: Apache-2.0
# The growable write buffer every wire encoder writes into, with its integer encodings.
# put_* write without checking room (the caller reserved it); w_* reserve first.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

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
cdef const char *str_utf8(object s, Py_ssize_t *n) except? NULL


cdef inline int wb_reserve(WBuf *b, Py_ssize_t need) except -1:
    if b.n + need > b.cap:
        return wb_grow(b, need)
    return 0


cdef inline void put_varint(WBuf *b, uint64_t v) noexcept:
    cdef unsigned char *p = b.p + b.n
    while v >= 0x80:
        p[0] = <unsigned char>(v | 0x80)
        v >>= 7
        p += 1
    p[0] = <unsigned char>v
    b.n = p + 1 - b.p


cdef inline void put_be(WBuf *b, uint64_t v, int nbytes) noexcept:
    cdef int k
    for k in range(nbytes):
        b.p[b.n + k] = <unsigned char>(v >> (8 * (nbytes - 1 - k)))
    b.n += nbytes


cdef inline void put_le64(WBuf *b, uint64_t v) noexcept:
    cdef int k
    for k in range(8):
        b.p[b.n + k] = <unsigned char>(v >> (8 * k))
    b.n += 8


cdef inline int w_byte(WBuf *b, unsigned char v) except -1:
    if b.n + 1 > b.cap:
        wb_grow(b, 1)
    b.p[b.n] = v
    b.n += 1
    return 0


cdef inline int w_raw(WBuf *b, const void *src, Py_ssize_t n) except -1:
    if b.n + n > b.cap:
        wb_grow(b, n)
    memcpy(b.p + b.n, src, n)
    b.n += n
    return 0


cdef inline int w_varint(WBuf *b, uint64_t v) except -1:
    if b.n + 10 > b.cap:
        wb_grow(b, 10)
    put_varint(b, v)
    return 0


cdef inline int w_be(WBuf *b, uint64_t v, int nbytes) except -1:
    if b.n + nbytes > b.cap:
        wb_grow(b, nbytes)
    put_be(b, v, nbytes)
    return 0


cdef inline int w_le64(WBuf *b, uint64_t v) except -1:
    if b.n + 8 > b.cap:
        wb_grow(b, 8)
    put_le64(b, v)
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

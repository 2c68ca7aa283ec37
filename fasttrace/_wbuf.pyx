# SPDX-License-Identifier: Apache-2.0
"""The write buffer of the wire encoders (declared, with its inline writers, in _wbuf.pxd)."""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc

from fasttrace._text import placeholder as _placeholder, text as _py_text


cdef int wb_init(WBuf *b, Py_ssize_t cap) except -1:
    b.p = <unsigned char *>PyMem_Malloc(cap)
    if b.p == NULL:
        raise MemoryError()
    b.n = 0
    b.cap = cap
    b.unprintable = 0
    return 0


cdef void wb_free(WBuf *b) noexcept:
    PyMem_Free(b.p)
    b.p = NULL
    b.n = b.cap = 0


cdef int wb_grow(WBuf *b, Py_ssize_t need) except -1:
    # an empty buffer (p NULL, cap 0) starts at 64 KiB
    cdef Py_ssize_t cap = b.cap * 2 if b.cap else 1 << 16
    cdef unsigned char *p
    if cap < b.n + need:
        cap = b.n + need + 1024
    p = <unsigned char *>PyMem_Realloc(b.p, cap)
    if p == NULL:
        raise MemoryError()
    b.p = p
    b.cap = cap
    return 0


cdef bytes wb_take(WBuf *b):
    """The buffer's bytes, as a new bytes object."""
    return PyBytes_FromStringAndSize(<char *>b.p, b.n)


cdef object wb_text(WBuf *b, object value):
    """The text of a value that has no wire type of its own (`fasttrace._text`); a
    placeholder, counted in the buffer, when it cannot be printed."""
    s = _py_text(value)
    if s is None:
        b.unprintable += 1
        s = _placeholder(value)
    return s


cdef object wb_plain(WBuf *b, object s):
    """s as an exact str: a key that is hashed, compared or cached must not run code of
    a str subclass's own."""
    return s if type(s) is str else wb_text(b, s)

# SPDX-License-Identifier: Apache-2.0
"""C memory for SpanBatch columns, and the SpanBatch attributes that show them as numpy.

A drain allocates one `Block` for all of its numeric columns; each `Column` is a typed
view of part of it that exposes its items through the buffer protocol, so the encoders'
typed memoryviews read it directly and ``numpy.asarray(column)`` wraps it without a copy
(the array keeps the column, and so the block, alive).  Indexing, ``len``, slicing and
``tolist`` work on a Column without numpy.

`ArrayAttr` is the descriptor behind SpanBatch's column attributes: the instance dict
holds the column as given (a Column, or whatever array the batch was made with), and the
first read of the attribute replaces a Column there by its numpy array (numpy imported
then), so every later reader -- numpy code and the encoders alike -- sees the same memory.
"""
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

__all__ = ["ArrayAttr", "Block", "Column", "as_float", "empty", "numpy"]

cdef char _NO_DATA[8]           # where an empty column points (never read)


cdef class Block:
    def __dealloc__(self):
        if self.p != NULL:
            PyMem_Free(self.p)
            self.p = NULL


cdef Block new_block(Py_ssize_t nbytes):
    cdef Block block = Block.__new__(Block)
    if nbytes > 0:
        block.p = PyMem_Malloc(<size_t>nbytes)
        if block.p == NULL:
            raise MemoryError()
    block.nbytes = nbytes
    return block


cdef Py_ssize_t fmt_size(char fmt) noexcept:
    if fmt == FMT_U64 or fmt == FMT_I64:
        return 8
    if fmt == FMT_U32 or fmt == FMT_I32:
        return 4
    if fmt == FMT_U16:
        return 2
    return 1


cdef Column _view(object owner, char *data, char fmt, Py_ssize_t n):
    """n items of type `fmt` at `data`, which `owner` keeps alive."""
    cdef Column col = Column.__new__(Column)
    col.itemsize = fmt_size(fmt)
    col.fmt[0] = fmt
    col.fmt[1] = 0
    col.n = col.shape0 = n
    col.data = data if n > 0 else _NO_DATA
    col.owner = owner
    return col


cdef Column column_at(Block block, Py_ssize_t offset, char fmt, Py_ssize_t n):
    """n items of type `fmt` at `offset` bytes into `block` (which must hold them)."""
    return _view(block, (<char *>block.p) + offset, fmt, n)


cdef Column new_column(char fmt, Py_ssize_t n):
    """A column of n items (uninitialised) in a block of its own."""
    return column_at(new_block(n * fmt_size(fmt)), 0, fmt, n)


def empty(str code, Py_ssize_t n):
    """A new uninitialised Column of n items; `code` a struct code (Q q I i H B)."""
    if len(code) != 1 or code not in "QqIiHB":
        raise ValueError(f"unsupported column type {code!r}")
    if n < 0:
        raise ValueError("negative length")
    return new_column(<char>ord(code), n)


cdef class Column:
    """One column of a SpanBatch: `n` items of C memory, typed by the struct code `fmt`."""

    @property
    def format(self):
        return chr(self.fmt[0])

    @property
    def nbytes(self):
        return self.n * self.itemsize

    def __len__(self):
        return self.n

    cdef object item(self, Py_ssize_t i):
        cdef char f = self.fmt[0]
        if f == FMT_U64:
            return (<uint64_t *>self.data)[i]
        if f == FMT_I64:
            return (<int64_t *>self.data)[i]
        if f == FMT_U32:
            return (<uint32_t *>self.data)[i]
        if f == FMT_I32:
            return (<int32_t *>self.data)[i]
        if f == FMT_U16:
            return (<uint16_t *>self.data)[i]
        return (<uint8_t *>self.data)[i]

    def __getitem__(self, key):
        cdef Py_ssize_t i, start, stop, step
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            if step != 1:
                raise ValueError("Column slices are contiguous")
            if stop < start:
                stop = start
            return _view(self.owner, self.data + start * self.itemsize, self.fmt[0],
                         stop - start)
        i = key
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError("Column index out of range")
        return self.item(i)

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            yield self.item(i)

    def tolist(self):
        cdef Py_ssize_t i
        return [self.item(i) for i in range(self.n)]

    def __repr__(self):
        return f"<Column {self.format}[{self.n}]>"

    def __getbuffer__(self, Py_buffer *buf, int flags):
        buf.buf = self.data
        buf.obj = self
        buf.len = self.n * self.itemsize
        buf.readonly = 0
        buf.itemsize = self.itemsize
        buf.format = self.fmt if flags & PyBUF_FORMAT else NULL
        buf.ndim = 1
        buf.shape = &self.shape0 if flags & PyBUF_ND else NULL
        buf.strides = &self.itemsize if flags & PyBUF_STRIDES == PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer *buf):
        pass


def as_float(int64_t bits):
    """The float64 whose bits are `bits` (a TAG_FLOAT entry's tag_num)."""
    cdef double d
    memcpy(&d, &bits, sizeof(double))
    return d


cdef object _np = None


cpdef object numpy():
    """The numpy module, imported at the first call: the one place fasttrace imports it
    (`import fasttrace` must not: it starts BLAS threads)."""
    global _np
    if _np is None:
        import numpy as np
        _np = np
    return _np


cdef class ArrayAttr:
    """A SpanBatch column attribute: the column as a numpy array (see the module doc)."""
    cdef str name

    def __init__(self, str name):
        self.name = name

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype):
        if obj is None:
            return self
        cdef dict d = obj.__dict__
        value = d.get(self.name, _MISSING)
        if value is _MISSING:
            raise AttributeError(self.name)
        if type(value) is Column:
            value = numpy().asarray(value)
            d[self.name] = value
        return value

    def __set__(self, obj, value):
        obj.__dict__[self.name] = value

    def __delete__(self, obj):
        try:
            del obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None


cdef object _MISSING = object()

# SPDX-License-Identifier: Apache-2.0
# C memory for a batch's columns: one block per drain, each column a view of part of it
# that exposes its items through the buffer protocol (typed memoryviews and
# numpy.asarray read and write it in place, without a copy).

cdef class Block:
    """A PyMem_Malloc'd block, freed with the last column that views it."""
    cdef void *p
    cdef Py_ssize_t nbytes


cdef class Column:
    cdef char *data
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t itemsize
    cdef char fmt[2]            # the struct code and its NUL
    cdef Py_ssize_t shape0
    cdef readonly object owner  # what keeps `data` alive (a Block)

    cdef object item(self, Py_ssize_t i)


# the struct codes of the batch columns' C types
cdef enum:
    FMT_U64 = 81     # 'Q'
    FMT_I64 = 113    # 'q'
    FMT_U32 = 73     # 'I'
    FMT_I32 = 105    # 'i'
    FMT_U16 = 72     # 'H'
    FMT_U8 = 66      # 'B'

cdef Block new_block(Py_ssize_t nbytes)
cdef Column column_at(Block block, Py_ssize_t offset, char fmt, Py_ssize_t n)
cdef Column new_column(char fmt, Py_ssize_t n)
cdef Py_ssize_t fmt_size(char fmt) noexcept
cpdef object numpy()

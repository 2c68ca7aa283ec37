# SPDX-License-Identifier: Apache-2.0
# The SpanBatch contract (fasttrace/batch.py): the codes in its columns, defined here
# once for the arena, the encoders and (through fasttrace._layout) batch.py, and the typed
# view every encoder reads a batch through.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from fasttrace._context cimport FLAG_SAMPLED, FLAG_DEBUG

# tag_type: where a tag's value is
cdef enum:
    TAG_STR = 0        # a str, in tag_obj
    TAG_BOOL = 1       # in tag_num
    TAG_INT = 2        # in tag_num
    TAG_FLOAT = 3      # tag_num's bits are the float64
    TAG_BIGINT = 4     # an int beyond int64, kept exact as a Python int in tag_obj

# flags: the SpanContext bits (FLAG_SAMPLED, FLAG_DEBUG) and this one
cdef enum:
    FLAG_FIRST_REF_FOLLOWS = 64   # the parent reference is follows_from, not child_of
    FLAG_CONTEXT_PARENT = 32      # tail sampling only: the parent came as a context (remote,
                                  # extracted), so the span is a local root; cleared on export

# a name_id or tag_key that is not an index: the name/key table was full (or the string
# too long to intern); the name is then extras[i]["name"], the tag's tag_obj (key, value)
cdef enum:
    UNINTERNED = 0xFFFFFFFF


cpdef object raw_columns(object batch)
cpdef object raw_column(object batch, str name)


cdef class BatchView:
    """Typed views over a SpanBatch's columns, read the way SpanBatch reads them."""
    cdef Py_ssize_t n
    cdef const uint64_t[::1] hi
    cdef const uint64_t[::1] lo
    cdef const uint64_t[::1] sid
    cdef const uint64_t[::1] pid
    cdef const int64_t[::1] start
    cdef const int64_t[::1] end
    cdef const uint8_t[::1] flags
    cdef const uint32_t[::1] name_id
    cdef const int32_t[::1] tag_off
    cdef const uint32_t[::1] tag_key
    cdef const uint8_t[::1] tag_type
    cdef const int64_t[::1] tag_num
    cdef const int32_t[::1] log_off
    cdef const int64_t[::1] log_ts
    cdef list tag_obj
    cdef list log_fields
    cdef list extras
    cdef list names
    cdef list keys
    # shadowed(t, _shadow_end) of the span whose tags end at _shadow_end, for uninterned()
    cdef Py_ssize_t _shadow_end
    cdef set _shadow

    cdef object name(self, Py_ssize_t i)
    cdef set shadowed(self, Py_ssize_t t0, Py_ssize_t t1)
    cdef tuple uninterned_tag(self, Py_ssize_t t)
    cdef object uninterned(self, Py_ssize_t t, Py_ssize_t t1)

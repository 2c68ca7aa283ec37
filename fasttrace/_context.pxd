# SPDX-License-Identifier: Apache-2.0
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint64_t

# Bits of SpanContext.flags.  SAMPLED is bit 0 as in W3C trace-flags and Jaeger;
# DEBUG and FIREHOSE are Jaeger's bits; DEFERRED marks "no sampling decision was
# propagated" (B3 without a sampled field, Jaeger's debug-id-only context).
cdef enum:
    FLAG_SAMPLED = 1
    FLAG_DEBUG = 2
    FLAG_FIREHOSE = 8
    FLAG_DEFERRED = 16


cdef class SpanContext:
    cdef PyObject *_dict                # attributes set by other code (src/ft_pytype.h)
    cdef object __weakref__
    cdef readonly uint64_t trace_hi
    cdef readonly uint64_t trace_lo
    cdef uint64_t _span_id
    cdef readonly uint8_t flags
    # dict of str -> str, or None for "no baggage"; never mutated once shared
    cdef object _baggage
    # the W3C tracestate header value to pass on unchanged, or None
    cdef readonly object tracestate
    # Jaeger's jaeger-debug-id correlation id, or None
    cdef readonly object debug_id

    @staticmethod
    cdef SpanContext make(uint64_t trace_hi, uint64_t trace_lo, uint64_t span_id,
                          uint8_t flags, object baggage, object tracestate)


cdef object u128_to_int(uint64_t hi, uint64_t lo)
cdef object baggage_with(object baggage, object key, object value)
cdef int int_to_u128(object value, uint64_t *hi, uint64_t *lo) except -1

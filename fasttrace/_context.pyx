# SPDX-License-Identifier: Apache-2.0
"""SpanContext: the part of a span that crosses process boundaries.

Ids are kept as C integers (a 128-bit trace id as two halves) so the codecs and the
arena never build Python ints on the hot path; the Python-facing properties build them
on demand.
"""
cimport cython
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_FromObject
from libc.stdint cimport uint8_t, uint64_t

import opentracing

from fasttrace._cdefs cimport ft_instance_dict_init, ft_type_adopt

cdef object _MASK64 = (1 << 64) - 1
cdef object _EMPTY = {}


cdef object u128_to_int(uint64_t hi, uint64_t lo):
    if hi == 0:
        return lo
    return (<object>hi << 64) | lo


cdef inline str _exact_str(object value):
    """str(value) as an exact str (a str subclass could run its own __hash__ or __eq__
    in the dict); raises what str() raises."""
    if type(value) is str:
        return <str>value
    value = str(value)
    return <str>value if type(value) is str else <str>PyUnicode_FromObject(value)


cdef object baggage_with(object baggage, object key, object value):
    """A copy of a baggage dict (or None) with one item set, or removed when value is None;
    None when the result is empty.  Keys and values become str (W3C baggage is text)."""
    key = _exact_str(key)
    if value is not None:
        value = _exact_str(value)
    cdef dict items = dict(baggage) if baggage else {}
    if value is None:
        items.pop(key, None)
    else:
        items[key] = value
    return items or None


cdef int int_to_u128(object value, uint64_t *hi, uint64_t *lo) except -1:
    """Splits a non-negative int below 2**128 into halves; raises ValueError otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"id must be an int, not {type(value).__name__}")
    if value < 0 or value >> 128:
        raise ValueError(f"id out of range: {value!r}")
    lo[0] = <uint64_t>(value & _MASK64)
    hi[0] = <uint64_t>(value >> 64)
    return 0


@cython.final
@cython.no_gc_clear
@cython.freelist(64)
cdef class SpanContext:
    """Trace id (128-bit), span id (64-bit), sampling flags and baggage of a span.

    Immutable: `Span.set_baggage_item` gives the span a new context.

    Args:
        trace_id: 1 .. 2**128-1 (64-bit ids from peers are accepted as they are).
        span_id: 1 .. 2**64-1.
        sampled: whether the trace is recorded.
        baggage: str -> str items that travel with the context.
        debug: Jaeger's debug flag (forces sampling downstream).
        tracestate: a W3C tracestate header value to pass on unchanged.
    """

    def __init__(self, trace_id, span_id, sampled=True, baggage=None, debug=False,
                 tracestate=None):
        cdef uint64_t hi, lo, shi, slo
        int_to_u128(trace_id, &hi, &lo)
        int_to_u128(span_id, &shi, &slo)
        if hi == 0 and lo == 0:
            raise ValueError("trace_id must not be 0")
        if shi != 0 or slo == 0:
            raise ValueError("span_id must be in 1 .. 2**64-1")
        self.trace_hi = hi
        self.trace_lo = lo
        self._span_id = slo
        self.flags = (FLAG_SAMPLED if sampled else 0) | (FLAG_DEBUG if debug else 0)
        self._baggage = {str(k): str(v) for k, v in baggage.items()} if baggage else None
        self.tracestate = tracestate
        self.debug_id = None

    @staticmethod
    cdef SpanContext make(uint64_t trace_hi, uint64_t trace_lo, uint64_t span_id,
                          uint8_t flags, object baggage, object tracestate):
        cdef SpanContext ctx = SpanContext.__new__(SpanContext)
        ctx.trace_hi = trace_hi
        ctx.trace_lo = trace_lo
        ctx._span_id = span_id
        ctx.flags = flags
        ctx._baggage = baggage
        ctx.tracestate = tracestate
        return ctx

    @property
    def trace_id(self):
        """The 128-bit trace id as an int (a 64-bit id from a peer has a zero high half)."""
        return u128_to_int(self.trace_hi, self.trace_lo)

    @property
    def span_id(self):
        return self._span_id

    @property
    def sampled(self):
        return bool(self.flags & FLAG_SAMPLED)

    @property
    def debug(self):
        return bool(self.flags & FLAG_DEBUG)

    @property
    def baggage(self):
        """The baggage items (a new empty dict when there are none)."""
        if self._baggage is None:
            return {}
        return self._baggage

    @property
    def trace_id_hex(self):
        return f"{self.trace_hi:016x}{self.trace_lo:016x}"

    @property
    def span_id_hex(self):
        return f"{self._span_id:016x}"

    def with_baggage_item(self, key, value):
        """A copy of this context with one baggage item set (value None removes it)."""
        cdef SpanContext ctx = SpanContext.make(self.trace_hi, self.trace_lo, self._span_id,
                                                self.flags, baggage_with(self._baggage, key, value),
                                                self.tracestate)
        ctx.debug_id = self.debug_id
        return ctx

    def __eq__(self, other):
        if not isinstance(other, SpanContext):
            return NotImplemented
        cdef SpanContext o = other
        return (self.trace_hi == o.trace_hi and self.trace_lo == o.trace_lo
                and self._span_id == o._span_id and self.flags == o.flags
                and (self._baggage or _EMPTY) == (o._baggage or _EMPTY)
                and self.tracestate == o.tracestate)

    def __hash__(self):
        return hash((self.trace_hi, self.trace_lo, self._span_id))

    def __repr__(self):
        return (f"SpanContext(trace_id={self.trace_id_hex}, span_id={self._span_id:016x}, "
                f"sampled={self.sampled}, baggage={self.baggage!r})")


cdef Py_ssize_t _dict_offset():
    cdef SpanContext probe = SpanContext.__new__(SpanContext)
    return <char*>&probe._dict - <char*><PyObject*>probe

# a SpanContext is an opentracing.SpanContext (see src/ft_pytype.h)
ft_type_adopt(SpanContext, opentracing.SpanContext, _dict_offset(), NULL)

# SPDX-License-Identifier: Apache-2.0
# Propagation codecs (see _codec.pyx for the wire grammars).
from libc.stdint cimport uint8_t, uint64_t
from fasttrace._context cimport SpanContext


cdef class Extracted:
    """What the propagators of one composite found in a carrier, merged."""
    cdef bint found            # ids were found (a context exists)
    cdef uint64_t trace_hi
    cdef uint64_t trace_lo
    cdef uint64_t span_id
    cdef uint8_t flags         # FLAG_* bits from _context.pxd
    cdef object baggage        # dict str -> str, or None
    cdef object tracestate     # str or None
    cdef object debug_id       # str or None (jaeger-debug-id)
    # -- added by the codec owner (private to _codec.pyx) --
    cdef object carrier        # the mapping being read
    cdef bint is_dict          # type(carrier) is dict: exact-name fast path first
    cdef bint indexed          # index built (or found empty)
    cdef dict index            # ASCII-lowercased header name -> str | list[str], or None
    cdef bint decided          # a sampling decision without ids was found (b3: 0/1/d)
    cdef object error          # the first SpanContextCorruptedException, kept until the end
    cdef object uber           # str value of an exact "uber-trace-id" key seen by a scan, or None


cdef class Propagator:
    cdef readonly str name     # "tracecontext", "baggage", "jaeger", "b3", "b3multi"
    # Writes ctx into a mapping carrier (dict-like: carrier[key] = value).
    cdef int inject(self, SpanContext ctx, object carrier) except -1
    # Reads from a mapping carrier into acc.  Ids only if acc.found is still false
    # (the first propagator that finds a valid context wins); baggage merges.
    # Raises SpanContextCorruptedException where the format's spec calls the input
    # corrupt; leaves acc untouched where the spec says to ignore it.
    cdef int extract(self, object carrier, Extracted acc) except -1


cdef class Propagation:
    """The ordered propagators a tracer was configured with."""
    cdef tuple propagators
    cdef readonly tuple names  # the propagators' names, in order
    cdef readonly bint text_map  # built for Format.TEXT_MAP (Jaeger baggage not URL-encoded)
    cdef Extracted _acc        # reused by extract() (private to _codec.pyx)
    cdef bint _acc_busy        # _acc is in use by an extract() further up the stack
    cdef Propagator _jaeger_only  # the propagator when it is a lone JaegerPropagator
    cdef int inject(self, SpanContext ctx, object carrier) except -1
    # None when the carrier holds nothing; a SpanContext with ids when a valid
    # context was found; a "container" SpanContext with trace_hi == trace_lo ==
    # span_id == 0 when only baggage and/or a jaeger-debug-id were found (as
    # jaeger-client does), so a span started from it begins a new trace that
    # keeps the baggage (and is forced sampled+debug for a debug id).  A bare B3
    # sampling decision ("b3: 0", "b3: d", X-B3-Sampled alone) also gives a container:
    # its flags carry that decision; every other container has flags == FLAG_DEFERRED.
    cdef SpanContext extract(self, object carrier)


cpdef int inject_binary(SpanContext ctx, object carrier) except -1
cpdef SpanContext extract_binary(object carrier)

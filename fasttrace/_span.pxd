# SPDX-License-Identifier: Apache-2.0
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from fasttrace._arena cimport Arena
from fasttrace._context cimport SpanContext


cdef class Span:
    # Attributes third-party code keeps on the span: created on first assignment, NULL
    # until then (see src/ft_pytype.h).
    cdef PyObject *_dict
    cdef object __weakref__
    # Methods overridden on this instance (mock.patch.object(span, "finish"), as the
    # OpenTracing harness does), or None: every fast path checks this one field, so
    # an override is honoured wherever the method would have run.
    cdef dict _patched
    cdef bint _in_override
    cdef object _tracer              # the tracer that started it (Span.tracer)
    cdef Arena arena
    cdef int32_t slot           # -1: not recording (unsampled or dropped)
    cdef uint32_t gen
    cdef uint64_t trace_hi
    cdef uint64_t trace_lo
    cdef uint64_t _span_id
    cdef uint64_t _parent_id
    cdef uint8_t flags
    cdef readonly bint finished     # as MockSpan.finished
    cdef int64_t start_ns
    cdef object _name
    cdef object baggage         # dict str -> str, or None; replaced, never mutated, once shared
    cdef object tracestate
    cdef SpanContext _ctx       # built on first use of .context
    cdef list _refs             # references kept beyond the parent (for a later slot)

    cdef object _override(self, str name)
    cdef object _call_override(self, object override, tuple args, dict kwargs=*)
    cdef int _set_tag(self, object key, object value) except -1
    cdef int _set_priority(self, object value) except -1
    cdef int _finish(self, int64_t end_ns) except -1

    # inline here so the tracer's start path makes one call (into the arena), not two
    cdef inline int _open_slot(self) except -1:
        """Records this (sampled) span into a new arena slot, if one is free."""
        cdef int32_t slot = self.arena.open(self.trace_hi, self.trace_lo, self._span_id,
                                            self._parent_id, self.start_ns, self.flags,
                                            <str>self._name)
        if slot >= 0:
            self.slot = slot
            self.gen = self.arena.generation[slot]
        return 0
    cdef int _on_error(self, object exc_type, object exc_val, object exc_tb) except -1


cdef int64_t timestamp_or_now(object seconds, Arena arena) noexcept
cdef Span new_span()


# The span clock (wall-clock ns).  Its calibration state lives in the module that
# includes src/ft_clock.h, one copy per extension module: every module reads the clock
# through this one, so all timestamps come from a single calibrated clock.
cdef int64_t now_ns() noexcept nogil

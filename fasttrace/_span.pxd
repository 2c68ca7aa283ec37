# SPDX-License-Identifier: Apache-2.0
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from fasttrace._arena cimport Arena
from fasttrace._codec cimport Propagation
from fasttrace._context cimport SpanContext
from fasttrace._sampling cimport Sampler


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
    cdef TracerCore _tracer
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

    cdef object _override(self, str name)
    cdef object _call_override(self, object override, tuple args, dict kwargs=*)
    cdef int _set_tag(self, object key, object value) except -1
    cdef int _set_priority(self, object value) except -1
    cdef int _finish(self, int64_t end_ns) except -1
    cdef int _on_error(self, object exc_type, object exc_val, object exc_tb) except -1


cdef class Scope:
    cdef PyObject *_dict
    cdef object __weakref__
    cdef object _manager
    cdef object _span
    cdef object _token
    cdef object _previous
    cdef bint _finish_on_close
    cdef bint _closed
    cdef bint _closed_elsewhere     # closed from a context other than the one it was set in


cdef class ScopeManagerCore:
    cdef object _var
    cdef Scope _activate(self, object span, bint finish_on_close)
    cdef object _active(self)


cdef class TracerCore:
    cdef readonly Arena _arena
    cdef Sampler _sampler
    cdef object _scope_manager
    cdef ScopeManagerCore _fast_scopes   # the scope manager when it is ours, else None
    cdef Propagation _propagation        # HTTP_HEADERS
    cdef Propagation _text_propagation   # TEXT_MAP (Jaeger's uberctx- values are not URL-encoded there)
    cdef readonly object _service_name
    cdef Py_ssize_t _notify_at
    cdef bint _trace_id_64               # new traces get 64-bit ids (jaeger-client's default)
    cdef public uint64_t _extract_errors
    cdef public uint64_t _foreign_parents_adopted
    cdef public uint64_t _foreign_parents_unusable

    cdef Span _start(self, object name, object child_of, object references, object tags,
                     object start_time, bint ignore_active)
    cdef int _record(self, Span span) except -1
    cdef SpanContext _parent_context(self, object parent)
    cdef list _references(self, SpanContext child_of, object references)

# SPDX-License-Identifier: Apache-2.0
from libc.stdint cimport uint64_t

from fasttrace._arena cimport Arena
from fasttrace._carrier cimport Propagation
from fasttrace._context cimport SpanContext
from fasttrace._sampling cimport Sampler
from fasttrace._scope cimport ScopeManagerCore
from fasttrace._span cimport Span


cdef class TracerCore:
    cdef readonly Arena _arena
    cdef Sampler _sampler
    cdef object _scope_manager
    cdef ScopeManagerCore _fast_scopes   # the scope manager when it is ours, else None
    cdef Propagation _propagation        # HTTP_HEADERS
    cdef Propagation _text_propagation   # TEXT_MAP (Jaeger's uberctx- values are not URL-encoded there)
    cdef readonly object _service_name
    cdef public bint _record_all         # tail sampling: record head-unsampled spans too
    cdef bint _trace_id_64               # new traces get 64-bit ids (jaeger-client's default)
    cdef public uint64_t _extract_errors
    cdef public uint64_t _foreign_parents_adopted
    cdef public uint64_t _foreign_parents_unusable

    cdef Span _start(self, object name, object child_of, object references, object tags,
                     object start_time, bint ignore_active)
    cdef SpanContext _parent_context(self, object parent)
    cdef list _references(self, SpanContext child_of, object references)

# SPDX-License-Identifier: Apache-2.0
"""The tracer's hot half: start_span, the parent, the sampling decision, inject/extract.

fasttrace.Tracer (tracer.py) is this plus its readable, once-per-process parts
(configuration, reporting, stats).
"""
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

import opentracing
from opentracing import Format, ReferenceType
from opentracing import UnsupportedFormatException, SpanContextCorruptedException

from fasttrace._arena cimport Arena, as_text
from fasttrace._layout cimport FLAG_CONTEXT_PARENT, FLAG_FIRST_REF_FOLLOWS
from fasttrace._cdefs cimport ft_rand64, ft_rand_nonzero, ft_rng_init
from fasttrace._binary cimport extract_binary, inject_binary
from fasttrace._carrier cimport Propagation
from fasttrace._context cimport (SpanContext, FLAG_SAMPLED, FLAG_DEBUG, FLAG_DEFERRED,
                                 int_to_u128, u128_to_int)
from fasttrace._sampling cimport Sampler
from fasttrace._scope cimport Scope, ScopeManagerCore
from fasttrace._span cimport Span, new_span, now_ns, timestamp_or_now

# imports logging at the first warning (fasttrace._lazy)
from fasttrace._lazy import logging

log = logging.getLogger("fasttrace")

# seeds the id generator and registers its pthread_atfork hook
ft_rng_init()

cdef str _CHILD_OF = ReferenceType.CHILD_OF
cdef str _FOLLOWS_FROM = ReferenceType.FOLLOWS_FROM
cdef str _TEXT_MAP = Format.TEXT_MAP
cdef str _HTTP_HEADERS = Format.HTTP_HEADERS
cdef str _BINARY = Format.BINARY
cdef uint8_t _CONTEXT_FLAGS = FLAG_SAMPLED | FLAG_DEBUG


cdef bint _nonempty(object value, Arena arena) noexcept:
    """bool(value) for references= and the like, False (counted) when it raises."""
    if type(value) is list:
        return len(<list>value) > 0
    try:
        return bool(value)
    except BaseException:
        arena.n_unprintable += 1
        return False


cdef int _set_tags(Span span, object tags, Arena arena) except -1:
    """start_span's tags=: any mapping; items that are not (key, value) pairs are
    skipped and counted."""
    cdef Py_ssize_t pos = 0
    cdef PyObject *pk
    cdef PyObject *pv
    if type(tags) is dict:
        # as in log_kv: a dict changed while it is read never raises
        while PyDict_Next(tags, &pos, &pk, &pv):
            span._set_tag(<object>pk, <object>pv)
        return 0
    try:
        items = list(tags.items())
    except Exception:
        arena.n_unprintable += 1
        return 0
    for item in items:
        try:
            key, value = item
        except Exception:
            arena.n_unprintable += 1
            continue
        span._set_tag(key, value)
    return 0


cdef class TracerCore:
    """The hot half of fasttrace.Tracer (which adds the readable, once-per-process parts)."""

    def _setup(self, Arena arena, Sampler sampler, scope_manager, Propagation propagation,
               Propagation text_propagation, service_name, Py_ssize_t notify_at,
               bint trace_id_64=False):
        self._arena = arena
        self._trace_id_64 = trace_id_64
        self._sampler = sampler
        self._scope_manager = scope_manager
        self._fast_scopes = (scope_manager if isinstance(scope_manager, ScopeManagerCore)
                             else None)
        self._propagation = propagation
        self._text_propagation = text_propagation
        self._service_name = service_name
        arena.notify_at = arena.notify_every = notify_at

    # -- start ----------------------------------------------------------------------

    def start_span(self, operation_name=None, child_of=None, references=None, tags=None,
                   start_time=None, ignore_active_span=False):
        return self._start(operation_name, child_of, references, tags, start_time,
                           ignore_active_span)

    def start_active_span(self, operation_name, child_of=None, references=None, tags=None,
                          start_time=None, ignore_active_span=False, finish_on_close=True):
        cdef Span span = self._start(operation_name, child_of, references, tags, start_time,
                                     ignore_active_span)
        if self._fast_scopes is not None:
            return self._fast_scopes._activate(span, finish_on_close)
        return self._scope_manager.activate(span, finish_on_close)

    @property
    def scope_manager(self):
        return self._scope_manager

    @property
    def active_span(self):
        scope = (self._fast_scopes._active() if self._fast_scopes is not None
                 else self._scope_manager.active)
        return None if scope is None else scope.span

    cdef Span _start(self, object name, object child_of, object references, object tags,
                     object start_time, bint ignore_active):
        cdef Arena arena = self._arena
        cdef Span span = new_span()
        cdef Span parent_span = None
        cdef SpanContext parent_ctx = None
        cdef list refs = None
        cdef SpanContext without_ids = None
        cdef bint follows = False
        cdef object scope
        arena.check_fork()
        if type(name) is not str:
            name = "" if name is None else as_text(name, arena)

        # 1. the parent: child_of, else the first child_of reference, else the first
        #    reference, else (unless ignored) the active span
        if child_of is not None:
            if type(child_of) is Span:
                parent_span = <Span>child_of
            else:
                parent_ctx = self._parent_context(child_of)
        if references is not None and _nonempty(references, arena):
            refs = self._references(
                parent_span.context if parent_span is not None else parent_ctx, references)
            if refs and refs[len(refs) - 1][0] is None:    # (no wraparound here)
                with_ids = []
                for ref in refs:
                    if ref[0] is not None:
                        with_ids.append(ref)
                    elif without_ids is None:
                        without_ids = ref[3]
                refs = with_ids
            if parent_span is None and parent_ctx is None and refs:
                for ref in refs:
                    if ref[0] == _CHILD_OF:
                        parent_ctx = ref[3]
                        break
                else:
                    parent_ctx = refs[0][3]
                    follows = True
            if parent_span is None and parent_ctx is None and without_ids is not None:
                # references to contexts without ids only: a new trace with the
                # baggage of the first of them
                parent_ctx = without_ids
            if len(refs) < 2 and not follows:
                refs = None     # a single child_of reference is just the parent
        elif child_of is None and not ignore_active:
            if self._fast_scopes is not None:
                scope = self._fast_scopes._active()
                if scope is not None:
                    # one of ours, or opentracing's ContextVarsScopeManager's
                    active = (<Scope>scope)._span if type(scope) is Scope else scope.span
                    if type(active) is Span:
                        parent_span = <Span>active
                    elif active is not None:    # activate(None) means "no parent"
                        parent_ctx = self._parent_context(active)
            else:
                active = self._scope_manager.active
                if active is not None:
                    active = active.span
                    if type(active) is Span:
                        parent_span = <Span>active
                    elif active is not None:
                        parent_ctx = self._parent_context(active)

        # 2. ids and the sampling decision
        span._tracer = self
        span.arena = arena
        span._name = name
        span.slot = -1
        if parent_span is not None:
            span.trace_hi = parent_span.trace_hi
            span.trace_lo = parent_span.trace_lo
            span._parent_id = parent_span._span_id
            span.flags = parent_span.flags & _CONTEXT_FLAGS
            span.baggage = parent_span.baggage
            span.tracestate = parent_span.tracestate
            if self._record_all and parent_span._tracer is not self:
                span.flags |= FLAG_CONTEXT_PARENT    # another tracer's: a local root here
        elif parent_ctx is not None and (parent_ctx.trace_hi or parent_ctx.trace_lo):
            span.trace_hi = parent_ctx.trace_hi
            span.trace_lo = parent_ctx.trace_lo
            span._parent_id = parent_ctx._span_id
            span.baggage = parent_ctx._baggage
            span.tracestate = parent_ctx.tracestate
            if parent_ctx.flags & FLAG_DEFERRED:
                span.flags = FLAG_SAMPLED if self._sampler.sample(span.trace_hi, span.trace_lo, name) else 0
            else:
                span.flags = parent_ctx.flags & _CONTEXT_FLAGS
            if parent_ctx.debug_id is not None:
                span.flags |= FLAG_SAMPLED | FLAG_DEBUG
            if self._record_all:
                span.flags |= FLAG_CONTEXT_PARENT
        else:
            span.trace_hi = 0 if self._trace_id_64 else ft_rand64()
            span.trace_lo = ft_rand_nonzero()
            span._parent_id = 0
            if parent_ctx is not None:
                # a baggage / debug-id container from extract(): new trace, keep baggage
                span.baggage = parent_ctx._baggage
            if parent_ctx is not None and parent_ctx.debug_id is not None:
                span.flags = FLAG_SAMPLED | FLAG_DEBUG
            elif parent_ctx is not None and not (parent_ctx.flags & FLAG_DEFERRED):
                # a propagated decision without ids (b3: 0, b3: d, X-B3-Sampled alone)
                span.flags = parent_ctx.flags & _CONTEXT_FLAGS
            else:
                span.flags = FLAG_SAMPLED if self._sampler.sample(span.trace_hi, span.trace_lo, name) else 0
        span._span_id = ft_rand_nonzero()
        # Unsampled spans never report a start time, so they skip the clock; one forced
        # on later by sampling.priority starts its recording then (see _set_priority).
        if start_time is not None:
            span.start_ns = timestamp_or_now(start_time, arena)
        elif span.flags & FLAG_SAMPLED or self._record_all:
            span.start_ns = now_ns()
        arena.n_started += 1

        # 3. a slot, for sampled spans only; the references stay with the span too, for
        #    a slot that sampling.priority opens later
        if follows:
            span.flags |= FLAG_FIRST_REF_FOLLOWS
        if refs is not None:
            span._refs = [(r[0], r[1], r[2]) for r in refs]
        if span.flags & FLAG_SAMPLED:
            span._open_slot()
        elif self._record_all:
            # tail sampling: recorded, the head decision stays on the context
            arena.n_unsampled += 1
            span._open_slot()
            if span.slot >= 0 and arena.n_sampled > 0:
                arena.n_sampled -= 1     # counted as unsampled, not twice
        else:
            arena.n_unsampled += 1
        # nothing below raises on bad input; anything else (MemoryError, a signal
        # handler's KeyboardInterrupt) must not leave the slot taken by a span no one has
        cdef bint started = False
        try:
            if span.slot >= 0:
                if refs is not None:
                    arena.set_extra(span.slot, span.gen, "refs", span._refs)
                if parent_ctx is not None and parent_ctx.debug_id is not None:
                    arena.set_tag(span.slot, span.gen, "jaeger-debug-id", parent_ctx.debug_id)
            if tags is not None:
                _set_tags(span, tags, arena)
            started = True
        finally:
            if not started and span.slot >= 0:
                span.finished = True
                arena.discard(span.slot, span.gen)
        return span

    # -- parents ----------------------------------------------------------------------

    cdef SpanContext _parent_context(self, object parent):
        """Our SpanContext for a parent given as a Span or SpanContext, ours or another
        tracer's; None (counted, and logged once) for one this tracer cannot use."""
        if type(parent) is SpanContext:
            return <SpanContext>parent
        if type(parent) is Span:
            return (<Span>parent).context
        cdef SpanContext ctx = _foreign_context(parent)
        if ctx is None:
            self._foreign_parents_unusable += 1
            if self._foreign_parents_unusable == 1:
                log.warning("fasttrace: a parent of type %s has no integer trace_id and "
                            "span_id; the span starts a new trace (counted in stats()"
                            "[\"foreign_parents\"][\"unusable\"])", type(parent).__name__)
        elif type(parent) is not SpanContext and type(getattr(parent, "context", None)) is not SpanContext:
            self._foreign_parents_adopted += 1
        return ctx

    cdef list _references(self, SpanContext child_of, object references):
        """[(type, trace_id, span_id, SpanContext)] in order, child_of's context first.

        A context without ids (baggage alone, from extract()) is no span to refer to:
        it comes last, as (None, 0, 0, context), for its baggage."""
        cdef list out = []
        cdef list without_ids = []
        cdef SpanContext ctx = child_of
        if ctx is not None:
            out.append((_CHILD_OF, u128_to_int(ctx.trace_hi, ctx.trace_lo), ctx._span_id, ctx))
        try:
            for ref in references:
                ctx = self._parent_context(ref.referenced_context)
                if ctx is None:
                    continue
                if not (ctx.trace_hi or ctx.trace_lo):
                    without_ids.append((None, 0, 0, ctx))
                    continue
                kind = _FOLLOWS_FROM if ref.type == _FOLLOWS_FROM else _CHILD_OF
                out.append((kind, u128_to_int(ctx.trace_hi, ctx.trace_lo), ctx._span_id, ctx))
        except Exception:
            self._arena.n_unprintable += 1
            log.debug("fasttrace: ignoring malformed references", exc_info=True)
        return out + without_ids

    # -- propagation ----------------------------------------------------------------

    def inject(self, span_context, format, carrier):
        cdef SpanContext ctx
        if type(span_context) is SpanContext:
            ctx = <SpanContext>span_context
        elif type(span_context) is Span:
            ctx = (<Span>span_context).context
        else:
            raise opentracing.InvalidCarrierException(
                f"inject() needs a fasttrace SpanContext, not {type(span_context).__name__}")
        if format is _HTTP_HEADERS or format == _HTTP_HEADERS:
            self._propagation.inject(ctx, carrier)
        elif format is _TEXT_MAP or format == _TEXT_MAP:
            self._text_propagation.inject(ctx, carrier)
        elif format is _BINARY or format == _BINARY:
            inject_binary(ctx, carrier)
        else:
            raise UnsupportedFormatException(format)

    def extract(self, format, carrier):
        try:
            if format is _HTTP_HEADERS or format == _HTTP_HEADERS:
                return self._propagation.extract(carrier)
            if format is _TEXT_MAP or format == _TEXT_MAP:
                return self._text_propagation.extract(carrier)
            if format is _BINARY or format == _BINARY:
                return extract_binary(carrier)
        except SpanContextCorruptedException:
            raise
        except Exception:
            # the API allows only these two errors out of extract(); anything else is
            # a carrier we cannot read, which is the same as no context
            self._extract_errors += 1
            return None
        raise UnsupportedFormatException(format)


cdef object _MAX_TRACE_ID = 1 << 128
cdef object _MAX_SPAN_ID = 1 << 64


cdef SpanContext _foreign_context(object parent):
    """Another tracer's span or span context as ours, or None when it has no usable ids.

    Adopted: integer `trace_id` and `span_id` on the context (MockTracer, jaeger-client)
    or on what its `unwrap()` returns (the OpenTelemetry shim).  The sampling decision is
    taken from what the context says (`sampled`, OpenTelemetry's `trace_flags`,
    jaeger-client's `flags`), else left to this tracer's sampler; baggage is kept.
    """
    cdef uint64_t hi, lo, shi, slo
    cdef uint8_t flags = FLAG_DEFERRED
    try:
        ctx = getattr(parent, "context", None)
        if ctx is None:
            ctx = parent
        elif type(ctx) is SpanContext:
            return <SpanContext>ctx
        ids = ctx
        if not hasattr(ids, "trace_id") and hasattr(ids, "unwrap"):
            ids = ids.unwrap()
        trace_id = getattr(ids, "trace_id", None)
        span_id = getattr(ids, "span_id", None)
        if (type(trace_id) is not int or type(span_id) is not int
                or not 0 < trace_id < _MAX_TRACE_ID or not 0 < span_id < _MAX_SPAN_ID):
            return None
        sampled = getattr(ids, "sampled", None)
        if type(sampled) is not bool:
            trace_flags = getattr(ids, "trace_flags", None)
            if trace_flags is not None:
                sampled = bool(trace_flags.sampled)
            elif type(ids).__module__.startswith("jaeger_client"):
                sampled = bool(ids.flags & 1)
                if ids.flags & 2:
                    flags = FLAG_DEBUG
        if type(sampled) is bool:
            flags = (flags & FLAG_DEBUG) | (FLAG_SAMPLED if sampled else 0)
        baggage = getattr(ctx, "baggage", None)
        items = ({str(k): str(v) for k, v in baggage.items()} or None) if baggage else None
        int_to_u128(trace_id, &hi, &lo)
        int_to_u128(span_id, &shi, &slo)
        return SpanContext.make(hi, lo, slo, flags, items, None)
    except Exception:
        return None



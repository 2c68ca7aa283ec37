# SPDX-License-Identifier: Apache-2.0
"""Span handles, scopes and the tracer's hot path.

A Span is a small handle: the ids and flags it needs to answer the OpenTracing API
on its own (so unsampled spans cost no arena slot and a finished span's context stays
valid), plus (slot, generation) pointing at the arena row it records into.
"""
cimport cython
from cpython.contextvars cimport PyContextVar_Set, PyContextVar_Reset, get_value
from cpython.object cimport PyObject
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.dict cimport PyDict_Next
from cpython.exc cimport PyErr_Fetch, PyErr_Restore
from libc.math cimport fabs, floor, isfinite, llround
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

import logging
import time
import traceback
import types

import opentracing
# The ContextVar opentracing's own contextvars helpers read and write
# (no_parent_scope() sets it to None): sharing it means one notion of "the active
# scope" for fasttrace's manager, opentracing's ContextVarsScopeManager and them.
from opentracing.scope_managers.contextvars import _SCOPE as _ACTIVE_SCOPE
from opentracing import Format, ReferenceType
from opentracing import UnsupportedFormatException, SpanContextCorruptedException

from fasttrace._arena cimport Arena, SLOT_FIRST_REF_FOLLOWS, UNINTERNED, as_text
from fasttrace._cdefs cimport (ft_now_ns, ft_rand64, ft_rand_nonzero, ft_rng_init,
                               ft_clock_init, ft_clock_uses_tsc, ft_system_now_ns,
                               ft_instance_dict_init, ft_type_adopt)
from fasttrace._codec cimport Propagation, inject_binary, extract_binary
from fasttrace._context cimport (SpanContext, FLAG_SAMPLED, FLAG_DEBUG, FLAG_DEFERRED,
                                 baggage_with, int_to_u128, u128_to_int)
from fasttrace._sampling cimport Sampler
from fasttrace.errors import error_fields, log_error

log = logging.getLogger("fasttrace")

cdef extern from "Python.h":
    int PyObject_GenericSetAttr(object o, object name, PyObject *value) except -1

# seeds the id generator and registers its pthread_atfork hook
ft_rng_init()
# the span clock (see src/ft_clock.h); only this module reads it
ft_clock_init()

def clock_info():
    """Which clock spans are timed with, and its current reading next to the system's."""
    return {"source": "tsc" if ft_clock_uses_tsc() else "system",
            "now_ns": ft_now_ns(), "system_now_ns": ft_system_now_ns()}

cdef str _CHILD_OF = ReferenceType.CHILD_OF
cdef str _FOLLOWS_FROM = ReferenceType.FOLLOWS_FROM
cdef str _TEXT_MAP = Format.TEXT_MAP
cdef str _HTTP_HEADERS = Format.HTTP_HEADERS
cdef str _BINARY = Format.BINARY
cdef str _SAMPLING_PRIORITY = "sampling.priority"
cdef uint8_t _CONTEXT_FLAGS = FLAG_SAMPLED | FLAG_DEBUG


# Span methods an instance may override (see Span.__setattr__).
cdef frozenset _PATCHABLE = frozenset((
    "finish", "set_tag", "log_kv", "log_event", "log", "set_baggage_item",
    "get_baggage_item", "set_operation_name"))


cdef object _TRACEBACK = types.TracebackType


cdef dict _as_error_log(dict fields, Arena arena):
    """The one error log (fasttrace.errors) for fields that carry a traceback object,
    as opentracing.Span._on_error writes them (opentracing's own scope managers call
    it): the class becomes its name and the traceback text, as everywhere else."""
    exc = fields.get("error.object")
    tb = fields.get("stack")
    if isinstance(exc, BaseException) and (tb is None or type(tb) is _TRACEBACK):
        normalized = error_fields(type(exc), exc, tb)
        for key in ("message", "stack"):
            normalized[key] = arena.clean_value(normalized[key])
        for key, value in fields.items():
            if key not in normalized:
                normalized[key] = value
        return normalized
    for key, value in fields.items():
        if type(value) is _TRACEBACK:
            fields[key] = arena.clean_value("".join(traceback.format_tb(value)))
    return fields


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


cdef int _priority_sign(object value) noexcept:
    """The sign of a sampling.priority value (1, 0 or -1 as int() reads it, any size),
    or 2 when it is not a number."""
    try:
        number = int(value)
        return 1 if number > 0 else (0 if number == 0 else -1)
    except BaseException:
        return 2


cdef enum:
    # the latest nanosecond timestamp an int64 holds (2262-04-11): later, or before the
    # epoch, or not a number, is not a time a span can have
    MAX_TIMESTAMP_S = 9223372036


cdef bint _seconds_to_ns(object seconds, int64_t *out) noexcept:
    """OpenTracing timestamps (seconds since the epoch) as integer nanoseconds; False
    for one that is no time a span can have (NaN, infinite, negative, beyond 2262, not a
    number), which the caller replaces with now and counts.

    `seconds * 1e9` would lose up to ~256 ns (an epoch time in ns needs 61 bits, a
    double has 53) and truncate; whole and fractional seconds are converted apart, so
    the result is the float's exact value rounded to the nearest nanosecond.
    """
    cdef double x, whole
    cdef long long whole_s
    cdef int overflow = 0
    try:
        if type(seconds) is int:
            whole_s = PyLong_AsLongLongAndOverflow(seconds, &overflow)
            if overflow or whole_s < 0 or whole_s >= MAX_TIMESTAMP_S:
                return False
            out[0] = <int64_t>whole_s * 1000000000
            return True
        x = float(seconds)
    except BaseException:
        return False
    if not isfinite(x) or x < 0 or x >= MAX_TIMESTAMP_S:
        return False
    whole = floor(x)
    out[0] = <int64_t>whole * 1000000000 + llround((x - whole) * 1e9)
    return True


cdef int64_t _timestamp_or_now(object seconds, Arena arena) noexcept:
    cdef int64_t ns
    if _seconds_to_ns(seconds, &ns):
        return ns
    arena.n_bad_timestamps += 1
    return ft_now_ns()


@cython.final
@cython.no_gc_clear
@cython.freelist(256)
cdef class Span:
    """An OpenTracing Span recording into the tracer's arena.

    Created by `Tracer.start_span`; never instantiate directly.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("spans are created by Tracer.start_span()")

    def __setattr__(self, name, value):
        # Overriding one of the span's methods on the instance (as mock.patch.object
        # does) makes the method call the override (which may call the original: inside
        # it, the original runs); any other name is an attribute of the instance's own.
        if name in _PATCHABLE:
            if self._patched is None:
                self._patched = {}
            self._patched[name] = value
        else:
            PyObject_GenericSetAttr(self, name, <PyObject*>value)

    def __delattr__(self, name):
        if self._patched is not None and name in self._patched:
            del self._patched[name]
            if not self._patched:
                self._patched = None
        else:
            PyObject_GenericSetAttr(self, name, NULL)

    cdef object _override(self, str name):
        """The instance's override of a method, unless we are running inside it."""
        if self._in_override:
            return None
        return self._patched.get(name)

    cdef object _call_override(self, object override, tuple args, dict kwargs=None):
        self._in_override = True
        try:
            return override(*args, **(kwargs or {}))
        finally:
            self._in_override = False

    # -- read-only identity ---------------------------------------------------------

    @property
    def trace_id(self):
        return u128_to_int(self.trace_hi, self.trace_lo)

    @property
    def span_id(self):
        return self._span_id

    @property
    def parent_id(self):
        return self._parent_id if self._parent_id else None

    @property
    def operation_name(self):
        return self._name

    @operation_name.setter
    def operation_name(self, value):
        # instrumentation written for MockTracer and jaeger-client spans assigns it
        self.set_operation_name(value)

    @property
    def tracer(self):
        return self._tracer

    @property
    def context(self):
        if self._ctx is None:
            self._ctx = SpanContext.make(self.trace_hi, self.trace_lo, self._span_id,
                                         self.flags & _CONTEXT_FLAGS, self.baggage,
                                         self.tracestate)
        return self._ctx

    @property
    def sampled(self):
        return bool(self.flags & FLAG_SAMPLED)

    @property
    def is_recording(self):
        """True while the span owns an arena slot and is not finished."""
        return self.slot >= 0 and not self.finished

    @property
    def start_time(self):
        return (<object>self.start_ns) / 1000000000   # exact: int / int rounds once

    # -- OpenTracing Span API -------------------------------------------------------

    def set_operation_name(self, operation_name):
        if self._patched is not None:
            override = self._override("set_operation_name")
            if override is not None:
                return self._call_override(override, (operation_name,))
        if type(operation_name) is not str:
            operation_name = "" if operation_name is None else as_text(operation_name, self.arena)
        if not self.finished:
            self._name = operation_name
            if self.slot >= 0:
                self.arena.set_name(self.slot, self.gen, operation_name)
        return self

    def set_tag(self, key, value):
        if self._patched is not None:
            override = self._override("set_tag")
            if override is not None:
                return self._call_override(override, (key, value))
        self._set_tag(key, value)
        return self

    def log_kv(self, key_values, timestamp=None):
        cdef int64_t ts
        cdef dict fields
        cdef Arena arena
        cdef Py_ssize_t pos = 0
        cdef PyObject *pk
        cdef PyObject *pv
        cdef bint traceback_object = False
        if self._patched is not None:
            override = self._override("log_kv")
            if override is not None:
                return self._call_override(override, (key_values, timestamp))
        if self.slot < 0 or self.finished:
            return self
        arena = self.arena
        ts = ft_now_ns() if timestamp is None else _timestamp_or_now(timestamp, arena)
        fields = {}
        if type(key_values) is dict:
            # PyDict_Next, not an items() iterator: nothing to allocate, and a dict that
            # another thread changes meanwhile is read as far as it goes, never raises
            while PyDict_Next(key_values, &pos, &pk, &pv):
                k = <object>pk
                v = <object>pv
                if type(k) is not str:
                    k = as_text(k, arena)
                if type(v) is _TRACEBACK:
                    traceback_object = True
                fields[k] = arena.clean_value(v)
        else:
            try:
                items = list(key_values.items())
            except Exception:
                arena.n_unprintable += 1
                return self
            for item in items:
                try:
                    k, v = item
                except Exception:
                    arena.n_unprintable += 1
                    continue
                if type(k) is not str:
                    k = as_text(k, arena)
                if type(v) is _TRACEBACK:
                    traceback_object = True
                fields[k] = arena.clean_value(v)
        if traceback_object:
            fields = _as_error_log(fields, arena)
        arena.add_log(self.slot, self.gen, ts, fields)
        return self

    def log_event(self, event, payload=None):
        if self._patched is not None:
            override = self._override("log_event")
            if override is not None:
                return self._call_override(override, (event, payload))
        if payload is None:
            return self.log_kv({"event": event})
        return self.log_kv({"event": event, "payload": payload})

    def log(self, **kwargs):
        if self._patched is not None:
            override = self._override("log")
            if override is not None:
                return self._call_override(override, (), kwargs)
        key_values = {}
        if "event" in kwargs:
            key_values["event"] = kwargs["event"]
        if "payload" in kwargs:
            key_values["payload"] = kwargs["payload"]
        return self.log_kv(key_values, kwargs.get("timestamp"))

    def set_baggage_item(self, key, value):
        if self._patched is not None:
            override = self._override("set_baggage_item")
            if override is not None:
                return self._call_override(override, (key, value))
        try:
            self.baggage = baggage_with(self.baggage, key, value)
        except Exception:
            self.arena.n_unprintable += 1     # a key or value whose str() raises
            return self
        self._ctx = None
        return self

    def get_baggage_item(self, key):
        if self._patched is not None:
            override = self._override("get_baggage_item")
            if override is not None:
                return self._call_override(override, (key,))
        if self.baggage is None:
            return None
        return (<dict>self.baggage).get(key)

    def finish(self, finish_time=None):
        if self._patched is not None:
            override = self._override("finish")
            if override is not None:
                return self._call_override(override, () if finish_time is None else (finish_time,))
        if finish_time is None:
            self._finish(ft_now_ns())
        else:
            self._finish(_timestamp_or_now(finish_time, self.arena))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        if self._patched is not None:
            # through the methods, which call what was overridden on the instance
            if exc_val is not None:
                log_error(self, exc_type, exc_val, exc_tb)
            self.finish()
            return
        if exc_val is not None:
            self._on_error(exc_type, exc_val, exc_tb)
        self._finish(ft_now_ns())

    def __repr__(self):
        return (f"<fasttrace.Span {self._name!r} trace_id={self.trace_hi:016x}"
                f"{self.trace_lo:016x} span_id={self._span_id:016x}"
                f"{'' if self.slot >= 0 else ' not recording'}>")

    # -- internals ------------------------------------------------------------------

    cdef int _set_tag(self, object key, object value) except -1:
        if self.finished:
            return 0
        if type(key) is str and len(<str>key) == 17 and key == _SAMPLING_PRIORITY:
            if not self._set_priority(value):
                return 0
        if self.slot >= 0:
            self.arena.set_tag(self.slot, self.gen, key, value)
        return 0

    cdef int _on_error(self, object exc_type, object exc_val, object exc_tb) except -1:
        if self.slot < 0 or self.finished:
            return 0
        cdef dict fields = error_fields(exc_type, exc_val, exc_tb)
        fields["message"] = self.arena.clean_value(fields["message"])
        fields["stack"] = self.arena.clean_value(fields["stack"])
        self.arena.set_tag(self.slot, self.gen, "error", True)
        self.arena.add_log(self.slot, self.gen, ft_now_ns(), fields)
        return 0

    cdef int _set_priority(self, object value) except -1:
        """sampling.priority as jaeger-client reads it; True if the tag is to be recorded."""
        cdef int priority
        cdef int32_t slot
        cdef bint was_sampled = self.flags & FLAG_SAMPLED
        cdef Arena arena = self.arena
        priority = _priority_sign(value)
        if priority == 2:
            return 0            # not a number
        if priority <= 0:
            self.flags &= ~(FLAG_SAMPLED | FLAG_DEBUG)
            self._ctx = None
            if self.slot >= 0:
                slot = self.slot
                self.slot = -1
                arena.n_dropped_priority += 1
                if arena.n_sampled > 0:
                    arena.n_sampled -= 1
                arena.n_unsampled += 1
                # last: the values it frees may have finalizers, which must find this
                # span already not recording
                arena.discard(slot, self.gen)
            return 0
        if self.flags & FLAG_DEBUG:
            return 0            # already forced; jaeger-client ignores a repeat
        self.flags |= FLAG_SAMPLED | FLAG_DEBUG
        self._ctx = None
        if self.slot >= 0:
            arena.set_flags(self.slot, self.gen, FLAG_SAMPLED | FLAG_DEBUG)
            return 1
        # counted once already: as unsampled, or (sampled) as dropped for a full arena,
        # which _record counts again if the arena is still full
        if not was_sampled:
            if arena.n_unsampled > 0:
                arena.n_unsampled -= 1
        elif arena.n_dropped_arena_full > 0:
            arena.n_dropped_arena_full -= 1
        if self.start_ns == 0:
            self.start_ns = ft_now_ns()
        self._tracer._record(self)
        return 1

    cdef int _finish(self, int64_t end_ns) except -1:
        cdef TracerCore tracer
        if self.finished:
            return 0
        self.finished = True
        if self.slot < 0:
            return 0
        if self.arena.finish(self.slot, self.gen, end_ns):
            tracer = self._tracer
            if self.arena.finished_count >= tracer._notify_at:
                tracer._batch_ready()
        return 0


@cython.final
@cython.no_gc_clear
@cython.freelist(256)
cdef class Scope:
    """Activation of a span in a ScopeManager (an opentracing.Scope)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("scopes are created by ScopeManager.activate()")

    @property
    def span(self):
        return self._span

    @property
    def manager(self):
        return self._manager

    def close(self):
        cdef ScopeManagerCore manager = self._manager
        if self._closed or manager._active() is not self:
            return          # only the active scope closes (OpenTracing harness)
        self._closed = True
        try:
            PyContextVar_Reset(manager._var, self._token)
        except ValueError:
            # closed from another context (a scope handed to another task or thread):
            # the token cannot be used there, so restore the previous scope by value,
            # and the context it was activated in skips it from now on
            self._closed_elsewhere = True
            PyContextVar_Set(manager._var, self._previous)
        self._token = None
        if self._finish_on_close:
            span = self._span
            if type(span) is Span and (<Span>span)._patched is None:
                (<Span>span)._finish(ft_now_ns())
            else:
                span.finish()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        span = self._span
        if exc_val is not None:
            if type(span) is Span and (<Span>span)._patched is None:
                (<Span>span)._on_error(exc_type, exc_val, exc_tb)
            else:
                log_error(span, exc_type, exc_val, exc_tb)
        self.close()


cdef class ScopeManagerCore:
    """contextvars-based active-scope tracking (threads and asyncio tasks).

    The active scope lives in opentracing's own ContextVar, so
    `opentracing.scope_managers.contextvars.no_parent_scope()` works here, and a scope
    activated by opentracing's ContextVarsScopeManager is the active one here too.
    """

    def __init__(self):
        self._var = _ACTIVE_SCOPE

    cdef object _active(self):
        # A scope closed from another task or thread cannot be unset in the context it
        # was activated in (a token only resets where it was made): there it stays
        # set, and the active scope is the one it replaced.  (A scope closed where it
        # was activated stays active in the contexts copied from there before, for
        # the tasks and callbacks that were started under it.)
        scope = get_value(self._var)
        while type(scope) is Scope and (<Scope>scope)._closed_elsewhere:
            scope = (<Scope>scope)._previous
        return scope

    cdef Scope _activate(self, object span, bint finish_on_close):
        cdef Scope scope = Scope.__new__(Scope)
        scope._manager = self
        scope._span = span
        scope._finish_on_close = finish_on_close
        scope._previous = self._active()
        scope._token = PyContextVar_Set(self._var, scope)
        return scope

    def activate(self, span, finish_on_close):
        return self._activate(span, finish_on_close)

    @property
    def active(self):
        return self._active()


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
        self._notify_at = notify_at

    def _set_notify_at(self, Py_ssize_t notify_at):
        """Calls _batch_ready() when this many finished spans wait in the arena."""
        self._notify_at = notify_at

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
        cdef Span span = Span.__new__(Span)
        cdef Span parent_span = None
        ft_instance_dict_init(span)
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
            span.start_ns = _timestamp_or_now(start_time, arena)
        elif span.flags & FLAG_SAMPLED:
            span.start_ns = ft_now_ns()
        arena.n_started += 1

        # 3. a slot, for sampled spans only
        if not span.flags & FLAG_SAMPLED:
            arena.n_unsampled += 1
        else:
            self._record(span)
        # nothing below raises on bad input; anything else (MemoryError, a signal
        # handler's KeyboardInterrupt) must not leave the slot taken by a span no one has
        cdef bint started = False
        try:
            if span.slot >= 0:
                if follows:
                    arena.set_flags(span.slot, span.gen, SLOT_FIRST_REF_FOLLOWS)
                if refs is not None:
                    arena.set_extra(span.slot, span.gen, "refs",
                                    [(r[0], r[1], r[2]) for r in refs])
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

    cdef int _record(self, Span span) except -1:
        """Gives a sampled span an arena slot and writes its fixed fields."""
        cdef Arena arena = self._arena
        cdef int32_t slot = arena.alloc()
        cdef object drained = None
        cdef Py_ssize_t room
        cdef int attempts = 0
        while slot < 0 and arena.finished_count > 0 and attempts < 8:
            # full, but partly with finished spans: free as many as the reporter can
            # take now (the drain frees its slots in C, atomically), report them after.
            # Another thread may take them first while this one makes the drain's
            # arrays; then slots are free anyway (and if other threads filled them
            # again, this one tries again).
            attempts += 1
            room = self._reporter_room()
            if room == 0:
                break           # the reporter is full too: the span is dropped, counted
            drained = arena.drain(room)
            slot = arena.alloc()
            if drained is not None:
                break
        if drained is not None:
            self._report_drained(drained)
        if slot < 0:
            arena.n_dropped_arena_full += 1
            return 0
        arena.n_sampled += 1
        span.slot = slot
        span.gen = arena.generation[slot]
        arena.trace_hi[slot] = span.trace_hi
        arena.trace_lo[slot] = span.trace_lo
        arena.span_id[slot] = span._span_id
        arena.parent_id[slot] = span._parent_id
        arena.start_ns[slot] = span.start_ns
        arena.end_ns[slot] = 0
        arena.flags[slot] = span.flags
        arena.name_id[slot] = arena.intern_name(span._name)
        if arena.name_id[slot] == UNINTERNED:
            arena.set_name(slot, span.gen, span._name)
        return 0

    def _reporter_room(self):
        """Spans the reporter takes now (-1: any number)."""
        return -1

    def _report_drained(self, columns):
        raise NotImplementedError

    def _drain_to_reporter(self):
        raise NotImplementedError

    def _batch_ready(self):
        pass

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


cdef Py_ssize_t _span_dict_offset():
    cdef Span probe = Span.__new__(Span)
    return <char*>&probe._dict - <char*><PyObject*>probe


cdef Py_ssize_t _scope_dict_offset():
    cdef Scope probe = Scope.__new__(Scope)
    return <char*>&probe._dict - <char*><PyObject*>probe


cdef void _span_dies(object span) noexcept:
    """A span whose handle dies before it finished gives its slot back (counted as
    abandoned): otherwise the slot would stay open for good.  Called with the span's
    reference count at 0: only its fields are read, never a reference taken."""
    cdef PyObject *exc_type
    cdef PyObject *exc_value
    cdef PyObject *exc_tb
    if (<Span>span).slot < 0 or (<Span>span).finished:
        return
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb)
    (<Span>span).arena.abandon((<Span>span).slot, (<Span>span).gen)
    PyErr_Restore(exc_type, exc_value, exc_tb)


# Spans and scopes are opentracing.Span and opentracing.Scope (see src/ft_pytype.h).
ft_type_adopt(Span, opentracing.Span, _span_dict_offset(), _span_dies)
ft_type_adopt(Scope, opentracing.Scope, _scope_dict_offset(), NULL)

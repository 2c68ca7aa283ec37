# SPDX-License-Identifier: Apache-2.0
"""The span handle: what an OpenTracing Span is, over one arena slot.

A Span holds the ids and flags it needs to answer the OpenTracing API on its own (so
unsampled spans cost no arena slot and a finished span's context stays valid), plus
(slot, generation) pointing at the arena row it records into.  It writes to the arena
only through the arena's methods, which check that generation.
"""
cimport cython
from cpython.dict cimport PyDict_Next
from cpython.exc cimport PyErr_Fetch, PyErr_Restore
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from libc.math cimport floor, isfinite, llround
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

import types

import opentracing

from fasttrace._arena cimport Arena, as_text
from fasttrace._cdefs cimport (ft_clock_init, ft_instance_dict_init, ft_log_snapshot, ft_now_ns,
                              ft_type_adopt)
from fasttrace._context cimport SpanContext, FLAG_SAMPLED, FLAG_DEBUG, baggage_with, u128_to_int
from fasttrace.errors import error_fields, log_error
# imports traceback at the first traceback formatted (fasttrace._lazy)
from fasttrace._lazy import traceback

from fasttrace._pyapi cimport PyObject_GenericSetAttr

# the span clock (see src/ft_clock.h)
ft_clock_init()

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


cdef inline bint _put_field(dict fields, object k, object v, Arena arena) except -1:
    """fields[k] = v as the arena keeps them (key as text, value truncated); True when v
    is a traceback (the log then becomes an error log)."""
    if type(k) is not str:
        k = as_text(k, arena)
    fields[k] = arena.clean_value(v)
    return type(v) is _TRACEBACK


cdef dict _cleaned_fields(object key_values, dict source, Arena arena):
    """A log's fields, each cleaned as the arena keeps it (key as text, value truncated,
    a traceback as text), from `source` (the copy of an exact dict, see log_kv) or else
    from the mapping's items(); None, counted, for a mapping whose items() fails."""
    cdef dict fields = {}
    cdef Py_ssize_t pos = 0
    cdef PyObject *pk
    cdef PyObject *pv
    cdef bint traceback_object = False
    if source is not None:
        # PyDict_Next, not an items() iterator: nothing to allocate, and a dict that
        # another thread changes meanwhile is read as far as it goes, never raises
        while PyDict_Next(source, &pos, &pk, &pv):
            if _put_field(fields, <object>pk, <object>pv, arena):
                traceback_object = True
    else:
        try:
            items = list(key_values.items())
        except Exception:
            arena.n_unprintable += 1
            return None
        for item in items:
            try:
                k, v = item
            except Exception:
                arena.n_unprintable += 1
                continue
            if _put_field(fields, k, v, arena):
                traceback_object = True
    if traceback_object:
        fields = _as_error_log(fields, arena)
    return fields


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


cdef int64_t now_ns() noexcept nogil:
    return ft_now_ns()


cdef int64_t timestamp_or_now(object seconds, Arena arena) noexcept:
    """An OpenTracing timestamp in ns; now, counted, for one that is no time."""
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
        cdef int plain = 0
        cdef dict source = None
        if self._patched is not None:
            override = self._override("log_kv")
            if override is not None:
                return self._call_override(override, (key_values, timestamp))
        if self.slot < 0 or self.finished:
            return self
        arena = self.arena
        ts = ft_now_ns() if timestamp is None else timestamp_or_now(timestamp, arena)
        if type(key_values) is dict:
            # the common case, a dict whose fields need no cleaning, is its copy as it
            # is; otherwise the fields are cleaned one by one, read from that copy
            source = ft_log_snapshot(<dict>key_values, arena.max_value_length, &plain)
            if plain:
                arena.add_log(self.slot, self.gen, ts, source)
                return self
        fields = _cleaned_fields(key_values, source, arena)
        if fields is not None:
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
            self._finish(ft_now_ns() if self.slot >= 0 else 0)     # unrecorded: no clock read
        else:
            self._finish(timestamp_or_now(finish_time, self.arena))

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
        self._finish(ft_now_ns() if self.slot >= 0 else 0)

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
            elif was_sampled:
                # dropped for a full arena, and counted there: now it is a span the
                # application does not want sampled, counted as unsampled instead (so a
                # later priority 1 moves it back, and it is never reported and counted)
                if arena.n_dropped_arena_full > 0:
                    arena.n_dropped_arena_full -= 1
                arena.n_unsampled += 1
            return 0
        if self.flags & FLAG_DEBUG:
            return 0            # already forced; jaeger-client ignores a repeat
        self.flags |= FLAG_SAMPLED | FLAG_DEBUG
        self._ctx = None
        if self.slot >= 0:
            arena.set_flags(self.slot, self.gen, FLAG_SAMPLED | FLAG_DEBUG)
            return 1
        # counted once already: as unsampled, or (sampled) as dropped for a full arena,
        # which the arena counts again if it is still full
        if not was_sampled:
            if arena.n_unsampled > 0:
                arena.n_unsampled -= 1
        elif arena.n_dropped_arena_full > 0:
            arena.n_dropped_arena_full -= 1
        if self.start_ns == 0:
            self.start_ns = ft_now_ns()
        self._open_slot()       # the follows_from flag is in self.flags
        if self.slot >= 0 and self._refs is not None:
            arena.set_extra(self.slot, self.gen, "refs", self._refs)
        return 1

    cdef int _finish(self, int64_t end_ns) except -1:
        cdef Arena arena
        if self.finished:
            return 0
        self.finished = True
        if self.slot < 0:
            return 0
        arena = self.arena
        if arena.finish(self.slot, self.gen, end_ns) and arena.finished_count >= arena.notify_at:
            arena.notify_batch_ready()
        return 0


cdef Span new_span():
    """A blank span handle (the tracer fills it in)."""
    cdef Span span = Span.__new__(Span)
    # here, where the type was adopted: the shared empty dict is this module's
    ft_instance_dict_init(span)
    return span


cdef Py_ssize_t _span_dict_offset():
    cdef Span probe = Span.__new__(Span)
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



# Spans are opentracing.Span (see src/ft_pytype.h).
ft_type_adopt(Span, opentracing.Span, _span_dict_offset(), _span_dies)

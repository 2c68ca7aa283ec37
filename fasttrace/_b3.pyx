# SPDX-License-Identifier: Apache-2.0
# cython: language_level=3, embedsignature=True
"""The B3 formats (Zipkin): the single ``b3`` header and the ``X-B3-*`` headers.

B3 (https://github.com/openzipkin/b3-propagation)
=================================================
::

    b3              = OWS ( sampling-state / ids ) OWS
    ids             = trace-id "-" span-id [ "-" sampling-state [ "-" parent-span-id ] ]
    trace-id        = 16HEXDIG / 32HEXDIG        ; not 0
    span-id         = 16HEXDIG                   ; not 0
    parent-span-id  = 16HEXDIG
    sampling-state  = "0" / "1" / "d"            ; absent: deferred (FLAG_DEFERRED)

    X-B3-TraceId = trace-id; X-B3-SpanId = span-id; X-B3-ParentSpanId = parent-span-id
    X-B3-Sampled = "1" / "0" (also "true" / "false", "d"); X-B3-Flags = "1" (debug)

* Invalid B3 input is ignored, as OpenTelemetry's B3 propagator does (B3 defines no
  error): no ids, counted as ``malformed_b3``.  An unknown X-B3-Sampled value reads as
  "no decision".  A sampling state without ids ("b3: 0", "b3: d", X-B3-Sampled alone)
  gives a container context carrying that decision.
* inject writes ``b3: <trace>-<span>[-1|-0|-d]`` (nothing after the span id when the
  decision is deferred) or ``x-b3-traceid``, ``x-b3-spanid``, ``x-b3-sampled`` (omitted
  when deferred or debug) and ``x-b3-flags: 1`` for debug; 32-digit trace ids when the
  trace id has a high half, else 16.
"""
cimport cython
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

from fasttrace._carrier cimport (
    Extracted, Propagator, ascii_str, first, found_ids, has_ids, header, set_header, stats, utf8,
)
from fasttrace._cdefs cimport (
    FT_B3_ACCEPT, FT_B3_DEBUG, FT_B3_DEFERRED, FT_B3_DENY, FT_INVALID, FT_OK, ft_b3_parse,
    ft_b3_sampled, ft_b3_span_id, ft_b3_trace_id, ft_codec_init, ft_traceparent_format,
    ft_trim_ows,
)
from fasttrace._context cimport FLAG_DEBUG, FLAG_DEFERRED, FLAG_SAMPLED, SpanContext

ft_codec_init()

cdef str H_B3 = "b3"
cdef str H_B3_TRACE = "x-b3-traceid"
cdef str H_B3_SPAN = "x-b3-spanid"
cdef str H_B3_SAMPLED = "x-b3-sampled"
cdef str H_B3_FLAGS = "x-b3-flags"
cdef str S_ONE = "1"
cdef str S_ZERO = "0"


cdef inline uint8_t _b3_flags(int state) noexcept:
    if state == FT_B3_ACCEPT:
        return FLAG_SAMPLED
    if state == FT_B3_DEBUG:
        return FLAG_SAMPLED | FLAG_DEBUG
    if state == FT_B3_DENY:
        return 0
    return FLAG_DEFERRED


cdef inline int _b3_state_of(SpanContext ctx) noexcept:
    if ctx.flags & FLAG_DEBUG:
        return FT_B3_DEBUG
    if ctx.flags & FLAG_SAMPLED:
        return FT_B3_ACCEPT
    if ctx.flags & FLAG_DEFERRED:
        return FT_B3_DEFERRED
    return FT_B3_DENY


cdef inline Py_ssize_t _b3_ids(char *buf, SpanContext ctx) noexcept:
    """<16 or 32 hex trace id>-<16 hex span id> into buf; returns the length, or 0 (and
    writes nothing) when ctx has no ids."""
    cdef char tp[55]
    if not has_ids(ctx):
        return 0
    # reuse the traceparent writer for the hex digits
    ft_traceparent_format(tp, ctx.trace_hi, ctx.trace_lo, ctx._span_id, 0)
    if ctx.trace_hi != 0:
        memcpy(buf, tp + 3, 32)
        buf[32] = b'-'
        memcpy(buf + 33, tp + 36, 16)
        return 49
    memcpy(buf, tp + 19, 16)
    buf[16] = b'-'
    memcpy(buf + 17, tp + 36, 16)
    return 33


@cython.final
cdef class B3SinglePropagator(Propagator):
    """B3 single header ``b3``."""

    def __cinit__(self):
        self.name = "b3"

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        cdef char buf[64]
        cdef Py_ssize_t n = _b3_ids(buf, ctx)
        cdef int state
        if n == 0:
            return 0
        state = _b3_state_of(ctx)
        if state != FT_B3_DEFERRED:
            buf[n] = b'-'
            buf[n + 1] = b'd' if state == FT_B3_DEBUG else (b'1' if state == FT_B3_ACCEPT else b'0')
            n += 2
        set_header(carrier, H_B3, ascii_str(buf, n))
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef uint64_t hi = 0, lo = 0, span = 0
        cdef int state = FT_B3_DEFERRED, rc
        if acc.found:
            return 0
        value = first(header(acc, H_B3))
        if value is None:
            return 0
        p = utf8(<str>value, &n)
        if p == NULL:
            stats.malformed_b3 += 1
            return 0
        ft_trim_ows(&p, <ptrdiff_t *>&n)
        rc = ft_b3_parse(p, n, &hi, &lo, &span, &state)
        if rc == FT_INVALID:
            stats.malformed_b3 += 1
            return 0
        if rc == 0:
            if not acc.decided:
                acc.decided = True
                acc.flags = _b3_flags(state)
            return 0
        found_ids(acc, hi, lo, span, _b3_flags(state))
        return 0


cdef inline int _b3_field(str value, int kind, uint64_t *hi, uint64_t *lo) noexcept:
    """Parses a trimmed X-B3 id (kind 0: trace id, 1: span id)."""
    cdef Py_ssize_t n
    cdef const char *p = utf8(value, &n)
    if p == NULL:
        return FT_INVALID
    ft_trim_ows(&p, <ptrdiff_t *>&n)
    if kind == 0:
        return ft_b3_trace_id(p, n, hi, lo)
    return ft_b3_span_id(p, n, lo)


@cython.final
cdef class B3MultiPropagator(Propagator):
    """B3 multiple headers ``X-B3-TraceId``, ``X-B3-SpanId``, ``X-B3-Sampled``,
    ``X-B3-Flags`` (``X-B3-ParentSpanId`` is accepted and ignored)."""

    def __cinit__(self):
        self.name = "b3multi"

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        cdef char buf[64]
        cdef Py_ssize_t n = _b3_ids(buf, ctx)
        cdef int state
        if n == 0:
            return 0
        set_header(carrier, H_B3_TRACE, ascii_str(buf, n - 17))
        set_header(carrier, H_B3_SPAN, ascii_str(buf + n - 16, 16))
        state = _b3_state_of(ctx)
        if state == FT_B3_DEBUG:
            # "Debug implies an accept decision, so don't also send X-B3-Sampled"
            set_header(carrier, H_B3_FLAGS, S_ONE)
        elif state == FT_B3_ACCEPT:
            set_header(carrier, H_B3_SAMPLED, S_ONE)
        elif state == FT_B3_DENY:
            set_header(carrier, H_B3_SAMPLED, S_ZERO)
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef uint64_t hi = 0, lo = 0, span = 0, unused = 0
        cdef int state = FT_B3_DEFERRED
        if acc.found:
            return 0
        tid = first(header(acc, H_B3_TRACE))
        sid = first(header(acc, H_B3_SPAN))
        flags = first(header(acc, H_B3_FLAGS))
        if flags is not None and (<str>flags).strip() == S_ONE:
            state = FT_B3_DEBUG
        else:
            sampled = first(header(acc, H_B3_SAMPLED))
            if sampled is not None:
                p = utf8(<str>sampled, &n)
                if p != NULL:
                    ft_trim_ows(&p, <ptrdiff_t *>&n)
                    state = ft_b3_sampled(p, n)
                    if state == FT_INVALID:
                        state = FT_B3_DEFERRED
        if tid is None and sid is None:
            if state != FT_B3_DEFERRED and not acc.decided:
                acc.decided = True
                acc.flags = _b3_flags(state)
            return 0
        if tid is None or sid is None or _b3_field(<str>tid, 0, &hi, &lo) != FT_OK \
                or _b3_field(<str>sid, 1, &unused, &span) != FT_OK:
            stats.malformed_b3 += 1
            return 0
        found_ids(acc, hi, lo, span, _b3_flags(state))
        return 0

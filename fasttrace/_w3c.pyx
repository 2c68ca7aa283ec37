# SPDX-License-Identifier: Apache-2.0
# cython: language_level=3, embedsignature=True
"""The W3C formats: Trace Context (``traceparent``, ``tracestate``) and Baggage.

W3C Trace Context (https://www.w3.org/TR/trace-context/)
========================================================
ABNF (RFC 5234); HEXDIGLC = DIGIT / "a"-"f"; OWS = *( SP / HTAB ).  traceparent is
Level 1; tracestate follows the editor's draft (https://w3c.github.io/trace-context/,
``spec/`` of w3c/trace-context), whose key grammar makes "@" an ordinary key character
instead of Level 1's ``tenant@system`` form with its own length limits (every Level 1
key is still a key)::

    traceparent    = OWS version "-" version-format OWS
    version        = 2HEXDIGLC                  ; "ff" is invalid
    version-format = trace-id "-" parent-id "-" trace-flags       ; version 00: exactly this
    trace-id       = 32HEXDIGLC                 ; not all zero
    parent-id      = 16HEXDIGLC                 ; not all zero
    trace-flags    = 2HEXDIGLC                  ; bit 0: sampled
    ; a version above 00 is parsed with the 00 rules; it may be longer, but only with
    ; "-" right after trace-flags (spec 3.2.4 "Versioning of traceparent")

    tracestate     = list-member 0*31( OWS "," OWS list-member )
    list-member    = key "=" value / OWS        ; empty members are allowed
    key            = ( lcalpha / DIGIT ) 0*255( keychar )    ; 1 to 256 characters
    keychar        = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
    lcalpha        = %x61-7A                    ; a-z
    value          = 0*255( chr ) nblk-chr      ; trailing spaces are OWS, not value
    chr            = %x20 / nblk-chr
    nblk-chr       = %x21-2B / %x2D-3C / %x3E-7E

* An invalid traceparent (any rule above broken, or the header present more than once)
  is ignored: no ids are taken from it and tracestate is not parsed ("If the vendor
  failed to parse traceparent, it MUST NOT attempt to parse tracestate").  Counted as
  ``malformed_traceparent``.
* Several tracestate headers are combined with "," (RFC 7230 3.2.2) before parsing.
* tracestate with a malformed member or more than 32 (non-empty) members with distinct
  keys is discarded as a whole -- the spec's processing model lets a vendor discard a
  tracestate it cannot parse, and the W3C test suite (test/test.py, strict level 2:
  ``test_tracestate_key_illegal_characters``, ``..._key_illegal_vendor_format``,
  ``..._member_count_limit``, ``..._key_length_limit``, ``..._value_illegal_characters``)
  expects exactly that; the traceparent is still used.  Counted as
  ``tracestate_dropped``.
* A key repeated in the list is kept where it first appears and its later members are
  dropped (not counted): the draft lets a vendor discard duplicates it did not generate,
  the left-most entry is a vendor's latest, the test suite
  (``test_tracestate_duplicated_keys``) expects the tracestate to be inherited, and a
  header passed on with the duplicates would be dropped whole by readers that reject
  them (OpenTelemetry).
* A valid tracestate is kept on the SpanContext, re-emitted as is when it was already
  canonical, else with OWS, empty members and repeated keys removed (allowed: "Optional
  trailing whitespace MAY be excluded when propagating").  An empty one is dropped.
* inject writes ``traceparent: 00-<32 hex>-<16 hex>-<2 hex>`` (flags 01 or 00) and
  ``tracestate`` when the context has one.  Level 2's random-trace-id flag (02) is not
  passed on: a SpanContext has no bit for it (the W3C test suite's
  ``TraceContext2Test.test_propagates_random_flag``, SPEC_LEVEL=2, fails).

W3C Trace Context Level 2: ``traceresponse``
============================================
The response header a server sends back to its caller
(https://www.w3.org/TR/trace-context-2/#traceresponse-header); fasttrace reads and
writes only version 00, strictly::

    traceresponse  = "00-" trace-id "-" child-id "-" trace-flags   ; exactly 55 characters
    trace-id       = 32HEXDIGLC                 ; not all zero
    child-id       = 16HEXDIGLC                 ; the server's span, not all zero
    trace-flags    = 2HEXDIGLC                  ; bit 0: the server's trace was sampled

* ``format_traceresponse`` writes it with the traceparent formatter (flags 01 or 00);
  ``parse_traceresponse`` reads it with the traceparent parser plus the version-00 and
  length rules above (OWS around the value is HTTP's, trimmed).  Anything else -- another
  version, uppercase hex, zero ids, extra fields, several values joined by "," -- is
  ignored and counted as ``malformed_traceresponse``.  The integrations use these two
  functions only (``fasttrace.contrib._safe``): the one place of the format.

W3C Baggage (https://www.w3.org/TR/baggage/)
============================================
::

    baggage-string = list-member 0*179( OWS "," OWS list-member )
    list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
    property       = key OWS "=" OWS value / key OWS      ; tolerated, ignored
    key            = token                                ; RFC 7230 3.2.6
    value          = *baggage-octet                       ; percent-encoded UTF-8
    baggage-octet  = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E

* Several ``baggage`` headers are combined with ",".  A malformed member (no "=", a key
  that is not a token, a value octet outside baggage-octet) is skipped and counted as
  ``malformed_baggage``; empty members are skipped silently.  Within one header the
  last duplicate wins.
* Values (and keys) are percent-decoded (RFC 3986: a "%" not followed by two hex digits
  is kept as is, decoded octets that are not valid UTF-8 become U+FFFD), and "+" reads
  as a space.  The spec makes "+" a literal baggage-octet, but OpenTelemetry Python, the
  tracer Python services next to (or moving to) fasttrace run, writes a space as "+"
  and reads "+" as a space (``quote_plus`` / ``unquote_plus``); reading it the same way
  keeps its "alice jones" from arriving as "alice+jones".  The cost: a writer that leaves
  a literal "+" unencoded (OpenTelemetry Go does; Java and JS send ``%2B``) has it read
  as a space here, as OpenTelemetry Python reads it.  Keys are tokens and are normally
  left alone by peers; we decode them the same way, because we percent-encode keys that
  are not tokens (so every OpenTracing key survives a hop) and OpenTelemetry Python
  decodes keys so too.
* Limits, on both extract and inject: at most 64 members and 8192 bytes of
  ``key=value`` members plus separators.  Beyond that whole members are dropped, never a
  partial one (a member too big to fit is skipped, later smaller ones may still fit), and
  counted as ``baggage_dropped``.
* Encoding percent-encodes (uppercase hex) every octet of the UTF-8 value outside
  baggage-octet, plus "%" and "+", and every octet of a key outside ``tchar`` plus "%" and
  "+".  Space is therefore ``%20`` and "+" is ``%2B``: what we send means the same to a
  reader that decodes with form rules (OpenTelemetry Python, and this one) and to one
  that follows RFC 3986 (OpenTelemetry Java, Go, JS).  Items whose key or value cannot
  be encoded as UTF-8 (lone surrogates) are dropped and counted.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memchr

from fasttrace._carrier cimport (
    MAX_BAGGAGE_BYTES, STACK_BUF, Budget, Extracted, Propagator, ascii_str, combined,
    found_ids, has_ids, header, merge_baggage, pct_decode, set_header, stats, str_item,
    take, utf8, utf8_item,
)
from fasttrace._pyapi cimport (
    PyUnicode_DATA, PyUnicode_New,
)
from fasttrace._cdefs cimport (
    FT_CC_BAGGAGE, FT_CC_TCHAR, FT_OK, ft_all_in_class, ft_codec_init, ft_pct_encode,
    ft_pct_encoded_len, ft_traceparent_format, ft_traceparent_parse, ft_tracestate_parse,
    ft_trim_ows,
)
from fasttrace._context cimport FLAG_SAMPLED, SpanContext

ft_codec_init()

cdef str H_TRACEPARENT = "traceparent"
cdef str H_TRACESTATE = "tracestate"
cdef str H_BAGGAGE = "baggage"
cdef uint64_t _LOW64 = 0xFFFFFFFFFFFFFFFF


# -- W3C Trace Context ------------------------------------------------------------------

cdef object _parse_tracestate(object value):
    """The canonical tracestate for header value(s), or None (empty or discarded)."""
    cdef str s = combined(value)
    cdef Py_ssize_t n, out_len = 0
    cdef const char *p
    cdef char stack[STACK_BUF]
    cdef char *buf
    cdef int count
    if not s:
        return None
    p = utf8(s, &n)
    if p == NULL:
        stats.tracestate_dropped += 1
        return None
    buf = &stack[0] if n <= STACK_BUF else <char *>PyMem_Malloc(n)
    if buf == NULL:
        raise MemoryError()
    try:
        count = ft_tracestate_parse(p, n, buf, <ptrdiff_t *>&out_len)
        if count < 0:
            stats.tracestate_dropped += 1
            return None
        if count == 0:
            return None
        if out_len == n:
            return s
        return ascii_str(buf, out_len)
    finally:
        if buf != &stack[0]:
            PyMem_Free(buf)


@cython.final
cdef class TraceContextPropagator(Propagator):
    """W3C ``traceparent`` (Trace Context Level 1) / ``tracestate`` (editor's draft)."""

    def __cinit__(self):
        self.name = "tracecontext"

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        cdef str tp
        if not has_ids(ctx):
            return 0
        tp = PyUnicode_New(55, 127)
        ft_traceparent_format(<char *>PyUnicode_DATA(tp), ctx.trace_hi, ctx.trace_lo,
                              ctx._span_id, 1 if ctx.flags & FLAG_SAMPLED else 0)
        set_header(carrier, H_TRACEPARENT, tp)
        ts = ctx.tracestate
        if ts and type(ts) is str:
            set_header(carrier, H_TRACESTATE, ts)
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef uint64_t hi, lo, span
        cdef uint8_t flags
        if acc.found:
            return 0
        value = header(acc, H_TRACEPARENT)
        if value is None:
            return 0
        if type(value) is not str:
            # several traceparent headers: the W3C test suite expects a restart
            stats.malformed_traceparent += 1
            return 0
        p = utf8(<str>value, &n)
        if p == NULL:
            stats.malformed_traceparent += 1
            return 0
        ft_trim_ows(&p, <ptrdiff_t *>&n)
        if ft_traceparent_parse(p, n, &hi, &lo, &span, &flags) != FT_OK:
            stats.malformed_traceparent += 1
            return 0
        found_ids(acc, hi, lo, span, FLAG_SAMPLED if flags & 1 else 0)
        ts = header(acc, H_TRACESTATE)
        if ts is not None:
            acc.tracestate = _parse_tracestate(ts)
        return 0


# -- W3C Trace Context Level 2: traceresponse -------------------------------------------

def format_traceresponse(trace_id, span_id, bint sampled):
    """``00-<32 hex trace id>-<16 hex span id>-<01|00>``: the traceresponse value for a
    server span (`trace_id` a 128-bit int, `span_id` a 64-bit int, both non-zero)."""
    cdef uint64_t hi, lo, span
    cdef str out
    if not (0 < trace_id < (1 << 128)) or not (0 < span_id < (1 << 64)):
        raise ValueError("traceresponse: ids out of range")
    hi = <uint64_t>(trace_id >> 64)
    lo = <uint64_t>(trace_id & _LOW64)
    span = <uint64_t>span_id
    out = PyUnicode_New(55, 127)
    ft_traceparent_format(<char *>PyUnicode_DATA(out), hi, lo, span, 1 if sampled else 0)
    return out


def parse_traceresponse(value):
    """``(trace_id, span_id, flags)`` of a version-00 traceresponse value, or None when
    it is absent (None) or malformed (counted as ``malformed_traceresponse``)."""
    cdef Py_ssize_t n
    cdef const char *p
    cdef uint64_t hi, lo, span
    cdef uint8_t flags
    if value is None:
        return None
    if type(value) is not str:
        stats.malformed_traceresponse += 1
        return None
    p = utf8(<str>value, &n)
    if p == NULL:
        stats.malformed_traceresponse += 1
        return None
    ft_trim_ows(&p, <ptrdiff_t *>&n)
    if n != 55 or p[0] != b'0' or p[1] != b'0' \
            or ft_traceparent_parse(p, n, &hi, &lo, &span, &flags) != FT_OK:
        stats.malformed_traceresponse += 1
        return None
    return ((<object>hi << 64) | <object>lo, <object>span, flags)


# -- W3C Baggage ------------------------------------------------------------------------

cdef int _parse_baggage(const char *s, Py_ssize_t n, dict out) except -1:
    """Parses a (combined) baggage header into out, applying the limits."""
    cdef Py_ssize_t pos = 0, end, mn, kn, vn
    cdef Budget budget
    cdef const char *m
    cdef const char *k
    cdef const char *v
    cdef const char *hit
    budget.count = 0
    budget.total = 0
    while pos <= n:
        hit = <const char *>memchr(s + pos, b',', n - pos)
        end = (hit - s) if hit != NULL else n
        m = s + pos
        mn = end - pos
        pos = end + 1
        # properties (";...") are tolerated and ignored
        hit = <const char *>memchr(m, b';', mn)
        if hit != NULL:
            mn = hit - m
        ft_trim_ows(&m, <ptrdiff_t *>&mn)
        if mn == 0:
            if hit != NULL:
                stats.malformed_baggage += 1
            continue
        hit = <const char *>memchr(m, b'=', mn)
        if hit == NULL:
            stats.malformed_baggage += 1
            continue
        k = m
        kn = hit - m
        v = hit + 1
        vn = mn - kn - 1
        ft_trim_ows(&k, <ptrdiff_t *>&kn)
        ft_trim_ows(&v, <ptrdiff_t *>&vn)
        if kn == 0 or not ft_all_in_class(k, kn, FT_CC_TCHAR) \
                or not ft_all_in_class(v, vn, FT_CC_BAGGAGE):
            stats.malformed_baggage += 1
            continue
        if not take(&budget, mn):
            continue
        out[pct_decode(k, kn, True)] = pct_decode(v, vn, True)
    return 0


@cython.final
cdef class W3CBaggagePropagator(Propagator):
    """W3C ``baggage``."""

    def __cinit__(self):
        self.name = "baggage"

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        cdef char buf[MAX_BAGGAGE_BYTES]
        cdef Py_ssize_t w = 0, kn, vn, klen, vlen
        cdef Budget budget
        cdef const char *kp
        cdef const char *vp
        cdef str ks, vs
        cdef dict items = ctx._baggage
        if not items:
            return 0
        budget.count = 0
        budget.total = 0
        for key, value in items.items():
            ks = str_item(key)
            vs = str_item(value)
            kp = utf8_item(ks, &kn)
            vp = utf8_item(vs, &vn)
            if kp == NULL or vp == NULL or kn == 0:
                stats.baggage_dropped += 1
                continue
            klen = ft_pct_encoded_len(kp, kn, FT_CC_TCHAR)
            vlen = ft_pct_encoded_len(vp, vn, FT_CC_BAGGAGE)
            # budget.total stays equal to w, so what take() allows fits in buf
            if not take(&budget, klen + 1 + vlen):
                continue
            if w:
                buf[w] = b','
                w += 1
            w += ft_pct_encode(kp, kn, FT_CC_TCHAR, buf + w)
            buf[w] = b'='
            w += 1
            w += ft_pct_encode(vp, vn, FT_CC_BAGGAGE, buf + w)
        if w:
            set_header(carrier, H_BAGGAGE, ascii_str(buf, w))
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef dict items
        value = header(acc, H_BAGGAGE)
        if value is None:
            return 0
        value = combined(value)
        p = utf8(<str>value, &n)
        if p == NULL:
            stats.malformed_baggage += 1
            return 0
        items = {}
        _parse_baggage(p, n, items)
        merge_baggage(acc, items)
        return 0

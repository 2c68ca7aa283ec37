# SPDX-License-Identifier: Apache-2.0
# The carrier layer of the propagation codecs (see _carrier.pyx): what every format
# module cimports.  It knows no format; a format module reaches it through C calls only.
from cpython.exc cimport PyErr_Clear
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy

from fasttrace._cdefs cimport ft_pct_encode, ft_pct_encoded_len

from fasttrace._context cimport SpanContext

from fasttrace._pyapi cimport (
    PyDict_GET_SIZE, PyDict_GetItemWithError, PyUnicode_AsUTF8AndSize, PyUnicode_DATA,
    PyUnicode_DecodeUTF8, PyUnicode_GET_LENGTH, PyUnicode_IS_ASCII, PyUnicode_IS_COMPACT_ASCII,
    PyUnicode_New,
)


# -- limits (W3C Baggage "Limits"; Trace Context 3.3.1.2) -------------------------------
cdef enum:
    MAX_BAGGAGE_MEMBERS = 64
    MAX_BAGGAGE_BYTES = 8192
    MAX_TRACESTATE_BYTES = 16447      # 32 members of 256 + "=" + 256, 31 commas
    STACK_BUF = 512


# -- counters (codec_stats() reads them) -------------------------------------------------
cdef struct CodecStats:
    uint64_t malformed_traceparent
    uint64_t malformed_traceresponse
    uint64_t tracestate_dropped
    uint64_t baggage_dropped
    uint64_t malformed_baggage
    uint64_t malformed_jaeger
    uint64_t malformed_b3
    uint64_t malformed_binary
    uint64_t unreadable_carrier
    uint64_t extract_errors

cdef CodecStats stats


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
    cdef bint decided          # a sampling decision without ids was found (b3: 0/1/d)
    # -- the carrier layer's own state --
    cdef object carrier        # the mapping being read
    cdef bint is_dict          # type(carrier) is dict: exact-name fast path first
    cdef bint indexed          # index built (or found empty)
    cdef dict index            # ASCII-lowercased header name -> str | list[str], or None
    cdef object error          # the first SpanContextCorruptedException, kept until the end
    # -- what a claim hook collected during scan(), for the propagator that scanned --
    cdef dict claimed_items    # baggage, or None
    cdef object claimed_value  # one header value, or None


cdef class Propagator:
    cdef readonly str name     # "tracecontext", "baggage", "jaeger", "b3", "b3multi"
    # Lowercase initials (bit i: chr(97 + i)) of the header names claim() wants to see
    # during scan(); 0: none.
    cdef uint32_t claim_initials
    # extract_alone() is implemented: a Propagation holding only this propagator calls
    # it for an exact dict carrier before its general path.
    cdef bint alone_path
    # Writes ctx into a mapping carrier (dict-like: carrier[key] = value).
    cdef int inject(self, SpanContext ctx, object carrier) except -1
    # Reads from a mapping carrier into acc.  Ids only if acc.found is still false
    # (the first propagator that finds a valid context wins); baggage merges.
    # Raises SpanContextCorruptedException where the format's spec calls the input
    # corrupt; leaves acc untouched where the spec says to ignore it.
    cdef int extract(self, object carrier, Extracted acc) except -1
    # Offered one header (name `key`, its n > 0 UTF-8 bytes at p, its raw value) by
    # scan(); returns True when the name is this propagator's alone (then it is not
    # indexed).  state: what the caller of scan() passed.
    cdef bint claim(self, Extracted acc, void *state, str key, const char *p, Py_ssize_t n,
                    object value) except -1
    # What Propagation.extract would return for an exact dict with this propagator
    # alone; done[0] = False (the default) to let the general path decide instead.
    cdef SpanContext extract_alone(self, dict carrier, bint *done)


cdef class Propagation:
    """The ordered propagators a tracer was configured with."""
    cdef tuple propagators
    cdef readonly tuple names  # the propagators' names, in order
    cdef readonly bint text_map  # built for Format.TEXT_MAP (Jaeger baggage not URL-encoded)
    cdef Extracted _acc        # reused by extract()
    cdef bint _acc_busy        # _acc is in use by an extract() further up the stack
    cdef Propagator _alone     # the propagator when it is the only one and has alone_path
    cdef int inject(self, SpanContext ctx, object carrier) except -1
    # None when the carrier holds nothing; a SpanContext with ids when a valid
    # context was found; a "container" SpanContext with trace_hi == trace_lo ==
    # span_id == 0 when only baggage and/or a jaeger-debug-id were found (as
    # jaeger-client does), so a span started from it begins a new trace that
    # keeps the baggage (and is forced sampled+debug for a debug id).  A bare B3
    # sampling decision ("b3: 0", "b3: d", X-B3-Sampled alone) also gives a container:
    # its flags carry that decision; every other container has flags == FLAG_DEFERRED.
    cdef SpanContext extract(self, object carrier)


# -- reading a carrier -------------------------------------------------------------------

# The value(s) of header `name` (lowercase): str, list of str, or None.
cdef object header_rest(Extracted acc, str name, PyObject *v)

cdef inline object header(Extracted acc, str name):
    cdef PyObject *v = NULL
    if acc.is_dict:
        v = PyDict_GetItemWithError(acc.carrier, name)
        if v != NULL and type(<object>v) is str:
            return <object>v
    return header_rest(acc, name, v)

# One pass over the carrier's names: indexes (once) the names a plain lookup cannot
# find, and offers claimer.claim the names whose initials it wants (claimer may be None).
cdef int scan(Extracted acc, Propagator claimer, void *state) except -1

# A carrier value as str, list of str (repeated header) or None (unusable).
cdef object header_value(object v)

# A repeated header's values joined with ',' (RFC 7230 3.2.2).
cdef str combined(object v)

cdef inline str first(object v):
    """The first value of a (possibly repeated) header."""
    if v is None or type(v) is str:
        return v
    return (<list>v)[0]

cdef inline const char *next_name(dict carrier, Py_ssize_t *pos, PyObject **k,
                                  PyObject **v, Py_ssize_t *n) noexcept:
    """Advances *pos to the carrier's next item whose key is a str with a non-empty
    UTF-8 name (n bytes): those bytes, or NULL at the end.  *k and *v are borrowed."""
    cdef const char *p
    while PyDict_Next(carrier, pos, k, v):
        if type(<object>k[0]) is str:
            p = utf8(<str>k[0], n)
            if p != NULL and n[0] != 0:
                return p
    return NULL

# Adds a propagator's baggage; keys an earlier propagator supplied are kept.
cdef int merge_baggage(Extracted acc, dict items) except -1

cdef inline void found_ids(Extracted acc, uint64_t hi, uint64_t lo, uint64_t span,
                           uint8_t flags) noexcept:
    acc.found = True
    acc.trace_hi = hi
    acc.trace_lo = lo
    acc.span_id = span
    acc.flags = flags


# -- writing a carrier -------------------------------------------------------------------

cdef int set_any(object carrier, str name, str value) except -1

cdef inline int set_header(object carrier, str name, str value) except -1:
    if type(carrier) is dict:
        return PyDict_SetItem(carrier, name, value)
    return set_any(carrier, name, value)


# -- baggage limits, for formats with one header (or record) per item ---------------------

cdef struct Budget:
    int count
    Py_ssize_t total

cdef inline bint take(Budget *b, Py_ssize_t size) noexcept:
    size += 1 if b.count else 0
    if b.count >= MAX_BAGGAGE_MEMBERS or b.total + size > MAX_BAGGAGE_BYTES:
        stats.baggage_dropped += 1
        return False
    b.count += 1
    b.total += size
    return True


# -- strings -----------------------------------------------------------------------------

cdef inline const char *utf8(str s, Py_ssize_t *n) noexcept:
    """The UTF-8 bytes of s (its own buffer when ASCII), or NULL for lone surrogates."""
    cdef const char *p
    if PyUnicode_IS_COMPACT_ASCII(s):
        n[0] = PyUnicode_GET_LENGTH(s)
        return <const char *>PyUnicode_DATA(s)
    p = PyUnicode_AsUTF8AndSize(s, n)
    if p == NULL:
        PyErr_Clear()
    return p

cdef inline Py_ssize_t utf8_len(str s) noexcept:
    """The UTF-8 length of s in bytes (what the baggage limits count), or -1 when s
    holds lone surrogates."""
    cdef Py_ssize_t n
    if PyUnicode_IS_COMPACT_ASCII(s):
        return PyUnicode_GET_LENGTH(s)
    if utf8(s, &n) == NULL:
        return -1
    return n

cdef inline str ascii_str(const char *p, Py_ssize_t n):
    """A str from bytes known to be ASCII."""
    cdef str s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return s

# str(x), or None when that raises.
cdef str str_or_none(object x)

cdef inline str str_item(object x):
    """A baggage key or value as str (SpanContext stores str; be safe with others)."""
    if type(x) is str:
        return x
    return str_or_none(x)

cdef inline const char *utf8_item(str s, Py_ssize_t *n) noexcept:
    """utf8(s), NULL for None too."""
    return utf8(s, n) if s is not None else NULL

cdef inline bint has_ids(SpanContext ctx) noexcept:
    return (ctx.trace_hi != 0 or ctx.trace_lo != 0) and ctx._span_id != 0

# Percent-decodes UTF-8 bytes into a str (invalid UTF-8 -> U+FFFD); with plus_is_space,
# '+' is a space.
cdef str pct_decode(const char *p, Py_ssize_t n, bint plus_is_space)

cdef inline str pct_decode_str(str s):
    """Percent-decodes s; s itself when it holds no '%'."""
    cdef Py_ssize_t n
    cdef const char *p = utf8(s, &n)
    if p == NULL or memchr(p, b'%', n) == NULL:
        return s
    return pct_decode(p, n, False)

cdef inline str pct_encode(const char *p, Py_ssize_t n, unsigned cls, str orig):
    """Percent-encodes UTF-8 bytes, keeping the octets of class cls except '%' and '+'
    (orig, the str they came from, is returned when nothing needs encoding)."""
    cdef Py_ssize_t m = ft_pct_encoded_len(p, n, cls)
    cdef str s
    if m == n and orig is not None:
        return orig
    s = PyUnicode_New(m, 127)
    ft_pct_encode(p, n, cls, <char *>PyUnicode_DATA(s))
    return s

# ASCII-lowercased key (header names are ASCII; Unicode folding would let the Kelvin
# sign match 'k').
cdef str lower_key(str key)
# A repr for error messages that cannot blow up a log line.
cdef str short_repr(object value)

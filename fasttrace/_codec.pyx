# SPDX-License-Identifier: Apache-2.0
# cython: language_level=3, embedsignature=True
"""Propagation codecs: what a SpanContext looks like on the wire.

Every format below is read and written here, in Cython over the UTF-8 bytes CPython
already keeps for an ASCII ``str`` (``PyUnicode_AsUTF8AndSize`` returns the string's
own buffer, no copy), with the byte-level work in ``src/ft_codec.h``.  Measured: this
beats both ``PyUnicode_READ`` per character and ``str`` slicing by a wide margin, and
costs nothing for the ASCII headers of real traffic.

Carriers
========
A carrier is a mapping: a ``dict``, any ``collections.abc.Mapping``, or any object with
``.items()`` (``email.message.Message``, WSGI-style adapters).  Header names are matched
ASCII-case-insensitively for both ``HTTP_HEADERS`` and ``TEXT_MAP``: for an exact
``dict`` the lowercase name is looked up first (``carrier.get("traceparent")``); only
when that misses are the carrier's other keys lowercased, once per ``extract``.  A value
may be a ``str`` or a list/tuple of ``str`` (a header received several times); entries
whose key or value is anything else are ignored, and a carrier whose ``.items()`` raises
is read as far as it went.  ``inject`` writes lowercase names with
``carrier[name] = value``.

Extraction tries the configured propagators in order.  The first that finds a valid
context supplies the ids (and its tracestate); baggage from every propagator is merged,
the earlier propagator winning a key both carry.  Malformed input gives ``None``, a
valid context, or ``opentracing.SpanContextCorruptedException`` -- nothing else
escapes.  A format whose spec calls bad input corrupt (Jaeger) raises only if no other
propagator found a valid context.

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

Jaeger (https://www.jaegertracing.io/docs/latest/client-libraries/#propagation-format)
=====================================================================================
::

    uber-trace-id   = OWS trace-id ":" span-id ":" parent-span-id ":" flags OWS
    trace-id        = 1*32HEXDIG        ; 64 or 128 bits, zero padding optional; not 0
    span-id         = 1*16HEXDIG        ; not 0
    parent-span-id  = 1*16HEXDIG        ; 0 = root (ignored on extract)
    flags           = 1*2HEXDIG         ; 1 sampled, 2 debug, 8 firehose
    uberctx-<key>   = <percent-encoded value>      ; one header per baggage item
    jaeger-baggage  = item *( "," item ); item = OWS key "=" value OWS
    jaeger-debug-id = <correlation id>

* As in jaeger-client, the uber-trace-id value is percent-decoded first (proxies encode
  ":"), and a malformed one (several headers included) raises
  ``SpanContextCorruptedException`` (counted as ``malformed_jaeger``).
* ``uberctx-`` keys are lowercased as jaeger-client and jaeger-go do; values are
  percent-decoded.  ``jaeger-baggage`` items with anything but one "=" are skipped, as
  jaeger-client does; so are items with an empty key (jaeger-client keeps them as
  "").  The baggage limits above apply.
* ``jaeger-debug-id`` alone (or with baggage only) gives a container context carrying
  ``debug_id``: the tracer starts a new, sampled and debug trace from it.
* inject writes ``uber-trace-id: <16 or 32 hex>:<16 hex>:0:<flags hex>`` (32 digits when
  the trace id has a high half) and ``uberctx-<key>`` per item with the value
  percent-encoded (RFC 3986 unreserved kept).  Keys that are not HTTP tokens cannot be
  header names and are dropped (counted).  A Propagation built with ``text_map=True``
  (jaeger-client's ``TextCodec(url_encoding=False)``, its TEXT_MAP codec) writes and
  reads ``uberctx-`` values unencoded.

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

Format.BINARY, layout version 1
===============================
Big-endian; byte lengths::

    binary-context = version flags trace-hi trace-lo span-id tracestate baggage
    version        = %xF1                 ; high nibble F: fasttrace; low nibble: layout 1
    flags          = OCTET                ; FLAG_* bits: 1 sampled, 2 debug, 8 firehose,
                                          ; 16 deferred; any other bit set is corrupt
    trace-hi       = 8OCTET               ; the 128-bit trace id, high half
    trace-lo       = 8OCTET               ; low half
    span-id        = 8OCTET
    tracestate     = length16 *OCTET      ; ASCII, 0..16447 bytes; 0 = none
    baggage        = count8 count8( item ); 0..64 items
    item           = length16 key length16 value  ; UTF-8, key not empty
    length16       = 2OCTET
    count8         = OCTET

* 28 + 1 bytes without tracestate and baggage.  Trace id and span id are both zero (a
  baggage-only container) or both non-zero.  Keys and values together are at most 8192
  bytes; inject drops whole items beyond the limits (counted in ``baggage_dropped``).
* ``inject_binary`` replaces the content of a ``bytearray`` carrier (anything else:
  ``InvalidCarrierException``).  ``extract_binary`` reads ``bytes``, ``bytearray``,
  ``memoryview`` (any contiguous buffer): empty gives ``None``; another version, a
  truncated buffer, trailing bytes, a bad length or invalid UTF-8 raise
  ``SpanContextCorruptedException`` (counted as ``malformed_binary``); a carrier that is
  not a buffer gives ``None`` (counted as ``unreadable_carrier``).
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.exc cimport PyErr_Clear
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

from fasttrace._cdefs cimport (
    FT_B3_ACCEPT, FT_B3_DEBUG, FT_B3_DEFERRED, FT_B3_DENY, FT_CC_BAGGAGE, FT_CC_TCHAR,
    FT_CC_UNRESERVED, FT_INVALID, FT_OK, ft_all_in_class, ft_ascii_lower, ft_b3_parse,
    ft_b3_sampled, ft_b3_span_id, ft_b3_trace_id, ft_codec_init, ft_get_u64be,
    ft_has_prefix_ci, ft_has_upper, ft_pct_encode, ft_pct_encoded_len,
    ft_put_u64be, ft_traceparent_format, ft_traceparent_parse, ft_tracestate_parse,
    ft_trim_ows, ft_uber_format, ft_uber_parse,
)
from fasttrace._context cimport (
    FLAG_DEBUG, FLAG_DEFERRED, FLAG_FIREHOSE, FLAG_SAMPLED, SpanContext,
)

from opentracing import InvalidCarrierException, SpanContextCorruptedException

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o)
    bint PyUnicode_IS_ASCII(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    Py_ssize_t PyDict_GET_SIZE(object d)
    # NULL without an exception when the key is missing; str keys cannot fail to hash
    PyObject *PyDict_GetItemWithError(object d, object key)
    # returns NULL with an exception set for lone surrogates; callers clear it
    const char *PyUnicode_AsUTF8AndSize(object o, Py_ssize_t *size)
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    object PyBytes_FromStringAndSize(const char *v, Py_ssize_t n)

# helpers of src/ft_codec.h that _cdefs.pxd does not declare
cdef extern from "ft_codec.h" nogil:
    ptrdiff_t ft_pct_decode_ex(const char *s, ptrdiff_t n, int plus_is_space, char *out)
    int ft_is_uberctx(const char *s, ptrdiff_t n)
    int ft_is_jaeger(const char *s, ptrdiff_t n)
    int ft_is_uber_trace_id(const char *s, ptrdiff_t n)

ft_codec_init()

# -- limits (W3C Baggage "Limits"; Trace Context 3.3.1.2) -------------------------------
cdef enum:
    MAX_BAGGAGE_MEMBERS = 64
    MAX_BAGGAGE_BYTES = 8192
    MAX_TRACESTATE_BYTES = 16447      # 32 members of 256 + "=" + 256, 31 commas
    BINARY_VERSION = 0xF1
    BINARY_FIXED = 26                 # version + flags + 3 x 8 id bytes
    BINARY_FLAGS = FLAG_SAMPLED | FLAG_DEBUG | FLAG_FIREHOSE | FLAG_DEFERRED
    JAEGER_FLAGS = FLAG_SAMPLED | FLAG_DEBUG | FLAG_FIREHOSE
    STACK_BUF = 512

# -- header names (lowercase; interned constants) ---------------------------------------
cdef str H_TRACEPARENT = "traceparent"
cdef str H_TRACESTATE = "tracestate"
cdef str H_BAGGAGE = "baggage"
cdef str H_UBER = "uber-trace-id"
cdef str H_JAEGER_DEBUG = "jaeger-debug-id"
cdef str H_JAEGER_BAGGAGE = "jaeger-baggage"
cdef str UBERCTX = "uberctx-"
cdef str H_B3 = "b3"
cdef str H_B3_TRACE = "x-b3-traceid"
cdef str H_B3_SPAN = "x-b3-spanid"
cdef str H_B3_SAMPLED = "x-b3-sampled"
cdef str H_B3_FLAGS = "x-b3-flags"
cdef str S_ONE = "1"
cdef str S_ZERO = "0"
cdef str S_D = "d"

#: The names ``make_propagation`` accepts, in the order of the docs.
KNOWN_PROPAGATORS = ("tracecontext", "baggage", "jaeger", "b3", "b3multi")


# -- counters ----------------------------------------------------------------------------
cdef struct CodecStats:
    uint64_t malformed_traceparent
    uint64_t tracestate_dropped
    uint64_t baggage_dropped
    uint64_t malformed_baggage
    uint64_t malformed_jaeger
    uint64_t malformed_b3
    uint64_t malformed_binary
    uint64_t unreadable_carrier
    uint64_t extract_errors

cdef CodecStats stats


def codec_stats(bint reset=False):
    """Counters of what the codecs ignored or dropped, process-wide.

    Args:
        reset: set every counter back to zero after reading.

    Returns:
        A dict: ``malformed_traceparent``, ``tracestate_dropped`` (whole tracestates
        discarded), ``baggage_dropped`` (members over the limits, or unencodable),
        ``malformed_baggage`` (members that broke the grammar), ``malformed_jaeger``,
        ``malformed_b3``, ``malformed_binary``, ``unreadable_carrier`` (carriers whose
        ``.items()`` failed, non-buffer binary carriers) and ``extract_errors``
        (unexpected errors inside a propagator, turned into "not found").
    """
    global stats
    result = {
        "malformed_traceparent": stats.malformed_traceparent,
        "tracestate_dropped": stats.tracestate_dropped,
        "baggage_dropped": stats.baggage_dropped,
        "malformed_baggage": stats.malformed_baggage,
        "malformed_jaeger": stats.malformed_jaeger,
        "malformed_b3": stats.malformed_b3,
        "malformed_binary": stats.malformed_binary,
        "unreadable_carrier": stats.unreadable_carrier,
        "extract_errors": stats.extract_errors,
    }
    if reset:
        memset(&stats, 0, sizeof(stats))
    return result


# -- small string helpers ---------------------------------------------------------------

cdef inline const char *_utf8(str s, Py_ssize_t *n) noexcept:
    """The UTF-8 bytes of s (its own buffer when ASCII), or NULL for lone surrogates."""
    cdef const char *p
    if PyUnicode_IS_COMPACT_ASCII(s):
        n[0] = PyUnicode_GET_LENGTH(s)
        return <const char *>PyUnicode_DATA(s)
    p = PyUnicode_AsUTF8AndSize(s, n)
    if p == NULL:
        PyErr_Clear()
    return p


cdef inline str _ascii(const char *p, Py_ssize_t n):
    """A str from bytes known to be ASCII."""
    cdef str s = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return s


cdef str _decode(const char *p, Py_ssize_t n, bint plus_is_space):
    """Percent-decodes UTF-8 bytes into a str (invalid UTF-8 -> U+FFFD); with
    plus_is_space, '+' is a space."""
    cdef char stack[STACK_BUF]
    cdef char *buf
    cdef Py_ssize_t m
    if memchr(p, b'%', n) == NULL and (not plus_is_space or memchr(p, b'+', n) == NULL):
        return PyUnicode_DecodeUTF8(p, n, "replace")
    buf = &stack[0] if n <= STACK_BUF else <char *>PyMem_Malloc(n)
    if buf == NULL:
        raise MemoryError()
    try:
        m = ft_pct_decode_ex(p, n, plus_is_space, buf)
        return PyUnicode_DecodeUTF8(buf, m, "replace")
    finally:
        if buf != &stack[0]:
            PyMem_Free(buf)


cdef str _decode_str(str s):
    """Percent-decodes s; s itself when it holds no '%'."""
    cdef Py_ssize_t n
    cdef const char *p = _utf8(s, &n)
    if p == NULL or memchr(p, b'%', n) == NULL:
        return s
    return _decode(p, n, False)


cdef str _encode(const char *p, Py_ssize_t n, unsigned cls, str orig=None):
    """Percent-encodes UTF-8 bytes, keeping the octets of class cls except '%' and '+'
    (orig, the str they came from, is returned when nothing needs encoding)."""
    cdef Py_ssize_t m = ft_pct_encoded_len(p, n, cls)
    cdef str s
    if m == n and orig is not None:
        return orig
    s = PyUnicode_New(m, 127)
    ft_pct_encode(p, n, cls, <char *>PyUnicode_DATA(s))
    return s


cdef str _lower_key(str key):
    """ASCII-lowercased key (header names are ASCII; Unicode folding would let the
    Kelvin sign match 'k')."""
    cdef Py_ssize_t n
    cdef const char *p
    cdef str out
    if PyUnicode_IS_ASCII(key):
        p = _utf8(key, &n)
        if not ft_has_upper(p, n):
            return key
        out = PyUnicode_New(n, 127)
        ft_ascii_lower(p, n, <char *>PyUnicode_DATA(out))
        return out
    return key.translate(_ASCII_LOWER)

cdef dict _ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


cdef object _header_value(object v):
    """A carrier value as str, list of str (repeated header) or None (unusable)."""
    cdef list out
    if type(v) is str:
        return v
    if isinstance(v, (list, tuple)):
        out = [x for x in v if type(x) is str]
        if not out:
            return None
        if len(out) == 1:
            return out[0]
        return out
    if isinstance(v, str):
        return str(v)
    return None


cdef inline str _first(object v):
    """The first value of a (possibly repeated) header."""
    if v is None or type(v) is str:
        return v
    return (<list>v)[0]


cdef str _combined(object v):
    """A repeated header's values joined with ',' (RFC 7230 3.2.2)."""
    if type(v) is str:
        return v
    return ",".join(<list>v)


cdef struct Budget:
    # the baggage limits, for formats with one header per item
    int count
    Py_ssize_t total


cdef inline bint _take(Budget *b, Py_ssize_t size) noexcept:
    size += 1 if b.count else 0
    if b.count >= MAX_BAGGAGE_MEMBERS or b.total + size > MAX_BAGGAGE_BYTES:
        stats.baggage_dropped += 1
        return False
    b.count += 1
    b.total += size
    return True


cdef int _index_add(dict index, str key, object value) except -1:
    cdef PyObject *old = PyDict_GetItemWithError(index, key)
    if old == NULL:
        index[key] = value
        return 0
    cur = <object>old
    merged = [cur] if type(cur) is str else list(cur)
    if type(value) is str:
        merged.append(value)
    else:
        merged.extend(value)
    index[key] = merged
    return 0


# header name -> baggage key, and baggage key -> header name: the same few keys travel
# on every request, so their strings (and hashes) are made once; bounded
cdef dict _UBER_KEYS = {}
cdef dict _UBER_NAMES = {}
cdef enum:
    NAME_CACHE_MAX = 512
    ID_SLOTS = 64               # a power of two


# In front of those dicts, a small cache by object identity: keys made by this module
# (or string literals) come back as the very same objects on every request, and
# comparing a pointer is a fraction of a dict lookup.  Two-way: a key may sit in either
# slot of its pair, so two hot keys whose addresses collide do not evict each other on
# every call.  Each slot holds strong references, so a cached address cannot be reused
# by another object while it is in the slot.
cdef struct IdSlot:
    PyObject *key
    PyObject *value

cdef IdSlot _uber_key_slots[ID_SLOTS]     # "uberctx-<Key>" header name -> "<key>"
cdef IdSlot _uber_name_slots[ID_SLOTS]    # baggage key -> "uberctx-<key>"


cdef inline IdSlot *_id_pair(IdSlot *slots, object key) noexcept:
    # objects are 16-byte aligned: the low 4 bits of an address carry nothing
    cdef size_t a = <size_t><PyObject *>key
    return &slots[((a >> 4) ^ (a >> 12)) & (ID_SLOTS - 2)]


cdef inline PyObject *_id_get(IdSlot *slots, object key) noexcept:
    cdef IdSlot *pair = _id_pair(slots, key)
    if pair[0].key == <PyObject *>key:
        return pair[0].value
    if pair[1].key == <PyObject *>key:
        return pair[1].value
    return NULL


cdef inline void _id_put(IdSlot *slots, str key, str value) noexcept:
    # exact str only (callers check): releasing one runs no Python code.  The new
    # entry takes the first slot of the pair, the previous first moves to the second.
    cdef IdSlot *pair = _id_pair(slots, key)
    cdef PyObject *old_key = pair[1].key
    cdef PyObject *old_value = pair[1].value
    Py_INCREF(key)
    Py_INCREF(value)
    pair[1] = pair[0]
    pair[0].key = <PyObject *>key
    pair[0].value = <PyObject *>value
    Py_XDECREF(old_key)
    Py_XDECREF(old_value)


cdef inline Py_ssize_t _utf8_len(str s) noexcept:
    """The UTF-8 length of s in bytes (what the baggage limits count), or -1 when s
    holds lone surrogates."""
    cdef Py_ssize_t n
    if PyUnicode_IS_COMPACT_ASCII(s):
        return PyUnicode_GET_LENGTH(s)
    if _utf8(s, &n) == NULL:
        return -1
    return n


cdef PyObject *_uber_key_of(str key, const char *p, Py_ssize_t n) except NULL:
    """The baggage key of header name `key` ("uberctx-" and n - 8 more bytes at p),
    lowercased as jaeger-client does; borrowed: the caches keep it alive."""
    cdef PyObject *cached = PyDict_GetItemWithError(_UBER_KEYS, key)
    cdef str name
    if cached == NULL:
        if PyUnicode_IS_COMPACT_ASCII(key):
            name = PyUnicode_New(n - 8, 127)
            ft_ascii_lower(p + 8, n - 8, <char *>PyUnicode_DATA(name))
        else:
            name = _lower_key(key[8:])
        if len(_UBER_KEYS) >= NAME_CACHE_MAX:
            _UBER_KEYS.clear()
        _UBER_KEYS[key] = name
        cached = <PyObject *>name
    if type(key) is str:
        _id_put(_uber_key_slots, key, <str>cached)
    return cached


cdef inline int _uber_item(dict items, Budget *budget, str key, const char *p, Py_ssize_t n,
                           str value, bint decode) except -1:
    """Adds one ``uberctx-<key>: value`` header to items (value: the header's first
    str value)."""
    cdef PyObject *name
    cdef Py_ssize_t size
    if n <= 8:
        return 0
    size = _utf8_len(value)
    if size < 0 or not _take(budget, n + size):
        return 0
    name = _id_get(_uber_key_slots, key)
    if name == NULL:
        name = _uber_key_of(key, p, n)
    if decode:
        PyDict_SetItem(items, <object>name, _decode_str(value))
    else:
        PyDict_SetItem(items, <object>name, value)
    return 0


cdef inline const char *_next_name(dict carrier, Py_ssize_t *pos, PyObject **k,
                                   PyObject **v, Py_ssize_t *n) noexcept:
    """Advances *pos to the carrier's next item whose key is a str with a non-empty
    UTF-8 name (n bytes): those bytes, or NULL at the end.  *k and *v are borrowed."""
    cdef const char *p
    while PyDict_Next(carrier, pos, k, v):
        if type(<object>k[0]) is str:
            p = _utf8(<str>k[0], n)
            if p != NULL and n[0] != 0:
                return p
    return NULL


cdef enum JaegerName:
    NAME_OTHER             # nothing Jaeger reads (or not spelled so that it would)
    NAME_UBERCTX           # "uberctx-<key>", any case
    NAME_UBER              # "uber-trace-id", exactly
    NAME_UBER_OTHER_CASE   # "uber-trace-id" in another case
    NAME_JAEGER            # "jaeger-*", any case


cdef inline JaegerName _jaeger_name(const char *p, Py_ssize_t n) noexcept:
    """What a header name (n > 0 bytes) is to the Jaeger propagator."""
    cdef char c = p[0] | 0x20
    if c == b'u':
        if ft_is_uberctx(p, n):
            return NAME_UBERCTX
        if ft_is_uber_trace_id(p, n):
            return NAME_UBER
        if n == 13 and ft_has_prefix_ci(p, n, "uber-trace-id", 13):
            return NAME_UBER_OTHER_CASE
    elif c == b'j' and ft_is_jaeger(p, n):
        return NAME_JAEGER
    return NAME_OTHER


cdef dict _build_index(Extracted acc, Budget *budget, bint uberctx, bint decode,
                       bint *saw_jaeger=NULL):
    """Lowercased names -> values, for the names a plain lookup cannot find; one pass.

    With `uberctx`, also returns the Jaeger baggage of the ``uberctx-*`` headers (any
    case) as a dict, or None.  Called again once the index exists, it only does that."""
    cdef dict index = None
    cdef dict found = None
    cdef Py_ssize_t pos = 0, n
    cdef PyObject *k
    cdef PyObject *v
    cdef const char *p
    cdef JaegerName kind
    cdef str hkey
    cdef object hval
    cdef bint build = not acc.indexed
    if not build and not acc.is_dict:
        index = acc.index
    elif acc.is_dict:
        # exact lowercase names are looked up directly; only other spellings go here
        while True:
            p = _next_name(acc.carrier, &pos, &k, &v, &n)
            if p == NULL:
                break
            # owned references: reading a value that is not a str may run Python code
            # (a str subclass's __str__) that drops the carrier's own
            hkey = <str>k
            hval = <object>v
            kind = _jaeger_name(p, n)
            if uberctx and kind == NAME_UBERCTX:
                if type(hval) is not str:
                    hval = _first(_header_value(hval))
                if hval is not None:
                    if found is None:
                        found = {}
                    _uber_item(found, budget, hkey, p, n, <str>hval, decode)
                continue         # never looked up by name: not for the index
            if uberctx and kind == NAME_UBER:
                if type(hval) is str:
                    acc.uber = hval
                continue         # lowercase: not for the index
            if kind == NAME_JAEGER and saw_jaeger != NULL:
                saw_jaeger[0] = True
            if build and ft_has_upper(p, n):
                value = _header_value(hval)
                if value is not None:
                    if index is None:
                        index = {}
                    _index_add(index, _lower_key(hkey), value)
    else:
        index = {}
        try:
            for item in acc.carrier.items():
                key, value = item
                if type(key) is not str:
                    continue
                value = _header_value(value)
                if value is not None:
                    _index_add(index, _lower_key(key), value)
        except Exception:
            # a carrier we cannot (fully) read: use what it gave
            stats.unreadable_carrier += 1
    if uberctx and not acc.is_dict and index is not None:
        for key, value in index.items():
            if (<str>key).startswith(UBERCTX):
                p = _utf8(<str>key, &n)
                if p != NULL:
                    if found is None:
                        found = {}
                    _uber_item(found, budget, <str>key, p, n, _first(value), decode)
    if build:
        acc.indexed = True
        if index:
            acc.index = index
    return found


cdef object _header(Extracted acc, str name):
    """The value(s) of header `name` (lowercase): str, list of str, or None."""
    cdef PyObject *v
    if acc.is_dict:
        v = PyDict_GetItemWithError(acc.carrier, name)
        if v != NULL:
            if type(<object>v) is str:
                return <object>v
            value = _header_value(<object>v)
            if value is not None:
                return value
    if not acc.indexed:
        _build_index(acc, NULL, False, False)
    if acc.index is None:
        return None
    v = PyDict_GetItemWithError(acc.index, name)
    return <object>v if v != NULL else None


cdef inline int _set(object carrier, str name, str value) except -1:
    if type(carrier) is dict:
        return PyDict_SetItem(carrier, name, value)
    return _set_any(carrier, name, value)


cdef int _set_any(object carrier, str name, str value) except -1:
    try:
        carrier[name] = value
    except Exception as exc:
        raise InvalidCarrierException(
            f"cannot write header {name!r} into a {type(carrier).__name__} carrier: {exc}"
        ) from exc
    return 0


cdef inline int _merge_baggage(Extracted acc, dict items) except -1:
    """Adds a propagator's baggage; keys an earlier propagator supplied are kept."""
    if items is None or PyDict_GET_SIZE(items) == 0:
        return 0
    if acc.baggage is None:
        acc.baggage = items
        return 0
    for key, value in items.items():
        if key not in acc.baggage:
            acc.baggage[key] = value
    return 0


cdef inline str _str_item(object x):
    """A baggage key or value as str (SpanContext stores str; be safe with others)."""
    if type(x) is str:
        return x
    try:
        return str(x)
    except Exception:
        return None


cdef str _short(object value):
    """A repr for error messages that cannot blow up a log line."""
    cdef str r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


# -- base classes ------------------------------------------------------------------------

@cython.freelist(8)
cdef class Extracted:
    """What the propagators of one ``Propagation.extract`` found (internal)."""


cdef inline void _reset(Extracted acc) noexcept:
    """Back to the state of a new Extracted, dropping every reference (the carrier
    included) so a reused one keeps nothing alive."""
    acc.found = False
    acc.trace_hi = 0
    acc.trace_lo = 0
    acc.span_id = 0
    acc.flags = 0
    acc.is_dict = False
    acc.indexed = False
    acc.decided = False
    # only the fields that hold something: on CPython < 3.12 every store of None is
    # two read-modify-writes of None's reference count, one after the other
    acc.carrier = None
    if acc.baggage is not None:
        acc.baggage = None
    if acc.tracestate is not None:
        acc.tracestate = None
    if acc.debug_id is not None:
        acc.debug_id = None
    if acc.index is not None:
        acc.index = None
    if acc.error is not None:
        acc.error = None
    if acc.uber is not None:
        acc.uber = None


cdef SpanContext _result(Extracted acc):
    """The outcome of an extract (see Propagation.extract in _codec.pxd)."""
    cdef SpanContext ctx
    baggage = acc.baggage if acc.baggage is not None and PyDict_GET_SIZE(acc.baggage) else None
    if acc.found:
        ctx = SpanContext.make(acc.trace_hi, acc.trace_lo, acc.span_id, acc.flags,
                               baggage, acc.tracestate)
        if acc.debug_id is not None:
            ctx.debug_id = acc.debug_id
        return ctx
    if acc.error is not None:
        raise acc.error
    if baggage is not None or acc.debug_id is not None or acc.decided:
        ctx = SpanContext.make(0, 0, 0, acc.flags if acc.decided else FLAG_DEFERRED,
                               baggage, None)
        ctx.debug_id = acc.debug_id
        return ctx
    return None


cdef class Propagator:
    """One propagation format.  Build them with ``make_propagation``."""

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        return 0

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


cdef inline bint _has_ids(SpanContext ctx) noexcept:
    return (ctx.trace_hi != 0 or ctx.trace_lo != 0) and ctx._span_id != 0


# -- W3C Trace Context ------------------------------------------------------------------

cdef object _parse_tracestate(object value):
    """The canonical tracestate for header value(s), or None (empty or discarded)."""
    cdef str s = _combined(value)
    cdef Py_ssize_t n, out_len = 0
    cdef const char *p
    cdef char stack[STACK_BUF]
    cdef char *buf
    cdef int count
    if not s:
        return None
    p = _utf8(s, &n)
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
        return _ascii(buf, out_len)
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
        if not _has_ids(ctx):
            return 0
        tp = PyUnicode_New(55, 127)
        ft_traceparent_format(<char *>PyUnicode_DATA(tp), ctx.trace_hi, ctx.trace_lo,
                              ctx._span_id, 1 if ctx.flags & FLAG_SAMPLED else 0)
        _set(carrier, H_TRACEPARENT, tp)
        ts = ctx.tracestate
        if ts and type(ts) is str:
            _set(carrier, H_TRACESTATE, ts)
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef uint64_t hi, lo, span
        cdef uint8_t flags
        if acc.found:
            return 0
        value = _header(acc, H_TRACEPARENT)
        if value is None:
            return 0
        if type(value) is not str:
            # several traceparent headers: the W3C test suite expects a restart
            stats.malformed_traceparent += 1
            return 0
        p = _utf8(<str>value, &n)
        if p == NULL:
            stats.malformed_traceparent += 1
            return 0
        ft_trim_ows(&p, <ptrdiff_t *>&n)
        if ft_traceparent_parse(p, n, &hi, &lo, &span, &flags) != FT_OK:
            stats.malformed_traceparent += 1
            return 0
        acc.found = True
        acc.trace_hi = hi
        acc.trace_lo = lo
        acc.span_id = span
        acc.flags = FLAG_SAMPLED if flags & 1 else 0
        ts = _header(acc, H_TRACESTATE)
        if ts is not None:
            acc.tracestate = _parse_tracestate(ts)
        return 0


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
        if not _take(&budget, mn):
            continue
        out[_decode(k, kn, True)] = _decode(v, vn, True)
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
            ks = <str>key if type(key) is str else _str_item(key)
            vs = <str>value if type(value) is str else _str_item(value)
            kp = _utf8(ks, &kn) if ks is not None else NULL
            vp = _utf8(vs, &vn) if vs is not None else NULL
            if kp == NULL or vp == NULL or kn == 0:
                stats.baggage_dropped += 1
                continue
            klen = ft_pct_encoded_len(kp, kn, FT_CC_TCHAR)
            vlen = ft_pct_encoded_len(vp, vn, FT_CC_BAGGAGE)
            # budget.total stays equal to w, so what _take allows fits in buf
            if not _take(&budget, klen + 1 + vlen):
                continue
            if w:
                buf[w] = b','
                w += 1
            w += ft_pct_encode(kp, kn, FT_CC_TCHAR, buf + w)
            buf[w] = b'='
            w += 1
            w += ft_pct_encode(vp, vn, FT_CC_BAGGAGE, buf + w)
        if w:
            _set(carrier, H_BAGGAGE, _ascii(buf, w))
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef dict items
        value = _header(acc, H_BAGGAGE)
        if value is None:
            return 0
        value = _combined(value)
        p = _utf8(<str>value, &n)
        if p == NULL:
            stats.malformed_baggage += 1
            return 0
        items = {}
        _parse_baggage(p, n, items)
        _merge_baggage(acc, items)
        return 0


# -- Jaeger -----------------------------------------------------------------------------

@cython.final
cdef class JaegerPropagator(Propagator):
    """Jaeger ``uber-trace-id``, ``uberctx-*``, ``jaeger-debug-id``, ``jaeger-baggage``.

    Args:
        url_encoding: percent-encode ``uberctx-`` values on inject and decode them on
            extract (jaeger-client's HTTP_HEADERS codec); False for its TEXT_MAP codec.
    """
    cdef bint url_encoding

    def __cinit__(self, bint url_encoding=True):
        self.name = "jaeger"
        self.url_encoding = url_encoding

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        cdef Py_ssize_t n, kn, vn
        cdef const char *kp
        cdef const char *vp
        cdef str ks, vs, enc, name
        cdef Budget budget
        cdef PyObject *cached
        cdef dict items
        cdef uint8_t flags
        cdef Py_ssize_t pos = 0
        cdef PyObject *k
        cdef PyObject *v
        cdef bint fast
        if _has_ids(ctx):
            flags = ctx.flags & JAEGER_FLAGS
            # the length ft_uber_format writes: 16 or 32 digits, ":", 16, ":0:", 1 or 2
            n = (52 if ctx.trace_hi != 0 else 36) + (2 if flags >= 16 else 1)
            enc = PyUnicode_New(n, 127)
            if ft_uber_format(<char *>PyUnicode_DATA(enc), ctx.trace_hi, ctx.trace_lo,
                              ctx._span_id, flags) != n:
                raise SystemError("uber-trace-id length")   # cannot happen: n is exact
            _set(carrier, H_UBER, enc)
        items = ctx._baggage
        if items is None or PyDict_GET_SIZE(items) == 0:
            return 0
        budget.count = 0
        budget.total = 0
        # PyDict_Next rather than items.items(): no size check per item, and a carrier's
        # __setitem__ that changes this dict (it can reach it: ctx.baggage) must not
        # make inject raise; key and value are owned while the item is written
        fast = type(carrier) is dict and not self.url_encoding
        while PyDict_Next(items, &pos, &k, &v):
            if fast and type(<object>v) is str:
                # TEXT_MAP into a dict, a key seen before (so a valid token: its name
                # is cached): the value goes as it is.  No Python code runs here.
                cached = _id_get(_uber_name_slots, <object>k)
                if cached != NULL:
                    vn = _utf8_len(<str>v)
                    if vn >= 0 and _take(&budget, 8 + PyUnicode_GET_LENGTH(<str>k) + vn):
                        PyDict_SetItem(carrier, <object>cached, <object>v)
                    elif vn < 0:
                        stats.baggage_dropped += 1
                    continue
            key = <object>k
            value = <object>v
            ks = <str>key if type(key) is str else _str_item(key)
            vs = <str>value if type(value) is str else _str_item(value)
            if ks is None or vs is None:
                stats.baggage_dropped += 1
                continue
            vp = _utf8(vs, &vn)
            # the key becomes part of a header name: it must be a token (the keys in
            # _UBER_NAMES passed that test; a token is ASCII, so kn is its length)
            cached = _id_get(_uber_name_slots, ks)
            if cached == NULL:
                cached = PyDict_GetItemWithError(_UBER_NAMES, ks)
                if cached != NULL and type(ks) is str:
                    _id_put(_uber_name_slots, ks, <str>cached)
            if cached != NULL:
                kn = PyUnicode_GET_LENGTH(ks)
                kp = NULL
            else:
                kp = _utf8(ks, &kn)
                if kp == NULL or kn == 0 or not ft_all_in_class(kp, kn, FT_CC_TCHAR):
                    vp = NULL
            if vp == NULL:
                stats.baggage_dropped += 1
                continue
            if self.url_encoding:
                enc = _encode(vp, vn, FT_CC_UNRESERVED, vs)
                vn = PyUnicode_GET_LENGTH(enc)      # ASCII now
            else:
                enc = vs
            if not _take(&budget, 8 + kn + vn):
                continue
            if cached != NULL:
                name = <str>cached
            else:
                name = PyUnicode_New(8 + kn, 127)
                memcpy(PyUnicode_DATA(name), b"uberctx-", 8)
                memcpy(<char *>PyUnicode_DATA(name) + 8, kp, kn)
                if len(_UBER_NAMES) >= NAME_CACHE_MAX:
                    _UBER_NAMES.clear()
                _UBER_NAMES[ks] = name
                if type(ks) is str:
                    _id_put(_uber_name_slots, ks, name)
            _set(carrier, name, enc)
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef dict items
        cdef Budget budget
        cdef bint saw_jaeger
        cdef str key
        cdef PyObject *v
        cdef Py_ssize_t size
        if acc.is_dict and not acc.indexed and PyDict_GET_SIZE(carrier) == 1:
            # a dict holding uber-trace-id alone (a hop without baggage): no other key
            # to scan for, and its only key is lowercase, so the index would be empty
            v = PyDict_GetItemWithError(carrier, H_UBER)
            if v != NULL and type(<object>v) is str:
                acc.indexed = True
                if acc.found:
                    return 0
                return _jaeger_ids(acc, <str>v)
        # baggage first: a corrupt uber-trace-id must not hide it from later propagators
        budget.count = 0
        budget.total = 0
        # for a dict, that pass also tells whether any "jaeger-*" header is there at all,
        # and keeps the value of an exact "uber-trace-id" key (str) in acc.uber
        saw_jaeger = not acc.is_dict
        items = _build_index(acc, &budget, True, self.url_encoding, &saw_jaeger)
        value = _header(acc, H_JAEGER_BAGGAGE) if saw_jaeger else None
        if value is not None:
            for part in _combined(value).split(","):
                kv = part.strip().split("=")
                if len(kv) != 2 or not kv[0]:
                    continue
                size = _utf8_len(<str>part)
                if size < 0 or not _take(&budget, size):
                    continue
                if items is None:
                    items = {}
                key = _decode_str(kv[0])
                if key not in items:
                    items[key] = _decode_str(kv[1])
        if items is not None:
            _merge_baggage(acc, items)
        if acc.debug_id is None and saw_jaeger:
            value = _first(_header(acc, H_JAEGER_DEBUG))
            if value is not None:
                value = _decode_str(value).strip()
                if value:
                    acc.debug_id = value
        if acc.found:
            return 0
        # what _header would return: the exact lowercase key's str value comes first
        value = acc.uber if acc.uber is not None else _header(acc, H_UBER)
        if value is None:
            return 0
        if type(value) is not str:
            stats.malformed_jaeger += 1
            raise SpanContextCorruptedException("multiple values for uber-trace-id")
        return _jaeger_ids(acc, <str>value)


cdef int _jaeger_ids(Extracted acc, str value) except -1:
    """Parses an uber-trace-id value into acc (raises for a malformed one)."""
    cdef Py_ssize_t n
    cdef const char *p
    cdef uint64_t hi, lo, span, parent
    cdef uint8_t flags
    cdef int rc = FT_INVALID
    cdef str raw
    # as it is first: a value that parses holds no '%', so decoding would not change it
    p = _utf8(value, &n)
    if p != NULL:
        ft_trim_ows(&p, <ptrdiff_t *>&n)
        rc = ft_uber_parse(p, n, &hi, &lo, &span, &parent, &flags)
    if rc != FT_OK:
        raw = _decode_str(value)
        p = _utf8(raw, &n)
        if p != NULL:
            ft_trim_ows(&p, <ptrdiff_t *>&n)
            rc = ft_uber_parse(p, n, &hi, &lo, &span, &parent, &flags)
    if rc != FT_OK:
        stats.malformed_jaeger += 1
        raise SpanContextCorruptedException(f"malformed uber-trace-id {_short(value)}")
    acc.found = True
    acc.trace_hi = hi
    acc.trace_lo = lo
    acc.span_id = span
    acc.flags = flags & JAEGER_FLAGS
    return 0


cdef object _FALLBACK = object()
cdef bint _fast_paths = True


def _set_fast_paths(bint enabled):
    """Tests only: turn the one-pass dict paths off, to compare them with the general
    path on the same input."""
    global _fast_paths
    _fast_paths = enabled


cdef object _jaeger_dict_extract(JaegerPropagator jaeger, dict carrier):
    """``Propagation.extract`` for a lone Jaeger propagator and an exact dict, in one
    pass without the bookkeeping the general path needs to merge several formats.

    Returns what the general path would (a SpanContext, or None when the carrier holds
    no Jaeger header), or _FALLBACK for anything less common -- a header name in
    another case, a jaeger-* header, a value that is not a str, an uber-trace-id that
    does not parse as it is, baggage without ids -- and then the general path decides,
    with the counters as they were."""
    cdef Py_ssize_t pos = 0, n
    cdef PyObject *k
    cdef PyObject *v
    cdef const char *p
    cdef JaegerName kind
    cdef str hkey
    cdef object hval
    cdef object uber = None
    cdef dict items = None
    cdef Budget budget
    cdef uint64_t hi, lo, span, parent
    cdef uint8_t flags
    cdef uint64_t dropped = stats.baggage_dropped
    budget.count = 0
    budget.total = 0
    while True:
        p = _next_name(carrier, &pos, &k, &v, &n)
        if p == NULL:
            break
        kind = _jaeger_name(p, n)
        if kind == NAME_OTHER:
            continue
        hkey = <str>k
        hval = <object>v
        if kind == NAME_UBERCTX and type(hval) is str:
            if items is None:
                items = {}
            _uber_item(items, &budget, hkey, p, n, <str>hval, jaeger.url_encoding)
        elif kind == NAME_UBER and type(hval) is str:
            uber = hval
        else:
            return _fallback(dropped)
    if uber is None:
        return None if items is None else _fallback(dropped)
    p = _utf8(<str>uber, &n)
    if p != NULL:
        ft_trim_ows(&p, <ptrdiff_t *>&n)
        if ft_uber_parse(p, n, &hi, &lo, &span, &parent, &flags) == FT_OK:
            return SpanContext.make(hi, lo, span, flags & JAEGER_FLAGS,
                                    items if items else None, None)
    return _fallback(dropped)


cdef inline object _fallback(uint64_t baggage_dropped):
    """_FALLBACK, with the counter the one-pass path moved put back."""
    stats.baggage_dropped = baggage_dropped
    return _FALLBACK


# -- B3 ---------------------------------------------------------------------------------

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
    """<16 or 32 hex trace id>-<16 hex span id> into buf; returns the length."""
    cdef char tp[55]
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
        cdef Py_ssize_t n
        cdef int state
        if not _has_ids(ctx):
            return 0
        n = _b3_ids(buf, ctx)
        state = _b3_state_of(ctx)
        if state != FT_B3_DEFERRED:
            buf[n] = b'-'
            buf[n + 1] = b'd' if state == FT_B3_DEBUG else (b'1' if state == FT_B3_ACCEPT else b'0')
            n += 2
        _set(carrier, H_B3, _ascii(buf, n))
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef uint64_t hi = 0, lo = 0, span = 0
        cdef int state = FT_B3_DEFERRED, rc
        if acc.found:
            return 0
        value = _first(_header(acc, H_B3))
        if value is None:
            return 0
        p = _utf8(<str>value, &n)
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
        acc.found = True
        acc.trace_hi = hi
        acc.trace_lo = lo
        acc.span_id = span
        acc.flags = _b3_flags(state)
        return 0


cdef inline int _b3_field(str value, int kind, uint64_t *hi, uint64_t *lo) noexcept:
    """Parses a trimmed X-B3 id (kind 0: trace id, 1: span id)."""
    cdef Py_ssize_t n
    cdef const char *p = _utf8(value, &n)
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
        cdef Py_ssize_t n
        cdef int state
        if not _has_ids(ctx):
            return 0
        n = _b3_ids(buf, ctx)
        _set(carrier, H_B3_TRACE, _ascii(buf, n - 17))
        _set(carrier, H_B3_SPAN, _ascii(buf + n - 16, 16))
        state = _b3_state_of(ctx)
        if state == FT_B3_DEBUG:
            # "Debug implies an accept decision, so don't also send X-B3-Sampled"
            _set(carrier, H_B3_FLAGS, S_ONE)
        elif state == FT_B3_ACCEPT:
            _set(carrier, H_B3_SAMPLED, S_ONE)
        elif state == FT_B3_DENY:
            _set(carrier, H_B3_SAMPLED, S_ZERO)
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef Py_ssize_t n
        cdef const char *p
        cdef uint64_t hi = 0, lo = 0, span = 0, unused = 0
        cdef int state = FT_B3_DEFERRED
        if acc.found:
            return 0
        tid = _first(_header(acc, H_B3_TRACE))
        sid = _first(_header(acc, H_B3_SPAN))
        flags = _first(_header(acc, H_B3_FLAGS))
        if flags is not None and (<str>flags).strip() == S_ONE:
            state = FT_B3_DEBUG
        else:
            sampled = _first(_header(acc, H_B3_SAMPLED))
            if sampled is not None:
                p = _utf8(<str>sampled, &n)
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
        acc.found = True
        acc.trace_hi = hi
        acc.trace_lo = lo
        acc.span_id = span
        acc.flags = _b3_flags(state)
        return 0


# -- the composite ----------------------------------------------------------------------

cdef class Propagation:
    """The ordered propagators of a tracer: inject writes every format, extract takes
    the first valid context (see the module docstring).

    Args:
        propagators: ``Propagator`` instances, in order.
        text_map: recorded for callers; the Jaeger propagator decides encoding itself.
    """

    def __init__(self, propagators=(), bint text_map=False):
        cdef list checked = []
        for p in propagators:
            if not isinstance(p, Propagator):
                raise TypeError(f"not a Propagator: {p!r}")
            checked.append(p)
        self.propagators = tuple(checked)
        self.names = tuple([(<Propagator>p).name for p in checked])
        self.text_map = text_map
        self._acc = Extracted.__new__(Extracted)
        self._acc_busy = False
        if len(checked) == 1 and type(checked[0]) is JaegerPropagator:
            self._jaeger_only = checked[0]

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        cdef Propagator p
        if ctx is None:
            raise InvalidCarrierException("inject() needs a SpanContext")
        if type(carrier) is not dict and not hasattr(carrier, "__setitem__"):
            raise InvalidCarrierException(
                f"carrier must be a mutable mapping, not {type(carrier).__name__}")
        for p in self.propagators:
            p.inject(ctx, carrier)
        return 0

    cdef SpanContext extract(self, object carrier):
        cdef Propagator p
        cdef Extracted acc
        cdef bint reused = False
        if carrier is None:
            return None
        if self._jaeger_only is not None and type(carrier) is dict and _fast_paths:
            try:
                result = _jaeger_dict_extract(<JaegerPropagator>self._jaeger_only,
                                              <dict>carrier)
            except Exception:
                result = _FALLBACK      # (MemoryError) the general path counts it
            if result is not _FALLBACK:
                return result
        # One Extracted per Propagation, reused: an extract re-entered while it is in
        # use (Python code of a carrier's .items() / __str__ calling extract, from this
        # thread or another one that got the GIL meanwhile) makes its own.  Check and
        # set run without Python code in between, so the GIL makes them atomic.
        acc = self._acc
        if acc is not None and not self._acc_busy:
            self._acc_busy = True
            reused = True
        else:
            acc = Extracted.__new__(Extracted)
        acc.carrier = carrier
        acc.is_dict = type(carrier) is dict
        for p in self.propagators:
            try:
                p.extract(carrier, acc)
            except SpanContextCorruptedException as exc:
                if acc.error is None:
                    acc.error = exc
            except Exception:
                # a bug or an unreadable carrier must not escape extract()
                stats.extract_errors += 1
        if not reused:
            return _result(acc)
        try:
            return _result(acc)
        finally:
            _reset(acc)
            self._acc_busy = False

    def inject_py(self, SpanContext ctx, carrier):
        """``inject`` for Python callers (tests, the pure-Python layer).

        Raises:
            InvalidCarrierException: the carrier cannot be written to.
        """
        self.inject(ctx, carrier)

    def extract_py(self, carrier):
        """``extract`` for Python callers: None, a SpanContext, or raises
        ``SpanContextCorruptedException``."""
        return self.extract(carrier)

    def __repr__(self):
        return f"<Propagation {list(self.names)!r}{' text_map' if self.text_map else ''}>"


def make_propagation(names, *, bint text_map=False):
    """A Propagation for the given propagator names, in order.

    Args:
        names: an iterable of names from ``KNOWN_PROPAGATORS`` (a comma-separated str is
            split), case-insensitive, duplicates ignored; ``"none"`` contributes nothing.
        text_map: build it for ``Format.TEXT_MAP``: Jaeger ``uberctx-`` values are written
            and read without URL-encoding, as jaeger-client's TEXT_MAP codec does.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: names is not an iterable of str.
    """
    cdef list props = []
    cdef list seen = []
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"propagator names are str, not {type(name).__name__}")
        key = name.strip().lower()
        if not key or key == "none" or key in seen:
            continue
        if key == "tracecontext":
            props.append(TraceContextPropagator())
        elif key == "baggage":
            props.append(W3CBaggagePropagator())
        elif key == "jaeger":
            props.append(JaegerPropagator(url_encoding=not text_map))
        elif key == "b3":
            props.append(B3SinglePropagator())
        elif key == "b3multi":
            props.append(B3MultiPropagator())
        else:
            raise ValueError(
                f"unknown propagator {name!r}; known: {', '.join(KNOWN_PROPAGATORS)}")
        seen.append(key)
    return Propagation(props, text_map=text_map)


# -- Format.BINARY ----------------------------------------------------------------------

cdef inline void _put_u16(unsigned char *p, Py_ssize_t v) noexcept:
    p[0] = <unsigned char>((v >> 8) & 0xff)
    p[1] = <unsigned char>(v & 0xff)


cpdef int inject_binary(SpanContext ctx, object carrier) except -1:
    """Writes ctx into a bytearray carrier, replacing its content (layout in the module
    docstring).

    Raises:
        InvalidCarrierException: the carrier is not a bytearray.
    """
    cdef list parts = []
    cdef Py_ssize_t size, total = 0, kn, vn, ts_n = 0, pos
    cdef const char *kp
    cdef const char *vp
    cdef const char *tsp = NULL
    cdef unsigned char *out
    cdef int count = 0, i
    cdef str ks, vs
    cdef dict items
    if type(carrier) is not bytearray and not isinstance(carrier, bytearray):
        raise InvalidCarrierException(
            f"Format.BINARY needs a bytearray carrier, not {type(carrier).__name__}")
    if ctx is None:
        raise InvalidCarrierException("inject() needs a SpanContext")
    ts = ctx.tracestate
    if ts and type(ts) is str:
        tsp = _utf8(<str>ts, &ts_n)
        if tsp == NULL or not PyUnicode_IS_ASCII(ts) or ts_n > MAX_TRACESTATE_BYTES:
            stats.tracestate_dropped += 1
            tsp = NULL
            ts_n = 0
    items = ctx._baggage
    if items:
        for key, value in (<dict>items).items():
            ks = <str>key if type(key) is str else _str_item(key)
            vs = <str>value if type(value) is str else _str_item(value)
            kp = _utf8(ks, &kn) if ks is not None else NULL
            vp = _utf8(vs, &vn) if vs is not None else NULL
            if kp == NULL or vp == NULL or kn == 0 or count >= MAX_BAGGAGE_MEMBERS \
                    or total + kn + vn > MAX_BAGGAGE_BYTES:
                stats.baggage_dropped += 1
                continue
            count += 1
            total += kn + vn
            parts.append(ks)
            parts.append(vs)
    size = BINARY_FIXED + 2 + ts_n + 1 + 4 * count + total
    PyByteArray_Resize(carrier, size)
    out = <unsigned char *>PyByteArray_AS_STRING(carrier)
    out[0] = BINARY_VERSION
    out[1] = ctx.flags & BINARY_FLAGS
    ft_put_u64be(out + 2, ctx.trace_hi)
    ft_put_u64be(out + 10, ctx.trace_lo)
    ft_put_u64be(out + 18, ctx._span_id)
    pos = BINARY_FIXED
    _put_u16(out + pos, ts_n)
    pos += 2
    if ts_n:
        memcpy(out + pos, tsp, ts_n)
        pos += ts_n
    out[pos] = <unsigned char>count
    pos += 1
    for i in range(count):
        # the strings are alive in `parts`, so their UTF-8 buffers are too
        kp = _utf8(<str>parts[2 * i], &kn)
        vp = _utf8(<str>parts[2 * i + 1], &vn)
        _put_u16(out + pos, kn)
        memcpy(out + pos + 2, kp, kn)
        pos += 2 + kn
        _put_u16(out + pos, vn)
        memcpy(out + pos + 2, vp, vn)
        pos += 2 + vn
    return 0


cdef inline Py_ssize_t _get_u16(const unsigned char *p) noexcept:
    return (<Py_ssize_t>p[0] << 8) | p[1]


cdef SpanContext _corrupt(str why):
    stats.malformed_binary += 1
    raise SpanContextCorruptedException(f"Format.BINARY: {why}")


# Baggage keys decoded by extract_binary, by a hash of their bytes: the same few keys
# come on every request, and reusing the str skips decoding it and hashing it again
# when it goes into the baggage dict.  Strong references; short keys only.
cdef PyObject *_binary_keys[ID_SLOTS]
cdef enum:
    BINARY_KEY_CACHE_MAX_BYTES = 64


cdef str _binary_key(const char *s, Py_ssize_t n):
    """The str of the UTF-8 key bytes s[:n] (UnicodeDecodeError when they are not)."""
    cdef size_t h = <size_t>n
    cdef Py_ssize_t i, m
    cdef PyObject *cached
    cdef PyObject *old
    cdef const char *c
    cdef str key
    if n > BINARY_KEY_CACHE_MAX_BYTES:
        return PyUnicode_DecodeUTF8(s, n, "strict")
    for i in range(n):
        h = h * 31 + <unsigned char>s[i]
    h = (h ^ (h >> 7)) & (ID_SLOTS - 1)
    cached = _binary_keys[h]
    if cached != NULL:
        c = _utf8(<str>cached, &m)
        if c != NULL and m == n and memcmp(c, s, n) == 0:
            return <str>cached
    key = PyUnicode_DecodeUTF8(s, n, "strict")
    old = _binary_keys[h]
    Py_INCREF(key)
    _binary_keys[h] = <PyObject *>key
    Py_XDECREF(old)          # a str: releasing it runs no Python code
    return key


cdef SpanContext _parse_binary(const unsigned char *p, Py_ssize_t n):
    cdef Py_ssize_t pos, ts_n, kn, vn, kp, i, total = 0
    cdef uint64_t hi, lo, span
    cdef uint8_t flags
    cdef int count
    cdef dict baggage = None
    cdef SpanContext ctx
    if p[0] != BINARY_VERSION:
        return _corrupt(f"unknown version byte 0x{p[0]:02x}")
    if n < BINARY_FIXED + 3:
        return _corrupt("truncated")
    flags = p[1]
    if flags & ~BINARY_FLAGS:
        return _corrupt("unknown flag bits")
    hi = ft_get_u64be(p + 2)
    lo = ft_get_u64be(p + 10)
    span = ft_get_u64be(p + 18)
    if ((hi == 0 and lo == 0) != (span == 0)):
        return _corrupt("trace id and span id must both be zero or both non-zero")
    pos = BINARY_FIXED
    ts_n = _get_u16(p + pos)
    pos += 2
    if ts_n > MAX_TRACESTATE_BYTES or pos + ts_n + 1 > n:
        return _corrupt("bad tracestate length")
    tracestate = None
    if ts_n:
        for i in range(ts_n):
            if p[pos + i] < 0x20 or p[pos + i] > 0x7e:
                return _corrupt("tracestate is not printable ASCII")
        tracestate = _ascii(<const char *>p + pos, ts_n)
        pos += ts_n
    count = p[pos]
    pos += 1
    if count > MAX_BAGGAGE_MEMBERS:
        return _corrupt("too many baggage items")
    for i in range(count):
        if pos + 2 > n:
            return _corrupt("truncated")
        kn = _get_u16(p + pos)
        if kn == 0 or pos + 2 + kn + 2 > n:
            return _corrupt("bad baggage key length")
        kp = pos + 2
        pos += 2 + kn
        vn = _get_u16(p + pos)
        if pos + 2 + vn > n:
            return _corrupt("bad baggage value length")
        total += kn + vn
        if total > MAX_BAGGAGE_BYTES:
            return _corrupt("baggage too large")
        try:
            key = _binary_key(<const char *>p + kp, kn)
            value = (<const char *>p)[pos + 2:pos + 2 + vn].decode("utf-8")
        except UnicodeDecodeError:
            return _corrupt("baggage is not UTF-8")
        pos += 2 + vn
        if baggage is None:
            baggage = {}
        elif key in baggage:
            return _corrupt("duplicate baggage key")
        baggage[key] = value
    if pos != n:
        return _corrupt("trailing bytes")
    ctx = SpanContext.make(hi, lo, span, flags, baggage, tracestate)
    return ctx


cpdef SpanContext extract_binary(object carrier):
    """Reads a context written by ``inject_binary``.

    Returns:
        None for an empty carrier (or one that is not a buffer), else the SpanContext
        (a baggage-only container when its ids are zero).

    Raises:
        SpanContextCorruptedException: another version, truncated, trailing bytes, bad
            lengths or invalid UTF-8.
    """
    cdef Py_buffer view
    try:
        PyObject_GetBuffer(carrier, &view, PyBUF_SIMPLE)
    except (TypeError, BufferError):
        stats.unreadable_carrier += 1
        return None
    try:
        if view.len == 0:
            return None
        return _parse_binary(<const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)

# SPDX-License-Identifier: Apache-2.0
# cython: language_level=3, embedsignature=True
"""The Jaeger format: ``uber-trace-id``, ``uberctx-*``, ``jaeger-debug-id``, ``jaeger-baggage``.

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
  "").  The limits of W3C Baggage (``fasttrace._w3c``) apply.
* ``jaeger-debug-id`` alone (or with baggage only) gives a container context carrying
  ``debug_id``: the tracer starts a new, sampled and debug trace from it.
* inject writes ``uber-trace-id: <16 or 32 hex>:<16 hex>:0:<flags hex>`` (32 digits when
  the trace id has a high half) and ``uberctx-<key>`` per item with the value
  percent-encoded (RFC 3986 unreserved kept).  Keys that are not HTTP tokens cannot be
  header names and are dropped (counted).  A Propagation built with ``text_map=True``
  (jaeger-client's ``TextCodec(url_encoding=False)``, its TEXT_MAP codec) writes and
  reads ``uberctx-`` values unencoded.
"""
cimport cython
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

from fasttrace._carrier cimport (
    Budget, Extracted, Propagator, combined, first, found_ids, has_ids, header,
    header_value, lower_key, merge_baggage, next_name, pct_decode_str, pct_encode, scan,
    set_header, short_repr, stats, str_item, take, utf8, utf8_len,
)
from fasttrace._pyapi cimport (
    PyDict_GET_SIZE, PyDict_GetItemWithError, PyUnicode_DATA, PyUnicode_GET_LENGTH,
    PyUnicode_IS_COMPACT_ASCII, PyUnicode_New,
)
from fasttrace._cdefs cimport (
    FT_CC_TCHAR, FT_CC_UNRESERVED, FT_INVALID, FT_OK, ft_all_in_class, ft_ascii_lower,
    ft_codec_init, ft_has_prefix_ci, ft_pct_encoded_len, ft_trim_ows, ft_uber_format,
    ft_uber_parse,
)
from fasttrace._context cimport FLAG_DEBUG, FLAG_FIREHOSE, FLAG_SAMPLED, SpanContext

from opentracing import SpanContextCorruptedException

# helpers of src/ft_codec.h that _cdefs.pxd does not declare
cdef extern from "ft_codec.h" nogil:
    int ft_is_uberctx(const char *s, ptrdiff_t n)
    int ft_is_jaeger(const char *s, ptrdiff_t n)
    int ft_is_uber_trace_id(const char *s, ptrdiff_t n)

ft_codec_init()

cdef enum:
    JAEGER_FLAGS = FLAG_SAMPLED | FLAG_DEBUG | FLAG_FIREHOSE
    # claim() sees the names starting with u or j (any case)
    CLAIM_INITIALS = (1 << 20) | (1 << 9)    # bit i: chr(97 + i)

cdef str H_UBER = "uber-trace-id"
cdef str H_JAEGER_DEBUG = "jaeger-debug-id"
cdef str H_JAEGER_BAGGAGE = "jaeger-baggage"


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
            name = lower_key(key[8:])
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
    size = utf8_len(value)
    if size < 0 or not take(budget, n + size):
        return 0
    name = _id_get(_uber_key_slots, key)
    if name == NULL:
        name = _uber_key_of(key, p, n)
    if decode:
        PyDict_SetItem(items, <object>name, pct_decode_str(value))
    else:
        PyDict_SetItem(items, <object>name, value)
    return 0


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

cdef struct Scan:
    # what claim() needs and finds during one extract's scan of the carrier
    Budget budget
    bint decode          # percent-decode uberctx- values
    bint saw_jaeger      # a "jaeger-*" header is there (always True for a non-dict)


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
        self.claim_initials = CLAIM_INITIALS
        self.alone_path = True

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
        if has_ids(ctx):
            flags = ctx.flags & JAEGER_FLAGS
            # the length ft_uber_format writes: 16 or 32 digits, ":", 16, ":0:", 1 or 2
            n = (52 if ctx.trace_hi != 0 else 36) + (2 if flags >= 16 else 1)
            enc = PyUnicode_New(n, 127)
            if ft_uber_format(<char *>PyUnicode_DATA(enc), ctx.trace_hi, ctx.trace_lo,
                              ctx._span_id, flags) != n:
                raise SystemError("uber-trace-id length")   # cannot happen: n is exact
            set_header(carrier, H_UBER, enc)
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
                    vn = utf8_len(<str>v)
                    if vn >= 0 and take(&budget, 8 + PyUnicode_GET_LENGTH(<str>k) + vn):
                        PyDict_SetItem(carrier, <object>cached, <object>v)
                    elif vn < 0:
                        stats.baggage_dropped += 1
                    continue
            key = <object>k
            value = <object>v
            ks = str_item(key)
            vs = str_item(value)
            if ks is None or vs is None:
                stats.baggage_dropped += 1
                continue
            vp = utf8(vs, &vn)
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
                kp = utf8(ks, &kn)
                if kp == NULL or kn == 0 or not ft_all_in_class(kp, kn, FT_CC_TCHAR):
                    vp = NULL
            if vp == NULL:
                stats.baggage_dropped += 1
                continue
            if self.url_encoding:
                enc = pct_encode(vp, vn, FT_CC_UNRESERVED, vs)
                vn = PyUnicode_GET_LENGTH(enc)      # ASCII now
            else:
                enc = vs
            if not take(&budget, 8 + kn + vn):
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
            set_header(carrier, name, enc)
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        cdef dict items
        cdef Scan state
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
        state.budget.count = 0
        state.budget.total = 0
        state.decode = self.url_encoding
        state.saw_jaeger = not acc.is_dict
        scan(acc, self, &state)
        items = acc.claimed_items
        if items is not None:
            acc.claimed_items = None
        uber = acc.claimed_value
        if uber is not None:
            acc.claimed_value = None
        value = header(acc, H_JAEGER_BAGGAGE) if state.saw_jaeger else None
        if value is not None:
            for part in combined(value).split(","):
                kv = part.strip().split("=")
                if len(kv) != 2 or not kv[0]:
                    continue
                size = utf8_len(<str>part)
                if size < 0 or not take(&state.budget, size):
                    continue
                if items is None:
                    items = {}
                key = pct_decode_str(kv[0])
                if key not in items:
                    items[key] = pct_decode_str(kv[1])
        if items is not None:
            merge_baggage(acc, items)
        if acc.debug_id is None and state.saw_jaeger:
            value = first(header(acc, H_JAEGER_DEBUG))
            if value is not None:
                value = pct_decode_str(value).strip()
                if value:
                    acc.debug_id = value
        if acc.found:
            return 0
        # what header() would return: the exact lowercase key's str value comes first
        value = uber if uber is not None else header(acc, H_UBER)
        if value is None:
            return 0
        if type(value) is not str:
            stats.malformed_jaeger += 1
            raise SpanContextCorruptedException("multiple values for uber-trace-id")
        return _jaeger_ids(acc, <str>value)

    cdef bint claim(self, Extracted acc, void *state, str key, const char *p, Py_ssize_t n,
                    object value) except -1:
        """uberctx-* headers become baggage and uber-trace-id is kept, neither indexed;
        a jaeger-* header is noted."""
        cdef Scan *s = <Scan *>state
        cdef JaegerName kind = _jaeger_name(p, n)
        if kind == NAME_UBERCTX:
            if type(value) is not str:
                value = first(header_value(value))
                if value is None:
                    return True
            if acc.claimed_items is None:
                acc.claimed_items = {}
            _uber_item(acc.claimed_items, &s.budget, key, p, n, <str>value, s.decode)
            return True
        if kind == NAME_UBER:
            if type(value) is str:
                acc.claimed_value = value
            return True
        if kind == NAME_JAEGER:
            s.saw_jaeger = True
        return False

    cdef SpanContext extract_alone(self, dict carrier, bint *done):
        """One pass without the bookkeeping the general path needs to merge several
        formats.  Leaves done[0] False for anything less common -- a header name in
        another case, a jaeger-* header, a value that is not a str, an uber-trace-id that
        does not parse as it is, baggage without ids -- and then the general path
        decides, with the counters as they were."""
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
            p = next_name(carrier, &pos, &k, &v, &n)
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
                _uber_item(items, &budget, hkey, p, n, <str>hval, self.url_encoding)
            elif kind == NAME_UBER and type(hval) is str:
                uber = hval
            else:
                stats.baggage_dropped = dropped
                return None
        if uber is None:
            if items is None:
                done[0] = True
            else:
                stats.baggage_dropped = dropped
            return None
        p = utf8(<str>uber, &n)
        if p != NULL:
            ft_trim_ows(&p, <ptrdiff_t *>&n)
            if ft_uber_parse(p, n, &hi, &lo, &span, &parent, &flags) == FT_OK:
                done[0] = True
                return SpanContext.make(hi, lo, span, flags & JAEGER_FLAGS,
                                        items if items else None, None)
        stats.baggage_dropped = dropped
        return None


cdef int _jaeger_ids(Extracted acc, str value) except -1:
    """Parses an uber-trace-id value into acc (raises for a malformed one)."""
    cdef Py_ssize_t n
    cdef const char *p
    cdef uint64_t hi, lo, span, parent
    cdef uint8_t flags
    cdef int rc = FT_INVALID
    cdef str raw
    # as it is first: a value that parses holds no '%', so decoding would not change it
    p = utf8(value, &n)
    if p != NULL:
        ft_trim_ows(&p, <ptrdiff_t *>&n)
        rc = ft_uber_parse(p, n, &hi, &lo, &span, &parent, &flags)
    if rc != FT_OK:
        raw = pct_decode_str(value)
        p = utf8(raw, &n)
        if p != NULL:
            ft_trim_ows(&p, <ptrdiff_t *>&n)
            rc = ft_uber_parse(p, n, &hi, &lo, &span, &parent, &flags)
    if rc != FT_OK:
        stats.malformed_jaeger += 1
        raise SpanContextCorruptedException(f"malformed uber-trace-id {short_repr(value)}")
    found_ids(acc, hi, lo, span, flags & JAEGER_FLAGS)
    return 0

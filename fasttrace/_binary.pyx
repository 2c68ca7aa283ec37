# SPDX-License-Identifier: Apache-2.0
# cython: language_level=3, embedsignature=True
"""``Format.BINARY``: a SpanContext as bytes (the one description of the layout).

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
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp, memcpy

from fasttrace._carrier cimport (
    MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS, MAX_TRACESTATE_BYTES, ascii_str, stats,
    str_item, utf8, utf8_item,
)
from fasttrace._pyapi cimport (
    PyUnicode_DecodeUTF8, PyUnicode_IS_ASCII,
)
from fasttrace._cdefs cimport ft_codec_init, ft_get_u64be, ft_put_u64be
from fasttrace._context cimport FLAG_DEBUG, FLAG_DEFERRED, FLAG_FIREHOSE, FLAG_SAMPLED, SpanContext

from opentracing import InvalidCarrierException, SpanContextCorruptedException

ft_codec_init()

cdef enum:
    BINARY_VERSION = 0xF1
    BINARY_FIXED = 26                 # version + flags + 3 x 8 id bytes
    BINARY_FLAGS = FLAG_SAMPLED | FLAG_DEBUG | FLAG_FIREHOSE | FLAG_DEFERRED


cdef inline void _put_u16(unsigned char *p, Py_ssize_t v) noexcept:
    p[0] = <unsigned char>((v >> 8) & 0xff)
    p[1] = <unsigned char>(v & 0xff)


cpdef int inject_binary(SpanContext ctx, object carrier) except -1:
    """Writes ctx into a bytearray carrier, replacing its content (the layout is in the
    module docstring).

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
        tsp = utf8(<str>ts, &ts_n)
        if tsp == NULL or not PyUnicode_IS_ASCII(ts) or ts_n > MAX_TRACESTATE_BYTES:
            stats.tracestate_dropped += 1
            tsp = NULL
            ts_n = 0
    items = ctx._baggage
    if items:
        for key, value in (<dict>items).items():
            ks = str_item(key)
            vs = str_item(value)
            kp = utf8_item(ks, &kn)
            vp = utf8_item(vs, &vn)
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
        kp = utf8(<str>parts[2 * i], &kn)
        vp = utf8(<str>parts[2 * i + 1], &vn)
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
cdef enum:
    KEY_SLOTS = 64                    # a power of two
    BINARY_KEY_CACHE_MAX_BYTES = 64

cdef PyObject *_binary_keys[KEY_SLOTS]


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
    h = (h ^ (h >> 7)) & (KEY_SLOTS - 1)
    cached = _binary_keys[h]
    if cached != NULL:
        c = utf8(<str>cached, &m)
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
        tracestate = ascii_str(<const char *>p + pos, ts_n)
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

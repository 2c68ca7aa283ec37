# SPDX-License-Identifier: Apache-2.0
# cython: language_level=3, embedsignature=True
"""The carrier layer of the propagation codecs: reading and writing carriers, matching
header names, and the composite that runs the configured propagators.  It knows no
format: each one is a ``Propagator`` in its own module (``_w3c``, ``_jaeger``, ``_b3``;
``Format.BINARY`` is ``_binary``), reached through the C methods declared in
``_carrier.pxd``.  ``fasttrace.propagation`` lists the names and builds a Propagation.

Strings are read as the UTF-8 bytes CPython already keeps for an ASCII ``str``
(``PyUnicode_AsUTF8AndSize`` returns the string's own buffer, no copy), with the
byte-level work in ``src/ft_codec.h``.  Measured: this beats both ``PyUnicode_READ`` per
character and ``str`` slicing by a wide margin, and costs nothing for the ASCII headers
of real traffic.

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
"""
cimport cython
from cpython.dict cimport PyDict_Next
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stddef cimport ptrdiff_t
from libc.string cimport memchr, memset

from fasttrace._cdefs cimport ft_ascii_lower, ft_codec_init, ft_has_upper
from fasttrace._context cimport FLAG_DEFERRED, SpanContext

from opentracing import InvalidCarrierException, SpanContextCorruptedException

# helpers of src/ft_codec.h that _cdefs.pxd does not declare
cdef extern from "ft_codec.h" nogil:
    ptrdiff_t ft_pct_decode_ex(const char *s, ptrdiff_t n, int plus_is_space, char *out)

ft_codec_init()

cdef CodecStats stats


def codec_stats(bint reset=False):
    """Counters of what the codecs ignored or dropped, process-wide.

    Args:
        reset: set every counter back to zero after reading.

    Returns:
        A dict: ``malformed_traceparent``, ``malformed_traceresponse`` (response
        headers / trailers the integrations ignored), ``tracestate_dropped`` (whole tracestates
        discarded), ``baggage_dropped`` (members over the limits, or unencodable),
        ``malformed_baggage`` (members that broke the grammar), ``malformed_jaeger``,
        ``malformed_b3``, ``malformed_binary``, ``unreadable_carrier`` (carriers whose
        ``.items()`` failed, non-buffer binary carriers) and ``extract_errors``
        (unexpected errors inside a propagator, turned into "not found").
    """
    global stats
    result = {
        "malformed_traceparent": stats.malformed_traceparent,
        "malformed_traceresponse": stats.malformed_traceresponse,
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


# -- strings -----------------------------------------------------------------------------

cdef str pct_decode(const char *p, Py_ssize_t n, bint plus_is_space):
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


cdef dict _ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


cdef str lower_key(str key):
    cdef Py_ssize_t n
    cdef const char *p
    cdef str out
    if PyUnicode_IS_ASCII(key):
        p = utf8(key, &n)
        if not ft_has_upper(p, n):
            return key
        out = PyUnicode_New(n, 127)
        ft_ascii_lower(p, n, <char *>PyUnicode_DATA(out))
        return out
    return key.translate(_ASCII_LOWER)


cdef str str_or_none(object x):
    try:
        return str(x)
    except Exception:
        return None


cdef str short_repr(object value):
    cdef str r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


# -- reading a carrier -------------------------------------------------------------------

cdef object header_value(object v):
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


cdef str combined(object v):
    if type(v) is str:
        return v
    return ",".join(<list>v)


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


cdef inline bint _wanted(Propagator claimer, const char *p) noexcept:
    """claimer wants to see the name starting at p (a letter it listed)."""
    cdef unsigned c = <unsigned char>(p[0] | 0x20) - 97u
    return c < 26 and (claimer.claim_initials >> c) & 1


cdef int scan(Extracted acc, Propagator claimer, void *state) except -1:
    """A dict is scanned every time it is called with a claimer; any other carrier is
    read once, into the index, and a claimer sees the index's (lowercased) names."""
    cdef dict index = None
    cdef Py_ssize_t pos = 0, n
    cdef PyObject *k
    cdef PyObject *v
    cdef const char *p
    cdef str hkey
    cdef object hval
    cdef bint build = not acc.indexed
    if not build and not acc.is_dict:
        index = acc.index
    elif acc.is_dict:
        # exact lowercase names are looked up directly; only other spellings go here
        while True:
            p = next_name(acc.carrier, &pos, &k, &v, &n)
            if p == NULL:
                break
            # owned references: reading a value that is not a str may run Python code
            # (a str subclass's __str__) that drops the carrier's own
            hkey = <str>k
            hval = <object>v
            if claimer is not None and _wanted(claimer, p) \
                    and claimer.claim(acc, state, hkey, p, n, hval):
                continue
            if build and ft_has_upper(p, n):
                value = header_value(hval)
                if value is not None:
                    if index is None:
                        index = {}
                    _index_add(index, lower_key(hkey), value)
    else:
        index = {}
        try:
            for item in acc.carrier.items():
                key, value = item
                if type(key) is not str:
                    continue
                value = header_value(value)
                if value is not None:
                    _index_add(index, lower_key(key), value)
        except Exception:
            # a carrier we cannot (fully) read: use what it gave
            stats.unreadable_carrier += 1
    if claimer is not None and not acc.is_dict and index is not None:
        for key, value in index.items():
            p = utf8(<str>key, &n)
            if p != NULL and n != 0 and _wanted(claimer, p):
                claimer.claim(acc, state, <str>key, p, n, value)
    if build:
        acc.indexed = True
        if index:
            acc.index = index
    return 0


cdef object header_rest(Extracted acc, str name, PyObject *v):
    """header() past an exact dict key holding a str (v: that key's value, or NULL)."""
    if v != NULL:
        value = header_value(<object>v)
        if value is not None:
            return value
    if not acc.indexed:
        scan(acc, None, NULL)
    if acc.index is None:
        return None
    v = PyDict_GetItemWithError(acc.index, name)
    return <object>v if v != NULL else None


cdef int merge_baggage(Extracted acc, dict items) except -1:
    if items is None or PyDict_GET_SIZE(items) == 0:
        return 0
    if acc.baggage is None:
        acc.baggage = items
        return 0
    for key, value in items.items():
        if key not in acc.baggage:
            acc.baggage[key] = value
    return 0


# -- writing a carrier -------------------------------------------------------------------

cdef int set_any(object carrier, str name, str value) except -1:
    try:
        carrier[name] = value
    except Exception as exc:
        raise InvalidCarrierException(
            f"cannot write header {name!r} into a {type(carrier).__name__} carrier: {exc}"
        ) from exc
    return 0


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
    if acc.claimed_items is not None:
        acc.claimed_items = None
    if acc.claimed_value is not None:
        acc.claimed_value = None


cdef SpanContext _result(Extracted acc):
    """The outcome of an extract (see Propagation.extract in _carrier.pxd)."""
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
    """One propagation format.  Build them with ``fasttrace.propagation.make_propagation``."""

    cdef int inject(self, SpanContext ctx, object carrier) except -1:
        return 0

    cdef int extract(self, object carrier, Extracted acc) except -1:
        return 0

    cdef bint claim(self, Extracted acc, void *state, str key, const char *p, Py_ssize_t n,
                    object value) except -1:
        return False

    cdef SpanContext extract_alone(self, dict carrier, bint *done):
        return None

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


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
        if len(checked) == 1 and (<Propagator>checked[0]).alone_path:
            self._alone = checked[0]

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
        cdef bint done = False
        cdef SpanContext result
        if carrier is None:
            return None
        if self._alone is not None and type(carrier) is dict:
            try:
                result = self._alone.extract_alone(<dict>carrier, &done)
            except Exception:
                done = False    # (MemoryError) the general path counts it
            if done:
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

# SPDX-License-Identifier: Apache-2.0
"""OTLP protobuf, encoded by hand straight from SpanBatch columns.

No generated code and no message objects: each batch is written field by field into
one growing C buffer.  Nested messages reserve a length prefix, are written in place,
and are shifted with one ``memmove`` only when the final length needs a different
number of varint bytes than was reserved (rare: the reservations below fit the usual
sizes).  Strings are written from the UTF-8 that CPython keeps on the ``str`` itself
(``PyUnicode_AsUTF8AndSize``: the string's own buffer for ASCII, a cached copy
otherwise), so each interned operation name and tag key is UTF-8-encoded at most once
however many spans use it.

Wire format (opentelemetry-proto, collector/trace/v1 and trace/v1; field numbers)::

    ExportTraceServiceRequest { 1: repeated ResourceSpans }        one per SpanBatch
    ResourceSpans   { 1: Resource { 1: repeated KeyValue }          service.name, tracer tags,
                      2: repeated ScopeSpans }                     telemetry.sdk.*
    ScopeSpans      { 1: InstrumentationScope { 1: name "fasttrace", 2: version }
                      2: repeated Span }
    Span            { 1: trace_id bytes(16, big-endian)   2: span_id bytes(8)
                      4: parent_span_id bytes(8), absent for a root
                      5: name   6: kind (enum)   7: start_time_unix_nano fixed64
                      8: end_time_unix_nano fixed64   9: repeated attributes KeyValue
                      11: repeated Event { 1: time_unix_nano fixed64, 3: repeated
                                           attributes, 2: name (written last) }
                      13: repeated Link { 1: trace_id, 2: span_id, 4: attributes }
                      15: Status { 2: message, 3: code (2 = ERROR) }
                      16: flags fixed32 (W3C trace flags: 0x01 sampled) }
    KeyValue        { 1: key   2: AnyValue }
    AnyValue        { 1: string_value | 2: bool_value | 3: int_value (int64 varint)
                      | 4: double_value (fixed64) }
    ExportTraceServiceResponse { 1: partial_success { 1: rejected_spans int64,
                                                      2: error_message } }

Mapping from OpenTracing (decisions, see also fasttrace/exporters/otlp.py):

- resource: ``service.name``, the tracer's tags, then ``telemetry.sdk.language``
  (``python``), ``telemetry.sdk.name`` (``fasttrace``) and ``telemetry.sdk.version``, as
  the OpenTelemetry SDK describes itself, unless the tracer's tags name them.
- kind: the ``span.kind`` tag ``server``/``client``/``producer``/``consumer`` becomes
  SERVER/CLIENT/PRODUCER/CONSUMER and is not repeated as an attribute; any other value
  (or none) gives INTERNAL, and an unrecognised value is kept as the attribute.
- tags are typed attributes: str, bool, int (int64), float (double); an int beyond
  64 bits is sent as its decimal string.  A tag whose key is not interned (the key table
  full, a key over 256 characters) is read as ``SpanBatch.tags()`` reads it, typed and
  with ``span.kind`` and ``error`` understood; when the arena kept several entries for
  one such key, the last is sent (OTLP attribute keys are unique).
- status: ERROR when the ``error`` tag is True (the tag is kept as an attribute too); the
  message is the ``message`` (else ``error.object``) field of the first log whose
  ``event`` is ``"error"``, as opentracing's ``Span.__exit__`` writes it.
- logs become events: the name is the ``event`` field (else ``"log"``), the other fields
  attributes.  The error log of an exception (``event="error"`` with ``error.kind`` or
  ``error.object``, see `fasttrace.errors`) is the OpenTelemetry ``exception`` event,
  attribute for attribute as the SDK's ``Span.record_exception(exc, escaped=True)``
  writes it: ``exception.type``, ``exception.message``, ``exception.stacktrace``,
  ``exception.escaped`` (the string ``"True"``), then the log's other fields.
- values: str, bool, int and float (their subclasses as the built-in value, read without
  calling their methods) keep their type; anything else is sent as its text
  (`fasttrace._text`), and a value whose ``str()`` raises as ``<unprintable TypeName>``,
  counted in ``stats["unprintable_values"]``.  Keys are matched by their characters,
  never with a key's own ``__eq__``.
- references: the parent is ``parent_span_id``; every other reference (``follows_from``,
  extra ``child_of``) is a link with attribute ``opentracing.ref_type``.  A span whose
  first reference is ``follows_from`` has that span as parent *and* a link, so the
  reference type is not lost.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from fasttrace._layout cimport (BatchView, raw_columns, FLAG_FIRST_REF_FOLLOWS, FLAG_SAMPLED, TAG_BIGINT,
                                TAG_BOOL, TAG_INT, TAG_STR, UNINTERNED)
from fasttrace._pyapi cimport PyFloat_AS_DOUBLE, PyUnicode_AsEncodedString, str_named
from fasttrace._wbuf cimport (WBuf, str_utf8, varint_len, w_be, w_le64, w_varint,
                              wb_reserve, wb_text)

from fasttrace._version import __version__ as _VERSION
from fasttrace.errors import exception_attributes as _exception_attributes

__all__ = ["decode_export_response", "encode_export_request"]

cdef enum:
    # Span.SpanKind
    KIND_INTERNAL = 1
    KIND_SERVER = 2
    KIND_CLIENT = 3
    KIND_PRODUCER = 4
    KIND_CONSUMER = 5
    STATUS_ERROR = 2
    # what a tag key means to the encoder (0: not looked at yet)
    KEY_PLAIN = 1
    KEY_KIND = 2
    KEY_ERROR = 3

# Field keys: (field_number << 3) | wire_type; 0 varint, 1 fixed64, 2 length, 5 fixed32.
cdef enum:
    K_REQ_RESOURCE_SPANS = 0x0A
    K_RS_RESOURCE = 0x0A
    K_RS_SCOPE_SPANS = 0x12
    K_RES_ATTRIBUTES = 0x0A
    K_SS_SCOPE = 0x0A
    K_SS_SPANS = 0x12
    K_SCOPE_NAME = 0x0A
    K_SCOPE_VERSION = 0x12
    K_SPAN_TRACE_ID = 0x0A
    K_SPAN_SPAN_ID = 0x12
    K_SPAN_PARENT = 0x22
    K_SPAN_NAME = 0x2A
    K_SPAN_KIND = 0x30
    K_SPAN_START = 0x39
    K_SPAN_END = 0x41
    K_SPAN_ATTRIBUTES = 0x4A
    K_SPAN_EVENTS = 0x5A
    K_SPAN_LINKS = 0x6A
    K_SPAN_STATUS = 0x7A
    K_EVENT_TIME = 0x09
    K_EVENT_NAME = 0x12
    K_EVENT_ATTRIBUTES = 0x1A
    K_LINK_TRACE_ID = 0x0A
    K_LINK_SPAN_ID = 0x12
    K_LINK_ATTRIBUTES = 0x22
    K_STATUS_MESSAGE = 0x12
    K_STATUS_CODE = 0x18
    K_KV_KEY = 0x0A
    K_KV_VALUE = 0x12
    K_AV_STRING = 0x0A
    K_AV_BOOL = 0x10
    K_AV_INT = 0x18
    K_AV_DOUBLE = 0x21

# Span.flags is field 16, fixed32: its key 0x85 needs two varint bytes.
cdef const uint32_t K_SPAN_FLAGS = (16 << 3) | 5

cdef dict _KIND_NAMES = {"server": KIND_SERVER, "client": KIND_CLIENT,
                         "producer": KIND_PRODUCER, "consumer": KIND_CONSUMER}


cdef inline int _key_varint(WBuf *b, uint32_t key, uint64_t v) except -1:
    wb_reserve(b, 12)
    w_varint(b, key)
    w_varint(b, v)
    return 0


cdef inline int _key_bytes(WBuf *b, uint32_t key, const char *s, Py_ssize_t n) except -1:
    wb_reserve(b, n + 12)
    w_varint(b, key)
    w_varint(b, <uint64_t>n)
    memcpy(b.p + b.n, s, n)
    b.n += n
    return 0


cdef int _key_str(WBuf *b, uint32_t key, object s) except -1:
    """A string field from a str (anything else as its text, see `_text`)."""
    cdef Py_ssize_t n
    cdef const char *u
    if not isinstance(s, str):
        s = wb_text(b, s)
    u = str_utf8(s, &n)
    if u == NULL:
        # lone surrogates: protobuf strings must be valid UTF-8
        data = PyUnicode_AsEncodedString(s, "utf-8", "replace")
        return _key_bytes(b, key, data, len(data))
    return _key_bytes(b, key, u, n)


cdef inline int _id_field(WBuf *b, uint32_t key, uint64_t hi, uint64_t lo, bint wide) except -1:
    wb_reserve(b, 18)
    b.p[b.n] = <unsigned char>key
    b.p[b.n + 1] = 16 if wide else 8
    b.n += 2
    if wide:
        w_be(b, hi, 8)
    w_be(b, lo, 8)
    return 0


cdef inline Py_ssize_t _begin(WBuf *b, uint32_t key, int reserve) except -1:
    """Starts a nested message: writes its key, reserves `reserve` length bytes."""
    wb_reserve(b, reserve + 2)
    w_varint(b, key)
    b.n += reserve
    return b.n


cdef int _end(WBuf *b, Py_ssize_t body, int reserve) except -1:
    """Writes the length of the message begun at `body`, moving it if need be."""
    cdef Py_ssize_t length = b.n - body
    cdef int need = varint_len(<uint64_t>length)
    cdef Py_ssize_t save
    if need != reserve:
        if need > reserve:
            wb_reserve(b, need - reserve)
        memmove(b.p + body + (need - reserve), b.p + body, length)
        b.n += need - reserve
    save = b.n
    b.n = body - reserve
    w_varint(b, <uint64_t>length)
    b.n = save
    return 0


cdef int _av_double(WBuf *b, double d) except -1:
    cdef uint64_t bits
    memcpy(&bits, &d, 8)
    wb_reserve(b, 9)
    b.p[b.n] = K_AV_DOUBLE
    b.n += 1
    w_le64(b, bits)
    return 0


cdef int _av_int(WBuf *b, object value) except -1:
    # an int subclass too: its value is read without calling __int__ or __index__
    cdef int overflow = 0
    cdef long long num = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        return _key_str(b, K_AV_STRING, value)      # beyond int64: its decimal text
    return _key_varint(b, K_AV_INT, <uint64_t><int64_t>num)


cdef int _any_value(WBuf *b, object value) except -1:
    """The AnyValue for a Python value: str, bool, int, float (subclasses as their
    built-in value); anything else as its text."""
    cdef Py_ssize_t body = _begin(b, K_KV_VALUE, 1)
    t = type(value)
    if t is str:
        _key_str(b, K_AV_STRING, value)
    elif t is bool:
        _key_varint(b, K_AV_BOOL, 1 if value is True else 0)
    elif t is int:
        _av_int(b, value)
    elif t is float:
        _av_double(b, PyFloat_AS_DOUBLE(value))
    elif isinstance(value, int):                    # bool cannot be subclassed
        _av_int(b, value)
    elif isinstance(value, float):
        _av_double(b, PyFloat_AS_DOUBLE(value))
    else:
        _key_str(b, K_AV_STRING, value)
    _end(b, body, 1)
    return 0


cdef int _kv_obj(WBuf *b, uint32_t key, object name, object value) except -1:
    cdef Py_ssize_t body = _begin(b, key, 1)
    _key_str(b, K_KV_KEY, name)
    _any_value(b, value)
    _end(b, body, 1)
    return 0


cdef int _resource(WBuf *b, str service_name, dict resource) except -1:
    cdef Py_ssize_t body = _begin(b, K_RS_RESOURCE, 2)
    cdef int named = 0
    _kv_obj(b, K_RES_ATTRIBUTES, "service.name", service_name)
    for key, value in resource.items():
        if str_named(key, "service.name"):
            continue
        if str_named(key, "telemetry.sdk.language"):
            named |= 1
        elif str_named(key, "telemetry.sdk.name"):
            named |= 2
        elif str_named(key, "telemetry.sdk.version"):
            named |= 4
        _kv_obj(b, K_RES_ATTRIBUTES, key, value)
    # as the OpenTelemetry SDK describes itself on every resource; the tracer's tags win
    if not named & 1:
        _kv_obj(b, K_RES_ATTRIBUTES, "telemetry.sdk.language", "python")
    if not named & 2:
        _kv_obj(b, K_RES_ATTRIBUTES, "telemetry.sdk.name", "fasttrace")
    if not named & 4:
        _kv_obj(b, K_RES_ATTRIBUTES, "telemetry.sdk.version", _VERSION)
    _end(b, body, 2)
    return 0


cdef int _link(WBuf *b, object ref) except -1:
    cdef Py_ssize_t body = _begin(b, K_SPAN_LINKS, 1)
    ref_type, trace_id, span_id = ref
    trace_id = int(trace_id)
    _id_field(b, K_LINK_TRACE_ID, <uint64_t>(trace_id >> 64), <uint64_t>(trace_id & 0xFFFFFFFFFFFFFFFF), True)
    _id_field(b, K_LINK_SPAN_ID, 0, <uint64_t>int(span_id), False)
    _kv_obj(b, K_LINK_ATTRIBUTES, "opentracing.ref_type", ref_type)
    _end(b, body, 1)
    return 0


cdef uint8_t _key_class(object key) noexcept:
    if str_named(key, "span.kind"):
        return KEY_KIND
    if str_named(key, "error"):
        return KEY_ERROR
    return KEY_PLAIN


cdef object _field(dict fields, const char *name, object default):
    # a log field, found without hashing or comparing the application's keys with ==
    for key, value in fields.items():
        if str_named(key, name):
            return value
    return default


cdef object _NO_EVENT = object()


cdef class _Encoder:
    """One request's buffer (reused between calls on the same encoder)."""
    cdef WBuf buf
    cdef public str scope_version

    def __cinit__(self):
        self.buf.p = NULL
        self.buf.n = 0
        self.buf.cap = 0
        self.buf.unprintable = 0

    def __dealloc__(self):
        PyMem_Free(self.buf.p)

    def text(self, value):
        """`_text` for Python code (fasttrace.errors.exception_attributes)."""
        return wb_text(&self.buf, value)

    cdef int _batch(self, batch) except -1:
        cdef WBuf *b = &self.buf
        cdef BatchView v
        cdef list keys
        cdef Py_ssize_t n, i, t, t1, j
        cdef Py_ssize_t rs_body, ss_body, sc_body, sp_body, kv_body, av_body, ev_body, st_body
        cdef uint32_t kid
        cdef uint8_t ty, cls
        cdef int kind
        cdef bint error, parent_seen
        cdef uint64_t parent
        cdef dict fields
        # what each key id means (span.kind, error, other), found on first use; a key
        # table holds at most 16,384 keys
        cdef bytearray key_classes
        cdef uint8_t *key_class
        d = raw_columns(batch)
        n = len(d["span_id"] if d is not None and "span_id" in d else batch.span_id)
        if n == 0:
            return 0
        v = BatchView(batch)
        keys = v.keys
        key_classes = bytearray(len(keys))
        key_class = <uint8_t *>PyByteArray_AS_STRING(key_classes)

        rs_body = _begin(b, K_REQ_RESOURCE_SPANS, 4)
        _resource(b, batch.service_name, batch.resource)
        ss_body = _begin(b, K_RS_SCOPE_SPANS, 4)
        sc_body = _begin(b, K_SS_SCOPE, 1)
        _key_str(b, K_SCOPE_NAME, "fasttrace")
        if self.scope_version:
            _key_str(b, K_SCOPE_VERSION, self.scope_version)
        _end(b, sc_body, 1)

        for i in range(n):
            sp_body = _begin(b, K_SS_SPANS, 2)
            _id_field(b, K_SPAN_TRACE_ID, v.hi[i], v.lo[i], True)
            _id_field(b, K_SPAN_SPAN_ID, 0, v.sid[i], False)
            parent = v.pid[i]
            if parent:
                _id_field(b, K_SPAN_PARENT, 0, parent, False)
            _key_str(b, K_SPAN_NAME, v.name(i))
            wb_reserve(b, 18)
            b.p[b.n] = K_SPAN_START
            b.n += 1
            w_le64(b, <uint64_t>v.start[i])
            b.p[b.n] = K_SPAN_END
            b.n += 1
            w_le64(b, <uint64_t>v.end[i])

            # tags, read as SpanBatch.tags() reads them: an uninterned entry's tag_obj is
            # (key, object value or None), its other columns are those of any entry
            kind = KIND_INTERNAL
            error = False
            t1 = v.tag_off[i + 1]
            for t in range(v.tag_off[i], t1):
                kid = v.tag_key[t]
                ty = v.tag_type[t]
                if kid == UNINTERNED:
                    entry = v.uninterned(t, t1)
                    if entry is None:
                        continue
                    key, obj = <tuple>entry
                    cls = _key_class(key)
                else:
                    key = keys[kid]
                    obj = v.tag_obj[t]
                    cls = key_class[kid]
                    if cls == 0:
                        cls = key_class[kid] = _key_class(key)
                if cls == KEY_KIND:
                    if ty == TAG_STR:
                        value = _KIND_NAMES.get(obj if type(obj) is str else wb_text(b, obj))
                        if value is not None:
                            kind = value
                            continue
                elif cls == KEY_ERROR and ty == TAG_BOOL and v.tag_num[t]:
                    error = True
                kv_body = _begin(b, K_SPAN_ATTRIBUTES, 1)
                _key_str(b, K_KV_KEY, key)
                av_body = _begin(b, K_KV_VALUE, 1)
                if ty == TAG_STR or ty == TAG_BIGINT:
                    _key_str(b, K_AV_STRING, obj)
                elif ty == TAG_BOOL:
                    _key_varint(b, K_AV_BOOL, 1 if v.tag_num[t] else 0)
                elif ty == TAG_INT:
                    _key_varint(b, K_AV_INT, <uint64_t>v.tag_num[t])
                else:
                    wb_reserve(b, 9)
                    b.p[b.n] = K_AV_DOUBLE
                    b.n += 1
                    w_le64(b, <uint64_t>v.tag_num[t])
                _end(b, av_body, 1)
                _end(b, kv_body, 1)
            _key_varint(b, K_SPAN_KIND, <uint64_t>kind)

            status_message = None
            for j in range(v.log_off[i], v.log_off[i + 1]):
                f = v.log_fields[j]
                if type(f) is dict:
                    fields = <dict>f
                else:
                    fields = {} if f is None else {"event": f}
                ev_body = _begin(b, K_SPAN_EVENTS, 1)
                wb_reserve(b, 9)
                b.p[b.n] = K_EVENT_TIME
                b.n += 1
                w_le64(b, <uint64_t>v.log_ts[j])
                # one pass, the name after the attributes (protobuf fields may come in any
                # order); the event field is found by its characters, not looked up, so
                # no key's own __eq__ runs
                attributes_at = b.n
                unprintable_at = b.unprintable
                event = _NO_EVENT
                for key, value in fields.items():
                    if event is _NO_EVENT and (key is "event" or str_named(key, "event")):
                        event = value
                        continue
                    _kv_obj(b, K_EVENT_ATTRIBUTES, key, value)
                exception = None
                if event is not _NO_EVENT and str_named(event, "error"):
                    exception = _exception_attributes(fields, self.text)
                if exception is not None:
                    b.n = attributes_at
                    b.unprintable = unprintable_at
                    message = None
                    for key, value in <list>exception:
                        _kv_obj(b, K_EVENT_ATTRIBUTES, key, value)
                        if str_named(key, "exception.message"):
                            message = value
                    _key_str(b, K_EVENT_NAME, "exception")
                else:
                    _key_str(b, K_EVENT_NAME, "log" if event is _NO_EVENT else event)
                _end(b, ev_body, 1)
                if error and status_message is None and event is not _NO_EVENT \
                        and str_named(event, "error"):
                    # as opentracing's Span.__exit__ writes it: message, else error.object
                    if exception is None:
                        message = _field(fields, "message", None)
                        if message is None:
                            message = _field(fields, "error.object", None)
                    status_message = message

            extra = v.extras[i]
            if extra is not None and "refs" in extra:
                parent_seen = False
                for ref in extra["refs"]:
                    if (not parent_seen and parent and ref[0] == "child_of"
                            and ref[2] == parent):
                        parent_seen = True
                        continue
                    _link(b, ref)
            elif parent and v.flags[i] & FLAG_FIRST_REF_FOLLOWS:
                _link(b, ("follows_from",
                          (<object>v.hi[i] << 64) | <object>v.lo[i], parent))

            if error:
                st_body = _begin(b, K_SPAN_STATUS, 1)
                if status_message is not None:
                    _key_str(b, K_STATUS_MESSAGE, status_message)
                _key_varint(b, K_STATUS_CODE, STATUS_ERROR)
                _end(b, st_body, 1)
            if v.flags[i] & FLAG_SAMPLED:
                wb_reserve(b, 6)
                w_varint(b, K_SPAN_FLAGS)
                b.p[b.n] = 1
                b.p[b.n + 1] = b.p[b.n + 2] = b.p[b.n + 3] = 0
                b.n += 4
            _end(b, sp_body, 2)
        _end(b, ss_body, 4)
        _end(b, rs_body, 4)
        return 0

    def encode(self, batches):
        """Returns the serialized ExportTraceServiceRequest for a SpanBatch or a list of them."""
        self.buf.n = 0
        self.buf.unprintable = 0
        if not isinstance(batches, (list, tuple)):
            batches = (batches,)
        for batch in batches:
            self._batch(batch)
        out = PyBytes_FromStringAndSize(<const char *>self.buf.p, self.buf.n)
        if self.buf.cap > (1 << 24):
            # do not keep a huge buffer around after one exceptional request
            PyMem_Free(self.buf.p)
            self.buf.p = NULL
            self.buf.cap = 0
        self.buf.n = 0
        return out


def encode_export_request(batches, str scope_version="", dict stats=None):
    """Encodes SpanBatches as an OTLP ``ExportTraceServiceRequest``.

    Args:
        batches: a SpanBatch, or a list of them (one ResourceSpans each).
        scope_version: the instrumentation scope's version (fasttrace's).
        stats: None, or a dict whose ``"unprintable_values"`` is increased by the number
            of values sent as ``<unprintable TypeName>`` (their ``str()`` raised).

    Returns:
        The protobuf bytes.
    """
    cdef _Encoder enc = _Encoder()
    enc.scope_version = scope_version
    out = enc.encode(batches)
    if stats is not None and enc.buf.unprintable:
        stats["unprintable_values"] = stats.get("unprintable_values", 0) + enc.buf.unprintable
    return out


# -- response ---------------------------------------------------------------------

cdef uint64_t _read_varint(const unsigned char *p, Py_ssize_t n, Py_ssize_t *pos) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v = 0
    cdef int shift = 0
    while True:
        if pos[0] >= n or shift > 63:
            raise ValueError("truncated or overlong varint")
        c = p[pos[0]]
        pos[0] += 1
        v |= (<uint64_t>(c & 0x7F)) << shift
        if not (c & 0x80):
            return v
        shift += 7


cdef Py_ssize_t _skip(const unsigned char *p, Py_ssize_t n, Py_ssize_t pos, int wire) except -1:
    cdef uint64_t length
    if wire == 0:
        _read_varint(p, n, &pos)
    elif wire == 1:
        pos += 8
    elif wire == 5:
        pos += 4
    elif wire == 2:
        length = _read_varint(p, n, &pos)
        if length > <uint64_t>(n - pos):
            raise ValueError("truncated field")
        pos += <Py_ssize_t>length
    else:
        raise ValueError("unsupported wire type %d" % wire)
    if pos > n:
        raise ValueError("truncated field")
    return pos


def decode_export_response(const unsigned char[:] data):
    """Reads an ``ExportTraceServiceResponse``.

    Returns:
        ``(rejected_spans, error_message)``; ``(0, "")`` for an empty response.

    Raises:
        ValueError: the bytes are not a valid response.
    """
    cdef Py_ssize_t n = data.shape[0], pos = 0, end, length
    cdef const unsigned char *p = &data[0] if n else NULL
    cdef uint64_t key
    cdef int64_t rejected = 0
    message = ""
    while pos < n:
        key = _read_varint(p, n, &pos)
        if key == 0x0A:                       # partial_success
            length = <Py_ssize_t>_read_varint(p, n, &pos)
            if length < 0 or length > n - pos:
                raise ValueError("truncated partial_success")
            end = pos + length
            while pos < end:
                key = _read_varint(p, end, &pos)
                if key == 0x08:
                    rejected = <int64_t>_read_varint(p, end, &pos)
                elif key == 0x12:
                    length = <Py_ssize_t>_read_varint(p, end, &pos)
                    if length < 0 or length > end - pos:
                        raise ValueError("truncated error_message")
                    message = bytes(data[pos:pos + length]).decode("utf-8", "replace")
                    pos += length
                else:
                    pos = _skip(p, end, pos, key & 7)
        else:
            pos = _skip(p, n, pos, key & 7)
    return int(rejected), message

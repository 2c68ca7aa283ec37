# SPDX-License-Identifier: Apache-2.0
"""Wire encoders over SpanBatch columns: Jaeger Thrift compact (agent, UDP) and binary
(collector, HTTP), and Zipkin v2 JSON (at the end of this file).

The structs are jaeger-idl's `jaeger.thrift` (field ids as in jaeger-client's generated
`thrift_gen/jaeger/ttypes.py`); the agent call is `agent.thrift`'s oneway `emitBatch`:

    Tag      { 1: string key, 2: i32 vType (0 STRING 1 DOUBLE 2 BOOL 3 LONG), 3: string vStr,
               4: double vDouble, 5: bool vBool, 6: i64 vLong }
    Log      { 1: i64 timestamp (us), 2: list<Tag> fields }
    SpanRef  { 1: i32 refType (0 CHILD_OF 1 FOLLOWS_FROM), 2: i64 traceIdLow,
               3: i64 traceIdHigh, 4: i64 spanId }
    Span     { 1: i64 traceIdLow, 2: i64 traceIdHigh, 3: i64 spanId, 4: i64 parentSpanId,
               5: string operationName, 6: optional list<SpanRef> references, 7: i32 flags,
               8: i64 startTime (us), 9: i64 duration (us), 10: optional list<Tag> tags,
               11: optional list<Log> logs }
    Process  { 1: string serviceName, 2: optional list<Tag> tags }
    Batch    { 1: Process process, 2: list<Span> spans }
    emitBatch_args { 1: Batch batch }

Wire formats (Apache Thrift protocol specs, doc/specs/thrift-{compact,binary}-protocol.md):

    binary:   field  = type:u8 id:i16be value;  stop = 0x00
              i32/i64/double = big-endian 4/8 bytes; bool = 1 byte; string = len:i32be bytes
              list   = elemtype:u8 size:i32be elements
    compact:  field  = (id-delta << 4 | ctype):u8 value, or ctype:u8 zigzag-varint(id) when the
              delta is not in 1..15; bool fields carry their value in ctype (1 true, 2 false)
              i32/i64 = zigzag varint; double = 8 bytes little-endian; string = varint len, bytes
              list   = (size << 4 | ctype):u8 when size < 15, else (0xF0 | ctype) varint(size)
              message = 0x82, (version 1 | type << 5), varint seqid, string name, args struct

Values are written as fasttrace/exporters/jaeger.py and zipkin.py describe: typed where the
format has the type, else as their text (`fasttrace._text`), never failing the batch.

Every span struct is self-contained (compact field deltas restart in each struct), so the
spans of a batch are encoded once, back to back, with their offsets; the agent's datagrams
and the collector's body are assembled from those byte ranges without re-encoding.
Unsigned 64-bit ids travel as Thrift's signed i64 (same bits), as jaeger-client sends them.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, strlen

import numpy as np

from fasttrace._text import counted_text as _counted_text, placeholder as _placeholder, \
    text as _py_text
from fasttrace.batch import shadowed_tags as _shadowed_tags

cdef extern from "Python.h":
    # Declared without an exception spec: a NULL return (lone surrogates) is handled here.
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size)
    void PyErr_Clear()
    object PyUnicode_AsEncodedString(object s, const char *encoding, const char *errors)
    int PyUnicode_CompareWithASCIIString(object s, const char *name) noexcept
    Py_ssize_t PyUnicode_GET_LENGTH(object s) noexcept
    double PyFloat_AS_DOUBLE(object f) noexcept

__all__ = ["PROTOCOL_BINARY", "PROTOCOL_COMPACT", "SpanEncoder", "UNINTERNED", "agent_packets",
           "collector_body", "emit_batch_overhead", "encode_process", "encode_spans",
           "encode_zipkin", "json_string", "span_parts_sizes"]

PROTOCOL_COMPACT = 0
PROTOCOL_BINARY = 1
UNINTERNED = 0xFFFFFFFF

cdef enum:
    # compact protocol type nibbles
    CT_TRUE = 1
    CT_FALSE = 2
    CT_I32 = 5
    CT_I64 = 6
    CT_DOUBLE = 7
    CT_BINARY = 8
    CT_LIST = 9
    CT_STRUCT = 12
    # binary protocol type bytes
    BT_BOOL = 2
    BT_DOUBLE = 4
    BT_I32 = 8
    BT_I64 = 10
    BT_STRING = 11
    BT_STRUCT = 12
    BT_LIST = 15
    # jaeger.TagType
    JT_STRING = 0
    JT_DOUBLE = 1
    JT_BOOL = 2
    JT_LONG = 3
    # fasttrace.batch tag types
    TAG_STR = 0
    TAG_BOOL = 1
    TAG_INT = 2
    TAG_FLOAT = 3
    TAG_BIGINT = 4
    # SpanContext flags Jaeger knows (sampled, debug); higher bits are ours
    JAEGER_FLAGS = 3
    # oneway message type, for Agent.emitBatch
    MSG_ONEWAY = 4

cdef uint32_t _UNINTERNED = 0xFFFFFFFF
cdef bytes _EMIT_BATCH = b"emitBatch"
cdef str _FOLLOWS_FROM = "follows_from"
cdef object _MASK64 = 0xFFFFFFFFFFFFFFFF


# -- a growable byte buffer --------------------------------------------------------------

cdef struct WBuf:
    unsigned char *p
    Py_ssize_t n
    Py_ssize_t cap
    Py_ssize_t unprintable      # values sent as a placeholder (fasttrace._text)


cdef int wb_init(WBuf *b, Py_ssize_t cap) except -1:
    b.p = <unsigned char *>PyMem_Malloc(cap)
    if b.p == NULL:
        raise MemoryError()
    b.n = 0
    b.cap = cap
    b.unprintable = 0
    return 0


cdef void wb_free(WBuf *b) noexcept:
    PyMem_Free(b.p)
    b.p = NULL
    b.n = b.cap = 0


cdef int wb_grow(WBuf *b, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef unsigned char *p
    if cap < b.n + need:
        cap = b.n + need + 1024
    p = <unsigned char *>PyMem_Realloc(b.p, cap)
    if p == NULL:
        raise MemoryError()
    b.p = p
    b.cap = cap
    return 0


cdef inline int wb_reserve(WBuf *b, Py_ssize_t need) except -1:
    if b.n + need > b.cap:
        return wb_grow(b, need)
    return 0


cdef inline int w_byte(WBuf *b, unsigned char v) except -1:
    if b.n + 1 > b.cap:
        wb_grow(b, 1)
    b.p[b.n] = v
    b.n += 1
    return 0


cdef inline int w_raw(WBuf *b, const void *src, Py_ssize_t n) except -1:
    if b.n + n > b.cap:
        wb_grow(b, n)
    memcpy(b.p + b.n, src, n)
    b.n += n
    return 0


cdef inline int w_varint(WBuf *b, uint64_t v) except -1:
    if b.n + 10 > b.cap:
        wb_grow(b, 10)
    cdef unsigned char *p = b.p + b.n
    while v >= 0x80:
        p[0] = <unsigned char>(v | 0x80)
        v >>= 7
        p += 1
    p[0] = <unsigned char>v
    b.n = p + 1 - b.p
    return 0


cdef inline int w_be(WBuf *b, uint64_t v, int nbytes) except -1:
    if b.n + nbytes > b.cap:
        wb_grow(b, nbytes)
    cdef int k
    for k in range(nbytes):
        b.p[b.n + k] = <unsigned char>(v >> (8 * (nbytes - 1 - k)))
    b.n += nbytes
    return 0


cdef inline int w_le64(WBuf *b, uint64_t v) except -1:
    if b.n + 8 > b.cap:
        wb_grow(b, 8)
    cdef int k
    for k in range(8):
        b.p[b.n + k] = <unsigned char>(v >> (8 * k))
    b.n += 8
    return 0


cdef inline uint64_t zigzag64(int64_t v) noexcept:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)


cdef inline uint64_t zigzag32(int32_t v) noexcept:
    return <uint32_t>((<uint32_t>v << 1) ^ <uint32_t>(v >> 31))


cdef inline int varint_len(uint64_t v) noexcept:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


# -- protocol-generic field writers ---------------------------------------------------------
# `last` is the enclosing struct's previous field id (the compact protocol's delta base).

cdef inline int w_field(WBuf *b, bint binary, int *last, int fid, int ctype,
                        int btype) except -1:
    cdef int delta
    if binary:
        if b.n + 3 > b.cap:
            wb_grow(b, 3)
        b.p[b.n] = <unsigned char>btype
        b.p[b.n + 1] = <unsigned char>(fid >> 8)
        b.p[b.n + 2] = <unsigned char>fid
        b.n += 3
    else:
        delta = fid - last[0]
        if 0 < delta <= 15:
            w_byte(b, <unsigned char>((delta << 4) | ctype))
        else:
            w_byte(b, <unsigned char>ctype)
            w_varint(b, zigzag32(<int32_t>fid))
        last[0] = fid
    return 0


cdef inline int w_i64(WBuf *b, bint binary, int *last, int fid, int64_t v) except -1:
    w_field(b, binary, last, fid, CT_I64, BT_I64)
    if binary:
        return w_be(b, <uint64_t>v, 8)
    return w_varint(b, zigzag64(v))


cdef inline int w_i32(WBuf *b, bint binary, int *last, int fid, int32_t v) except -1:
    w_field(b, binary, last, fid, CT_I32, BT_I32)
    if binary:
        return w_be(b, <uint32_t>v, 4)
    return w_varint(b, zigzag32(v))


cdef inline int w_double(WBuf *b, bint binary, int *last, int fid, uint64_t bits) except -1:
    w_field(b, binary, last, fid, CT_DOUBLE, BT_DOUBLE)
    if binary:
        return w_be(b, bits, 8)
    return w_le64(b, bits)


cdef inline int w_bool(WBuf *b, bint binary, int *last, int fid, bint v) except -1:
    w_field(b, binary, last, fid, CT_TRUE if v else CT_FALSE, BT_BOOL)
    if binary:
        return w_byte(b, 1 if v else 0)
    return 0


cdef inline int w_len(WBuf *b, bint binary, Py_ssize_t n) except -1:
    if binary:
        return w_be(b, <uint64_t>n, 4)
    return w_varint(b, <uint64_t>n)


cdef inline int w_bin(WBuf *b, bint binary, int *last, int fid, const char *s,
                      Py_ssize_t n) except -1:
    w_field(b, binary, last, fid, CT_BINARY, BT_STRING)
    w_len(b, binary, n)
    return w_raw(b, s, n)


cdef int w_str(WBuf *b, bint binary, int *last, int fid, object s) except -1:
    """A string field from a str (UTF-8), bytes, or anything else (its text, `_text`)."""
    cdef Py_ssize_t n
    cdef const char *p
    if type(s) is bytes:
        return w_bin(b, binary, last, fid, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))
    if not isinstance(s, str):
        s = _text(b, s)
    # a str subclass too: its characters are read without calling its methods
    p = PyUnicode_AsUTF8AndSize(s, &n)
    if p == NULL:
        # lone surrogates cannot be UTF-8; Jaeger needs valid UTF-8 strings
        PyErr_Clear()
        s = PyUnicode_AsEncodedString(s, "utf-8", "replace")
        return w_bin(b, binary, last, fid, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))
    return w_bin(b, binary, last, fid, p, n)


cdef inline int w_list(WBuf *b, bint binary, int *last, int fid, int ctype, int btype,
                       Py_ssize_t size) except -1:
    """A list field's header; `size` elements of (ctype/btype) follow."""
    w_field(b, binary, last, fid, CT_LIST, BT_LIST)
    return w_list_header(b, binary, ctype, btype, size)


cdef inline int w_list_header(WBuf *b, bint binary, int ctype, int btype,
                              Py_ssize_t size) except -1:
    if binary:
        w_byte(b, <unsigned char>btype)
        return w_be(b, <uint64_t>size, 4)
    if size < 15:
        return w_byte(b, <unsigned char>((size << 4) | ctype))
    w_byte(b, <unsigned char>(0xF0 | ctype))
    return w_varint(b, <uint64_t>size)


cdef inline int list_header_len(bint binary, Py_ssize_t size) noexcept:
    if binary:
        return 5
    if size < 15:
        return 1
    return 1 + varint_len(<uint64_t>size)


cdef object _text(WBuf *b, object value):
    """The text of a value that has no wire type of its own (`fasttrace._text`); a
    placeholder, counted in the buffer, when it cannot be printed."""
    s = _py_text(value)
    if s is None:
        b.unprintable += 1
        s = _placeholder(value)
    return s


cdef inline object _plain(WBuf *b, object s):
    """s as an exact str: a key that is hashed, compared or cached must not run code of
    a str subclass's own."""
    return s if type(s) is str else _text(b, s)


cdef inline bint _named(object s, const char *name) noexcept:
    # compares the characters, never calls a str subclass's __eq__; the length (strlen of
    # a literal is a constant) rejects most keys without a call
    return (isinstance(s, str) and PyUnicode_GET_LENGTH(s) == <Py_ssize_t>strlen(name)
            and PyUnicode_CompareWithASCIIString(s, name) == 0)


# -- tags ------------------------------------------------------------------------------------

cdef int w_tag_key_start(WBuf *b, bint binary, int *last, object key) except -1:
    # Tag.key (field 1); `key` is the interned UTF-8 bytes or a str
    if type(key) is bytes:
        return w_bin(b, binary, last, 1, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
    return w_str(b, binary, last, 1, key)


cdef int w_tag_num(WBuf *b, bint binary, object key, int kind, int64_t num) except -1:
    """A Tag struct for a bool, int64 or float (bits in num) value."""
    cdef int last = 0
    w_tag_key_start(b, binary, &last, key)
    if kind == TAG_BOOL:
        w_i32(b, binary, &last, 2, JT_BOOL)
        w_bool(b, binary, &last, 5, num != 0)
    elif kind == TAG_INT:
        w_i32(b, binary, &last, 2, JT_LONG)
        w_i64(b, binary, &last, 6, num)
    else:
        w_i32(b, binary, &last, 2, JT_DOUBLE)
        w_double(b, binary, &last, 4, <uint64_t>num)
    return w_byte(b, 0)


cdef int w_tag_str(WBuf *b, bint binary, object key, object value) except -1:
    cdef int last = 0
    w_tag_key_start(b, binary, &last, key)
    w_i32(b, binary, &last, 2, JT_STRING)
    w_str(b, binary, &last, 3, value)
    return w_byte(b, 0)


cdef int w_tag_obj(WBuf *b, bint binary, object key, object value) except -1:
    """A Tag struct from any Python value: bool, int (beyond int64: a string), float, str,
    anything else as its text (jaeger-client sends str(value)).  Subclasses of int and
    float are read as their built-in value, without calling __int__ or __float__."""
    cdef int overflow = 0
    cdef int64_t num
    cdef double dbl
    t = type(value)
    if t is str:
        return w_tag_str(b, binary, key, value)
    if t is bool:                                   # bool cannot be subclassed
        return w_tag_num(b, binary, key, TAG_BOOL, 1 if value is True else 0)
    if t is int or isinstance(value, int):
        num = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow:
            return w_tag_str(b, binary, key, value)  # its decimal text
        return w_tag_num(b, binary, key, TAG_INT, num)
    if t is float or isinstance(value, float):
        dbl = PyFloat_AS_DOUBLE(value)
        memcpy(&num, &dbl, 8)
        return w_tag_num(b, binary, key, TAG_FLOAT, num)
    return w_tag_str(b, binary, key, value)


# -- the batch, as typed views over its columns -------------------------------------------------

cdef class _Columns:
    """Typed views over a SpanBatch's columns, plus per-batch UTF-8 caches of the names and
    keys it uses (each interned string is encoded once per batch)."""
    cdef Py_ssize_t n
    cdef const uint64_t[::1] hi
    cdef const uint64_t[::1] lo
    cdef const uint64_t[::1] sid
    cdef const uint64_t[::1] pid
    cdef const int64_t[::1] start
    cdef const int64_t[::1] end
    cdef const uint8_t[::1] flags
    cdef const uint32_t[::1] name_id
    cdef const int32_t[::1] tag_off
    cdef const uint32_t[::1] tag_key
    cdef const uint8_t[::1] tag_type
    cdef const int64_t[::1] tag_num
    cdef const int32_t[::1] log_off
    cdef const int64_t[::1] log_ts
    cdef list tag_obj
    cdef list log_fields
    cdef list extras
    cdef list names
    cdef list keys
    cdef list name_cache
    cdef list key_cache

    def __init__(self, batch):
        self.n = len(batch.span_id)
        self.hi = batch.trace_id_hi
        self.lo = batch.trace_id_lo
        self.sid = batch.span_id
        self.pid = batch.parent_id
        self.start = batch.start_ns
        self.end = batch.end_ns
        self.flags = batch.flags
        self.name_id = batch.name_id
        self.tag_off = batch.tag_offsets
        self.tag_key = batch.tag_key
        self.tag_type = batch.tag_type
        self.tag_num = batch.tag_num
        self.log_off = batch.log_offsets
        self.log_ts = batch.log_ts
        self.tag_obj = _as_list(batch.tag_obj)
        self.log_fields = _as_list(batch.log_fields)
        self.extras = _as_list(batch.extras)
        # the tracer's tables are append-only: ids in this batch are below today's lengths
        self.names = _as_list(batch.operation_names)
        self.keys = _as_list(batch.tag_keys)
        self.name_cache = [None] * len(self.names)
        self.key_cache = [None] * len(self.keys)
        if self.sid.shape[0] != self.n or self.tag_off.shape[0] != self.n + 1 \
                or self.log_off.shape[0] != self.n + 1:
            raise ValueError("inconsistent SpanBatch columns")

    cdef object name_bytes(self, Py_ssize_t i):
        cdef uint32_t nid = self.name_id[i]
        if nid == _UNINTERNED:
            extra = self.extras[i]
            return extra.get("name", "") if extra is not None else ""
        cached = self.name_cache[nid]
        if cached is None:
            cached = _utf8(self.names[nid])
            self.name_cache[nid] = cached
        return cached

    cdef object key_bytes(self, uint32_t kid):
        cached = self.key_cache[kid]
        if cached is None:
            cached = _utf8(self.keys[kid])
            self.key_cache[kid] = cached
        return cached

    cdef int write_tags(self, WBuf *b, bint binary, int *last, Py_ssize_t t0,
                        Py_ssize_t t1, object extra_tag, set shadowed) except -1:
        """The Span.tags list: tags [t0, t1) read as SpanBatch.tags() reads them, then
        `extra_tag`.  `shadowed` holds the uninterned entries a later one replaces, or is
        None until the first uninterned entry (the list header counts every entry; it is
        written again in the rare case that some must go)."""
        cdef Py_ssize_t t, list_at = b.n
        cdef int last_before = last[0]
        cdef uint32_t kid
        cdef int kind
        w_list(b, binary, last, 10, CT_STRUCT, BT_STRUCT,
               t1 - t0 + (extra_tag is not None) - (len(shadowed) if shadowed else 0))
        for t in range(t0, t1):
            kid = self.tag_key[t]
            kind = self.tag_type[t]
            if kid == _UNINTERNED:
                if shadowed is None:
                    shadowed = _shadowed_tags(self.tag_key, self.tag_obj, t, t1)
                    if shadowed:
                        b.n = list_at
                        last[0] = last_before
                        return self.write_tags(b, binary, last, t0, t1, extra_tag, shadowed)
                elif t in shadowed:
                    continue
                # tag_obj holds (key, object value or None); the other columns as usual
                key, value = <tuple>self.tag_obj[t]
            else:
                key = self.key_bytes(kid)
                value = self.tag_obj[t]
            if kind == TAG_STR or kind == TAG_BIGINT:
                # beyond i64: exact as a string (Jaeger has no wider integer)
                w_tag_str(b, binary, key, value)
            else:
                w_tag_num(b, binary, key, kind, self.tag_num[t])
        if extra_tag is not None:
            w_tag_obj(b, binary, extra_tag[0], extra_tag[1])
        return 0

    cdef int write_span(self, WBuf *b, bint binary, Py_ssize_t i,
                        object extra_tag) except -1:
        """Span i as one struct.  `extra_tag` is None or a (key, value) appended to its tags."""
        cdef int last = 0
        cdef int lastref
        cdef Py_ssize_t t0 = self.tag_off[i], t1 = self.tag_off[i + 1]
        cdef Py_ssize_t l, l0 = self.log_off[i], l1 = self.log_off[i + 1]
        cdef int64_t dur
        cdef object refs = None, extra = self.extras[i]
        w_i64(b, binary, &last, 1, <int64_t>self.lo[i])
        w_i64(b, binary, &last, 2, <int64_t>self.hi[i])
        w_i64(b, binary, &last, 3, <int64_t>self.sid[i])
        w_i64(b, binary, &last, 4, <int64_t>self.pid[i])
        name = self.name_bytes(i)
        if type(name) is bytes:
            w_bin(b, binary, &last, 5, PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))
        else:
            w_str(b, binary, &last, 5, name)
        # references: only when the span was started with several of them, or with a
        # follows_from one; then all of them, the parent's included, as jaeger-client sends
        # what it was given.  A lone child_of parent travels as parentSpanId only (as
        # jaeger-client's child_of=), which Jaeger turns into the same CHILD_OF reference.
        if extra is not None:
            refs = (<dict>extra).get("refs")
        if refs:
            w_list(b, binary, &last, 6, CT_STRUCT, BT_STRUCT, len(refs))
            for ref in refs:
                lastref = 0
                tid = int(ref[1])
                w_i32(b, binary, &lastref, 1, 1 if ref[0] == _FOLLOWS_FROM else 0)
                w_i64(b, binary, &lastref, 2, <int64_t><uint64_t>(tid & _MASK64))
                w_i64(b, binary, &lastref, 3, <int64_t><uint64_t>((tid >> 64) & _MASK64))
                w_i64(b, binary, &lastref, 4, <int64_t><uint64_t>(int(ref[2]) & _MASK64))
                w_byte(b, 0)
        w_i32(b, binary, &last, 7, self.flags[i] & JAEGER_FLAGS)
        w_i64(b, binary, &last, 8, self.start[i] // 1000)
        dur = (self.end[i] - self.start[i]) // 1000
        w_i64(b, binary, &last, 9, dur if dur > 0 else 0)
        if t1 > t0 or extra_tag is not None:
            self.write_tags(b, binary, &last, t0, t1, extra_tag, None)
        if l1 > l0:
            w_list(b, binary, &last, 11, CT_STRUCT, BT_STRUCT, l1 - l0)
            for l in range(l0, l1):
                self.write_log(b, binary, self.log_ts[l], self.log_fields[l])
        return w_byte(b, 0)

    cdef int write_log(self, WBuf *b, bint binary, int64_t ts_ns, object fields) except -1:
        cdef int last = 0
        w_i64(b, binary, &last, 1, ts_ns // 1000)
        if type(fields) is not dict:
            fields = {} if fields is None else {"event": fields}
        w_list(b, binary, &last, 2, CT_STRUCT, BT_STRUCT, len(<dict>fields))
        for k, v in (<dict>fields).items():
            w_tag_obj(b, binary, k, v)
        return w_byte(b, 0)


cdef list _as_list(object seq):
    return <list>seq if type(seq) is list else list(seq)


cdef bytes _utf8(object s):
    # an interned name or key: the arena made it a str (a subclass is read as its
    # characters, without calling its methods)
    if not isinstance(s, str):
        t = _py_text(s)
        s = _placeholder(s) if t is None else t
    return PyUnicode_AsEncodedString(s, "utf-8", "replace")


cdef bytes _take(WBuf *b):
    return PyBytes_FromStringAndSize(<char *>b.p, b.n)


# Buffers an encoder keeps between batches (so steady-state encoding touches no fresh
# pages); a larger one, left by an unusually large batch, is given back.
cdef Py_ssize_t _KEEP_BUFFER = 8 << 20


cdef class SpanEncoder:
    """Encodes SpanBatches as `jaeger.Span` structs into a buffer kept between calls.

    `encode(batch)` writes every span struct back to back and remembers where each starts;
    `agent_packets(...)` and `collector_body(...)` then assemble datagrams or a request body
    from those byte ranges.  Not thread-safe: one per exporter, used under its lock.

    Args:
        protocol: PROTOCOL_COMPACT (agent) or PROTOCOL_BINARY (collector).
    """
    cdef WBuf buf
    cdef int64_t *off
    cdef Py_ssize_t off_cap
    cdef readonly Py_ssize_t count
    cdef readonly int protocol
    # values the last encode() sent as a placeholder (their str() raised)
    cdef readonly Py_ssize_t unprintable

    def __cinit__(self, int protocol=PROTOCOL_COMPACT):
        if protocol != PROTOCOL_COMPACT and protocol != PROTOCOL_BINARY:
            raise ValueError(f"unknown protocol {protocol}")
        self.protocol = protocol
        self.off = NULL
        self.off_cap = 0
        self.count = 0
        wb_init(&self.buf, 64 * 1024)

    def __dealloc__(self):
        wb_free(&self.buf)
        PyMem_Free(self.off)

    def encode(self, batch, trimmed=None, only=None):
        """Encodes the batch's spans, replacing what the encoder held.

        Args:
            batch: a SpanBatch.
            trimmed: None, or {span index: (tag index set to drop, log index set to drop,
                (key, value) tag to add or None)} to encode some spans without some of
                their tags and logs (indices relative to the span).
            only: None (every span), or the indices of the spans to encode, in order.

        Returns:
            How many spans were encoded.
        """
        cdef _Columns c = _Columns(batch)
        cdef bint binary = self.protocol == PROTOCOL_BINARY
        cdef Py_ssize_t i, k, m = c.n if only is None else len(only)
        cdef int64_t *off
        self.count = 0
        self.unprintable = 0
        if self.buf.cap > _KEEP_BUFFER:
            wb_free(&self.buf)
            wb_init(&self.buf, 64 * 1024)
        self.buf.n = 0
        self.buf.unprintable = 0
        if m + 1 > self.off_cap:
            off = <int64_t *>PyMem_Realloc(self.off, (m + 1) * sizeof(int64_t))
            if off == NULL:
                raise MemoryError()
            self.off = off
            self.off_cap = m + 1
        for k in range(m):
            i = k if only is None else only[k]
            if not 0 <= i < c.n:
                raise IndexError(i)
            self.off[k] = self.buf.n
            if trimmed is not None and i in trimmed:
                _write_trimmed(c, &self.buf, binary, i, trimmed[i])
            else:
                c.write_span(&self.buf, binary, i, None)
        self.off[m] = self.buf.n
        self.count = m
        self.unprintable = self.buf.unprintable
        return m

    def span_size(self, Py_ssize_t k):
        """Bytes of the k-th encoded span."""
        if not 0 <= k < self.count:
            raise IndexError(k)
        return self.off[k + 1] - self.off[k]

    def data(self):
        """(spans, offsets): the encoded structs as bytes, and an int64 array of count + 1
        offsets; the k-th span is spans[offsets[k]:offsets[k + 1]]."""
        offsets = np.empty(self.count + 1, dtype=np.int64)
        cdef int64_t[::1] view = offsets
        memcpy(&view[0], self.off, (self.count + 1) * sizeof(int64_t))
        return PyBytes_FromStringAndSize(<char *>self.buf.p, self.buf.n), offsets

    def agent_packets(self, bytes process, Py_ssize_t max_packet_size, int32_t seqid=0):
        """The encoded spans as `Agent.emitBatch` datagrams; see `agent_packets`."""
        return _pack(process, <const char *>self.buf.p, self.off, self.count,
                     max_packet_size, seqid)

    def collector_body(self, bytes process):
        """The encoded spans as one `jaeger.Batch` struct; see `collector_body`."""
        return _batch_struct(process, <const char *>self.buf.p, self.off, self.count,
                             self.protocol == PROTOCOL_BINARY)


def encode_spans(batch, int protocol=PROTOCOL_COMPACT, trimmed=None, only=None):
    """Encodes every span of a SpanBatch as a `jaeger.Span` struct, back to back.

    Args:
        batch: a SpanBatch.
        protocol: PROTOCOL_COMPACT (agent) or PROTOCOL_BINARY (collector).
        trimmed, only: as for `SpanEncoder.encode`.

    Returns:
        (data, offsets): the structs as bytes, and an int64 array of n + 1 offsets (n = the
        number of spans encoded); the k-th is data[offsets[k]:offsets[k + 1]].
    """
    cdef SpanEncoder enc = SpanEncoder(protocol)
    enc.encode(batch, trimmed, only)
    return enc.data()


cdef int _write_trimmed(_Columns c, WBuf *b, bint binary, Py_ssize_t i, object plan) except -1:
    """Span i without the tags/logs the plan drops (indices relative to the span)."""
    drop_tags, drop_logs, extra_tag = plan
    cdef Py_ssize_t t0 = c.tag_off[i], t1 = c.tag_off[i + 1]
    cdef Py_ssize_t l0 = c.log_off[i], l1 = c.log_off[i + 1]
    # a one-span view with the kept tags and logs; the rest of the columns are shared
    keep_t = np.array([t for t in range(t0, t1) if t - t0 not in drop_tags], dtype=np.int64)
    keep_l = np.array([l for l in range(l0, l1) if l - l0 not in drop_logs], dtype=np.int64)
    cdef _Columns one = _Columns.__new__(_Columns)
    one.n = 1
    one.hi = c.hi[i:i + 1]
    one.lo = c.lo[i:i + 1]
    one.sid = c.sid[i:i + 1]
    one.pid = c.pid[i:i + 1]
    one.start = c.start[i:i + 1]
    one.end = c.end[i:i + 1]
    one.flags = c.flags[i:i + 1]
    one.name_id = c.name_id[i:i + 1]
    one.tag_off = np.array([0, len(keep_t)], dtype=np.int32)
    one.tag_key = np.ascontiguousarray(np.asarray(c.tag_key)[keep_t])
    one.tag_type = np.ascontiguousarray(np.asarray(c.tag_type)[keep_t])
    one.tag_num = np.ascontiguousarray(np.asarray(c.tag_num)[keep_t])
    one.tag_obj = [c.tag_obj[t] for t in keep_t]
    one.log_off = np.array([0, len(keep_l)], dtype=np.int32)
    one.log_ts = np.ascontiguousarray(np.asarray(c.log_ts)[keep_l])
    one.log_fields = [c.log_fields[l] for l in keep_l]
    one.extras = [c.extras[i]]
    one.names = c.names
    one.keys = c.keys
    one.name_cache = c.name_cache
    one.key_cache = c.key_cache
    return one.write_span(b, binary, 0, extra_tag)


def span_parts_sizes(batch, Py_ssize_t i, int protocol=PROTOCOL_COMPACT):
    """Encoded sizes of span i's tags and logs, for choosing what to trim.

    Returns:
        (tag_sizes, log_sizes): two lists of byte counts, in the span's order.
    """
    cdef _Columns c = _Columns(batch)
    cdef bint binary = protocol == PROTOCOL_BINARY
    cdef WBuf b
    cdef Py_ssize_t t, l, before
    cdef uint32_t kid
    tag_sizes = []
    log_sizes = []
    wb_init(&b, 1024)
    try:
        for t in range(c.tag_off[i], c.tag_off[i + 1]):
            before = b.n
            kid = c.tag_key[t]
            kind = c.tag_type[t]
            if kid == _UNINTERNED:
                key, value = <tuple>c.tag_obj[t]
            else:
                key = c.key_bytes(kid)
                value = c.tag_obj[t]
            if kind == TAG_STR or kind == TAG_BIGINT:
                w_tag_str(&b, binary, key, value)
            else:
                w_tag_num(&b, binary, key, kind, c.tag_num[t])
            tag_sizes.append(b.n - before)
            b.n = 0
        for l in range(c.log_off[i], c.log_off[i + 1]):
            c.write_log(&b, binary, c.log_ts[l], c.log_fields[l])
            log_sizes.append(b.n)
            b.n = 0
        return tag_sizes, log_sizes
    finally:
        wb_free(&b)


def encode_process(service_name, tags=None, int protocol=PROTOCOL_COMPACT):
    """A `jaeger.Process` struct: service name and typed tags (dict or (key, value) pairs)."""
    cdef bint binary = protocol == PROTOCOL_BINARY
    cdef WBuf b
    cdef int last = 0
    items = list(tags.items() if isinstance(tags, dict) else (tags or ()))
    wb_init(&b, 256)
    try:
        w_str(&b, binary, &last, 1, service_name)
        if items:
            w_list(&b, binary, &last, 2, CT_STRUCT, BT_STRUCT, len(items))
            for k, v in items:
                w_tag_obj(&b, binary, k, v)
        w_byte(&b, 0)
        return _take(&b)
    finally:
        wb_free(&b)


cdef inline Py_ssize_t _put_varint(unsigned char *p, uint64_t v) noexcept:
    cdef Py_ssize_t n = 0
    while v >= 0x80:
        p[n] = <unsigned char>(v | 0x80)
        v >>= 7
        n += 1
    p[n] = <unsigned char>v
    return n + 1


def emit_batch_overhead(Py_ssize_t process_len, Py_ssize_t nspans=1, int32_t seqid=0x7FFFFFFF):
    """Bytes an emitBatch datagram needs besides its span structs."""
    return (2 + varint_len(<uint32_t>seqid) + 1 + len(_EMIT_BATCH) + 2 + process_len
            + 1 + list_header_len(False, nspans) + 2)


cdef tuple _pack(bytes process, const char *src, const int64_t *off, Py_ssize_t n,
                 Py_ssize_t max_packet_size, int32_t seqid):
    cdef Py_ssize_t i, size, cur_bytes = 0
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(process)
    # worst case: a 5-byte seqid and a 6-byte list header
    cdef Py_ssize_t fixed = 2 + 5 + 1 + len(_EMIT_BATCH) + 2 + plen + 1 + 6 + 2
    cdef list packets = [], counts = [], oversized = [], members = []
    for i in range(n):
        size = off[i + 1] - off[i]
        if fixed + size > max_packet_size:
            oversized.append(i)
            continue
        if members and fixed + cur_bytes + size > max_packet_size:
            packets.append(_datagram(process, src, off, members, seqid))
            counts.append(len(members))
            seqid = <int32_t>((<uint32_t>seqid + 1) & 0x7FFFFFFF)
            members = []
            cur_bytes = 0
        members.append(i)
        cur_bytes += size
    if members:
        packets.append(_datagram(process, src, off, members, seqid))
        counts.append(len(members))
    return packets, counts, oversized


cdef bytes _datagram(bytes process, const char *src, const int64_t *off, list members,
                     int32_t seqid):
    """One compact `Agent.emitBatch` message carrying the member spans, written straight
    into the bytes object it returns."""
    cdef Py_ssize_t m = len(members), k, i, run_start, run_end, spans_len = 0
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(process), nlen = len(_EMIT_BATCH)
    for k in range(m):
        i = members[k]
        spans_len += off[i + 1] - off[i]
    cdef Py_ssize_t total = (2 + varint_len(<uint32_t>seqid) + 1 + nlen + 2 + plen + 1
                             + list_header_len(False, m) + spans_len + 2)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    p[0] = 0x82                                   # compact protocol id
    p[1] = 1 | (MSG_ONEWAY << 5)                  # version 1, oneway message
    p += 2
    p += _put_varint(p, <uint32_t>seqid)
    p += _put_varint(p, nlen)
    memcpy(p, PyBytes_AS_STRING(_EMIT_BATCH), nlen)
    p += nlen
    p[0] = (1 << 4) | CT_STRUCT                   # emitBatch_args.batch
    p[1] = (1 << 4) | CT_STRUCT                   # Batch.process
    p += 2
    memcpy(p, PyBytes_AS_STRING(process), plen)
    p += plen
    p[0] = (1 << 4) | CT_LIST                     # Batch.spans
    p += 1
    if m < 15:
        p[0] = <unsigned char>((m << 4) | CT_STRUCT)
        p += 1
    else:
        p[0] = 0xF0 | CT_STRUCT
        p += 1 + _put_varint(p + 1, m)
    # copy runs of consecutive spans at once
    k = 0
    while k < m:
        i = members[k]
        run_start = off[i]
        run_end = off[i + 1]
        k += 1
        while k < m and <Py_ssize_t>members[k] == i + 1:
            i += 1
            run_end = off[i + 1]
            k += 1
        memcpy(p, src + run_start, run_end - run_start)
        p += run_end - run_start
    p[0] = 0                                      # end of Batch
    p[1] = 0                                      # end of emitBatch_args
    p += 2
    if p - <unsigned char *>PyBytes_AS_STRING(out) != total:
        raise AssertionError("emitBatch size mismatch")
    return out


cdef bytes _batch_struct(bytes process, const char *src, const int64_t *off, Py_ssize_t n,
                         bint binary):
    cdef WBuf b
    cdef int last = 0
    wb_init(&b, 16)
    try:
        w_field(&b, binary, &last, 1, CT_STRUCT, BT_STRUCT)
        w_raw(&b, PyBytes_AS_STRING(process), PyBytes_GET_SIZE(process))
        w_list(&b, binary, &last, 2, CT_STRUCT, BT_STRUCT, n)
        head = _take(&b)
    finally:
        wb_free(&b)
    cdef Py_ssize_t hlen = len(head), slen = off[n] - off[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + slen + 1)
    cdef char *p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(head), hlen)
    memcpy(p + hlen, src + off[0], slen)
    p[hlen + slen] = 0                            # end of Batch
    return out


cdef const int64_t *_offsets_ptr(object offsets, Py_ssize_t spans_len, Py_ssize_t *n) except NULL:
    cdef const int64_t[::1] off = offsets
    n[0] = off.shape[0] - 1
    if n[0] < 0 or off[n[0]] > spans_len or off[0] < 0:
        raise ValueError("offsets do not match the encoded spans")
    return &off[0]


def agent_packets(bytes process, bytes spans, offsets, Py_ssize_t max_packet_size,
                  int32_t seqid=0):
    """Packs encoded compact spans into `Agent.emitBatch` datagrams of at most max_packet_size.

    Args:
        process: encode_process(..., PROTOCOL_COMPACT).
        spans, offsets: encode_spans(..., PROTOCOL_COMPACT).
        max_packet_size: the agent's limit (65000 for its compact port).
        seqid: sequence id of the first message; each next one gets the next id.

    Returns:
        (packets, counts, oversized): the datagrams, how many spans each carries, and the
        indices of spans too large to fit any datagram (not sent).
    """
    cdef Py_ssize_t n
    cdef const int64_t *off = _offsets_ptr(offsets, len(spans), &n)
    return _pack(process, PyBytes_AS_STRING(spans), off, n, max_packet_size, seqid)


def collector_body(bytes process, bytes spans, offsets, int protocol=PROTOCOL_BINARY):
    """A whole `jaeger.Batch` struct (what a collector's /api/traces takes, in binary)."""
    cdef Py_ssize_t n
    cdef const int64_t *off = _offsets_ptr(offsets, len(spans), &n)
    return _batch_struct(process, PyBytes_AS_STRING(spans), off, n,
                         protocol == PROTOCOL_BINARY)


# -- Zipkin v2 JSON -------------------------------------------------------------------------
# Here rather than in a module of its own because it shares the column views, the buffer
# and the per-batch string caches (DESIGN.md's `_wire.pyx` holds every wire format).  The
# mapping is documented in fasttrace/exporters/zipkin.py, which passes in what is the same
# for every span (localEndpoint, process tags) and builds remoteEndpoints.

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    enum:
        Py_DTSF_ADD_DOT_0

cdef enum:
    ZK_PLAIN = 0
    ZK_KIND = 1
    ZK_PEER_SERVICE = 2
    ZK_PEER_HOSTNAME = 3
    ZK_PEER_IPV4 = 4
    ZK_PEER_IPV6 = 5
    ZK_PEER_PORT = 6

cdef dict _ZK_KEY_CLASS = {"span.kind": ZK_KIND, "peer.service": ZK_PEER_SERVICE,
                           "peer.hostname": ZK_PEER_HOSTNAME, "peer.ipv4": ZK_PEER_IPV4,
                           "peer.ipv6": ZK_PEER_IPV6, "peer.port": ZK_PEER_PORT}
cdef dict _ZK_KINDS = {"server": b',"kind":"SERVER"', "client": b',"kind":"CLIENT"',
                       "producer": b',"kind":"PRODUCER"', "consumer": b',"kind":"CONSUMER"'}
cdef const char *_HEX = b"0123456789abcdef"

import json as _json
from functools import partial as _partial


class _Unprintable(Exception):
    pass


def _json_default(value):
    text = _py_text(value)
    if text is None:
        raise _Unprintable
    return text


# the json module reads str, int and float subclasses as their built-in value; anything
# else it cannot write becomes its text (_json_text: a placeholder, counted, if need be)
_json_compact = _json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


cdef bytes _json_text(WBuf *b, object value):
    """`value` as compact JSON (ASCII bytes) the way json.dumps writes it, with any object
    json has no type for as its text; the whole value as one JSON string when the json
    module refuses it (a cycle, a key of another type, nesting too deep)."""
    try:
        return _json_compact(value).encode("ascii")
    except _Unprintable:
        pass
    except (TypeError, ValueError, RecursionError):
        return _json_quote(b, value)
    # something in it is unprintable: encoded again with placeholders, counted
    counts = {}
    try:
        out = _json.JSONEncoder(separators=(",", ":"),
                                default=_partial(_counted_text, stats=counts)).encode(value)
    except (TypeError, ValueError, RecursionError):
        return _json_quote(b, value)
    b.unprintable += counts.get("unprintable_values", 0)
    return out.encode("ascii")


cdef inline int j_lit(WBuf *b, bytes s) except -1:
    return w_raw(b, PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s))


cdef int j_hex64(WBuf *b, uint64_t v) except -1:
    cdef int k
    if b.n + 16 > b.cap:
        wb_grow(b, 16)
    for k in range(16):
        b.p[b.n + k] = _HEX[(v >> (60 - 4 * k)) & 15]
    b.n += 16
    return 0


cdef int j_int(WBuf *b, int64_t v) except -1:
    cdef char tmp[24]
    cdef int n = 0
    cdef uint64_t u = <uint64_t>v
    if v < 0:
        u = <uint64_t>0 - u
    while True:
        tmp[n] = <char>(48 + u % 10)
        u //= 10
        n += 1
        if u == 0:
            break
    if v < 0:
        tmp[n] = 45   # '-'
        n += 1
    if b.n + n > b.cap:
        wb_grow(b, n)
    while n:
        n -= 1
        b.p[b.n] = tmp[n]
        b.n += 1
    return 0


cdef int j_str(WBuf *b, const char *s, Py_ssize_t n) except -1:
    """A JSON string from UTF-8 bytes: quotes, backslashes and control characters escaped."""
    cdef Py_ssize_t i, start = 0
    cdef unsigned char c
    w_byte(b, 34)
    for i in range(n):
        c = <unsigned char>s[i]
        if c >= 0x20 and c != 34 and c != 92:
            continue
        w_raw(b, s + start, i - start)
        start = i + 1
        if c == 34 or c == 92:
            w_byte(b, 92)
            w_byte(b, c)
        elif c == 10:
            w_raw(b, b"\\n", 2)
        elif c == 13:
            w_raw(b, b"\\r", 2)
        elif c == 9:
            w_raw(b, b"\\t", 2)
        else:
            w_raw(b, b"\\u00", 4)
            w_byte(b, _HEX[c >> 4])
            w_byte(b, _HEX[c & 15])
    w_raw(b, s + start, n - start)
    return w_byte(b, 34)


cdef int j_pystr(WBuf *b, object s) except -1:
    cdef Py_ssize_t n
    cdef const char *p
    if not isinstance(s, str):
        s = _text(b, s)
    # a str subclass too: its characters are read without calling its methods
    p = PyUnicode_AsUTF8AndSize(s, &n)
    if p == NULL:
        # lone surrogates are not UTF-8: \uXXXX escapes, as the json module writes them
        PyErr_Clear()
        return j_lit(b, _json.dumps(s).encode("ascii"))
    return j_str(b, p, n)


cdef int j_float_text(WBuf *b, double v) except -1:
    """Python's repr of a float (1.25, 2.0, 1e+20, nan, inf), unquoted."""
    cdef char *text = PyOS_double_to_string(v, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    cdef Py_ssize_t n = 0
    while text[n]:
        n += 1
    try:
        w_raw(b, text, n)
    finally:
        PyMem_Free(text)
    return 0


cdef int j_tag_value(WBuf *b, int kind, object obj, int64_t num) except -1:
    """A tag value as Zipkin's JSON string."""
    cdef double dbl
    if kind == TAG_STR:
        return j_pystr(b, obj)
    if kind == TAG_BOOL:
        return j_lit(b, b'"true"' if num else b'"false"')
    if kind == TAG_INT:
        w_byte(b, 34)
        j_int(b, num)
        return w_byte(b, 34)
    if kind == TAG_FLOAT:
        memcpy(&dbl, &num, 8)
        w_byte(b, 34)
        j_float_text(b, dbl)
        return w_byte(b, 34)
    return j_pystr(b, obj)                         # beyond 64 bits: its decimal text


cdef int j_value(WBuf *b, object v) except -1:
    """Any log field value as JSON (as json.dumps(default=str) would write it)."""
    cdef int overflow = 0
    cdef int64_t num
    cdef double dbl
    t = type(v)
    if t is str:
        return j_pystr(b, v)
    if v is True:
        return j_lit(b, b"true")
    if v is False:
        return j_lit(b, b"false")
    if v is None:
        return j_lit(b, b"null")
    if t is int:
        num = PyLong_AsLongLongAndOverflow(v, &overflow)
        if not overflow:
            return j_int(b, num)
    elif t is float:
        dbl = v
        if dbl == dbl and dbl - dbl == 0:         # finite
            return j_float_text(b, dbl)
    # everything else (big ints, NaN, containers, objects): the json module's own text
    return j_lit(b, _json_text(b, v))


cdef int j_annotation_value(WBuf *b, object fields) except -1:
    cdef WBuf tmp
    cdef bint first = True
    if type(fields) is not dict:
        return j_pystr(b, fields)
    if len(<dict>fields) == 1:
        for k, v in (<dict>fields).items():
            if _named(k, "event"):
                return j_pystr(b, v)
    wb_init(&tmp, 128)
    try:
        w_byte(&tmp, 123)
        for k, v in (<dict>fields).items():
            if not first:
                w_byte(&tmp, 44)
            first = False
            j_pystr(&tmp, k)
            w_byte(&tmp, 58)
            j_value(&tmp, v)
        w_byte(&tmp, 125)
        b.unprintable += tmp.unprintable
        return j_str(b, <const char *>tmp.p, tmp.n)
    finally:
        wb_free(&tmp)


def encode_zipkin(batch, bytes local_endpoint, dict resource_tags, remote_endpoint,
                  dict stats=None):
    """A SpanBatch as a Zipkin v2 JSON array (UTF-8 bytes).

    Args:
        batch: the SpanBatch.
        local_endpoint: the localEndpoint object, as JSON bytes (the same for every span).
        resource_tags: {key: str value} added to every span's tags (span tags win).
        remote_endpoint: called as remote_endpoint(service, hostname, ipv4, ipv6, port)
            for spans with peer.* tags (None for the absent ones); returns the
            remoteEndpoint as JSON bytes, or None.
        stats: None, or a dict whose ``"unprintable_values"`` is increased by the number
            of values sent as ``<unprintable TypeName>`` (their ``str()`` raised).
    """
    cdef _Columns c = _Columns(batch)
    cdef WBuf b
    cdef Py_ssize_t i, t, t1, l, nkeys = len(c.keys), nres = len(resource_tags), r
    cdef int64_t dur, st
    cdef uint32_t kid, nid
    cdef int kind, cls, res
    cdef uint64_t mask
    cdef bint have_tags, have_peer
    cdef int32_t *key_info = NULL
    cdef list res_members = []
    cdef dict res_index = {}
    cdef list name_json = [None] * len(c.names)
    cdef list key_json = [None] * nkeys
    cdef object kind_json, overridden, key, obj
    cdef object p_service, p_host, p_ipv4, p_ipv6, p_port
    cdef set shadowed
    # resource tags: pre-encoded `"key":"value"` members
    for r, (k, v) in enumerate(resource_tags.items()):
        wb_init(&b, 64)
        try:
            k = _plain(&b, k)
            j_pystr(&b, k)
            w_byte(&b, 58)
            j_pystr(&b, v)
            res_members.append(_take(&b))
        finally:
            wb_free(&b)
        res_index[k] = r
    key_info = <int32_t *>PyMem_Malloc((nkeys + 1) * sizeof(int32_t))
    if key_info == NULL:
        raise MemoryError()
    for t in range(nkeys):
        key_info[t] = -1
    wb_init(&b, 64 + 400 * c.n)
    try:
        w_byte(&b, 91)
        for i in range(c.n):
            if i:
                w_byte(&b, 44)
            j_lit(&b, b'{"traceId":"')
            if c.hi[i]:
                j_hex64(&b, c.hi[i])
            j_hex64(&b, c.lo[i])
            j_lit(&b, b'","id":"')
            j_hex64(&b, c.sid[i])
            if c.pid[i]:
                j_lit(&b, b'","parentId":"')
                j_hex64(&b, c.pid[i])
            j_lit(&b, b'","name":')
            nid = c.name_id[i]
            if nid == _UNINTERNED:
                extra = c.extras[i]
                j_pystr(&b, extra.get("name", "") if extra is not None else "")
            else:
                cached = name_json[nid]
                if cached is None:
                    cached = _json_quote(&b, c.names[nid])
                    name_json[nid] = cached
                j_lit(&b, cached)
            st = c.start[i]
            j_lit(&b, b',"timestamp":')
            j_int(&b, st // 1000)
            dur = (c.end[i] - st) // 1000
            j_lit(&b, b',"duration":')
            j_int(&b, dur if dur > 0 else 1)
            j_lit(&b, b',"localEndpoint":')
            j_lit(&b, local_endpoint)
            # tags (written lazily: no "tags" member when there are none)
            have_tags = False
            have_peer = False
            kind_json = None
            mask = 0
            overridden = None
            p_service = p_host = p_ipv4 = p_ipv6 = p_port = None
            shadowed = None
            t1 = c.tag_off[i + 1]
            for t in range(c.tag_off[i], t1):
                kid = c.tag_key[t]
                kind = c.tag_type[t]
                if kid == _UNINTERNED:
                    # read as SpanBatch.tags() reads it: tag_obj holds (key, object or None)
                    if shadowed is None:
                        shadowed = _shadowed_tags(c.tag_key, c.tag_obj, t, t1)
                    if t in shadowed:
                        continue
                    key, obj = <tuple>c.tag_obj[t]
                    key = _plain(&b, key)
                    cls = _ZK_KEY_CLASS.get(key, ZK_PLAIN)
                    res = res_index.get(key, -1)
                    key_bytes = _json_quote(&b, key)
                else:
                    obj = c.tag_obj[t]
                    if key_info[kid] < 0:
                        key = _plain(&b, c.keys[kid])
                        key_info[kid] = ((res_index.get(key, -1) + 1) << 4) | \
                            <int>_ZK_KEY_CLASS.get(key, ZK_PLAIN)
                        key_json[kid] = _json_quote(&b, key)
                    cls = key_info[kid] & 15
                    res = (key_info[kid] >> 4) - 1
                    key_bytes = key_json[kid]
                if cls != ZK_PLAIN:
                    value = _tag_object(&b, kind, obj, c.tag_num[t])
                    if cls == ZK_KIND:
                        if type(value) is str and value in _ZK_KINDS:
                            kind_json = _ZK_KINDS[value]
                            continue
                    else:
                        have_peer = True
                        if cls == ZK_PEER_SERVICE:
                            p_service = value
                        elif cls == ZK_PEER_HOSTNAME:
                            p_host = value
                        elif cls == ZK_PEER_IPV4:
                            p_ipv4 = value
                        elif cls == ZK_PEER_IPV6:
                            p_ipv6 = value
                        else:
                            p_port = value
                if res >= 0:
                    if res < 64:
                        mask |= (<uint64_t>1) << res
                    else:
                        if overridden is None:
                            overridden = set()
                        overridden.add(res)
                j_lit(&b, b',"tags":{' if not have_tags else b',')
                have_tags = True
                j_lit(&b, key_bytes)
                w_byte(&b, 58)
                j_tag_value(&b, kind, obj, c.tag_num[t])
            for r in range(nres):
                if r < 64:
                    if mask & ((<uint64_t>1) << r):
                        continue
                elif overridden is not None and r in overridden:
                    continue
                j_lit(&b, b',"tags":{' if not have_tags else b',')
                have_tags = True
                j_lit(&b, res_members[r])
            if have_tags:
                w_byte(&b, 125)
            if kind_json is not None:
                j_lit(&b, kind_json)
            if have_peer:
                remote = remote_endpoint(p_service, p_host, p_ipv4, p_ipv6, p_port)
                if remote is not None:
                    j_lit(&b, b',"remoteEndpoint":')
                    j_lit(&b, remote)
            if c.log_off[i + 1] > c.log_off[i]:
                j_lit(&b, b',"annotations":[')
                for l in range(c.log_off[i], c.log_off[i + 1]):
                    if l > c.log_off[i]:
                        w_byte(&b, 44)
                    j_lit(&b, b'{"timestamp":')
                    j_int(&b, c.log_ts[l] // 1000)
                    j_lit(&b, b',"value":')
                    j_annotation_value(&b, c.log_fields[l])
                    w_byte(&b, 125)
                w_byte(&b, 93)
            if c.flags[i] & 2:
                j_lit(&b, b',"debug":true')
            w_byte(&b, 125)
        w_byte(&b, 93)
        if stats is not None and b.unprintable:
            stats["unprintable_values"] = stats.get("unprintable_values", 0) + b.unprintable
        return _take(&b)
    finally:
        wb_free(&b)
        PyMem_Free(key_info)


cdef object _tag_object(WBuf *b, int kind, object obj, int64_t num):
    """A tag's value as a Python object (for the few tags read as values): a string as
    an exact str, for the lookups and the Python code that read it."""
    cdef double dbl
    if kind == TAG_STR:
        return _plain(b, obj)
    if kind == TAG_BIGINT:
        return obj
    if kind == TAG_BOOL:
        return num != 0
    if kind == TAG_INT:
        return num
    memcpy(&dbl, &num, 8)
    return dbl


cdef bytes _json_quote(WBuf *counts, object s):
    """s (its text, if not a str) as a quoted, escaped JSON string (bytes); a placeholder
    is counted in `counts`."""
    cdef WBuf b
    wb_init(&b, 32)
    try:
        j_pystr(&b, s)
        counts.unprintable += b.unprintable
        return _take(&b)
    finally:
        wb_free(&b)


def json_string(s):
    """`s` as a JSON string literal, UTF-8 bytes (for building constant JSON pieces)."""
    cdef WBuf counts
    counts.unprintable = 0
    return _json_quote(&counts, s)

# SPDX-License-Identifier: Apache-2.0
"""Jaeger's wire encoders over SpanBatch columns: Thrift compact (agent, UDP) and binary
(collector, HTTP).  (Zipkin v2 JSON is fasttrace/_zipkin.pyx.)

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

Values are written as fasttrace/exporters/jaeger.py describes: typed where the
format has the type, else as their text (`fasttrace._text`), never failing the batch.

Every span struct is self-contained (compact field deltas restart in each struct), so the
spans of a batch are encoded once, back to back, with their offsets; the agent's datagrams
and the collector's body are assembled from those byte ranges without re-encoding.
Unsigned 64-bit ids travel as Thrift's signed i64 (same bits), as jaeger-client sends them.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from fasttrace._columns cimport FMT_I32, FMT_I64, FMT_U8, FMT_U32, Column, new_column
from fasttrace._layout cimport (BatchView, TAG_BIGINT, TAG_BOOL, TAG_FLOAT, TAG_INT, TAG_STR,
                                UNINTERNED as _UNINTERNED)
from fasttrace._pyapi cimport PyFloat_AS_DOUBLE, PyUnicode_AsEncodedString
from fasttrace._wbuf cimport (WBuf, varint_len, w_be, w_byte, w_le64, w_raw, w_varint,
                              wb_free, wb_full, wb_grow, wb_init, wb_take, wb_text, zigzag32, zigzag64,
                              str_utf8)

from fasttrace._layout import UNINTERNED
from fasttrace._text import placeholder as _placeholder, text as _py_text

__all__ = ["PROTOCOL_BINARY", "PROTOCOL_COMPACT", "SpanEncoder", "UNINTERNED", "agent_packets",
           "collector_body", "emit_batch_overhead", "encode_process", "encode_spans",
           "span_parts_sizes"]

PROTOCOL_COMPACT = 0
PROTOCOL_BINARY = 1

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
    # SpanContext flags Jaeger knows (sampled, debug); higher bits are ours
    JAEGER_FLAGS = 3
    # oneway message type, for Agent.emitBatch
    MSG_ONEWAY = 4

cdef bytes _EMIT_BATCH = b"emitBatch"
cdef str _FOLLOWS_FROM = "follows_from"
cdef object _MASK64 = 0xFFFFFFFFFFFFFFFF


# -- protocol-generic field writers ---------------------------------------------------------
# `last` is the enclosing struct's previous field id (the compact protocol's delta base).

cdef inline int w_field(WBuf *b, bint binary, int *last, int fid, int ctype,
                        int btype) except -1:
    cdef int delta
    if wb_full(b, 3):
        wb_grow(b, 3)
    if binary:
        b.p[b.n] = <unsigned char>btype
        b.p[b.n + 1] = <unsigned char>(fid >> 8)
        b.p[b.n + 2] = <unsigned char>fid
        b.n += 3
    else:
        delta = fid - last[0]
        if 0 < delta <= 15:
            b.p[b.n] = <unsigned char>((delta << 4) | ctype)
            b.n += 1
        else:
            b.p[b.n] = <unsigned char>ctype
            b.n += 1
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
        s = wb_text(b, s)
    p = str_utf8(s, &n)
    if p == NULL:
        # lone surrogates cannot be UTF-8; Jaeger needs valid UTF-8 strings
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

cdef class _Columns(BatchView):
    """The batch's columns (`BatchView`), plus per-batch UTF-8 caches of the names and
    keys it uses (each interned string is encoded once per batch)."""
    cdef list name_cache
    cdef list key_cache

    def __init__(self, batch):
        BatchView.__init__(self, batch)
        self.name_cache = [None] * len(self.names)
        self.key_cache = [None] * len(self.keys)

    cdef object name_bytes(self, Py_ssize_t i):
        cdef uint32_t nid = self.name_id[i]
        if nid == _UNINTERNED:
            return self.name(i)
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
                    shadowed = self.shadowed(t, t1)
                    if shadowed:
                        b.n = list_at
                        last[0] = last_before
                        return self.write_tags(b, binary, last, t0, t1, extra_tag, shadowed)
                elif t in shadowed:
                    continue
                key, value = self.uninterned_tag(t)
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


cdef bytes _utf8(object s):
    # an interned name or key: the arena made it a str (a subclass is read as its
    # characters, without calling its methods)
    if not isinstance(s, str):
        t = _py_text(s)
        s = _placeholder(s) if t is None else t
    return PyUnicode_AsEncodedString(s, "utf-8", "replace")


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
        """(spans, offsets): the encoded structs as bytes, and an int64 Column of count + 1
        offsets; the k-th span is spans[offsets[k]:offsets[k + 1]]."""
        cdef Column offsets = new_column(FMT_I64, self.count + 1)
        memcpy(offsets.data, self.off, (self.count + 1) * sizeof(int64_t))
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
        (data, offsets): the structs as bytes, and an int64 Column of n + 1 offsets (n = the
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
    cdef list keep_t = [t for t in range(t0, t1) if t - t0 not in drop_tags]
    cdef list keep_l = [l for l in range(l0, l1) if l - l0 not in drop_logs]
    cdef Py_ssize_t nt = len(keep_t), nl = len(keep_l), k, src
    cdef Column tag_off = new_column(FMT_I32, 2), log_off = new_column(FMT_I32, 2)
    cdef Column tag_key = new_column(FMT_U32, nt), tag_type = new_column(FMT_U8, nt)
    cdef Column tag_num = new_column(FMT_I64, nt), log_ts = new_column(FMT_I64, nl)
    (<int32_t *>tag_off.data)[0] = 0
    (<int32_t *>tag_off.data)[1] = <int32_t>nt
    (<int32_t *>log_off.data)[0] = 0
    (<int32_t *>log_off.data)[1] = <int32_t>nl
    for k in range(nt):
        src = keep_t[k]
        (<uint32_t *>tag_key.data)[k] = c.tag_key[src]
        (<uint8_t *>tag_type.data)[k] = c.tag_type[src]
        (<int64_t *>tag_num.data)[k] = c.tag_num[src]
    for k in range(nl):
        (<int64_t *>log_ts.data)[k] = c.log_ts[<Py_ssize_t>keep_l[k]]
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
    one.tag_off = tag_off
    one.tag_key = tag_key
    one.tag_type = tag_type
    one.tag_num = tag_num
    one.tag_obj = [c.tag_obj[t] for t in keep_t]
    one.log_off = log_off
    one.log_ts = log_ts
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
                key, value = c.uninterned_tag(t)
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
        return wb_take(&b)
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
        head = wb_take(&b)
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

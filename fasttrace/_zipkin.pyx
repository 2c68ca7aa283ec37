# SPDX-License-Identifier: Apache-2.0
"""Zipkin v2 JSON over SpanBatch columns.

The mapping is documented in fasttrace/exporters/zipkin.py, which passes in what is the same
for every span (localEndpoint, process tags); each span's remoteEndpoint is built here from
its peer.* tags.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from fasttrace._layout cimport (BatchView, TAG_BIGINT, TAG_BOOL, TAG_FLOAT, TAG_INT, TAG_STR,
                                UNINTERNED)
from fasttrace._pyapi cimport Py_DTSF_ADD_DOT_0, PyOS_double_to_string, str_named
from fasttrace._wbuf cimport (WBuf, str_utf8, w_byte, w_raw, wb_free, wb_grow, wb_init,
                              wb_plain, wb_take, wb_text)

import ipaddress as _ipaddress

from fasttrace._text import counted_text as _counted_text, placeholder as _placeholder, \
    text as _py_text

__all__ = ["encode_zipkin", "json_string"]

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
# a str as JSON the way the exporter writes its endpoints (non-ASCII kept as UTF-8)
_json_plain = _json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


cdef object _zipkin_text(object value):
    # the text of a value (fasttrace._text), its placeholder when str() raises
    s = _py_text(value)
    return _placeholder(value) if s is None else s


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
        s = wb_text(b, s)
    # a str subclass too: its characters are read without calling its methods
    p = str_utf8(s, &n)
    if p == NULL:
        # lone surrogates are not UTF-8: \uXXXX escapes, as the json module writes them
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
            if str_named(k, "event"):
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


def encode_zipkin(batch, bytes local_endpoint, dict resource_tags, dict stats=None):
    """A SpanBatch as a Zipkin v2 JSON array (UTF-8 bytes).

    Args:
        batch: the SpanBatch.
        local_endpoint: the localEndpoint object, as JSON bytes (the same for every span).
        resource_tags: {key: str value} added to every span's tags (span tags win).
        stats: None, or a dict whose ``"unprintable_values"`` is increased by the number
            of values sent as ``<unprintable TypeName>`` (their ``str()`` raised).
    """
    cdef BatchView c = BatchView(batch)
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
    cdef dict ip_cache = {}
    # resource tags: pre-encoded `"key":"value"` members
    for r, (k, v) in enumerate(resource_tags.items()):
        wb_init(&b, 64)
        try:
            k = wb_plain(&b, k)
            j_pystr(&b, k)
            w_byte(&b, 58)
            j_pystr(&b, v)
            res_members.append(wb_take(&b))
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
            if nid == UNINTERNED:
                j_pystr(&b, c.name(i))
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
            t1 = c.tag_off[i + 1]
            for t in range(c.tag_off[i], t1):
                kid = c.tag_key[t]
                kind = c.tag_type[t]
                if kid == UNINTERNED:
                    entry = c.uninterned(t, t1)
                    if entry is None:
                        continue
                    key, obj = <tuple>entry
                    key = wb_plain(&b, key)
                    cls = _ZK_KEY_CLASS.get(key, ZK_PLAIN)
                    res = res_index.get(key, -1)
                    key_bytes = _json_quote(&b, key)
                else:
                    obj = c.tag_obj[t]
                    if key_info[kid] < 0:
                        key = wb_plain(&b, c.keys[kid])
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
                j_remote_endpoint(&b, p_service, p_host, p_ipv4, p_ipv6, p_port, ip_cache)
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
        return wb_take(&b)
    finally:
        wb_free(&b)
        PyMem_Free(key_info)


# -- remoteEndpoint, from the peer.* tags -------------------------------------------------

cdef object _ip_member(object value):
    """("ipv4" or "ipv6", the address as text) for a peer.ipv4/ipv6 value (a str, or an
    int read as the address number), or None when it is no address."""
    try:
        ip = _ipaddress.ip_address(value.strip() if isinstance(value, str) else int(value))
    except (ValueError, TypeError):
        return None
    return (b'"ipv4":' if ip.version == 4 else b'"ipv6":', str(ip))


cdef object _ip_cached(object value, dict cache):
    # a batch's spans mostly name the same few addresses: each is parsed once a batch
    if type(value) is not str:
        return _ip_member(value)
    found = cache.get(value, cache)
    if found is cache:
        found = cache[value] = _ip_member(value)
    return found


cdef object _endpoint_text(object value):
    """A peer tag's value as Zipkin's string (bools "true"/"false", floats as their repr)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return value
    return _zipkin_text(value)


cdef int j_json_str(WBuf *b, object s) except -1:
    """s as json.dumps(s, ensure_ascii=False) writes it, UTF-8 ("replace" for lone
    surrogates)."""
    cdef Py_ssize_t n, k
    cdef const char *p = str_utf8(s, &n)
    if p != NULL:
        for k in range(n):
            if p[k] == 8 or p[k] == 12:     # \b and \f: json's own escapes
                p = NULL
                break
    if p == NULL:
        return j_lit(b, _json_plain(s).encode("utf-8", "replace"))
    return j_str(b, p, n)


cdef int j_remote_endpoint(WBuf *b, object service, object hostname, object ipv4,
                           object ipv6, object port, dict ip_cache) except -1:
    """`,"remoteEndpoint":{...}` from a span's peer tags (None: absent), when they name
    anything: serviceName from peer.service (else peer.hostname), ipv4/ipv6 from either
    address tag as what it parses as, port when it is an int in 1..65535."""
    cdef object members = [None, None, None, None]   # serviceName, first ip, second ip, port
    cdef object first = None, second = None
    cdef bint any = False
    name = service or hostname
    if name:
        members[0] = _endpoint_text(name)
        any = True
    if ipv4 is not None:
        first = _ip_cached(ipv4, ip_cache)
    if ipv6 is not None:
        second = _ip_cached(ipv6, ip_cache)
        if second is not None and first is not None and second[0] == first[0]:
            first = (first[0], second[1])     # the same key: the later value, first place
            second = None
    if first is None:
        first, second = second, None
    if first is not None:
        any = True
    if port is not None:
        try:
            port = int(port)
            if 0 < port < 65536:
                members[3] = port
                any = True
        except (TypeError, ValueError):
            pass
    if not any:
        return 0
    j_lit(b, b',"remoteEndpoint":{')
    cdef bint comma = False
    if members[0] is not None:
        j_lit(b, b'"serviceName":')
        j_json_str(b, members[0])
        comma = True
    for ip in (first, second):
        if ip is not None:
            if comma:
                w_byte(b, 44)
            j_lit(b, ip[0])
            j_json_str(b, ip[1])
            comma = True
    if members[3] is not None:
        if comma:
            w_byte(b, 44)
        j_lit(b, b'"port":')
        j_int(b, <int64_t>members[3])
    return w_byte(b, 125)


cdef object _tag_object(WBuf *b, int kind, object obj, int64_t num):
    """A tag's value as a Python object (for the few tags read as values): a string as
    an exact str, for the lookups and the Python code that read it."""
    cdef double dbl
    if kind == TAG_STR:
        return wb_plain(b, obj)
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
        return wb_take(&b)
    finally:
        wb_free(&b)


def json_string(s):
    """`s` as a JSON string literal, UTF-8 bytes (for building constant JSON pieces)."""
    cdef WBuf counts
    counts.unprintable = 0
    return _json_quote(&counts, s)

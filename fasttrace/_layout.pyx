# SPDX-License-Identifier: Apache-2.0
"""The SpanBatch contract's codes (declared in _layout.pxd) for Python code, and the typed
view over a batch's columns that every encoder reads (UNINTERNED entries decoded here)."""

__all__ = ["FLAG_CONTEXT_PARENT", "FLAG_DEBUG", "FLAG_FIRST_REF_FOLLOWS", "FLAG_SAMPLED", "TAG_BIGINT", "TAG_BOOL",
           "TAG_FLOAT", "TAG_INT", "TAG_STR", "UNINTERNED", "shadowed_tags"]

# the values of _layout.pxd, as Python ints (the C names cannot be rebound here)
globals().update(
    TAG_STR=<int>TAG_STR, TAG_BOOL=<int>TAG_BOOL, TAG_INT=<int>TAG_INT,
    TAG_FLOAT=<int>TAG_FLOAT, TAG_BIGINT=<int>TAG_BIGINT,
    FLAG_SAMPLED=<int>FLAG_SAMPLED, FLAG_DEBUG=<int>FLAG_DEBUG,
    FLAG_FIRST_REF_FOLLOWS=<int>FLAG_FIRST_REF_FOLLOWS, FLAG_CONTEXT_PARENT=<int>FLAG_CONTEXT_PARENT,
    UNINTERNED=<uint32_t>UNINTERNED)


def shadowed_tags(tag_key, tag_obj, start, stop):
    """The indices in [start, stop) of uninterned tag entries that a later entry with the
    same key replaces: `SpanBatch.tags` keeps the last value, and so do the encoders.

    The arena replaces the value of a key set twice, but two uninterned keys it could not
    match (a key stored truncated) arrive as two entries.  Keys are compared as plain
    strings: a str subclass's own __hash__ and __eq__ are never called.
    """
    seen = set()
    out = set()
    for t in range(stop - 1, start - 1, -1):
        if tag_key[t] != UNINTERNED:
            continue
        key = tag_obj[t][0]
        if type(key) is not str:
            if not issubclass(type(key), str):
                continue
            key = str.__str__(key)
        if key in seen:
            out.add(t)
        else:
            seen.add(key)
    return out


cdef list _as_list(object seq):
    return <list>seq if type(seq) is list else list(seq)


cdef object _MISSING = object()


cdef inline object _column(object batch, object attrs, str name):
    """The batch's column `name` as stored (SpanBatch.__dict__: a fasttrace._columns.Column
    or an array), read without turning it into a numpy array (see fasttrace/batch.py)."""
    if attrs is not None:
        value = (<dict>attrs).get(name, _MISSING)
        if value is not _MISSING:
            return value
    return getattr(batch, name)


cpdef object raw_columns(object batch):
    """The dict a SpanBatch keeps its columns in, as stored (None for another object)."""
    attrs = getattr(batch, "__dict__", None)
    return attrs if type(attrs) is dict else None


cpdef object raw_column(object batch, str name):
    """The batch's column `name` as stored, without making it a numpy array."""
    return _column(batch, raw_columns(batch), name)


cdef class BatchView:
    def __init__(self, batch):
        d = raw_columns(batch)
        self.hi = _column(batch, d, "trace_id_hi")
        self.lo = _column(batch, d, "trace_id_lo")
        self.sid = _column(batch, d, "span_id")
        self.n = self.sid.shape[0]
        self.pid = _column(batch, d, "parent_id")
        self.start = _column(batch, d, "start_ns")
        self.end = _column(batch, d, "end_ns")
        self.flags = _column(batch, d, "flags")
        self.name_id = _column(batch, d, "name_id")
        self.tag_off = _column(batch, d, "tag_offsets")
        self.tag_key = _column(batch, d, "tag_key")
        self.tag_type = _column(batch, d, "tag_type")
        self.tag_num = _column(batch, d, "tag_num")
        self.log_off = _column(batch, d, "log_offsets")
        self.log_ts = _column(batch, d, "log_ts")
        self.tag_obj = _as_list(batch.tag_obj)
        self.log_fields = _as_list(batch.log_fields)
        self.extras = _as_list(batch.extras)
        # the tracer's tables are append-only: ids in this batch are below today's lengths
        self.names = _as_list(batch.operation_names)
        self.keys = _as_list(batch.tag_keys)
        self._shadow_end = -1
        if self.sid.shape[0] != self.n or self.tag_off.shape[0] != self.n + 1 \
                or self.log_off.shape[0] != self.n + 1:
            raise ValueError("inconsistent SpanBatch columns")

    cdef object name(self, Py_ssize_t i):
        """Span i's operation name (an uninterned one from its extras)."""
        cdef uint32_t nid = self.name_id[i]
        if nid == UNINTERNED:
            extra = self.extras[i]
            return (<dict>extra).get("name", "") if extra is not None else ""
        return self.names[nid]

    cdef set shadowed(self, Py_ssize_t t0, Py_ssize_t t1):
        """`shadowed_tags` of tags [t0, t1)."""
        return shadowed_tags(self.tag_key, self.tag_obj, t0, t1)

    cdef tuple uninterned_tag(self, Py_ssize_t t):
        """(key, value) of an entry whose key is UNINTERNED: its tag_obj holds both (the
        value None unless it is TAG_STR or TAG_BIGINT; the other columns as usual)."""
        return <tuple>self.tag_obj[t]

    cdef object uninterned(self, Py_ssize_t t, Py_ssize_t t1):
        """`uninterned_tag(t)` for entry t of a span whose tags end at t1; None when a
        later entry of the span has the same key (SpanBatch.tags() keeps the last)."""
        if self._shadow_end != t1:
            self._shadow = self.shadowed(t, t1)
            self._shadow_end = t1
        if t in self._shadow:
            return None
        return <tuple>self.tag_obj[t]

# SPDX-License-Identifier: Apache-2.0
"""SpanBatch (columnar, what reporters receive) and FinishedSpan (one span, readable).

A SpanBatch is the arena's finished slots copied out as columns:

    trace_id_hi, trace_id_lo, span_id, parent_id   uint64[n]   (parent 0 = root)
    start_ns, end_ns                               int64[n]
    flags                                          uint8[n]    (1 sampled, 2 debug,
                                                                64 first reference is follows_from)
    name_id                                        uint32[n]   -> operation_names[name_id]
    tag_offsets                                    int32[n+1]  span i's tags are
                                                               [tag_offsets[i], tag_offsets[i+1])
    tag_key uint32, tag_type uint8, tag_num int64, tag_obj list  (one entry per tag)
    log_offsets int32[n+1], log_ts int64, log_fields list (dicts)
    extras                                         list[n]     None, or {"refs": [...], "name": str}

tag_type: 0 str (in tag_obj), 1 bool, 2 int (in tag_num), 3 float (tag_num's bits,
see `tag_float`), 4 int beyond 64 bits (in tag_obj).  A key id of UNINTERNED (2**32-1)
means the interning table was full: tag_obj then holds (key, value).
Iterating yields FinishedSpan records, built on demand.

The numeric columns read as numpy arrays.  A drained batch holds them in C memory (one
block per drain, `fasttrace._columns`): numpy is imported, and each column wrapped as an
array over that memory (no copy), the first time one of these attributes is read, so
writes through the arrays are what the encoders then read.  Length, iteration,
`slice`, the encoders and the tail stage read the columns without numpy; `select`,
`concat` and `tag_float` use it.  A column attribute may be set to any 1-d C-contiguous
array of the column's type (tests build batches from numpy arrays).
"""
import operator

from opentracing import ReferenceType

from fasttrace._columns import ArrayAttr, as_float, numpy as _numpy

# the column codes, defined once in _layout.pxd (all of them importable from here)
from fasttrace._layout import (  # noqa: F401
    FLAG_DEBUG, FLAG_FIRST_REF_FOLLOWS, FLAG_SAMPLED, TAG_BIGINT, TAG_BOOL, TAG_FLOAT, TAG_INT,
    TAG_STR, UNINTERNED, shadowed_tags)

__all__ = ["FinishedSpan", "SpanBatch", "shadowed_tags"]


class FinishedSpan:
    """One finished span, as reporters and tests read it."""

    __slots__ = ("trace_id", "span_id", "parent_id", "operation_name", "service_name",
                 "start_ns", "end_ns", "tags", "logs", "references", "sampled", "debug")

    def __init__(self, trace_id, span_id, parent_id, operation_name, service_name,
                 start_ns, end_ns, tags, logs, references, sampled=True, debug=False):
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.operation_name = operation_name
        self.service_name = service_name
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.tags = tags
        self.logs = logs
        self.references = references
        self.sampled = sampled
        self.debug = debug

    @property
    def duration_ns(self):
        return self.end_ns - self.start_ns

    @property
    def trace_id_hex(self):
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self):
        return f"{self.span_id:016x}"

    def __repr__(self):
        parent = "root" if self.parent_id is None else f"parent={self.parent_id:016x}"
        return (f"<FinishedSpan {self.operation_name!r} trace={self.trace_id:032x} "
                f"span={self.span_id:016x} {parent} {self.duration_ns / 1e3:.1f}us "
                f"tags={self.tags!r}>")

    def __eq__(self, other):
        if not isinstance(other, FinishedSpan):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__slots__)

    __hash__ = None


class SpanBatch:
    """Finished spans drained from the arena, as numpy columns plus tag and log tables."""

    # the numeric columns: numpy arrays when read (see the module doc); the instance
    # dict holds each as given, which is what the methods here and the encoders read
    trace_id_hi = ArrayAttr("trace_id_hi")
    trace_id_lo = ArrayAttr("trace_id_lo")
    span_id = ArrayAttr("span_id")
    parent_id = ArrayAttr("parent_id")
    start_ns = ArrayAttr("start_ns")
    end_ns = ArrayAttr("end_ns")
    flags = ArrayAttr("flags")
    name_id = ArrayAttr("name_id")
    tag_offsets = ArrayAttr("tag_offsets")
    tag_key = ArrayAttr("tag_key")
    tag_type = ArrayAttr("tag_type")
    tag_num = ArrayAttr("tag_num")
    log_offsets = ArrayAttr("log_offsets")
    log_ts = ArrayAttr("log_ts")

    # the columns, under their attribute names (what Arena.drain returns)
    _COLUMNS = ("trace_id_hi", "trace_id_lo", "span_id", "parent_id", "start_ns", "end_ns",
                "flags", "name_id", "operation_names", "tag_offsets", "tag_key", "tag_type",
                "tag_num", "tag_obj", "tag_keys", "log_offsets", "log_ts", "log_fields",
                "extras")

    def __init__(self, columns, service_name="", resource=None):
        attrs = self.__dict__
        for name in self._COLUMNS:
            attrs[name] = columns[name]
        # the position of this batch's first span in its arena's finish order, and
        # which arena (so a reporter can restore each tracer's order)
        self.first_seq = int(columns.get("first_seq", 0))
        self.source = columns.get("source")
        self.service_name = service_name
        self.resource = dict(resource or {})

    @property
    def tag_float(self):
        """tag_num reinterpreted as float64 (meaningful where tag_type == 3)."""
        return _numpy().asarray(self.tag_num).view("float64")

    def __len__(self):
        return len(self.__dict__["span_id"])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def operation_name(self, i):
        name_id = int(self.__dict__["name_id"][i])
        if name_id == UNINTERNED:
            return self.extras[i]["name"]
        return self.operation_names[name_id]

    def tags(self, i):
        """Span i's tags as a dict."""
        out = {}
        keys = self.tag_keys
        d = self.__dict__
        offsets, types, nums, key_ids = d["tag_offsets"], d["tag_type"], d["tag_num"], d["tag_key"]
        objs = self.tag_obj
        for t in range(int(offsets[i]), int(offsets[i + 1])):
            kind = types[t]
            key_id = int(key_ids[t])
            if key_id == UNINTERNED:
                # the key table was full: tag_obj holds (key, object value or None)
                key, obj = objs[t]
            else:
                key, obj = keys[key_id], objs[t]
            if kind == TAG_STR or kind == TAG_BIGINT:
                value = obj
            elif kind == TAG_BOOL:
                value = bool(nums[t])
            elif kind == TAG_INT:
                value = int(nums[t])
            else:
                value = as_float(int(nums[t]))
            out[key] = value
        return out

    def logs(self, i):
        """Span i's logs as [(timestamp_ns, fields)] in the order they were logged."""
        d = self.__dict__
        offsets, ts, fields = d["log_offsets"], d["log_ts"], self.log_fields
        return [(int(ts[j]), fields[j]) for j in range(int(offsets[i]), int(offsets[i + 1]))]

    def references(self, i):
        extra = self.extras[i]
        if extra is not None and "refs" in extra:
            return list(extra["refs"])
        d = self.__dict__
        parent = int(d["parent_id"][i])
        if not parent:
            return []
        kind = (ReferenceType.FOLLOWS_FROM if d["flags"][i] & FLAG_FIRST_REF_FOLLOWS
                else ReferenceType.CHILD_OF)
        return [(kind, self.trace_id(i), parent)]

    def trace_id(self, i):
        d = self.__dict__
        return (int(d["trace_id_hi"][i]) << 64) | int(d["trace_id_lo"][i])

    def __getitem__(self, i):
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        d = self.__dict__
        parent = int(d["parent_id"][i])
        flags = int(d["flags"][i])
        return FinishedSpan(
            trace_id=self.trace_id(i),
            span_id=int(d["span_id"][i]),
            parent_id=parent or None,
            operation_name=self.operation_name(i),
            service_name=self.service_name,
            start_ns=int(d["start_ns"][i]),
            end_ns=int(d["end_ns"][i]),
            tags=self.tags(i),
            logs=self.logs(i),
            references=self.references(i),
            sampled=bool(flags & FLAG_SAMPLED),
            debug=bool(flags & FLAG_DEBUG),
        )

    def slice(self, start, stop):
        """Spans [start, stop) as a SpanBatch sharing this one's arrays (no copy).

        The span columns and offsets are views; the tag and log tables are shared whole,
        which the offsets index absolutely, so every accessor works unchanged.
        """
        n = len(self)
        start, stop, _ = slice(start, stop).indices(n)
        stop = max(start, stop)
        part = SpanBatch.__new__(SpanBatch)
        d = part.__dict__
        d.update(self.__dict__)
        for name in ("trace_id_hi", "trace_id_lo", "span_id", "parent_id", "start_ns",
                     "end_ns", "flags", "name_id"):
            d[name] = d[name][start:stop]
        d["tag_offsets"] = d["tag_offsets"][start:stop + 1]
        d["log_offsets"] = d["log_offsets"][start:stop + 1]
        part.extras = self.extras[start:stop]
        part.first_seq = self.first_seq + start
        return part

    _ROW_COLUMNS = ("trace_id_hi", "trace_id_lo", "span_id", "parent_id", "start_ns",
                    "end_ns", "flags", "name_id")

    def select(self, rows):
        """The spans at `rows` (indices, in the order given) as a new SpanBatch with its own
        compact tag and log tables (offsets from 0), the name and key tables shared.
        The flags keep only the SpanContext and reference bits.
        """
        np = _numpy()
        rows = np.asarray(rows, dtype=np.intp)
        part = SpanBatch.__new__(SpanBatch)
        part.__dict__.update(self.__dict__)
        for name in self._ROW_COLUMNS:
            setattr(part, name, getattr(self, name)[rows])
        part.flags &= np.uint8(FLAG_SAMPLED | FLAG_DEBUG | FLAG_FIRST_REF_FOLLOWS)
        part.extras = _take(self.extras, rows)
        offsets, src = _gather_rows(self.tag_offsets, rows)
        part.tag_offsets = offsets
        part.tag_key = self.tag_key[src]
        part.tag_type = self.tag_type[src]
        part.tag_num = self.tag_num[src]
        part.tag_obj = _take(self.tag_obj, src)
        offsets, src = _gather_rows(self.log_offsets, rows)
        part.log_offsets = offsets
        part.log_ts = self.log_ts[src]
        part.log_fields = _take(self.log_fields, src)
        part.first_seq = self.first_seq + (int(rows[0]) if len(rows) else 0)
        return part

    def concat(self, parts):
        """Compact batches (from `select`) sharing this batch's name and key tables as one."""
        for p in parts:
            if p.operation_names is not self.operation_names or p.tag_keys is not self.tag_keys:
                raise ValueError("SpanBatch.concat: the batches have different name tables")
        np = _numpy()
        whole = SpanBatch.__new__(SpanBatch)
        whole.__dict__.update(self.__dict__)
        for name in self._ROW_COLUMNS + ("tag_key", "tag_type", "tag_num", "log_ts"):
            setattr(whole, name, np.concatenate([getattr(p, name) for p in parts]))
        for name in ("extras", "tag_obj", "log_fields"):
            setattr(whole, name, [x for p in parts for x in getattr(p, name)])
        for name in ("tag_offsets", "log_offsets"):
            pieces, base = [], 0
            for p in parts:
                offsets = getattr(p, name)
                pieces.append(offsets[:-1] - offsets[0] + base)
                base += int(offsets[-1] - offsets[0])
            pieces.append(np.array([base], dtype=pieces[0].dtype))
            setattr(whole, name, np.concatenate(pieces).astype(np.int32))
        whole.first_seq = min(p.first_seq for p in parts)
        return whole

    def __repr__(self):
        return f"<SpanBatch of {len(self)} spans from {self.service_name!r}>"


def _take(items, indices):
    """[items[i] for i in indices], in C."""
    if len(indices) == 0:
        return []
    if len(indices) == 1:
        return [items[int(indices[0])]]
    return list(operator.itemgetter(*indices.tolist())(items))


def _gather_rows(offsets, rows):
    """For the CSR table `offsets` and the spans `rows`: the new offsets and the old
    entry indices (src) in the new order."""
    np = _numpy()
    starts = offsets[rows].astype(np.intp)
    counts = offsets[rows + 1].astype(np.intp) - starts
    new = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(counts, out=new[1:])
    total = int(new[-1])
    if total == 0:
        return new, np.empty(0, dtype=np.intp)
    before = new[:-1].astype(np.intp)           # where each span's run starts in src order
    within = np.arange(total, dtype=np.intp) - np.repeat(before, counts)
    return new, np.repeat(starts, counts) + within

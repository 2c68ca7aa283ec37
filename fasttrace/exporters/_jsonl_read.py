# SPDX-License-Identifier: Apache-2.0
"""Reads back the files `JsonLinesExporter` writes: one span (a JSON object) a line.

`load_jsonl` skips, and lists, the lines that are not spans; `span_from_json` turns one
decoded object into a `FinishedSpan`.
"""
import json

from fasttrace.batch import FinishedSpan

__all__ = ["LoadResult", "load_jsonl", "span_from_json"]


class LoadResult:
    """What `load_jsonl` read: `spans` (FinishedSpan records) and `skipped`, a list of
    ``(line_number, reason)`` for lines that were not spans (blank lines are not counted
    as skipped)."""

    __slots__ = ("spans", "skipped", "blank")

    def __init__(self, spans, skipped, blank=0):
        self.spans = spans
        self.skipped = skipped
        self.blank = blank

    def __repr__(self):
        return f"<LoadResult {len(self.spans)} spans, {len(self.skipped)} skipped>"


def _hex_id(value, field, bits):
    if not isinstance(value, str) or not value or len(value) > bits // 4:
        raise ValueError(f"{field} is not a hex id of at most {bits} bits: {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise ValueError(f"{field} is not hex: {value!r}") from None


def _int(value, field):
    if type(value) is not int:
        raise ValueError(f"{field} is not an integer: {value!r}")
    return value


def span_from_json(obj):
    """A FinishedSpan from one decoded JSON-lines object; ValueError when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object but {type(obj).__name__}")
    missing = [k for k in ("trace_id", "span_id", "operation_name", "start_ns")
               if k not in obj]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    trace_id = _hex_id(obj["trace_id"], "trace_id", 128)
    span_id = _hex_id(obj["span_id"], "span_id", 64)
    parent = obj.get("parent_id")
    parent_id = None if parent is None else _hex_id(parent, "parent_id", 64)
    start_ns = _int(obj["start_ns"], "start_ns")
    if "end_ns" in obj:
        end_ns = _int(obj["end_ns"], "end_ns")
    else:
        end_ns = start_ns + _int(obj.get("duration_ns", 0), "duration_ns")
    if end_ns < start_ns:
        end_ns = start_ns
    tags = obj.get("tags") or {}
    if not isinstance(tags, dict):
        raise ValueError("tags is not an object")
    logs = []
    for entry in obj.get("logs") or ():
        if not isinstance(entry, dict):
            raise ValueError("a log is not an object")
        fields = entry.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError("log fields are not an object")
        ts = entry.get("timestamp_ns", start_ns)
        logs.append((ts if type(ts) is int else start_ns, fields))
    refs = []
    for ref in obj.get("references") or ():
        if not isinstance(ref, dict):
            raise ValueError("a reference is not an object")
        try:
            refs.append((str(ref.get("type", "child_of")),
                         _hex_id(ref.get("trace_id", obj["trace_id"]), "reference trace_id",
                                 128),
                         _hex_id(ref.get("span_id"), "reference span_id", 64)))
        except ValueError:
            continue          # a reference we cannot read does not hide the span
    return FinishedSpan(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id or None,
        operation_name=str(obj["operation_name"]),
        service_name=str(obj.get("service_name") or "?"),
        start_ns=start_ns, end_ns=end_ns, tags=tags, logs=logs, references=refs,
        sampled=bool(obj.get("sampled", True)))


def load_jsonl(source):
    """Spans from a JSON-lines file (a path, or an iterable of lines).

    Blank lines are ignored; lines that are not JSON, or not a span, are skipped and
    listed in the result's `skipped` with their line number and the reason.  A span seen
    twice (same trace and span id, e.g. a file appended to twice) is kept once.
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        with open(source, encoding="utf-8", errors="replace") as f:
            return load_jsonl(list(f))
    spans, skipped, blank, seen = [], [], 0, set()
    for number, line in enumerate(source, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not line.strip():
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            skipped.append((number, f"not JSON ({exc.msg})" if hasattr(exc, "msg")
                            else "not JSON"))
            continue
        try:
            span = span_from_json(obj)
        except ValueError as exc:
            skipped.append((number, str(exc)))
            continue
        key = (span.trace_id, span.span_id)
        if key in seen:
            continue
        seen.add(key)
        spans.append(span)
    return LoadResult(spans, skipped, blank)

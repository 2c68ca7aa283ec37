# SPDX-License-Identifier: Apache-2.0
"""JsonLinesExporter: one JSON object per span per line, appended to a file.

This is the format ``python -m fasttrace view FILE`` reads.  Each line::

    {"trace_id": "<32 hex>", "span_id": "<16 hex>", "parent_id": "<16 hex>" | null,
     "operation_name": str, "service_name": str,
     "start_ns": int, "end_ns": int, "duration_ns": int,
     "tags": {str: str | bool | int | float},
     "logs": [{"timestamp_ns": int, "fields": {str: value}}],
     "references": [{"type": "child_of" | "follows_from", "trace_id": "<32 hex>",
                     "span_id": "<16 hex>"}],
     "sampled": bool}

Values JSON cannot hold (objects, NaN and infinities; ints a JSON reader would round are
kept: Python reads them back exactly) are written as their text (`fasttrace._text`);
subclasses of str, int and float as their built-in value.  A value whose ``str()`` raises
is written as ``<unprintable TypeName>`` and counted in ``stats()["unprintable_values"]``;
the rest of its span and batch are written as usual.  Every export writes whole lines
with one ``write`` and flushes, on a file opened in append mode, so a reader never sees
half a batch from a flush, and several processes (or a forked child) can share the file.
"""
import json
import math
import os

from fasttrace._text import counted_text, placeholder
from fasttrace.exporters.base import BaseExporter

__all__ = ["JsonLinesExporter", "span_to_json"]

# containers nested deeper are written as their text
_MAX_DEPTH = 32


def _clean(value, stats, path):
    """A JSON-safe version of a tag or log value; `path`: the ids of the containers it
    is in (a container inside itself is written as its text)."""
    t = type(value)
    if t is str or t is bool or t is int or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else float.__repr__(value)
    # issubclass(type(v), X): isinstance would consult v.__class__, which may raise
    if issubclass(t, (dict, list, tuple)) and id(value) not in path \
            and len(path) < _MAX_DEPTH:
        path = path + (id(value),)
        if issubclass(t, dict):
            return {counted_text(k, stats): _clean(v, stats, path) for k, v in value.items()}
        return [_clean(v, stats, path) for v in value]
    if issubclass(t, int):
        return int.__int__(value)
    if issubclass(t, float):
        return _clean(float.__float__(value), stats, path)
    return counted_text(value, stats)


def _value(value, stats):
    try:
        return _clean(value, stats, ())
    except Exception:
        # a container whose own methods (items, __iter__) raise
        stats["unprintable_values"] = stats.get("unprintable_values", 0) + 1
        return placeholder(value)


def span_to_json(span, stats=None):
    """The dict written for one FinishedSpan (before json.dumps).

    Args:
        span: the FinishedSpan.
        stats: None, or a dict whose ``"unprintable_values"`` is increased by the number
            of values written as ``<unprintable TypeName>``.
    """
    if stats is None:
        stats = {}
    return {
        "trace_id": f"{span.trace_id:032x}",
        "span_id": f"{span.span_id:016x}",
        "parent_id": None if span.parent_id is None else f"{span.parent_id:016x}",
        "operation_name": counted_text(span.operation_name, stats),
        "service_name": counted_text(span.service_name, stats),
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "duration_ns": span.end_ns - span.start_ns,
        "tags": {counted_text(k, stats): _value(v, stats) for k, v in span.tags.items()},
        "logs": [{"timestamp_ns": ts,
                  "fields": {counted_text(k, stats): _value(v, stats) for k, v in fields.items()}}
                 for ts, fields in span.logs],
        "references": [{"type": str(kind), "trace_id": f"{trace_id:032x}",
                        "span_id": f"{span_id:016x}"}
                       for kind, trace_id, span_id in span.references],
        "sampled": bool(span.sampled),
    }


class JsonLinesExporter(BaseExporter):
    """Appends one JSON object per span per line to `path`.

    Args:
        path: the file; created if missing, never truncated.
    """

    STATS = ("unprintable_values",)

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)
        self._file = None
        self.last_error = None

    def __repr__(self):
        return f"<JsonLinesExporter {self.path!r}>"

    def stats(self):
        """Counters: unprintable_values (values written as ``<unprintable TypeName>``)."""
        return dict(self._stats)

    def export(self, batch):
        """Appends the batch's spans; returns False (never raises) on I/O errors."""
        try:
            counts = {}
            lines = "".join(json.dumps(span_to_json(span, counts), ensure_ascii=False,
                                       allow_nan=False) + "\n"
                            for span in batch)
            self._stats["unprintable_values"] += counts.get("unprintable_values", 0)
        except Exception as exc:
            self.last_error = f"serialization failed: {exc!r}"
            return False
        with self._lock:
            if self._closed:
                return False
            try:
                if self._file is None:
                    self._file = open(self.path, "a", encoding="utf-8")
                self._file.write(lines)
                self._file.flush()
            except (OSError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._close_file()
                return False
        return True

    def _close_file(self):
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def shutdown(self):
        with self._lock:
            self._closed = True
            self._close_file()

    def _reset_after_fork(self):
        # the parent flushed its buffer before each export returned; reopen our own
        self._file = None

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

Values JSON cannot hold (objects, NaN and infinities, ints a JSON reader would round are
kept: Python reads them back exactly) are written as their ``str()``.  Every export
writes whole lines with one ``write`` and flushes, on a file opened in append mode, so
a reader never sees half a batch from a flush, and several processes (or a forked
child) can share the file.
"""
import json
import math
import os
import threading

from fasttrace.reporting import Exporter

__all__ = ["JsonLinesExporter", "span_to_json"]


def _clean(value):
    """A JSON-safe version of a tag or log value."""
    t = type(value)
    if t is str or t is bool or t is int or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _clean(float(value))
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def span_to_json(span):
    """The dict written for one FinishedSpan (before json.dumps)."""
    return {
        "trace_id": f"{span.trace_id:032x}",
        "span_id": f"{span.span_id:016x}",
        "parent_id": None if span.parent_id is None else f"{span.parent_id:016x}",
        "operation_name": span.operation_name,
        "service_name": span.service_name,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "duration_ns": span.end_ns - span.start_ns,
        "tags": {str(k): _clean(v) for k, v in span.tags.items()},
        "logs": [{"timestamp_ns": ts, "fields": {str(k): _clean(v) for k, v in fields.items()}}
                 for ts, fields in span.logs],
        "references": [{"type": str(kind), "trace_id": f"{trace_id:032x}",
                        "span_id": f"{span_id:016x}"}
                       for kind, trace_id, span_id in span.references],
        "sampled": bool(span.sampled),
    }


class JsonLinesExporter(Exporter):
    """Appends one JSON object per span per line to `path`.

    Args:
        path: the file; created if missing, never truncated.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._file = None
        self._lock = threading.Lock()
        self._closed = False
        self.last_error = None

    def __repr__(self):
        return f"<JsonLinesExporter {self.path!r}>"

    def export(self, batch):
        """Appends the batch's spans; returns False (never raises) on I/O errors."""
        try:
            text = "".join(json.dumps(span_to_json(span), ensure_ascii=False,
                                      allow_nan=False) + "\n"
                           for span in batch)
        except Exception as exc:
            self.last_error = f"serialization failed: {exc!r}"
            return False
        with self._lock:
            if self._closed:
                return False
            try:
                if self._file is None:
                    self._file = open(self.path, "a", encoding="utf-8")
                self._file.write(text)
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

    def _after_fork_in_child(self):
        # the parent flushed its buffer before each export returned; reopen our own
        self._file = None
        self._lock = threading.Lock()

# SPDX-License-Identifier: Apache-2.0
"""Trace and span ids on log records, to find a request's logs from its trace.

    import logging
    from fasttrace.contrib.logging import TraceContextFilter

    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [trace=%(trace_id)s span=%(span_id)s] %(message)s"))

Every record gets ``trace_id`` (32 lowercase hex digits, the W3C form) and ``span_id``
(16 hex digits) of the span active where the record is made.  With no active span (or a
tracer whose spans carry no ids, like OpenTracing's no-op tracer) both are ``""`` -- the
empty string, so format strings need no special case; pass ``missing="0"`` (or anything)
to change that.  ``sampled`` is added too (True/False, or None without a span).

Attach it to the *handlers* that format records: a filter on a logger does not see the
records propagated to it from child loggers.  The filter never rejects a record.
"""
import logging

import opentracing

__all__ = ["TraceContextFilter"]


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` and ``sampled`` to every record (see the module doc).

    Args:
        tracer: an OpenTracing tracer; None means ``opentracing.global_tracer()`` at
            the time of each record.
        missing: the value of ``trace_id``/``span_id`` when there is no active span.
    """

    def __init__(self, tracer=None, missing="", name=""):
        super().__init__(name)
        self.tracer = tracer
        self.missing = missing

    def filter(self, record):
        trace_id = span_id = self.missing
        sampled = None
        try:
            tracer = self.tracer if self.tracer is not None else opentracing.global_tracer()
            span = tracer.active_span
            if span is not None:
                context = span.context
                tid = getattr(context, "trace_id", None)
                sid = getattr(context, "span_id", None)
                if type(tid) is int and type(sid) is int:
                    trace_id = f"{tid:032x}"
                    span_id = f"{sid:016x}"
                    sampled = getattr(context, "sampled", None)
        except Exception:
            pass
        record.trace_id = trace_id
        record.span_id = span_id
        record.sampled = sampled
        return True

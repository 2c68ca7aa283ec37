# SPDX-License-Identifier: Apache-2.0
"""The tracer calls of the integrations, made so that they never raise."""
import opentracing
from opentracing import Format, SpanContextCorruptedException

from fasttrace._failures import count_corrupted, internal_error
from fasttrace._w3c import format_traceresponse, parse_traceresponse

__all__ = ["TRACERESPONSE", "extract", "follow_traceresponse", "get_tracer", "inject",
           "traceresponse"]

#: The W3C Trace Context Level 2 response header (and gRPC trailing metadata key) a
#: server with tail sampling sends back: ``00-<trace id>-<server span id>-<01|00>``.
TRACERESPONSE = "traceresponse"


def get_tracer(tracer):
    return tracer if tracer is not None else opentracing.global_tracer()


def extract(tracer, fmt, carrier, integration):
    """The parent SpanContext in `carrier`, or None; never raises.

    A corrupted context is counted (and logged once) and reads as no context: the
    request starts a new trace."""
    try:
        return tracer.extract(fmt, carrier)
    except SpanContextCorruptedException:
        count_corrupted(integration)
        return None
    except Exception:
        internal_error(integration, "extract")
        return None


def inject(tracer, span, carrier, integration, fmt=Format.HTTP_HEADERS):
    """Injects span's context into carrier; never raises."""
    try:
        tracer.inject(span.context, fmt, carrier)
    except Exception:
        internal_error(integration, "inject")


# -- tail sampling across services: traceresponse --------------------------------------
# The format is fasttrace._w3c's (format_traceresponse / parse_traceresponse); these two
# are what every server and client integration calls.

def traceresponse(tracer, span, error, integration):
    """The ``traceresponse`` value a server sends for its `span` (flags 01 when
    ``tracer.tail_verdict(span, error)`` says the trace is kept, else 00), or None when
    the tracer has no tail sampling; never raises (a failure is counted: None)."""
    try:
        if getattr(tracer, "tail_sampling", None) is None:
            return None
        verdict = tracer.tail_verdict(span, error=bool(error))
        context = span.context
        return format_traceresponse(context.trace_id, context.span_id, bool(verdict))
    except Exception:
        internal_error(integration, "traceresponse")
        return None


def follow_traceresponse(tracer, span, value, integration):
    """Reads the ``traceresponse`` a client `span` got back (`value`: the header or
    trailer, None when absent): when it is valid, of the span's trace and sampled, the
    trace is kept here too (``tracer.keep_trace``).  Ignored without tail sampling; a
    malformed value is counted in ``codec_stats()["malformed_traceresponse"]``, one of
    another trace is ignored.  True when the trace was marked kept; never raises."""
    try:
        if value is None or getattr(tracer, "tail_sampling", None) is None:
            return False
        parsed = parse_traceresponse(value)
        if parsed is None:
            return False
        trace_id, _, flags = parsed
        context = span.context
        if not flags & 1 or trace_id != context.trace_id:
            return False
        return tracer.keep_trace(context)
    except Exception:
        internal_error(integration, "reading traceresponse")
        return False

# SPDX-License-Identifier: Apache-2.0
"""The tracer calls of the integrations, made so that they never raise."""
import opentracing
from opentracing import Format, SpanContextCorruptedException

from fasttrace._failures import count_corrupted, internal_error

__all__ = ["extract", "get_tracer", "inject"]


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

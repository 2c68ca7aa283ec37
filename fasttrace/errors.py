# SPDX-License-Identifier: Apache-2.0
"""The one OpenTracing error log, shared by every place that records an exception.

A span's ``with`` block, ``@traced``, the server middlewares and the client
integrations all record an exception as ``error=true`` plus one log with the fields
of the OpenTracing semantic conventions, always of the same types:

    event         "error"
    error.kind    the exception's class name ("ValueError", "ConnectionError")
    error.object  the exception itself
    message       str(exception)
    stack         the traceback as text, formatted as Python prints it

The OTLP exporter sends this log as the OpenTelemetry ``exception`` event
(``exception.type``, ``exception.message``, ``exception.stacktrace``), which is what
the OpenTelemetry SDK's ``record_exception`` writes; ``exception_type`` is its
``exception.type`` (module-qualified, from ``error.object`` when the log has it).
"""
import traceback

from opentracing.ext import tags as ext_tags

__all__ = ["error_fields", "exception_type", "log_error", "mark_error"]


def _class_name(exc_type):
    try:
        return exc_type.__name__
    except Exception:
        return "<unknown>"


def exception_type(exc_type):
    """OpenTelemetry's ``exception.type``: the class, module-qualified unless builtin."""
    try:
        name = exc_type.__qualname__
        module = exc_type.__module__
    except Exception:
        return "<unknown>"
    return name if module in (None, "builtins") else f"{module}.{name}"


def error_fields(exc_type, exc, tb):
    """The fields of the error log for an exception (from ``sys.exc_info()``-style
    arguments: the class, the instance, the traceback, any of them may be None)."""
    if exc_type is None and exc is not None:
        exc_type = type(exc)
    if tb is None and exc is not None:
        tb = getattr(exc, "__traceback__", None)
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable exception>"
    try:
        stack = "".join(traceback.format_exception(exc_type, exc, tb))
    except Exception:
        stack = ""
    return {"event": "error", "error.kind": _class_name(exc_type), "error.object": exc,
            "message": message, "stack": stack}


def log_error(span, exc_type, exc, tb):
    """``error=true`` and the error log, through the span's own methods (any
    OpenTracing span: another tracer's, or one whose methods a test replaced)."""
    span.set_tag(ext_tags.ERROR, True)
    span.log_kv(error_fields(exc_type, exc, tb))


def mark_error(span, exc=None, message=None):
    """Sets ``error=true`` on `span` and logs `exc` as the OpenTracing error log (or, with
    no exception, an error log with just `message`).  Never raises."""
    try:
        if exc is not None:
            log_error(span, type(exc), exc, exc.__traceback__)
        elif message:
            span.set_tag(ext_tags.ERROR, True)
            span.log_kv({"event": "error", "message": message})
    except Exception:
        from fasttrace.contrib import internal_error   # only on this failure path
        internal_error("core", "marking an error")

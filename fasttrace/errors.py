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

The OTLP exporter sends this log as the OpenTelemetry ``exception`` event, with the
attributes the OpenTelemetry SDK's ``Span.record_exception(exc, escaped=True)`` writes
(``exception_attributes``); Jaeger and Zipkin receive the OpenTracing log itself.
"""
import types

from opentracing.ext import tags as ext_tags

from fasttrace import _text
from fasttrace._failures import internal_error
from fasttrace._lazy import traceback

__all__ = ["error_fields", "exception_attributes", "exception_type", "log_error",
           "mark_error"]


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
        return name if not module or module == "builtins" else f"{module}.{name}"
    except Exception:
        return "<unknown>"


def error_fields(exc_type, exc, tb):
    """The fields of the error log for an exception (from ``sys.exc_info()``-style
    arguments: the class, the instance, the traceback, any of them may be None)."""
    if exc_type is None and exc is not None:
        exc_type = type(exc)
    if tb is None and exc is not None:
        tb = getattr(exc, "__traceback__", None)
    message = _text.text(exc)
    if message is None:
        message = "<unprintable exception>"
    try:
        stack = "".join(traceback.format_exception(exc_type, exc, tb))
    except Exception:
        stack = ""
    return {"event": "error", "error.kind": _class_name(exc_type), "error.object": exc,
            "message": message, "stack": stack}


def _named(key, name):
    # str.__eq__, not ==: a key may be a str subclass whose __eq__ raises
    return issubclass(type(key), str) and str.__eq__(key, name) is True


def _is_exception_class(value):
    return issubclass(type(value), type) and issubclass(value, BaseException)


def exception_attributes(fields, text):
    """The attributes of the OpenTelemetry ``exception`` event for an error log, in the
    order the SDK's ``Span.record_exception`` writes them, or None when the log names no
    exception (it has neither ``error.kind`` nor ``error.object``).

    ``exception.escaped`` is the string ``"True"``, as the SDK writes it for an exception
    that leaves a span's ``with`` block: fasttrace records its error log at that point.
    The log's other fields follow as they are.

    Args:
        fields: the log's fields; the caller has checked that its ``event`` is ``"error"``.
        text: turns a value into a str (the exporter's own, which counts the values it
            cannot print).

    Returns:
        A list of (key, value) pairs.
    """
    kind = obj = message = stack = None
    rest = []
    for key, value in fields.items():
        if _named(key, "error.kind"):
            kind = value
        elif _named(key, "error.object"):
            obj = value
        elif _named(key, "message"):
            message = value
        elif _named(key, "stack"):
            stack = value
        elif not _named(key, "event"):
            rest.append((key, value))
    if kind is None and obj is None:
        return None
    is_exception = issubclass(type(obj), BaseException)
    if is_exception:
        exc_type = exception_type(type(obj))
    elif _is_exception_class(kind) or (kind is None and _is_exception_class(obj)):
        exc_type = exception_type(kind if kind is not None else obj)
    elif kind is not None:
        exc_type = text(kind)
    else:
        exc_type = None
    if message is None:
        message = obj
    if is_exception and (stack is None or type(stack) is types.TracebackType):
        try:
            stack = "".join(traceback.format_exception(
                type(obj), obj, obj.__traceback__ if stack is None else stack))
        except Exception:
            pass
    out = []
    if exc_type is not None:
        out.append(("exception.type", text(exc_type)))
    if message is not None:
        out.append(("exception.message", text(message)))
    if stack is not None:
        out.append(("exception.stacktrace", text(stack)))
    out.append(("exception.escaped", "True"))
    out.extend(rest)
    return out


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
        internal_error("core", "marking an error")

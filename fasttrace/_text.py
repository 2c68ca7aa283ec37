# SPDX-License-Identifier: Apache-2.0
"""The text every exporter sends for a value its wire format has no type for.

Tag and log values reach the exporters as the application gave them (``log_kv`` keeps
any object), so turning one into text must never fail the batch it is in:

- a ``str``, ``int`` or ``float`` subclass gives its built-in value, read without calling
  any method of the subclass (as the ``json`` module reads them);
- a traceback gives the formatted traceback, an exception class its name, an exception
  ``str(exception)``, as in fasttrace's error log (`fasttrace.errors`);
- anything else gives its ``str()``; when that raises, the exporter sends
  ``placeholder(value)`` and counts it in ``stats()["unprintable_values"]``.
"""
import types

from fasttrace._lazy import traceback

__all__ = ["counted_text", "placeholder", "text"]

_TRACEBACK = types.TracebackType


def text(value):
    """`value` as an exact ``str``, or None when it cannot be printed."""
    t = type(value)
    if t is str:
        return value
    try:
        # issubclass(type(v), X), not isinstance(v, X): isinstance consults v.__class__,
        # which an object may override with code that raises
        if issubclass(t, str):
            return str.__str__(value)
        if t is bool:
            return "True" if value else "False"
        if issubclass(t, int):
            return int.__repr__(value)
        if issubclass(t, float):
            return float.__repr__(value)
        if t is _TRACEBACK:
            return "".join(traceback.format_tb(value))
        if issubclass(t, type) and issubclass(value, BaseException):
            return str.__str__(value.__name__)
        s = str(value)
        return s if type(s) is str else str.__str__(s)
    except Exception:
        return None


def placeholder(value):
    """What is sent for a value `text` cannot print: ``<unprintable TypeName>``."""
    try:
        return f"<unprintable {str.__str__(type(value).__name__)}>"
    except Exception:
        return "<unprintable>"


def counted_text(value, stats):
    """`text(value)`, else `placeholder(value)` counted in ``stats["unprintable_values"]``."""
    s = text(value)
    if s is None:
        stats["unprintable_values"] = stats.get("unprintable_values", 0) + 1
        s = placeholder(value)
    return s

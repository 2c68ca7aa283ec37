# SPDX-License-Identifier: Apache-2.0
"""ConsoleExporter: one human-readable line per span, for development.

    [checkout] GET /cart  trace=4bf92f35...4736 span=00f067aa0ba902b7 parent=- 1.234ms  http.status_code=200 span.kind=server

The full 32-hex trace id is written (so it can be pasted into a backend's search).
Names, keys and values are written as their text (`fasttrace._text`); one whose ``str()``
raises as ``<unprintable TypeName>``, counted in ``stats()["unprintable_values"]``.
"""
import sys
import threading

from fasttrace._text import counted_text
from fasttrace.reporting import Exporter

__all__ = ["ConsoleExporter", "format_span"]


def _tag(key, value, stats):
    s = counted_text(value, stats)
    if issubclass(type(value), str) and (" " in s or not s):
        s = repr(s)
    return f"{counted_text(key, stats)}={s}"


def format_span(span, stats=None):
    """One line (without newline) describing a FinishedSpan.

    Args:
        span: the FinishedSpan.
        stats: None, or a dict whose ``"unprintable_values"`` is increased by the number
            of names, keys and values written as ``<unprintable TypeName>``.
    """
    if stats is None:
        stats = {}
    parent = "-" if span.parent_id is None else f"{span.parent_id:016x}"
    tags = " ".join(_tag(k, v, stats) for k, v in span.tags.items())
    service = counted_text(span.service_name, stats)
    name = counted_text(span.operation_name, stats)
    line = (f"[{service}] {name}  trace={span.trace_id:032x} span={span.span_id:016x} "
            f"parent={parent} "
            f"{(span.end_ns - span.start_ns) / 1e6:.3f}ms")
    if tags:
        line += "  " + tags
    if span.logs:
        line += f"  logs={len(span.logs)}"
    return line.replace("\n", "\\n")


class ConsoleExporter(Exporter):
    """Writes one line per span to a text stream.

    Args:
        stream: where to write (default: ``sys.stderr`` at the time of each export).
    """

    def __init__(self, stream=None):
        self.stream = stream
        self._lock = threading.Lock()
        self._stats = {"unprintable_values": 0}

    def stats(self):
        """Counters: unprintable_values (written as ``<unprintable TypeName>``)."""
        return dict(self._stats)

    def export(self, batch):
        stream = self.stream if self.stream is not None else sys.stderr
        counts = {}
        lines = "".join(format_span(span, counts) + "\n" for span in batch)
        self._stats["unprintable_values"] += counts.get("unprintable_values", 0)
        try:
            with self._lock:
                stream.write(lines)
                stream.flush()
        except (OSError, ValueError, AttributeError):
            return False
        return True

# SPDX-License-Identifier: Apache-2.0
"""ConsoleExporter: one human-readable line per span, for development.

    [checkout] GET /cart  trace=4bf92f35...4736 span=00f067aa0ba902b7 parent=- 1.234ms  http.status_code=200 span.kind=server

The full 32-hex trace id is written (so it can be pasted into a backend's search).
"""
import sys
import threading

from fasttrace.reporting import Exporter

__all__ = ["ConsoleExporter", "format_span"]


def format_span(span):
    """One line (without newline) describing a FinishedSpan."""
    parent = "-" if span.parent_id is None else f"{span.parent_id:016x}"
    tags = " ".join(f"{k}={v!r}" if isinstance(v, str) and (" " in v or not v) else f"{k}={v}"
                    for k, v in span.tags.items())
    line = (f"[{span.service_name}] {span.operation_name}  trace={span.trace_id:032x} "
            f"span={span.span_id:016x} parent={parent} "
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

    def export(self, batch):
        stream = self.stream if self.stream is not None else sys.stderr
        text = "".join(format_span(span) + "\n" for span in batch)
        try:
            with self._lock:
                stream.write(text)
                stream.flush()
        except (OSError, ValueError, AttributeError):
            return False
        return True

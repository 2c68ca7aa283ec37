# SPDX-License-Identifier: Apache-2.0
"""Traces as a waterfall in the terminal: one row per span, bars on a shared time axis.

    checkout  GET /cart          |██████████████████████████████|  12.40 ms
    checkout    load-cart        |  ████████████                |   4.95 ms
"""
import shutil

__all__ = ["render_waterfall", "group_traces"]


def group_traces(spans):
    """{trace_id: [spans]} in order of each trace's first start."""
    traces = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def _tree_order(spans):
    """Spans depth-first from their roots, children by start time, with their depth."""
    by_id = {s.span_id: s for s in spans}
    children = {}
    roots = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        if span.parent_id is not None and span.parent_id in by_id:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)
    ordered = []
    stack = [(root, 0) for root in reversed(roots)]
    while stack:
        span, depth = stack.pop()
        ordered.append((span, depth))
        for child in reversed(children.get(span.span_id, [])):
            stack.append((child, depth + 1))
    return ordered


def render_waterfall(spans, width=None):
    """The waterfall of one trace's spans as a string."""
    if not spans:
        return "(no spans)\n"
    width = width or shutil.get_terminal_size((100, 20)).columns
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    total = max(end - start, 1)
    rows = _tree_order(spans)
    label_width = min(48, max(len(s.service_name) + 2 + 2 * d + len(s.operation_name)
                              for s, d in rows))
    bar_width = max(10, width - label_width - 16)
    lines = [f"trace {spans[0].trace_id:032x}  ({len(spans)} spans, {total / 1e6:.2f} ms)"]
    for span, depth in rows:
        label = f"{span.service_name}  {'  ' * depth}{span.operation_name}"[:label_width]
        first = int((span.start_ns - start) / total * bar_width)
        last = max(first + 1, int((span.end_ns - start) / total * bar_width))
        bar = " " * first + "█" * (last - first) + " " * (bar_width - last)
        error = "  error" if span.tags.get("error") is True else ""
        lines.append(f"{label:<{label_width}} |{bar}| {span.duration_ns / 1e6:7.2f} ms{error}")
    return "\n".join(lines) + "\n"

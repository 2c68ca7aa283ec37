# SPDX-License-Identifier: Apache-2.0
"""The trace model both renderers draw: spans grouped into traces, in tree order, with
their errors, and the text of what they show (durations, tick labels, any value)."""
from fasttrace._text import placeholder, text

__all__ = ["DECISION_TAG", "as_text", "decision", "error_message", "filter_traces",
           "format_duration", "group_traces", "has_error", "is_follows_from", "kept_summary",
           "tick_label", "tree_order"]

_FOLLOWS_FROM = "follows_from"
# the tag tail sampling puts on every span it keeps: the policy that kept its trace
# (fasttrace.tail.DECISION_TAG; the viewer reads files, so it does not import the stage)
DECISION_TAG = "sampling.decision"


def as_text(value):
    """`value` as a str; ``<unprintable TypeName>`` when its ``str()`` raises."""
    s = text(value)
    return placeholder(value) if s is None else s


def group_traces(spans):
    """{trace_id: [spans]}, traces in order of their first start, spans by start."""
    traces = {}
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def filter_traces(traces, prefixes):
    """The traces whose hex id starts with one of `prefixes` (case-insensitive; an
    optional ``0x`` is ignored).  No prefixes: all of them."""
    if not prefixes:
        return dict(traces)
    wanted = [p.strip().lower().removeprefix("0x") for p in prefixes if p.strip()]
    return {tid: spans for tid, spans in traces.items()
            if any(f"{tid:032x}".startswith(p) or f"{tid:x}".startswith(p) for p in wanted)}


def is_follows_from(span):
    """True when the span's parent is a follows_from reference."""
    if span.parent_id is None:
        return False
    for kind, _trace, span_id in span.references or ():
        if span_id == span.parent_id:
            return str(kind) == _FOLLOWS_FROM
    return False


def tree_order(spans):
    """[(span, depth, orphan)] depth-first from the roots, children by start time.

    A root is a span without a parent, or whose parent is not among `spans` (then
    `orphan` is True).  Cycles (which a well-formed trace never has) cannot hide spans:
    every span appears exactly once.
    """
    by_id = {s.span_id: s for s in spans}
    children = {}
    roots = []
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        parent = span.parent_id
        if parent is not None and parent in by_id and parent != span.span_id:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    ordered, placed = [], set()

    def walk(root):
        stack = [(root, 0)]
        while stack:
            span, depth = stack.pop()
            if span.span_id in placed:
                continue
            placed.add(span.span_id)
            orphan = depth == 0 and span.parent_id is not None
            ordered.append((span, depth, orphan))
            for child in reversed(children.get(span.span_id, ())):
                stack.append((child, depth + 1))

    for root in roots:
        walk(root)
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        if span.span_id not in placed:           # in a parent cycle
            walk(span)
    return ordered


def error_message(span):
    """The message of a span's error: from its logs (``event=error``: message,
    error.object, error.kind), else from tags; None when it has no error."""
    tags = span.tags or {}
    failed = tags.get("error") in (True, "true", "True", 1)
    for _ts, fields in span.logs or ():
        if not isinstance(fields, dict):
            continue
        if fields.get("event") == "error" or "error.object" in fields or \
                "error.kind" in fields:
            kind = fields.get("error.kind")
            kind = _type_name(kind) if kind is not None else None
            message = fields.get("message")
            if message is None:
                message = fields.get("error.object")
            if message is not None and kind and not as_text(message).startswith(kind):
                return f"{kind}: {as_text(message)}"
            if message is not None:
                return as_text(message)
            if kind:
                return kind
    if failed:
        for key in ("error.message", "error.kind", "http.status_code"):
            if key in tags:
                return f"{key}={tags[key]}"
        return "error"
    return None


def _type_name(kind):
    text = as_text(kind)
    if text.startswith("<class '") and text.endswith("'>"):
        text = text[8:-2].rsplit(".", 1)[-1]
    return text


def decision(span):
    """Why tail sampling kept the span's trace (its ``sampling.decision`` tag: error,
    latency, downstream, tag, baseline, head, early), or None when it has no such tag."""
    value = (span.tags or {}).get(DECISION_TAG)
    return None if value is None else as_text(value)


def kept_summary(spans):
    """What a trace's header says about why it was kept: ``"error"`` when every span that
    carries a decision carries that one, else each decision with its services
    (``"error (gateway), baseline (inventory)"``); None when no span carries one (a
    trace not tail-sampled shows as before)."""
    services = {}
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        value = decision(span)
        if value is not None:
            names = services.setdefault(value, [])
            if span.service_name not in names:
                names.append(span.service_name)
    if not services:
        return None
    if len(services) == 1:
        return next(iter(services))
    return ", ".join(f"{value} ({', '.join(as_text(n) for n in names)})"
                     for value, names in services.items())


def has_error(span):
    return (span.tags or {}).get("error") in (True, "true", "True", 1)


def format_duration(ns, unicode=True):
    """``"850 ns"``, ``"12.3 µs"``, ``"12.40 ms"``, ``"1.234 s"``."""
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} {'µs' if unicode else 'us'}"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.3f} s"


def tick_label(ns, step, unicode):
    if ns == 0:
        return "0"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs" if unicode else "us", 1e3)):
        if step >= scale or (ns >= scale and unit != "s" and step * 10 >= scale):
            value = ns / scale
            text = f"{value:.3f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{ns} ns"

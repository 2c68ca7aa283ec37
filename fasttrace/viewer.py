# SPDX-License-Identifier: Apache-2.0
"""Traces as a waterfall in the terminal: one row per span, bars on a shared time axis.

The picture of the OpenTracing specification's timeline, drawn from real spans::

    trace 1ef982148de5000622632c203edb7ef2 · 7 spans · 100.00 ms · gateway, inventory · 2 errors
    service    operation             0                  50 ms               100 ms
                                     ┬──────────────────┬───────────────────┬> time
    gateway    GET /checkout         ███████████████████████████████████████  100.00 ms
    gateway      HTTP GET               █████████████                          30.00 ms
    inventory      GET /stock/{sku}      ███████████                           26.00 ms
    inventory        db.query               █████                              10.00 ms
    gateway      Reserve                                █████████████████      40.00 ms  ✗ error
                   ✗ NOT_FOUND: 'durian'
    inventory      Reserve                                █████████████        30.00 ms  ✗ error
                     ✗ KeyError: 'durian' is not in stock · rpc.grpc.status_code=5
    gateway      ⇢ publish                                                ░░    5.00 ms

Rows are in tree order (children under their parent, by start time, indented two
columns per level); bars are scaled to the trace; a span whose parent is a
``follows_from`` reference is marked ``⇢`` and drawn ``░``; a span tagged ``error=true``
ends with ``✗ error`` and is followed by a line with the error message from its logs
and its tags.  Without a UTF-8 stdout the same picture is drawn in ASCII (``#``, ``=``,
``>>``, ``!``).  Names come from requests: control characters are shown escaped, never
sent to the terminal.

`load_jsonl` reads the files ``JsonLinesExporter`` writes (skipping, and counting,
lines that are not spans); `render_traces` draws them.
"""
import codecs
import io
import json
import math
import shutil
import sys
import unicodedata

from fasttrace.batch import FinishedSpan

__all__ = ["render_waterfall", "render_traces", "group_traces", "tree_order", "load_jsonl",
           "span_from_json", "filter_traces", "error_message", "has_error", "is_follows_from",
           "format_duration", "Style", "stream_supports_unicode", "LoadResult"]

_FOLLOWS_FROM = "follows_from"


# -- reading ----------------------------------------------------------------------------

class LoadResult:
    """What `load_jsonl` read: `spans` (FinishedSpan records) and `skipped`, a list of
    ``(line_number, reason)`` for lines that were not spans (blank lines are not counted
    as skipped)."""

    __slots__ = ("spans", "skipped", "blank")

    def __init__(self, spans, skipped, blank=0):
        self.spans = spans
        self.skipped = skipped
        self.blank = blank

    def __repr__(self):
        return f"<LoadResult {len(self.spans)} spans, {len(self.skipped)} skipped>"


def _hex_id(value, field, bits):
    if not isinstance(value, str) or not value or len(value) > bits // 4:
        raise ValueError(f"{field} is not a hex id of at most {bits} bits: {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise ValueError(f"{field} is not hex: {value!r}") from None


def _int(value, field):
    if type(value) is not int:
        raise ValueError(f"{field} is not an integer: {value!r}")
    return value


def span_from_json(obj):
    """A FinishedSpan from one decoded JSON-lines object; ValueError when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError(f"not a JSON object but {type(obj).__name__}")
    missing = [k for k in ("trace_id", "span_id", "operation_name", "start_ns")
               if k not in obj]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    trace_id = _hex_id(obj["trace_id"], "trace_id", 128)
    span_id = _hex_id(obj["span_id"], "span_id", 64)
    parent = obj.get("parent_id")
    parent_id = None if parent is None else _hex_id(parent, "parent_id", 64)
    start_ns = _int(obj["start_ns"], "start_ns")
    if "end_ns" in obj:
        end_ns = _int(obj["end_ns"], "end_ns")
    else:
        end_ns = start_ns + _int(obj.get("duration_ns", 0), "duration_ns")
    if end_ns < start_ns:
        end_ns = start_ns
    tags = obj.get("tags") or {}
    if not isinstance(tags, dict):
        raise ValueError("tags is not an object")
    logs = []
    for entry in obj.get("logs") or ():
        if not isinstance(entry, dict):
            raise ValueError("a log is not an object")
        fields = entry.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError("log fields are not an object")
        ts = entry.get("timestamp_ns", start_ns)
        logs.append((ts if type(ts) is int else start_ns, fields))
    refs = []
    for ref in obj.get("references") or ():
        if not isinstance(ref, dict):
            raise ValueError("a reference is not an object")
        try:
            refs.append((str(ref.get("type", "child_of")),
                         _hex_id(ref.get("trace_id", obj["trace_id"]), "reference trace_id",
                                 128),
                         _hex_id(ref.get("span_id"), "reference span_id", 64)))
        except ValueError:
            continue          # a reference we cannot read does not hide the span
    return FinishedSpan(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id or None,
        operation_name=str(obj["operation_name"]),
        service_name=str(obj.get("service_name") or "?"),
        start_ns=start_ns, end_ns=end_ns, tags=tags, logs=logs, references=refs,
        sampled=bool(obj.get("sampled", True)))


def load_jsonl(source):
    """Spans from a JSON-lines file (a path, or an iterable of lines).

    Blank lines are ignored; lines that are not JSON, or not a span, are skipped and
    listed in the result's `skipped` with their line number and the reason.  A span seen
    twice (same trace and span id, e.g. a file appended to twice) is kept once.
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        with open(source, encoding="utf-8", errors="replace") as f:
            return load_jsonl(list(f))
    spans, skipped, blank, seen = [], [], 0, set()
    for number, line in enumerate(source, 1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not line.strip():
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            skipped.append((number, f"not JSON ({exc.msg})" if hasattr(exc, "msg")
                            else "not JSON"))
            continue
        try:
            span = span_from_json(obj)
        except ValueError as exc:
            skipped.append((number, str(exc)))
            continue
        key = (span.trace_id, span.span_id)
        if key in seen:
            continue
        seen.add(key)
        spans.append(span)
    return LoadResult(spans, skipped, blank)


# -- structure --------------------------------------------------------------------------

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
            if message is not None and kind and not str(message).startswith(kind):
                return f"{kind}: {message}"
            if message is not None:
                return str(message)
            if kind:
                return kind
    if failed:
        for key in ("error.message", "error.kind", "http.status_code"):
            if key in tags:
                return f"{key}={tags[key]}"
        return "error"
    return None


def _type_name(kind):
    text = str(kind)
    if text.startswith("<class '") and text.endswith("'>"):
        text = text[8:-2].rsplit(".", 1)[-1]
    return text


def has_error(span):
    return (span.tags or {}).get("error") in (True, "true", "True", 1)


# -- text -------------------------------------------------------------------------------

def _safe(text):
    """`text` with control and format characters shown as escapes (never sent raw)."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                       if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _char_width(ch):
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text):
    if text.isascii():
        return len(text)
    return sum(_char_width(ch) for ch in text)


def _fit(text, width, ellipsis):
    """`text` cut to `width` display columns (ending in `ellipsis` when cut), padded."""
    if width <= 0:
        return ""
    w = _width(text)
    if w <= width:
        return text + " " * (width - w)
    out, used, room = [], 0, width - _width(ellipsis)
    for ch in text:
        cw = _char_width(ch)
        if used + cw > room:
            break
        out.append(ch)
        used += cw
    cut = "".join(out) + ellipsis
    return cut + " " * (width - _width(cut))


def format_duration(ns, unicode=True):
    """``"850 ns"``, ``"12.3 µs"``, ``"12.40 ms"``, ``"1.234 s"``."""
    if ns < 1_000:
        return f"{ns} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} {'µs' if unicode else 'us'}"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.3f} s"


def _tick_label(ns, step, unicode):
    if ns == 0:
        return "0"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs" if unicode else "us", 1e3)):
        if step >= scale or (ns >= scale and unit != "s" and step * 10 >= scale):
            value = ns / scale
            text = f"{value:.3f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{ns} ns"


def _nice_step(total, columns, min_gap):
    """A step of 1, 2 or 5 x 10^k ns that puts ticks at least `min_gap` columns apart."""
    if columns <= 0:
        return max(total, 1)
    wanted = total * min_gap / columns
    exp = 10 ** max(0, int(math.floor(math.log10(max(wanted, 1)))))
    for mult in ((1, 2, 2.5, 5, 10) if exp >= 10 else (1, 2, 5, 10)):
        if mult * exp >= wanted:
            return int(mult * exp)
    return 10 * exp  # pragma: no cover


def stream_supports_unicode(stream=None):
    """True when `stream` (default sys.stdout) encodes to UTF-8."""
    stream = sys.stdout if stream is None else stream
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return isinstance(stream, io.StringIO)          # holds any str
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-16", "utf-32")
    except LookupError:
        return False


_PALETTE = ("36", "33", "35", "32", "34", "96", "93", "95", "92", "94")


class Style:
    """How to draw: Unicode or ASCII glyphs, ANSI colors or none."""

    def __init__(self, unicode=True, color=False):
        self.unicode = bool(unicode)
        self.color = bool(color)
        if self.unicode:
            self.bar, self.follows_bar, self.rule, self.tick = "█", "░", "─", "┬"
            self.follows_mark, self.error_mark, self.ellipsis, self.sep = "⇢ ", "✗", "…", "·"
            self.orphan_mark = "↑ "
        else:
            self.bar, self.follows_bar, self.rule, self.tick = "#", "=", "-", "+"
            self.follows_mark, self.error_mark, self.ellipsis, self.sep = ">> ", "!", "~", "-"
            self.orphan_mark = "^ "
        self._services = {}

    @classmethod
    def for_stream(cls, stream=None, color=None, unicode=None):
        """Unicode when the stream is UTF-8; color when it is a TTY (and `color` is not
        False) and the NO_COLOR convention does not say otherwise."""
        import os
        stream = sys.stdout if stream is None else stream
        if unicode is None:
            unicode = stream_supports_unicode(stream)
        if color is None or color:
            try:
                tty = stream.isatty()
            except Exception:
                tty = False
            color = tty and not os.environ.get("NO_COLOR") and \
                os.environ.get("TERM") != "dumb"
        return cls(unicode=unicode, color=color)

    def text(self, value):
        """User text made safe to print: control characters escaped; outside Unicode
        mode, non-ASCII characters shown as ``?`` (the stream could not encode them)."""
        text = _safe(value)
        if not self.unicode and not text.isascii():
            text = text.encode("ascii", "replace").decode("ascii")
        return text

    def paint(self, text, code):
        if not self.color or not text:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"

    def service_color(self, service):
        if service not in self._services:
            self._services[service] = _PALETTE[len(self._services) % len(_PALETTE)]
        return self._services[service]


def _bar_columns(span, start, total, columns):
    """[first, last) columns of a span's bar: never empty, inside [0, columns]."""
    first = int((span.start_ns - start) * columns // total)
    first = min(max(first, 0), columns - 1)
    last = -(-(span.end_ns - start) * columns // total)          # ceiling
    last = min(max(last, first + 1), columns)
    return first, last


# tags that say what went wrong come first on an error's line; the ones every span of
# its kind carries (and the HTML view shows) are left out
_ERROR_TAGS = ("http.status_code", "rpc.grpc.status_code", "grpc.status_code", "error.kind",
               "error.message", "sampling.priority")
_ROUTINE_TAGS = ("error", "span.kind", "component", "http.method", "http.url", "rpc.system",
                 "rpc.service", "rpc.method", "peer.ipv4", "peer.ipv6", "peer.port",
                 "peer.hostname", "peer.service")


def _error_detail(span):
    """(message, ["key=value", ...]) for the line under an error's row."""
    message = error_message(span)
    tags = span.tags or {}
    shown = [f"{key}={tags[key]}" for key in _ERROR_TAGS if key in tags]
    shown.extend(f"{key}={value}" for key, value in tags.items()
                 if key not in _ERROR_TAGS and key not in _ROUTINE_TAGS)
    return message, shown


def render_waterfall(spans, width=None, style=None, color=False, unicode=True):
    """The waterfall of one trace's spans as a string (one line per row, ending "\\n").

    Args:
        spans: FinishedSpan records of one trace.
        width: total line width (default: the terminal's, else 100); at least 40.
        style: a `Style`; default ``Style(unicode, color)``.
    """
    if style is None:
        style = Style(unicode=unicode, color=color)
    if not spans:
        return "(no spans)\n"
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    width = max(40, int(width))
    start = min(s.start_ns for s in spans)
    end = max(max(s.end_ns, s.start_ns) for s in spans)
    total = max(end - start, 1)
    rows = tree_order(spans)

    services = []
    for s in spans:
        if s.service_name not in services:
            services.append(s.service_name)
    errors = sum(1 for s in spans if has_error(s))

    def label(span, depth, orphan):
        mark = style.follows_mark if is_follows_from(span) else ""
        if orphan:
            mark = style.orphan_mark + mark
        return "  " * depth + mark + style.text(span.operation_name)

    dur_width = max(_width(format_duration(s.duration_ns, style.unicode)) for s in spans)
    service_width = min(24, max([_width(style.text(s.service_name)) for s in spans]
                             + [_width(_Header.service_name)]))
    op_width = max(_width(label(s, d, o)) for s, d, o in rows)
    # bars get at least half the line; labels give way (and are cut with an ellipsis)
    fixed = service_width + 2 + 2 + 2 + dur_width + 2 + (len("error") + 2)
    op_width = max(12, min(op_width, 56, width - fixed - max(20, (width - fixed) // 2)))
    columns = max(10, width - fixed - op_width)
    bar_at = service_width + 2 + op_width + 2

    sep = f" {style.sep} "
    head = [f"trace {spans[0].trace_id:032x}", f"{len(spans)} span" +
            ("s" if len(spans) != 1 else ""), format_duration(total, style.unicode),
            ", ".join(style.text(s) for s in services)]
    if errors:
        head.append(style.paint(f"{errors} error" + ("s" if errors != 1 else ""), "31"))
    orphans = sum(1 for _s, _d, o in rows if o)
    if orphans:
        head.append(f"{orphans} with parent not in file ({style.orphan_mark.strip()})")
    lines = [style.paint(sep.join(head[:1]), "1") + sep + sep.join(head[1:])]

    # the time axis: labels, then a rule with a tick under the start of each label
    step = _nice_step(total, columns, 10)
    ticks = []
    t = 0
    while t <= total:
        ticks.append((t, int(t * columns // total)))
        t += step
    label_line = [" "] * (columns + 12)
    rule = [style.rule] * (columns + 1)      # one more: a tick at the very end
    free_from = 0
    for t, col in ticks:
        rule[col] = style.tick
        text = _tick_label(t, step, style.unicode)
        if col >= free_from and col + len(text) <= columns + 12:
            label_line[col:col + len(text)] = text
            free_from = col + len(text) + 2
    header_left = _fit(_Header.service_name, service_width, style.ellipsis) + "  " + \
        _fit("operation", op_width, style.ellipsis) + "  "
    lines.append(style.paint(header_left + "".join(label_line).rstrip(), "2"))
    lines.append(style.paint(" " * bar_at + "".join(rule) + "> time", "2"))

    for span, depth, orphan in rows:
        first, last = _bar_columns(span, start, total, columns)
        glyph = style.follows_bar if is_follows_from(span) else style.bar
        color = style.service_color(span.service_name)
        failed = has_error(span)
        bar = (" " * first + style.paint(glyph * (last - first), "31" if failed else color)
               + " " * (columns - last))
        service = style.paint(_fit(style.text(span.service_name), service_width, style.ellipsis),
                              color)
        name = _fit(label(span, depth, orphan), op_width, style.ellipsis)
        duration = format_duration(span.duration_ns, style.unicode)
        line = f"{service}  {name}  {bar}  {duration:>{dur_width}}"
        if failed:
            line += "  " + style.paint(f"{style.error_mark} error", "31;1")
        lines.append(line.rstrip())
        if failed:
            message, tags = _error_detail(span)
            indent = " " * (service_width + 2 + min(2 * depth + 2, op_width))
            room = max(20, width - len(indent) - 2)
            text = style.text(message or "error")
            if tags:
                text += f" {style.sep} " + " ".join(style.text(t) for t in tags)
            lines.append(indent + style.paint(
                _fit(f"{style.error_mark} {text}", room, style.ellipsis).rstrip(), "31"))
    return "\n".join(lines) + "\n"


class _Header:
    """The column titles, measured like a span."""
    service_name = "service"


def render_traces(spans, width=None, style=None, trace_ids=None):
    """Every trace in `spans` (optionally only those whose id starts with one of
    `trace_ids`), each as a waterfall, separated by blank lines."""
    traces = filter_traces(group_traces(spans), trace_ids)
    return "\n".join(render_waterfall(t, width=width, style=style) for t in traces.values())

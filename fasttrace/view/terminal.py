# SPDX-License-Identifier: Apache-2.0
"""Traces as a waterfall in the terminal (see `fasttrace.viewer` for the picture)."""
import codecs
import io
import math
import shutil
import sys
import unicodedata

from fasttrace.view.model import (as_text, decision, error_message, filter_traces,
                                  format_duration, group_traces, has_error, is_follows_from,
                                  kept_summary, tick_label, tree_order)

__all__ = ["Style", "render_traces", "render_waterfall", "stream_supports_unicode"]


def _safe(text):
    """`text` with control and format characters shown as escapes (never sent raw)."""
    text = as_text(text)
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
_ROUTINE_TAGS = ("error", "sampling.decision", "span.kind", "component", "http.method",
                 "http.url", "rpc.system", "rpc.service", "rpc.method", "peer.ipv4",
                 "peer.ipv6", "peer.port", "peer.hostname", "peer.service")


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
    kept = kept_summary(spans)
    # the decision column: "[error]" after the duration, on the rows that carry one
    marks = {s.span_id: f"[{style.text(d)}]" for s in spans
             if (d := decision(s)) is not None}
    mark_width = max(map(_width, marks.values()), default=0)

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
    fixed = service_width + 2 + 2 + 2 + dur_width + 2 + (len("error") + 2) + \
        (mark_width + 2 if marks else 0)
    op_width = max(12, min(op_width, 56, width - fixed - max(20, (width - fixed) // 2)))
    columns = max(10, width - fixed - op_width)
    bar_at = service_width + 2 + op_width + 2

    sep = f" {style.sep} "
    head = [f"trace {spans[0].trace_id:032x}", f"{len(spans)} span" +
            ("s" if len(spans) != 1 else ""), format_duration(total, style.unicode),
            ", ".join(style.text(s) for s in services)]
    if kept is not None:
        head.append(style.paint(f"kept: {style.text(kept)}", "1"))
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
        text = tick_label(t, step, style.unicode)
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
        if marks:
            mark = marks.get(span.span_id, "")
            line += "  " + style.paint(mark, "2") + " " * (mark_width - _width(mark))
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

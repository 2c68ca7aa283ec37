# SPDX-License-Identifier: Apache-2.0
"""Traces as a self-contained HTML waterfall (``python -m fasttrace view FILE --html OUT``).

One file, no network: CSS and the few lines of script are inline, and a
Content-Security-Policy forbids loading anything else.  Every span is a ``<details>``
row: its bar is positioned on the trace's time axis; hovering shows a summary with its
tags, clicking opens its ids, tags and logs.  The page works without script (the
script only adds "expand all" and a filter box).

Span names, tags and logs come from requests, so every piece of text goes through
`html.escape` (quotes included); numbers in ``style`` attributes are computed here.
"""
import html
import json

from fasttrace.view.model import (as_text, decision, error_message, format_duration,
                                  group_traces, has_error, is_follows_from, kept_summary,
                                  tick_label, tree_order)

__all__ = ["render_html"]

_CSS = """
:root { --row: 22px; --label: 34%; font-family: system-ui, -apple-system, "Segoe UI",
  Roboto, sans-serif; font-size: 13px; color: #1d232b; background: #fff; }
body { margin: 16px 24px; }
h1 { font-size: 18px; margin: 0 0 4px; }
.meta { color: #5b6570; margin: 0 0 12px; }
.tools { margin: 0 0 12px; display: flex; gap: 8px; align-items: center; }
.tools input { font: inherit; padding: 2px 6px; width: 22em; }
.tools button { font: inherit; }
section.trace { border: 1px solid #d7dde3; border-radius: 6px; margin: 0 0 18px;
  padding: 8px 10px 10px; }
section.trace h2 { font-size: 14px; font-weight: 600; margin: 0 0 6px; }
section.trace h2 code { font-size: 12px; }
.err-count { color: #c0392b; }
.kept { color: #1e6b3a; }
.decision { margin-left: 6px; padding: 0 5px; border-radius: 8px; font-size: 11px;
  background: #e3f1e8; color: #1e6b3a; }
.axis, summary { display: grid; grid-template-columns: var(--label) 1fr 7em;
  align-items: center; column-gap: 8px; }
.axis { color: #5b6570; font-size: 11px; height: 18px; border-bottom: 1px solid #d7dde3; }
.axis .lane { position: relative; height: 18px; }
.axis .tick { position: absolute; top: 2px; border-left: 1px solid #b7c0c8;
  padding-left: 3px; height: 14px; white-space: nowrap; }
details.span { border-bottom: 1px solid #f0f2f4; }
summary { list-style: none; cursor: pointer; min-height: var(--row); }
summary::-webkit-details-marker { display: none; }
summary:hover { background: #f3f6f9; }
.label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.svc { font-weight: 600; margin-right: 6px; }
.op { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.lane { position: relative; height: 14px; background: #f7f9fb; }
.bar { position: absolute; top: 1px; height: 12px; min-width: 2px; border-radius: 2px; }
.follows .bar { background-image: repeating-linear-gradient(45deg, rgba(255,255,255,.55) 0
  3px, transparent 3px 6px); }
.follows .op::before { content: "\\21e2  "; color: #5b6570; }
.error .bar { outline: 2px solid #c0392b; }
.error .op { color: #c0392b; }
.dur { text-align: right; font-variant-numeric: tabular-nums; color: #3b4550; }
.errmsg { color: #c0392b; font-size: 12px; }
.detail { margin: 4px 0 8px calc(var(--label) * 0.25); padding: 6px 10px;
  background: #f7f9fb; border-left: 3px solid #b7c0c8; }
.detail table { border-collapse: collapse; margin: 2px 0 6px; }
.detail th, .detail td { text-align: left; vertical-align: top; padding: 1px 10px 1px 0;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.detail th { color: #5b6570; font-weight: normal; }
.detail h4 { margin: 6px 0 2px; font-size: 12px; color: #5b6570; }
.detail pre { margin: 0; white-space: pre-wrap; }
.legend { color: #5b6570; font-size: 12px; }
.hidden { display: none; }
"""

_SCRIPT = """
(function () {
  var all = function () { return document.querySelectorAll("details.span"); };
  document.getElementById("expand").onclick = function () {
    all().forEach(function (d) { d.open = true; }); };
  document.getElementById("collapse").onclick = function () {
    all().forEach(function (d) { d.open = false; }); };
  document.getElementById("filter").oninput = function (e) {
    var q = e.target.value.toLowerCase();
    document.querySelectorAll("section.trace").forEach(function (s) {
      var hit = !q || s.textContent.toLowerCase().indexOf(q) >= 0;
      s.classList.toggle("hidden", !hit);
    });
  };
})();
"""

_COLORS = ("#2b7bb9", "#d98b1f", "#8e44ad", "#27ae60", "#16a5a5", "#c2588a", "#6d7f3a",
           "#5a6bd1", "#b5651d", "#3c8d5e")


def _e(value):
    return html.escape(as_text(value), quote=True)


def _value(value):
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=as_text)
    except (TypeError, ValueError):
        return as_text(value)


def _pct(x):
    return f"{max(0.0, min(100.0, x)):.3f}%"


def _nice_step(total):
    target = total / 6
    exp = 1
    while exp * 10 <= target:
        exp *= 10
    for mult in (1, 2, 5, 10):
        if mult * exp >= target:
            return mult * exp
    return 10 * exp  # pragma: no cover


def _table(rows, cls):
    if not rows:
        return ""
    body = "".join(f"<tr><th>{_e(k)}</th><td><pre>{_e(_value(v))}</pre></td></tr>"
                   for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def _span_html(span, depth, orphan, start, total, color):
    offset = span.start_ns - start
    left = offset / total * 100
    width = max(span.duration_ns / total * 100, 0.0)
    classes = ["span"]
    if has_error(span):
        classes.append("error")
    if is_follows_from(span):
        classes.append("follows")
    if orphan:
        classes.append("orphan")
    kept = decision(span)
    if kept is not None:
        classes.append("kept")
    duration = format_duration(span.duration_ns)
    tip = [span.operation_name, f"{span.service_name} · {duration} · starts at "
           f"+{format_duration(offset)}"]
    message = error_message(span) if has_error(span) else None
    if message:
        tip.append(f"error: {message}")
    if kept is not None:
        tip.append(f"kept by tail sampling: {kept}")
    tip.extend(f"{k} = {_value(v)}" for k, v in (span.tags or {}).items())
    if span.logs:
        tip.append(f"{len(span.logs)} log" + ("s" if len(span.logs) != 1 else "")
                   + " (click)")
    ids = [("span_id", f"{span.span_id:016x}"),
           ("parent_id", "-" if span.parent_id is None else f"{span.parent_id:016x}"
            + (" (not in this file)" if orphan else "")),
           ("start", f"+{format_duration(offset)}"), ("duration", duration)]
    for kind, trace_id, span_id in span.references or ():
        ids.append((f"reference {kind}", f"{trace_id:032x}/{span_id:016x}"))
    logs = ""
    if span.logs:
        parts = []
        for ts, fields in span.logs:
            rel = format_duration(ts - span.start_ns) if ts >= span.start_ns else \
                "-" + format_duration(span.start_ns - ts)
            items = fields.items() if isinstance(fields, dict) else [("", fields)]
            parts.append(f"<h4>log at +{_e(rel)}</h4>{_table(items, 'log')}")
        logs = "".join(parts)
    errline = (f'<div class="errmsg">{_e(message)}</div>' if message else "")
    badge = (f'<span class="decision" title="sampling.decision: why tail sampling kept '
             f'this trace">{_e(kept)}</span>' if kept is not None else "")
    data_decision = f' data-decision="{_e(kept)}"' if kept is not None else ""
    return (
        f'<details class="{" ".join(classes)}" data-span-id="{span.span_id:016x}" '
        f'data-parent-id="{"" if span.parent_id is None else f"{span.parent_id:016x}"}" '
        f'data-service="{_e(span.service_name)}" data-depth="{depth}" '
        f'data-start-ns="{offset}" data-duration-ns="{span.duration_ns}"{data_decision}>'
        f'<summary title="{_e(chr(10).join(tip))}">'
        f'<span class="label" style="padding-left:{depth * 1.2:.1f}em">'
        f'<span class="svc" style="color:{color}">{_e(span.service_name)}</span>'
        f'<span class="op">{_e(span.operation_name)}</span>{badge}</span>'
        f'<span class="lane"><span class="bar" style="left:{_pct(left)};'
        f'width:{_pct(width)};background-color:{color}"></span></span>'
        f'<span class="dur">{_e(duration)}</span></summary>'
        f'<div class="detail">{errline}{_table(ids, "ids")}'
        f'<h4>tags</h4>{_table(list((span.tags or {}).items()), "tags") or "<p>none</p>"}'
        f'{logs}</div></details>')


def _trace_html(spans, colors):
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    total = max(end - start, 1)
    services = []
    for s in spans:
        if s.service_name not in services:
            services.append(s.service_name)
        if s.service_name not in colors:
            colors[s.service_name] = _COLORS[len(colors) % len(_COLORS)]
    errors = sum(1 for s in spans if has_error(s))
    trace_hex = f"{spans[0].trace_id:032x}"
    head = (f'<h2>trace <code>{trace_hex}</code> · {len(spans)} span'
            f'{"s" if len(spans) != 1 else ""} · {_e(format_duration(total))} · '
            f'{_e(", ".join(services))}')
    kept = kept_summary(spans)
    if kept is not None:
        head += f' · <span class="kept">kept: {_e(kept)}</span>'
    if errors:
        head += f' · <span class="err-count">{errors} error{"s" if errors != 1 else ""}</span>'
    head += "</h2>"
    step = _nice_step(total)
    ticks = []
    t = 0
    while t <= total:
        ticks.append(f'<span class="tick" style="left:{_pct(t / total * 100)}">'
                     f'{_e(tick_label(t, step, True))}</span>')
        t += step
    axis = (f'<div class="axis"><span>service · operation</span>'
            f'<span class="lane">{"".join(ticks)}</span><span class="dur">duration</span></div>')
    rows = "".join(_span_html(s, d, o, start, total, colors[s.service_name])
                   for s, d, o in tree_order(spans))
    kept_attr = "" if kept is None else f' data-kept="{_e(kept)}"'
    return (f'<section class="trace" id="trace-{trace_hex}" data-trace-id="{trace_hex}"'
            f'{kept_attr}>'
            f'{head}{axis}{rows}</section>')


def render_html(spans, title="fasttrace traces", source=None):
    """A complete HTML document showing every trace in `spans` as a waterfall."""
    traces = group_traces(spans)
    colors = {}
    sections = "".join(_trace_html(t, colors) for t in traces.values())
    count = sum(len(t) for t in traces.values())
    meta = f"{len(traces)} trace{'s' if len(traces) != 1 else ''}, {count} span" \
           f"{'s' if count != 1 else ''}"
    if source:
        meta += f" from {source}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        'style-src \'unsafe-inline\'; script-src \'unsafe-inline\'">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><style>{_CSS}</style></head><body>'
        f'<h1>{_e(title)}</h1><p class="meta">{_e(meta)}</p>'
        '<div class="tools"><button type="button" id="expand">expand all</button>'
        '<button type="button" id="collapse">collapse all</button>'
        '<input id="filter" type="search" placeholder="filter traces (id, service, '
        'operation, tag)"></div>'
        '<p class="legend">Click a span for its ids, tags and logs; hover for a summary. '
        '\u21e2 and a striped bar: follows_from; red: error; a green badge: why tail '
        'sampling kept the trace (sampling.decision).</p>'
        f'{sections or "<p>no spans</p>"}'
        f'<script>{_SCRIPT}</script></body></html>\n')

# SPDX-License-Identifier: Apache-2.0
"""`python -m fasttrace view`: waterfalls of JSON-lines files, read back and checked.

The files are written by a real tracer through BatchReporter + JsonLinesExporter, with
explicit start and finish times, so the expected tree, indentation and bar columns are
known; the printed waterfall is parsed (`parse_waterfall`, tests/support/waterfall.py).
"""
import html.parser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import opentracing
import pytest

import fasttrace
from fasttrace.__main__ import main
from fasttrace.exporters.jsonl import JsonLinesExporter
from fasttrace.viewer import (Style, error_message, format_duration, load_jsonl,
                              render_waterfall, tree_order)

from support.waterfall import parse_waterfall

ROOT = Path(fasttrace.__file__).resolve().parent.parent
T0 = 1_700_000_000.0          # seconds; every span below is at T0 + some milliseconds
MS = 1_000_000


# -- files written by a real tracer -----------------------------------------------------

def _at(ms):
    return T0 + ms / 1000


def write_checkout_trace(path, failing=True, tail=None):
    """One trace with known nesting and timing (ms from T0), and a second small one:

        gateway    GET /checkout          0 .. 100
        gateway      HTTP GET            10 .. 40
        inventory      GET /stock/{sku}  12 .. 38
        inventory        db.query        20 .. 30
        gateway      Reserve             50 .. 90   (error when failing)
        inventory      Reserve           55 .. 85   (KeyError logged when failing)
        gateway      ⇢ publish           95 .. 100  (follows_from GET /checkout)
        cron       tick                1000 .. 1005 (another trace)

    The inventory's spans are children of the gateway's contexts, as across the wire.
    tail: {service: fasttrace.TailSampling}: those services' tracers tail-sample, with
    the head sampler off.
    Returns {name: span} for the first trace's spans (server Reserve as "Reserve/server")."""
    reporter = fasttrace.BatchReporter(JsonLinesExporter(path), flush_interval=60)
    tail = tail or {}

    def tracer(service):
        if service not in tail:
            return fasttrace.Tracer(service, reporter=reporter)
        return fasttrace.Tracer(service, reporter=reporter, tail_sampling=tail[service],
                                sampler=fasttrace.ConstSampler(False))
    gw, inv, cron = tracer("gateway"), tracer("inventory"), tracer("cron")
    spans = {}

    def start(tracer, name, ms, parent=None, refs=None, **tags):
        span = tracer.start_span(name, child_of=parent, references=refs, start_time=_at(ms),
                                 tags=tags or None, ignore_active_span=True)
        spans.setdefault(name, span)
        return span

    root = start(gw, "GET /checkout", 0, **{"span.kind": "server", "http.method": "GET"})
    get = start(gw, "HTTP GET", 10, root, **{"span.kind": "client"})
    stock = start(inv, "GET /stock/{sku}", 12, get.context, **{"span.kind": "server"})
    query = start(inv, "db.query", 20, stock, **{"db.statement": "SELECT 1"})
    query.finish(_at(30))
    stock.finish(_at(38))
    get.finish(_at(40))
    call = start(gw, "Reserve", 50, root, **{"span.kind": "client"})
    served = start(inv, "Reserve", 55, call.context, **{"span.kind": "server"})
    spans["Reserve/server"] = served
    if failing:
        served.set_tag("error", True)
        served.set_tag("rpc.grpc.status_code", 5)
        served.log_kv({"event": "error", "error.kind": "KeyError",
                       "message": "'durian' is not in stock", "stack": "Traceback ..."},
                      timestamp=_at(80))
        call.set_tag("error", True)
        call.log_kv({"event": "error", "message": "NOT_FOUND: 'durian'"}, timestamp=_at(89))
    served.finish(_at(85))
    call.finish(_at(90))
    root.finish(_at(100))
    publish = start(gw, "publish", 95, refs=[opentracing.follows_from(root.context)])
    publish.finish(_at(100))
    tick = start(cron, "tick", 1000)
    tick.finish(_at(1005))
    for tracer in (gw, inv, cron):
        assert tracer.flush(5)
    reporter.close(5)
    return spans


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "spans.jsonl"
    spans = write_checkout_trace(path)
    return path, spans


def run_view(capsys, *args):
    code = main(["view", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


EXPECTED_ORDER = [  # (service, depth, op, follows, start ms, end ms)
    ("gateway", 0, "GET /checkout", False, 0, 100),
    ("gateway", 1, "HTTP GET", False, 10, 40),
    ("inventory", 2, "GET /stock/{sku}", False, 12, 38),
    ("inventory", 3, "db.query", False, 20, 30),
    ("gateway", 1, "Reserve", False, 50, 90),
    ("inventory", 2, "Reserve", False, 55, 85),
    ("gateway", 1, "publish", True, 95, 100),
]


# -- the terminal waterfall ---------------------------------------------------------------

def test_rows_in_tree_order_with_indentation_and_bars(trace_file, capsys):
    path, spans = trace_file
    code, out, err = run_view(capsys, path, "--width", 120, "--no-color")
    assert code == 0 and err == ""
    traces = parse_waterfall(out)
    assert [t["trace_id"] for t in traces] == [f"{spans['GET /checkout'].trace_id:032x}",
                                              f"{spans['tick'].trace_id:032x}"]
    trace = traces[0]
    rows = trace["rows"]
    assert [(r["service"], r["depth"], r["op"], r["follows"]) for r in rows] == \
        [e[:4] for e in EXPECTED_ORDER]
    assert "7 spans" in trace["header"] and "100.00 ms" in trace["header"]
    assert "gateway, inventory" in trace["header"] and "2 errors" in trace["header"]
    columns = trace["columns"]
    assert 40 <= columns < 120
    for row, (_s, _d, _o, follows, start_ms, end_ms) in zip(rows, EXPECTED_ORDER):
        # bars are scaled to the trace: 100 ms over `columns` columns (±1 for rounding)
        assert abs(row["first"] - start_ms * columns / 100) <= 1, row
        assert abs(row["last"] - end_ms * columns / 100) <= 1, row
        assert row["glyph"] == ("░" if follows else "█")
        assert row["duration_ns"] == pytest.approx((end_ms - start_ms) * MS, rel=0.01)
    # the root spans the whole axis; children never start before their parent
    assert rows[0]["first"] == 0 and rows[0]["last"] == columns
    for parent, child in [(0, 1), (1, 2), (2, 3), (0, 4), (4, 5)]:
        assert rows[parent]["first"] <= rows[child]["first"]
        assert rows[child]["last"] <= rows[parent]["last"]
    # start order is bar order
    assert [r["first"] for r in rows[1:4]] == sorted(r["first"] for r in rows[1:4])
    assert rows[1]["last"] <= rows[4]["first"] <= rows[6]["first"]
    # every line fits the width
    assert max(len(line) for line in out.splitlines()) <= 120


def test_time_axis_ticks_are_labelled_in_time(trace_file, capsys):
    path, _ = trace_file
    _, out, _ = run_view(capsys, path, "--width", 100)
    trace = parse_waterfall(out)[0]
    rule, labels, at = trace["rule"], trace["labels"], trace["bar_at"]
    ticks = [k - at for k, ch in enumerate(rule) if ch == "┬"]
    assert ticks[0] == 0 and len(ticks) >= 3
    steps = {b - a for a, b in zip(ticks, ticks[1:])}
    assert max(steps) - min(steps) <= 1                    # evenly spaced
    assert rule.rstrip().endswith("> time")
    texts = labels[at:].split()
    assert texts[0] == "0" and "ms" in texts
    # a label's number sits on its tick: value / 100 ms * columns
    for match in re.finditer(r"(\d+(?:\.\d+)?) ms", labels):
        column = match.start() - at
        assert abs(column - float(match.group(1)) / 100 * trace["columns"]) <= 1


def test_errors_show_message_from_logs_and_tags(trace_file, capsys):
    path, _ = trace_file
    _, out, _ = run_view(capsys, path, "--width", 140)
    rows = parse_waterfall(out)[0]["rows"]
    failed = {(r["service"], r["op"]): r for r in rows if r["error"]}
    assert set(failed) == {("gateway", "Reserve"), ("inventory", "Reserve")}
    server = failed[("inventory", "Reserve")]
    assert server["detail"].startswith("✗ KeyError: 'durian' is not in stock")
    assert "rpc.grpc.status_code=5" in server["detail"]
    assert "span.kind" not in server["detail"]             # routine tags left out
    assert failed[("gateway", "Reserve")]["detail"].startswith("✗ NOT_FOUND: 'durian'")
    assert all(r["detail"] is None for r in rows if not r["error"])


def test_filter_by_trace_id_prefix(trace_file, capsys):
    path, spans = trace_file
    wanted = f"{spans['tick'].trace_id:032x}"
    code, out, _ = run_view(capsys, path, "--trace", wanted[:6].upper())
    assert code == 0
    traces = parse_waterfall(out)
    assert [t["trace_id"] for t in traces] == [wanted]
    assert [r["op"] for r in traces[0]["rows"]] == ["tick"]
    # several --trace options: the union, in the file's order
    other = f"{spans['GET /checkout'].trace_id:032x}"
    _, out, _ = run_view(capsys, path, "--trace", wanted[:8], "--trace", "0x" + other[:8])
    assert [t["trace_id"] for t in parse_waterfall(out)] == [other, wanted]
    # no match: nothing on stdout, a reason on stderr, exit 1
    absent = next(p for p in ("0", "1", "2", "3") if not wanted.startswith(p)
                  and not other.startswith(p))
    code, out, err = run_view(capsys, path, "--trace", absent * 5)
    assert code == 1 and out == "" and "no trace id" in err and "2 traces" in err


def test_malformed_lines_are_skipped_counted_and_reported(trace_file, capsys):
    path, _ = trace_file
    good = path.read_text(encoding="utf-8").splitlines()
    bad = ["", "   ", "not json at all", "[1, 2, 3]", '{"trace_id": "zz", "span_id": "1", '
           '"operation_name": "x", "start_ns": 1}', '{"span_id": "01"}',
           json.dumps({"trace_id": "ab" * 16, "span_id": "cd" * 8, "operation_name": "x",
                       "start_ns": "yesterday"}),
           good[0][: len(good[0]) // 2]]                    # a torn line
    mixed = good[:3] + bad + good[3:]
    path.write_text("\n".join(mixed) + "\n", encoding="utf-8")
    code, out, err = run_view(capsys, path, "--width", 120)
    assert code == 0
    assert "skipped 6 malformed lines" in err               # blank lines are not malformed
    assert "line 6: not JSON" in err and "(and 3 more)" in err
    traces = parse_waterfall(out)
    assert [len(t["rows"]) for t in traces] == [7, 1]      # every good span still shown
    result = load_jsonl(path)
    assert len(result.spans) == 8 and len(result.skipped) == 6 and result.blank == 2
    assert [n for n, _ in result.skipped] == [6, 7, 8, 9, 10, 11]


def test_duplicate_lines_count_once_and_missing_parents_are_marked(tmp_path, capsys):
    path = tmp_path / "partial.jsonl"
    spans = write_checkout_trace(path)
    lines = path.read_text().splitlines()
    root_id = f"{spans['GET /checkout'].span_id:016x}"
    kept = [line for line in lines if json.loads(line)["span_id"] != root_id]
    path.write_text("\n".join(kept + kept[:2]) + "\n")    # root lost, two lines doubled
    _, out, err = run_view(capsys, path, "--width", 120)
    assert err == ""
    trace = parse_waterfall(out)[0]
    assert "3 with parent not in file" in trace["header"]
    tops = [r for r in trace["rows"] if r["depth"] == 0]
    assert [r["op"] for r in tops] == ["↑ HTTP GET", "↑ Reserve", "↑ ⇢ publish"]
    assert len(trace["rows"]) == 6


def test_escapes_control_characters_in_names(tmp_path, capsys):
    path = tmp_path / "evil.jsonl"
    tracer = fasttrace.Tracer("svc\x1b[2J", reporter=fasttrace.BatchReporter(
        JsonLinesExporter(path), flush_interval=60))
    tracer.start_span("GET /\x1b]0;pwned\x07x\nnext", tags={"error": True}).finish()
    tracer.close(5)
    _, out, _ = run_view(capsys, path, "--width", 120)
    assert "\x1b" not in out and "\x07" not in out
    assert "GET /\\x1b]0;pwned\\x07x\\x0anext" in out
    assert "svc\\x1b[2J" in out


def test_wide_characters_keep_the_columns(tmp_path, capsys):
    path = tmp_path / "cjk.jsonl"
    reporter = fasttrace.BatchReporter(JsonLinesExporter(path), flush_interval=60)
    tracer = fasttrace.Tracer("网关", reporter=reporter)
    root = tracer.start_span("结账", start_time=_at(0))
    tracer.start_span("查询库存", child_of=root, start_time=_at(10)).finish(_at(20))
    root.finish(_at(40))
    tracer.close(5)
    _, out, _ = run_view(capsys, path, "--width", 80, "--no-color")
    import unicodedata

    def width(s):
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)
    rule = next(line for line in out.splitlines() if "┬" in line)
    bar_at = rule.index("┬")
    columns = len(rule.rstrip()) - bar_at - len("> time") - 1
    rows = [line for line in out.splitlines() if "█" in line]
    assert len(rows) == 2 and "结账" in rows[0] and "  查询库存" in rows[1]
    # in display columns (a CJK character takes two), bars start where the axis says
    assert width(rows[0][:rows[0].index("█")]) == bar_at
    assert width(rows[1][:rows[1].index("█")]) == bar_at + columns // 4
    assert all(width(line) <= 80 for line in out.splitlines())


def test_ascii_fallback_when_stdout_is_not_utf8(trace_file):
    path, _ = trace_file
    env = dict(os.environ, PYTHONIOENCODING="ascii", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "fasttrace", "view", str(path),
                           "--width", "110"], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode("ascii")                      # strictly ASCII
    traces = parse_waterfall(out, unicode=False)
    rows = traces[0]["rows"]
    assert [r["op"] for r in rows] == [e[2] for e in EXPECTED_ORDER]
    assert rows[-1]["follows"] and rows[-1]["glyph"] == "=" and rows[0]["glyph"] == "#"
    assert "+---" in traces[0]["rule"]
    assert [r["error"] for r in rows].count(True) == 2
    assert "\x1b[" not in out                               # a pipe: no color


def test_color_only_on_a_terminal_and_not_with_no_color(trace_file):
    path, recorded = trace_file
    spans = load_jsonl(path).spans
    first_trace = [s for s in spans if s.trace_id == recorded["GET /checkout"].trace_id]

    class Tty:
        encoding = "utf-8"

        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    assert Style.for_stream(Tty(True)).color
    assert not Style.for_stream(Tty(False)).color
    assert not Style.for_stream(Tty(True), color=False).color
    colored = render_waterfall(first_trace, width=100, style=Style.for_stream(Tty(True)))
    assert "\x1b[31" in colored                             # errors in red
    plain = render_waterfall(first_trace, width=100, style=Style.for_stream(Tty(False)))
    assert "\x1b" not in plain
    # the colors change nothing else
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == plain


def test_tree_order_survives_a_parent_cycle():
    a = fasttrace.FinishedSpan(1, 10, 11, "a", "s", 0, 5, {}, [], [])
    b = fasttrace.FinishedSpan(1, 11, 10, "b", "s", 1, 4, {}, [], [])
    c = fasttrace.FinishedSpan(1, 12, None, "c", "s", 2, 3, {}, [], [])
    ordered = tree_order([a, b, c])
    assert sorted(s.operation_name for s, _d, _o in ordered) == ["a", "b", "c"]


def test_error_message_sources():
    def span(tags, logs=()):
        return fasttrace.FinishedSpan(1, 2, None, "x", "s", 0, 1, tags, list(logs), [])
    assert error_message(span({})) is None
    assert error_message(span({"error": True})) == "error"
    assert error_message(span({"error": True, "http.status_code": 503})) == \
        "http.status_code=503"
    assert error_message(span({"error": True}, [(0, {"event": "error", "error.kind":
                                                     "<class 'ValueError'>",
                                                     "error.object": "bad"})])) == \
        "ValueError: bad"
    assert error_message(span({"error": True}, [(0, {"event": "error",
                                                     "message": "HTTP 502"})])) == "HTTP 502"


def test_format_duration():
    assert format_duration(999) == "999 ns"
    assert format_duration(12_345) == "12.3 µs"
    assert format_duration(12_345, unicode=False) == "12.3 us"
    assert format_duration(12_400_000) == "12.40 ms"
    assert format_duration(1_234_000_000) == "1.234 s"


def test_unreadable_file(tmp_path, capsys):
    code, out, err = run_view(capsys, tmp_path / "nope.jsonl")
    assert code == 1 and out == "" and "cannot read" in err


def test_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    code, out, err = run_view(capsys, path)
    assert code == 0 and out == "" and "no spans" in err


# -- HTML -----------------------------------------------------------------------------------

class _Page(html.parser.HTMLParser):
    """What the HTML contains: tags with their attributes, and text per span row."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []                 # (tag, attrs dict)
        self.spans = {}                # span id -> {"attrs", "text", "title"}
        self.sections = []
        self.scripts = []
        self._span = None
        self._in_script = False
        self.text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "details" and "span" in (attrs.get("class") or "").split():
            self._span = attrs["data-span-id"]
            self.spans[self._span] = {"attrs": attrs, "text": [], "title": None,
                                      "bars": []}
        elif tag == "summary" and self._span:
            self.spans[self._span]["title"] = attrs.get("title")
        elif tag == "span" and self._span and attrs.get("class") == "bar":
            self.spans[self._span]["bars"].append(attrs["style"])
        elif tag == "section":
            self.sections.append(attrs)
        elif tag == "script":
            self._in_script = True
            self.scripts.append(attrs)

    def handle_endtag(self, tag):
        if tag == "details":
            self._span = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            return
        self.text.append(data)
        if self._span:
            self.spans[self._span]["text"].append(data)


def _parse_html(path):
    page = _Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    page.close()
    return page


def _no_external_resources(page):
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "data", "poster", "srcset"):
            assert name not in attrs, (tag, attrs)
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        style = attrs.get("style") or ""
        assert "url(" not in style and "@import" not in style
    assert len(page.scripts) == 1 and not page.scripts[0]    # one inline script


def test_html_every_span_positioned_with_details(trace_file, tmp_path, capsys):
    path, spans = trace_file
    out = tmp_path / "traces.html"
    code, _stdout, err = run_view(capsys, path, "--html", out)
    assert code == 0 and f"wrote 2 traces to {out}" in err
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in text                    # CSP: nothing loads
    page = _parse_html(out)
    _no_external_resources(page)
    records = load_jsonl(path).spans
    assert set(page.spans) == {f"{s.span_id:016x}" for s in records}
    assert [s["data-trace-id"] for s in page.sections] == \
        [f"{spans['GET /checkout'].trace_id:032x}", f"{spans['tick'].trace_id:032x}"]
    start = min(r.start_ns for r in records if r.service_name != "cron")
    for record in records:
        row = page.spans[f"{record.span_id:016x}"]
        body = "".join(row["text"])
        assert record.operation_name in body and record.service_name in body
        for key, value in record.tags.items():
            assert key in body and (str(value).lower() if isinstance(value, bool)
                                    else str(value)) in body
        (bar,) = row["bars"]
        left = float(re.search(r"left:([\d.]+)%", bar).group(1))
        width = float(re.search(r"width:([\d.]+)%", bar).group(1))
        if record.service_name != "cron":
            # the trace lasts 100 ms: one millisecond is one percent
            assert left == pytest.approx((record.start_ns - start) / MS, abs=0.01)
            assert width == pytest.approx(record.duration_ns / MS, abs=0.01)
        else:
            assert (left, width) == (0, 100)
    served = page.spans[f"{spans['Reserve/server'].span_id:016x}"]
    assert "error" in served["attrs"]["class"].split()
    assert "KeyError: 'durian' is not in stock" in served["title"]     # hover
    assert "'durian' is not in stock" in "".join(served["text"])       # click: the log
    assert "Traceback ..." in "".join(served["text"])
    publish = page.spans[f"{spans['publish'].span_id:016x}"]
    assert "follows" in publish["attrs"]["class"].split()
    assert publish["attrs"]["data-parent-id"] == f"{spans['GET /checkout'].span_id:016x}"
    assert publish["attrs"]["data-depth"] == "1"


def test_html_escapes_everything(tmp_path, capsys):
    path = tmp_path / "evil.jsonl"
    evil = '<script>alert("x")</script>'
    attr = '"><img src=x onerror=alert(1)>'
    reporter = fasttrace.BatchReporter(JsonLinesExporter(path), flush_interval=60)
    tracer = fasttrace.Tracer('svc" onmouseover="alert(2)', reporter=reporter)
    span = tracer.start_span(evil, tags={attr: attr, "error": True})
    span.log_kv({"event": "error", "message": "</pre></details><script>alert(3)</script>",
                 "payload": {"html": "<b>bold</b>"}})
    span.finish()
    tracer.close(5)
    out = tmp_path / "evil.html"
    assert main(["view", str(path), "--html", str(out)]) == 0
    capsys.readouterr()
    page = _parse_html(out)
    _no_external_resources(page)
    assert [t for t, _ in page.tags if t in ("img", "b")] == []
    for _tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), attrs
    (row,) = page.spans.values()
    body = "".join(row["text"])
    assert evil in body and attr in body                   # shown as text
    assert "</pre></details><script>alert(3)</script>" in body
    assert '{"html": "<b>bold</b>"}' in body
    assert row["attrs"]["data-service"] == 'svc" onmouseover="alert(2)'
    assert evil in row["title"]


def test_html_with_terminal_filter(trace_file, tmp_path, capsys):
    path, spans = trace_file
    out = tmp_path / "one.html"
    wanted = f"{spans['tick'].trace_id:032x}"
    code, stdout, _ = run_view(capsys, path, "--trace", wanted[:10], "--html", out)
    assert code == 0 and len(parse_waterfall(stdout)) == 1
    page = _parse_html(out)
    assert [s["data-trace-id"] for s in page.sections] == [wanted]
    assert len(page.spans) == 1


# -- tail sampling: why a trace was kept ----------------------------------------------------

def _tail(**policy):
    policy.setdefault("baseline_ratio", 0.0)
    policy.setdefault("keep_head_sampled", False)
    return fasttrace.TailSampling(**policy)


def write_tail_sampled_file(path):
    """Through two tail-sampling tracers (head sampler off, no baseline): a request whose
    database call fails deep in the inventory (kept, as "error", by both services), and
    a request that succeeds (discarded by both: not in the file).

        gateway    GET /checkout          0 .. 50   (error: 502)
        inventory    GET /stock/{sku}    10 .. 40   (under the extracted context)
        inventory      db.query          15 .. 35   (error=True)

    Returns (failing trace id, succeeding trace id)."""
    reporter = fasttrace.BatchReporter(JsonLinesExporter(path), flush_interval=60)
    gw = fasttrace.Tracer("gateway", reporter=reporter, sampler=fasttrace.ConstSampler(False),
                          tail_sampling=_tail())
    inv = fasttrace.Tracer("inventory", reporter=reporter,
                           sampler=fasttrace.ConstSampler(False), tail_sampling=_tail())
    ids = []
    for offset, failing in ((0, True), (100, False)):
        root = gw.start_span("GET /checkout", start_time=_at(offset), tags={
            "span.kind": "server"}, ignore_active_span=True)
        headers = {}
        gw.inject(root.context, opentracing.Format.HTTP_HEADERS, headers)
        parent = inv.extract(opentracing.Format.HTTP_HEADERS, headers)
        served = inv.start_span("GET /stock/{sku}", child_of=parent, start_time=_at(offset + 10),
                                tags={"span.kind": "server"}, ignore_active_span=True)
        query = inv.start_span("db.query", child_of=served, start_time=_at(offset + 15),
                               ignore_active_span=True)
        if failing:
            query.set_tag("error", True)
            query.log_kv({"event": "error", "error.kind": "ConnectionResetError",
                          "message": "inventory-db closed the connection"},
                         timestamp=_at(offset + 35))
            served.set_tag("error", True)
            root.set_tag("error", True)
            root.set_tag("http.status_code", 502)
        query.finish(_at(offset + 35))
        served.finish(_at(offset + 40))
        root.finish(_at(offset + 50))
        ids.append(f"{root.trace_id:032x}")
    for tracer in (gw, inv):
        assert tracer.flush(5)
    for tracer in (gw, inv):
        tracer.close(5)
    for tracer in (gw, inv):
        stats = tracer.stats()["tail_sampling"]
        assert stats["kept"]["error"] == 1 and stats["traces_discarded"] == 1
    return tuple(ids)


def test_tail_sampled_trace_says_why_it_was_kept(tmp_path, capsys):
    path = tmp_path / "tail.jsonl"
    failing, _succeeding = write_tail_sampled_file(path)
    records = load_jsonl(path).spans
    assert {f"{s.trace_id:032x}" for s in records} == {failing}     # the other was dropped
    assert {s.tags["sampling.decision"] for s in records} == {"error"}
    code, out, err = run_view(capsys, path, "--width", 120, "--no-color")
    assert code == 0 and err == ""
    (trace,) = parse_waterfall(out)
    assert trace["trace_id"] == failing
    assert " · kept: error · " in trace["header"] and "3 errors" in trace["header"]
    assert [(r["service"], r["depth"], r["op"], r["decision"]) for r in trace["rows"]] == [
        ("gateway", 0, "GET /checkout", "error"), ("inventory", 1, "GET /stock/{sku}", "error"),
        ("inventory", 2, "db.query", "error")]
    assert all(r["error"] for r in trace["rows"])
    # the decision is shown in its column, not again among the error line's tags
    assert all("sampling.decision" not in r["detail"] for r in trace["rows"])
    db = trace["rows"][2]
    assert db["detail"].startswith("✗ ConnectionResetError: inventory-db closed the connection")
    assert max(len(line) for line in out.splitlines()) <= 120
    # ASCII: the same marks
    code, out, _ = run_view(capsys, path, "--width", 80, "--ascii")
    (trace,) = parse_waterfall(out, unicode=False)
    assert " - kept: error - " in trace["header"]
    assert [r["decision"] for r in trace["rows"]] == ["error"] * 3
    # the rows fit (the header line, with its 32-digit id, is never cut)
    assert max(len(line) for line in out.splitlines()[1:]) <= 80


def test_decisions_that_differ_are_named_by_service(tmp_path, capsys):
    """The gateway keeps the failing checkout for its error; the inventory (whose error
    is in its second local root of the trace, after a first one that did not fail)
    keeps it by its baseline; the cron service does not tail-sample: shown as before."""
    path = tmp_path / "mixed.jsonl"
    spans = write_checkout_trace(path, tail={"gateway": _tail(),
                                             "inventory": _tail(baseline_ratio=1.0)})
    code, out, err = run_view(capsys, path, "--width", 140, "--no-color")
    assert code == 0 and err == ""
    checkout, tick = parse_waterfall(out)
    assert checkout["trace_id"] == f"{spans['GET /checkout'].trace_id:032x}"
    assert "kept: error (gateway), baseline (inventory)" in checkout["header"]
    assert [(r["service"], r["op"], r["decision"]) for r in checkout["rows"]] == [
        (service, op, "error" if service == "gateway" else "baseline")
        for service, _d, op, _f, _s, _e in EXPECTED_ORDER]
    # the publish span finished after its local root: it follows the root's decision
    assert checkout["rows"][-1]["follows"] and checkout["rows"][-1]["decision"] == "error"
    assert tick["trace_id"] == f"{spans['tick'].trace_id:032x}"
    assert "kept" not in tick["header"]
    assert [r["decision"] for r in tick["rows"]] == [None]
    assert "[" not in out.splitlines()[-1]                 # no empty decision column


def test_a_file_without_decisions_shows_as_before(trace_file, capsys):
    path, _ = trace_file
    _, out, _ = run_view(capsys, path, "--width", 120, "--no-color")
    assert "kept" not in out and "[" not in out
    assert all(r["decision"] is None for t in parse_waterfall(out) for r in t["rows"])
    page = render_html_of(path)
    assert "data-decision" not in page and "data-kept" not in page
    assert 'class="decision"' not in page


def render_html_of(path):
    from fasttrace.view.html import render_html
    return render_html(load_jsonl(path).spans)


def test_html_shows_why_a_trace_was_kept(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    spans = write_checkout_trace(path, tail={"gateway": _tail(),
                                             "inventory": _tail(baseline_ratio=1.0)})
    out = tmp_path / "mixed.html"
    code, _stdout, _err = run_view(capsys, path, "--html", out)
    assert code == 0
    page = _parse_html(out)
    _no_external_resources(page)
    checkout, tick = page.sections
    assert checkout["data-kept"] == "error (gateway), baseline (inventory)"
    assert "data-kept" not in tick
    headers = out.read_text(encoding="utf-8").split("<h2>")[1:]
    assert '<span class="kept">kept: error (gateway), baseline (inventory)</span>' in headers[0]
    assert "kept:" not in headers[1].split("</h2>")[0]
    for record in load_jsonl(path).spans:
        row = page.spans[f"{record.span_id:016x}"]
        want = record.tags.get("sampling.decision")
        if record.service_name == "cron":
            assert want is None and "data-decision" not in row["attrs"]
            assert "kept" not in row["attrs"]["class"].split()
            continue
        assert want == ("error" if record.service_name == "gateway" else "baseline")
        assert row["attrs"]["data-decision"] == want
        assert "kept" in row["attrs"]["class"].split()
        assert f"kept by tail sampling: {want}" in row["title"]      # hover
        assert want in row["text"]                                   # the badge
    served = page.spans[f"{spans['Reserve/server'].span_id:016x}"]
    assert "error" in served["attrs"]["class"].split()

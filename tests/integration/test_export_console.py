# SPDX-License-Identifier: Apache-2.0
"""ConsoleExporter: one parseable human-readable line per span."""
import io
import re

import fasttrace
from fasttrace.exporters import ConsoleExporter
from fasttrace.reporting import BatchReporter

LINE = re.compile(r"^\[(?P<service>[^\]]*)\] (?P<op>.+?)  trace=(?P<trace>[0-9a-f]{32}) "
                  r"span=(?P<span>[0-9a-f]{16}) parent=(?P<parent>[0-9a-f]{16}|-) "
                  r"(?P<ms>\d+\.\d{3})ms(?:  (?P<tags>.*?))?(?:  logs=(?P<logs>\d+))?$")


def test_lines(capsys):
    stream = io.StringIO()
    tracer = fasttrace.Tracer("shop", reporter=BatchReporter(ConsoleExporter(stream),
                                                             flush_interval=60))
    root = tracer.start_span("GET /", tags={"http.status_code": 200, "msg": "two words"})
    root.log_kv({"event": "x"})
    child = tracer.start_span("db\nquery", child_of=root)
    child.finish()
    root.finish()
    assert tracer.flush(5)
    tracer.close(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    by_op = {m["op"]: m for m in parsed}
    r, c = by_op["GET /"], by_op["db\\nquery"]
    assert r["service"] == "shop" and r["trace"] == f"{root.trace_id:032x}"
    assert r["span"] == f"{root.span_id:016x}" and r["parent"] == "-"
    assert "http.status_code=200" in r["tags"] and "msg='two words'" in r["tags"]
    assert r["logs"] == "1"
    assert c["parent"] == r["span"] and c["trace"] == r["trace"]
    assert float(r["ms"]) >= 0
    assert capsys.readouterr().err == ""          # the given stream, not stderr


def test_defaults_to_current_stderr(capsys):
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(ConsoleExporter(),
                                                            flush_interval=60))
    tracer.start_span("op").finish()
    assert tracer.flush(5)
    tracer.close(1)
    err = capsys.readouterr().err
    assert LINE.match(err.splitlines()[0])["op"] == "op"

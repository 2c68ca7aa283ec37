# SPDX-License-Identifier: Apache-2.0
"""JsonLinesExporter: one strict-JSON object per span per line, appended."""
import json
import math

import opentracing

import fasttrace
from fasttrace.exporters import JsonLinesExporter
from fasttrace.reporting import BatchReporter


def strict_loads(line):
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(line, parse_constant=no_constants)


def read(path):
    return [strict_loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class Unprintable:
    def __str__(self):
        raise RuntimeError("no")


def test_fields(tmp_path):
    path = tmp_path / "spans.jsonl"
    tracer = fasttrace.Tracer("checkout", reporter=BatchReporter(JsonLinesExporter(path),
                                                                 flush_interval=60))
    root = tracer.start_span("GET /cart", tags={"s": "čaj", "b": True, "i": 7, "f": 0.5,
                                                "big": 2**70, "nan": float("nan")})
    root.log_kv({"event": "hit", "obj": object(), "n": 1, "bad": Unprintable()},
                timestamp=1234.5)
    child = tracer.start_span("child", child_of=root)
    link = tracer.start_span("link", references=[opentracing.follows_from(root.context)])
    link.finish()
    child.finish()
    root.finish()
    assert tracer.flush(5)
    tracer.close(1)

    spans = {s["operation_name"]: s for s in read(path)}
    assert set(spans) == {"GET /cart", "child", "link"}
    r = spans["GET /cart"]
    assert r["trace_id"] == f"{root.trace_id:032x}" and len(r["trace_id"]) == 32
    assert r["span_id"] == f"{root.span_id:016x}"
    assert r["parent_id"] is None
    assert r["service_name"] == "checkout"
    assert r["duration_ns"] == r["end_ns"] - r["start_ns"] > 0
    assert r["sampled"] is True
    assert r["tags"]["s"] == "čaj" and r["tags"]["b"] is True and r["tags"]["i"] == 7
    assert r["tags"]["f"] == 0.5 and r["tags"]["big"] == 2**70
    assert r["tags"]["nan"] == "nan"
    (log,) = r["logs"]
    assert log["timestamp_ns"] == 1234500000000
    assert log["fields"]["event"] == "hit" and log["fields"]["n"] == 1
    assert log["fields"]["obj"].startswith("<object object")
    assert log["fields"]["bad"] == "<unprintable Unprintable>"
    assert r["references"] == []
    c = spans["child"]
    assert c["parent_id"] == f"{root.span_id:016x}" and c["trace_id"] == r["trace_id"]
    assert c["references"] == [{"type": "child_of", "trace_id": r["trace_id"],
                                "span_id": r["span_id"]}]
    assert spans["link"]["references"][0]["type"] == "follows_from"
    assert not math.isnan(r["start_ns"])


def test_appends_across_flushes_and_exporters(tmp_path):
    path = tmp_path / "spans.jsonl"
    path.write_text('{"existing": true}\n')
    for round_ in range(3):
        tracer = fasttrace.Tracer("svc", reporter=BatchReporter(JsonLinesExporter(path),
                                                                flush_interval=60))
        for i in range(10):
            tracer.start_span(f"r{round_}", tags={"i": i}).finish()
            if i == 4:
                assert tracer.flush(5)
        tracer.close(2)
    lines = read(path)
    assert lines[0] == {"existing": True}
    assert [s["operation_name"] for s in lines[1:]] == ["r0"] * 10 + ["r1"] * 10 + ["r2"] * 10
    assert path.read_text().endswith("\n")


def test_unwritable_path_fails_without_raising(tmp_path):
    exporter = JsonLinesExporter(tmp_path / "missing-dir" / "x.jsonl")
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=60))
    tracer.start_span("op").finish()
    assert tracer.flush(5) is False
    assert tracer.stats()["reporter"]["export_failures"] == 1
    assert "No such file" in exporter.last_error or "FileNotFound" in exporter.last_error
    tracer.close(1)

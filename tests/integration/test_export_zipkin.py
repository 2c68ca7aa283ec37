# SPDX-License-Identifier: Apache-2.0
"""ZipkinExporter end to end: Zipkin v2 JSON POSTed to a loopback server, parsed and checked
field by field against the tracer's own FinishedSpan records."""
import json
import re
import time

import opentracing
import pytest

import fasttrace
from fasttrace.exporters.jaeger import host_info
from fasttrace.exporters.zipkin import ZipkinExporter, encode_spans_json

from support.recording import RecordingReporter
from support.servers import ACCEPTED, delayed, free_port

HEX16 = re.compile(r"^[0-9a-f]{16}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
PATH = "/api/v2/spans"
SPAN_FIELDS = {"traceId", "id", "parentId", "name", "kind", "timestamp", "duration",
               "localEndpoint", "remoteEndpoint", "annotations", "tags", "debug", "shared"}


T0 = 1_700_000_000.0
REMOTE64 = fasttrace.SpanContext(trace_id=0x0123456789ABCDEF, span_id=0xF000000000000001)
REMOTE_DEBUG = fasttrace.SpanContext(trace_id=0xFEDCBA9876543210FEDCBA9876543210,
                                     span_id=0x1111, debug=True)


def make_batch(tags=None):
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer(service_name="svc", reporter=reporter,
                              tags={"deployment": "prod", "replicas": 3} if tags is None
                              else tags)
    root = tracer.start_span("root", start_time=T0 + 0.123456,
                             tags={"span.kind": "server", "s": "plain", "yes": True,
                                   "no": False, "neg": -5, "f": 1.25, "big": (1 << 64) + 5,
                                   "unicode": "h\u00e9llo \u2713", "replicas": 4})
    root.log_kv({"event": "cache.miss"}, timestamp=T0 + 0.2)
    root.log_kv({"event": "retry", "attempt": 2, "ok": False}, timestamp=T0 + 0.3)
    root.log_kv({"message": "no event"}, timestamp=T0 + 0.4)
    client = tracer.start_span("call", child_of=root, start_time=T0 + 0.13, tags={
        "span.kind": "client", "peer.service": "db", "peer.ipv4": "10.0.0.7",
        "peer.port": 5432})
    client.finish(finish_time=T0 + 0.14)
    producer = tracer.start_span("send", child_of=REMOTE64, start_time=T0 + 1, tags={
        "span.kind": "producer", "peer.hostname": "broker", "peer.ipv6": "2001:db8::1"})
    producer.finish(finish_time=T0 + 1.5)
    consumer = tracer.start_span("recv", start_time=T0 + 2, tags={"span.kind": "consumer"},
                                 references=[opentracing.follows_from(root.context),
                                             opentracing.child_of(REMOTE64)])
    consumer.finish(finish_time=T0 + 2.001)
    odd = tracer.start_span("odd-kind", start_time=T0 + 3, tags={"span.kind": "weird"})
    odd.finish(finish_time=T0 + 3.0000004)          # under a microsecond
    debug = tracer.start_span("debug", child_of=REMOTE_DEBUG, start_time=T0 + 4)
    debug.finish(finish_time=T0 + 4.5)
    root.finish(finish_time=T0 + 0.5)
    tracer.flush()
    (batch,) = reporter.batches
    assert len(batch) == 6
    return batch, {s.operation_name: s for s in batch}


def check_json(spans, records):
    assert isinstance(spans, list) and len(spans) == len(records)
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == set(records)
    ip = host_info()[1]
    for name, rec in records.items():
        z = by_name[name]
        assert set(z) <= SPAN_FIELDS and "shared" not in z
        tid = rec.trace_id
        assert z["traceId"] == (f"{tid:032x}" if tid >> 64 else f"{tid:016x}")
        assert HEX32.match(z["traceId"]) or HEX16.match(z["traceId"])
        assert z["id"] == f"{rec.span_id:016x}" and HEX16.match(z["id"])
        if rec.parent_id is None:
            assert "parentId" not in z
        else:
            assert z["parentId"] == f"{rec.parent_id:016x}"
        assert z["timestamp"] == rec.start_ns // 1000
        assert z["duration"] == max(1, (rec.end_ns - rec.start_ns) // 1000)
        assert z["localEndpoint"] == ({"serviceName": "svc", "ipv4": ip} if ip
                                      else {"serviceName": "svc"})
        assert all(isinstance(v, str) for v in z["tags"].values())
        # the process tags ride on every span; the span's own win
        assert z["tags"]["deployment"] == "prod"
        assert z["tags"]["replicas"] == ("4" if name == "root" else "3")
        assert z.get("debug", False) is (name == "debug")

    root = by_name["root"]
    assert len(root["traceId"]) == 32
    assert root["kind"] == "SERVER"
    assert abs(root["timestamp"] - round((T0 + 0.123456) * 1e6)) <= 1
    assert abs(root["duration"] - 376544) <= 2
    assert root["tags"] == {"deployment": "prod", "replicas": "4", "s": "plain",
                            "yes": "true", "no": "false", "neg": "-5", "f": "1.25",
                            "big": str((1 << 64) + 5), "unicode": "h\u00e9llo \u2713"}
    assert "remoteEndpoint" not in root
    logs = records["root"].logs
    assert [a["timestamp"] for a in root["annotations"]] == [ts // 1000 for ts, _ in logs]
    assert abs(root["annotations"][0]["timestamp"] - round((T0 + 0.2) * 1e6)) <= 1
    assert root["annotations"][0]["value"] == "cache.miss"
    assert json.loads(root["annotations"][1]["value"]) == {"event": "retry", "attempt": 2,
                                                           "ok": False}
    assert json.loads(root["annotations"][2]["value"]) == {"message": "no event"}

    call = by_name["call"]
    assert call["kind"] == "CLIENT" and call["parentId"] == root["id"]
    assert call["traceId"] == root["traceId"]
    assert call["remoteEndpoint"] == {"serviceName": "db", "ipv4": "10.0.0.7", "port": 5432}
    assert call["tags"]["peer.port"] == "5432" and "span.kind" not in call["tags"]
    assert abs(call["duration"] - 10000) <= 1

    send = by_name["send"]
    assert send["kind"] == "PRODUCER"
    assert send["traceId"] == "0123456789abcdef"           # 64-bit: 16 hex digits
    assert send["parentId"] == "f000000000000001"
    assert send["remoteEndpoint"] == {"serviceName": "broker", "ipv6": "2001:db8::1"}

    recv = by_name["recv"]
    assert recv["kind"] == "CONSUMER"
    assert recv["parentId"] == "f000000000000001"          # the first child_of reference
    assert recv["traceId"] == "0123456789abcdef"

    odd = by_name["odd-kind"]
    assert "kind" not in odd and odd["tags"]["span.kind"] == "weird"
    assert odd["duration"] == 1
    assert "annotations" not in odd and "parentId" not in odd

    debug = by_name["debug"]
    assert debug["debug"] is True
    assert debug["traceId"] == "fedcba9876543210fedcba9876543210"


def test_zipkin_json_field_by_field(http_sink):
    sink = http_sink(ACCEPTED, path=PATH)
    batch, records = make_batch()
    exporter = ZipkinExporter(endpoint=sink.url, headers={"X-Scope-OrgID": "t1"})
    assert exporter.export(batch) is True
    (req,) = sink.requests
    assert req.path == "/api/v2/spans"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Scope-OrgID"] == "t1"
    check_json(json.loads(req.body), records)
    assert exporter.export(batch) is True                  # kept-alive connection reused
    assert sink.requests[1].peer == req.peer
    stats = exporter.stats()
    assert stats["spans_sent"] == 12 and stats["requests_sent"] == 2
    assert stats["send_errors"] == stats["spans_failed"] == 0
    exporter.shutdown()
    assert exporter.export(batch) is False


def test_ip_process_tag_sets_local_endpoint():
    batch, _ = make_batch(tags={"ip": "192.168.1.9"})
    (first, *_) = json.loads(encode_spans_json(batch))
    assert first["localEndpoint"] == {"serviceName": "svc", "ipv4": "192.168.1.9"}


def test_empty_and_sliced_batches():
    batch, records = make_batch()
    assert json.loads(encode_spans_json(batch.slice(0, 0))) == []
    part = json.loads(encode_spans_json(batch.slice(2, 5)))
    assert [s["id"] for s in part] == [f"{int(x):016x}" for x in batch.span_id[2:5]]
    full = json.loads(encode_spans_json(batch))
    assert part == full[2:5]


def test_zipkin_down_fails_within_timeout():
    exporter = ZipkinExporter(endpoint=f"http://127.0.0.1:{free_port()}/api/v2/spans",
                              timeout=1.0)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is False
    assert time.monotonic() - t0 < 1.5
    stats = exporter.stats()
    assert stats["send_errors"] == 1 and stats["spans_failed"] == 6 and stats["retries"] >= 1


@pytest.mark.parametrize("status", [400, 500])
def test_zipkin_errors_are_not_retried(http_sink, status):
    sink = http_sink((status, {}, b""), path=PATH)
    exporter = ZipkinExporter(endpoint=sink.url, timeout=5.0)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is False
    assert time.monotonic() - t0 < 1.0
    assert len(sink.requests) == 1
    assert exporter.stats()["retries"] == 0 and exporter.stats()["send_errors"] == 1


def test_zipkin_429_retry_after(http_sink):
    sink = http_sink((429, {"Retry-After": "1"}, b""), ACCEPTED, path=PATH)
    exporter = ZipkinExporter(endpoint=sink.url, timeout=5.0)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is True
    assert 0.95 <= time.monotonic() - t0 < 3.0
    assert len(sink.requests) == 2 and exporter.stats()["retries"] == 1


def test_zipkin_429_retry_after_beyond_timeout(http_sink):
    sink = http_sink((429, {"Retry-After": "30"}, b""), path=PATH)
    exporter = ZipkinExporter(endpoint=sink.url, timeout=1.0)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is False
    assert time.monotonic() - t0 < 0.5
    assert len(sink.requests) == 1


def test_zipkin_slow_fails_within_timeout(http_sink):
    sink = http_sink(delayed(3.0, ACCEPTED), path=PATH)
    exporter = ZipkinExporter(endpoint=sink.url, timeout=0.5)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is False
    assert time.monotonic() - t0 < 1.2
    assert exporter.stats()["spans_failed"] == 6


def test_bad_endpoint_is_rejected():
    with pytest.raises(ValueError):
        ZipkinExporter(endpoint="localhost:9411")


def test_compiled_encoder_matches_python_reference():
    """The Cython encoder and the plain-Python one give the same JSON, awkward values too."""
    from support.zipkin_oracle import encode_spans_json_py

    batch, _ = make_batch()
    assert json.loads(encode_spans_json(batch)) == json.loads(encode_spans_json_py(batch))

    reporter = RecordingReporter()
    tracer = fasttrace.Tracer(service_name='q"uote\\d\n', reporter=reporter,
                              tags={"ip": "::1", "t\tab": 1.0, "n": None})
    span = tracer.start_span('na"me\\\u00e9\x01', tags={
        "ctrl": "a\x00b\x1fc\r\n\t", "quote": '"\\/', "emoji": "\U0001f600",
        "lone": "x\ud800y", "nan": float("nan"), "inf": float("-inf"), "two": 2.0,
        "tiny": 1e-300, "huge": 1e300, "neg": -(1 << 63), "span.kind": "client",
        "peer.port": "not-a-port", "peer.ipv4": 167772167})
    span.log_kv({"event": "e", "big": 1 << 80, "nested": {"a": [1, 2]}, "none": None,
                 "f": float("nan"), "obj": object, "s": "\u2028"})
    span.log_kv({"event": 12})
    span.log_kv({})
    span.finish()
    tracer.flush()
    (odd,) = reporter.batches
    ours = json.loads(encode_spans_json(odd))
    assert ours == json.loads(encode_spans_json_py(odd))
    (z,) = ours
    assert z["name"] == 'na"me\\\u00e9\x01' and z["localEndpoint"]["ipv6"] == "::1"
    assert z["tags"]["ctrl"] == "a\x00b\x1fc\r\n\t" and z["tags"]["lone"] == "x\ud800y"
    assert z["tags"]["two"] == "2.0" and z["tags"]["nan"] == "nan"
    assert z["tags"]["inf"] == "-inf" and z["tags"]["neg"] == str(-(1 << 63))
    assert z["remoteEndpoint"] == {"ipv4": "10.0.0.7"}
    assert [a["value"] for a in z["annotations"][1:]] == ["12", "{}"]

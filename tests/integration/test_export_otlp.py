# SPDX-License-Identifier: Apache-2.0
"""OTLPExporter end to end: what reaches a loopback collector, decoded with the official
opentelemetry-proto classes and checked field by field against the FinishedSpans."""
import gzip
import struct

import opentracing
import pytest

import fasttrace
from fasttrace._otlp import decode_export_response, encode_export_request
from fasttrace.exporters import OTLPExporter
from fasttrace.reporting import BatchReporter

from support.batches import make_batch

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
pytest.importorskip("opentelemetry.proto.trace.v1.trace_pb2")
from support.otlp import (RESOURCE_TAGS, Span, Status, Tee, any_value, attrs,  # noqa: E402
                          check_every_field, record_workload)


@pytest.fixture
def sink(http_sink):
    """A loopback OTLP/HTTP collector answering 200 (see support.servers.HttpSink)."""
    return http_sink(path="/v1/traces")


def decoded(sink):
    """The ExportTraceServiceRequests the sink received."""
    out = []
    for request in sink.requests:
        body = request.body
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        out.append(pb.ExportTraceServiceRequest.FromString(body))
    return out


def received_spans(sink):
    return [s for req in decoded(sink) for rs in req.resource_spans
            for ss in rs.scope_spans for s in ss.spans]


def test_end_to_end_every_field(sink):
    tee = Tee(OTLPExporter(sink.url, headers={"x-api-key": "secret"}))
    tracer = fasttrace.Tracer("checkout", reporter=BatchReporter(tee, flush_interval=60),
                              tags=RESOURCE_TAGS)
    record_workload(tracer)
    assert tracer.flush(10)
    tracer.close(5)

    path, headers = sink.requests[0].path, sink.requests[0].headers
    assert path == "/v1/traces"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["x-api-key"] == "secret"

    check_every_field(decoded(sink), tee.finished)


def test_gzip_keepalive_and_many_batches(sink):
    exporter = OTLPExporter(sink.url, compression="gzip")
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=60,
                                                            max_batch_size=50))
    for i in range(500):
        with tracer.start_active_span(f"op{i % 7}") as scope:
            scope.span.set_tag("i", i)
    assert tracer.flush(10)
    tracer.close(5)
    assert len(sink.requests) >= 10
    assert all(r.headers["Content-Encoding"] == "gzip" for r in sink.requests)
    spans = received_spans(sink)
    assert sorted(attrs(s.attributes)["i"] for s in spans) == list(range(500))
    # one kept-alive connection: every request came from the same client port
    assert len({r.peer for r in sink.requests}) == 1
    assert exporter.stats()["requests"] == len(sink.requests)


def test_reconnects_when_the_collector_closes_the_idle_connection(http_sink):
    def respond(handler):
        handler.close_connection = True
        return 200, {"Connection": "close"}, b""
    s = http_sink(respond, path="/v1/traces")
    exporter = OTLPExporter(s.url, timeout=5)
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=60))
    for _ in range(3):
        tracer.start_span("x").finish()
        assert tracer.flush(5)
    assert len(received_spans(s)) == 3
    tracer.close(2)


def decode(data):
    return pb.ExportTraceServiceRequest.FromString(data)


def test_hand_built_columns_edge_cases():
    U = 0xFFFFFFFF
    nan_bits = struct.unpack("<q", struct.pack("<d", float("-inf")))[0]
    batch = make_batch(
        n=3, names=("a", "ü" * 200), keys=("span.kind", "error", "k"),
        tags=[[(U, 0, 0, ("span.kind", "client")), (U, 0, 0, ("loose", [1])),
               (U, 1, 1, ("error", None))],
              [(0, 0, 0, "weird"), (2, 2, -1, None), (1, 1, 0, None), (2, 3, nan_bits, None)],
              [(2, 4, 0, 2**100)]],
        extras=[None, {"name": "uninterned-name"}, None])
    batch.name_id[1] = U
    req = decode(encode_export_request(batch))
    spans = req.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["a", "uninterned-name", "a"]
    assert spans[0].kind == Span.SPAN_KIND_CLIENT
    assert attrs(spans[0].attributes) == {"loose": "[1]", "error": True}
    assert spans[0].status.code == Status.STATUS_CODE_ERROR
    assert spans[1].kind == Span.SPAN_KIND_INTERNAL
    assert [(kv.key, any_value(kv.value)) for kv in spans[1].attributes] == [
        ("span.kind", "weird"), ("k", -1), ("error", False), ("k", float("-inf"))]
    assert spans[1].status.code == Status.STATUS_CODE_UNSET
    assert attrs(spans[2].attributes) == {"k": str(2**100)}
    assert spans[0].trace_id == (1 << 64 | 100).to_bytes(16, "big")
    assert spans[2].span_id == (1002).to_bytes(8, "big")


def test_large_spans_and_surrogates():
    big = "x" * 70000          # length prefixes of 3 varint bytes at every level
    batch = make_batch(n=2, names=("a\ud800b", "n"), keys=("k",),
                       tags=[[(0, 0, 0, big)], [(0, 0, 0, "v\udfff")]],
                       logs=[[(5, {"event": "e", "blob": big})], []])
    spans = decode(encode_export_request([batch, batch.slice(1, 2)])).resource_spans
    assert len(spans) == 2
    first = spans[0].scope_spans[0].spans
    assert first[0].name == "a?b"          # replaced: protobuf strings are UTF-8
    assert attrs(first[0].attributes)["k"] == big
    assert attrs(first[0].events[0].attributes)["blob"] == big
    assert attrs(first[1].attributes)["k"] == "v?"
    assert [s.name for s in spans[1].scope_spans[0].spans] == ["n"]


def test_many_spans_in_one_request():
    tracer = fasttrace.Tracer("svc", reporter=fasttrace.InMemoryReporter())
    batches = []
    tracer.reporter.report = batches.append
    for i in range(5000):
        tracer.start_span("op", tags={"i": i}).finish()
    tracer._drain_to_reporter()
    req = decode(encode_export_request(batches))
    got = [attrs(s.attributes)["i"] for rs in req.resource_spans
           for s in rs.scope_spans[0].spans]
    assert sorted(got) == list(range(5000))


def test_decode_export_response():
    data = pb.ExportTraceServiceResponse(
        partial_success={"rejected_spans": 7, "error_message": "too old"}).SerializeToString()
    assert decode_export_response(data) == (7, "too old")
    assert decode_export_response(b"") == (0, "")
    with pytest.raises(ValueError):
        decode_export_response(b"\x0a\x05\x08")
    with pytest.raises(ValueError):
        decode_export_response(b"\xff")


def test_bad_arguments():
    with pytest.raises(ValueError):
        OTLPExporter("ftp://x/v1/traces")
    with pytest.raises(ValueError):
        OTLPExporter("http://localhost:4318/v1/traces", compression="zstd")
    with pytest.raises(ValueError):
        OTLPExporter("http://localhost:99999/v1/traces")


def test_export_after_shutdown_is_refused(sink):
    exporter = OTLPExporter(sink.url)
    exporter.shutdown()
    assert exporter.export(make_batch()) is False
    assert sink.requests == []


def test_opentracing_global_untouched_by_exporter():
    # exporters never install tracers; only init_tracer does
    before = opentracing.global_tracer()
    OTLPExporter("http://127.0.0.1:1/v1/traces")
    assert opentracing.global_tracer() is before

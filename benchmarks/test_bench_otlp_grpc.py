# SPDX-License-Identifier: Apache-2.0
"""OTLP over gRPC: spans per second through fasttrace's exporter and the OpenTelemetry
SDK's, to the same loopback server, on the same machine, in the same run.

``export: OTLP/gRPC 10,000 spans``
    10,000 recorded spans (the shape of test_bench_export_otlp.py: traces of one server
    span and four client children, 7-8 tags of every type, one log / event with three
    fields), exported in calls of 512 spans (the SDK's ``BatchSpanProcessor`` batch size)
    through

    - ``fasttrace``: ``OTLPGrpcExporter.export(batch)`` on SpanBatches drained 512 at a
      time (the Cython-encoded request sent as the raw gRPC message);
    - ``otel-sdk``: ``opentelemetry.exporter.otlp.proto.grpc.trace_exporter
      .OTLPSpanExporter.export(spans)`` on the SDK's ReadableSpans of the same shape
      (its protobuf encoder, then its gRPC stub),

    both over plaintext to one loopback gRPC server in another process (as a collector
    would be) that reads each ``TraceService/Export`` request as bytes and answers an
    empty response, so neither side pays for decoding.  The spans are recorded before
    timing: what is measured is encoding plus the round trips.

``test_spans_per_second`` prints both rates side by side (run with ``-s``); nothing is
asserted about time, only that every call succeeded.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

import fasttrace

from _bench import median_seconds

pytest.importorskip("grpc")

N_SPANS = 10_000
SPANS_PER_TRACE = 5
BATCH = 512

_SERVER_SCRIPT = r"""
import sys
from concurrent import futures
import grpc
def export(request, context):
    return b""
handler = grpc.method_handlers_generic_handler(
    "opentelemetry.proto.collector.trace.v1.TraceService",
    {"Export": grpc.unary_unary_rpc_method_handler(export)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(None)
"""


class _Server:
    """The loopback OTLP/gRPC sink, in a process of its own; stops when stdin closes."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER_SCRIPT],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.target = f"127.0.0.1:{int(self.proc.stdout.readline())}"

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.close()


def _server_tags(i):
    return {"span.kind": "server", "http.method": "GET", "http.url": f"/api/items/{i % 97}",
            "http.status_code": 200, "component": "wsgi", "retry": False,
            "sample.ratio": 0.25, "user.id": 1_000_000 + i}


def _client_tags(i):
    return {"span.kind": "client", "db.type": "sql", "db.statement": "SELECT * FROM items",
            "peer.port": 5432, "cached": i % 2 == 0, "db.rows": i % 50, "elapsed": 0.5}


def _log(i):
    return {"event": "cache.miss", "key": f"item:{i}", "size": 42}


def fasttrace_batches():
    """The spans as SpanBatches of BATCH spans (the last one shorter)."""

    batches = []

    class Keep(fasttrace.Reporter):
        drain_threshold = BATCH        # the tracer drains inline every BATCH spans

        def report(self, batch):
            batches.append(batch)

    tracer = fasttrace.Tracer("bench", reporter=Keep(), capacity=N_SPANS * 2)
    for t in range(N_SPANS // SPANS_PER_TRACE):
        root = tracer.start_span("GET /api/items", tags=_server_tags(t))
        for c in range(SPANS_PER_TRACE - 1):
            child = tracer.start_span("SELECT items", child_of=root, tags=_client_tags(c))
            child.log_kv(_log(c))
            child.finish()
        root.log_kv(_log(t))
        root.finish()
    tracer._drain_to_reporter()
    assert sum(len(b) for b in batches) == N_SPANS
    return batches


def otel_batches():
    """The same spans recorded by the OpenTelemetry SDK, as lists of BATCH ReadableSpans."""
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import trace as api
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    for t in range(N_SPANS // SPANS_PER_TRACE):
        tags = _server_tags(t)
        del tags["span.kind"]
        root = tracer.start_span("GET /api/items", kind=api.SpanKind.SERVER, attributes=tags)
        ctx = api.set_span_in_context(root)
        for c in range(SPANS_PER_TRACE - 1):
            ctags = _client_tags(c)
            del ctags["span.kind"]
            child = tracer.start_span("SELECT items", context=ctx, kind=api.SpanKind.CLIENT,
                                      attributes=ctags)
            log = _log(c)
            child.add_event(log.pop("event"), log)
            child.end()
        log = _log(t)
        root.add_event(log.pop("event"), log)
        root.end()
    spans = exporter.get_finished_spans()
    assert len(spans) == N_SPANS
    return [spans[i:i + BATCH] for i in range(0, N_SPANS, BATCH)]


def fasttrace_run(server):
    from fasttrace.exporters import OTLPGrpcExporter
    exporter = OTLPGrpcExporter(f"http://{server.target}", timeout=30)
    batches = fasttrace_batches()

    def run():
        for batch in batches:
            assert exporter.export(batch), exporter.stats()["last_error"]
    return run, exporter.shutdown


def otel_run(server):
    grpc_exporter = pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        reason="needs opentelemetry-exporter-otlp-proto-grpc (test extra)")
    from opentelemetry.sdk.trace.export import SpanExportResult
    exporter = grpc_exporter.OTLPSpanExporter(endpoint=f"http://{server.target}",
                                              insecure=True, timeout=30)
    batches = otel_batches()

    def run():
        for batch in batches:
            assert exporter.export(batch) is SpanExportResult.SUCCESS
    return run, exporter.shutdown


RUNS = {"fasttrace": fasttrace_run, "otel-sdk": otel_run}


@pytest.mark.parametrize("kind", list(RUNS))
@pytest.mark.benchmark(group="export: OTLP/gRPC 10,000 spans")
def test_export_grpc(benchmark, server, kind):
    run, close = RUNS[kind](server)
    benchmark.extra_info["spans_per_call"] = N_SPANS
    try:
        run()                      # connects, warms up
        benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    finally:
        close()


def test_spans_per_second(server):
    """Both exporters' rates, measured one after the other in this run; printed only."""
    rates = {}
    for kind, make in RUNS.items():
        run, close = make(server)
        try:
            run()
            rates[kind] = N_SPANS / median_seconds(run, 5)
        finally:
            close()
    print(f"\nOTLP/gRPC export to a loopback server, {N_SPANS:,} spans in calls of {BATCH}: "
          f"fasttrace {rates['fasttrace']:,.0f} spans/s, OpenTelemetry SDK "
          f"{rates['otel-sdk']:,.0f} spans/s ({rates['fasttrace'] / rates['otel-sdk']:.1f}x)")

# SPDX-License-Identifier: Apache-2.0
"""OTLP export: encoding throughput, and what exporting costs the application.

``export: OTLP encode 10,000 spans``
    fasttrace's Cython encoder (``fasttrace._otlp.encode_export_request`` over the
    drained SpanBatches) next to the OpenTelemetry SDK's OTLP encoder
    (``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans)
    .SerializeToString()``, what its OTLP/HTTP exporter sends) on 10,000
    ReadableSpans of the same shape, recorded by the SDK into an in-memory exporter.
    Both are built before timing.  Shape: traces of one server span and four client
    children; 7-8 tags of every type (str, int, bool, float), one log / event with
    three fields.  Target: >= 10x the SDK's throughput.

``export: per-span cost seen by the application``
    The same span code (start_active_span, three tags, finish) on a tracer whose
    finished spans are drained inline into an in-memory reporter, and on one whose
    ``BatchReporter`` drains, encodes and POSTs them from its own thread to a
    loopback OTLP/HTTP sink (another process, like a real collector).  Target: within
    1.5x.

``test_ratios`` prints both medians side by side (run with ``-s``) and checks the
targets with a wide margin, so a regression of the order of magnitude fails.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

import fasttrace
from fasttrace._otlp import encode_export_request
from fasttrace.exporters import OTLPExporter
from fasttrace.reporting import BatchReporter, InMemoryReporter

from _bench import median_seconds

N_SPANS = 10_000
SPANS_PER_TRACE = 5
E2E_SPANS = 2_000


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
    batches = []

    class Keep(fasttrace.Reporter):
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


def otel_spans():
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
    return spans


def otel_encode():
    return pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.common.trace_encoder").encode_spans


@pytest.fixture
def encoders():
    # function-scoped: 10,000 live OTel spans would slow every later garbage collection,
    # i.e. the per-span benchmarks below
    batches = fasttrace_batches()
    spans = otel_spans()
    encode_spans = otel_encode()
    return {
        "fasttrace": lambda: encode_export_request(batches),
        "otel-sdk": lambda: encode_spans(spans).SerializeToString(),
    }


@pytest.mark.parametrize("kind", ["fasttrace", "otel-sdk"])
@pytest.mark.benchmark(group="export: OTLP encode 10,000 spans")
def test_encode(benchmark, encoders, kind):
    benchmark.extra_info["spans_per_call"] = N_SPANS
    data = benchmark(encoders[kind])
    assert len(data) > N_SPANS * 50


_SINK_SCRIPT = r"""
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class _Sink:
    """Loopback OTLP/HTTP sink in a process of its own (as a collector would be), so
    its request handling does not compete with the application for this process's GIL;
    it reads each request and answers 200."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _SINK_SCRIPT],
                                     stdout=subprocess.PIPE, text=True)
        port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{port}/v1/traces"

    def close(self):
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def sink():
    s = _Sink()
    yield s
    s.close()


def make_e2e_tracer(kind, sink):
    if kind == "in-memory":
        reporter = InMemoryReporter()
    else:
        reporter = BatchReporter(OTLPExporter(sink.url), flush_interval=1.0)
    return fasttrace.Tracer("bench", reporter=reporter, tags={"host": "bench"})


def run_spans(tracer):
    for i in range(E2E_SPANS):
        with tracer.start_active_span("handle") as scope:
            span = scope.span
            span.set_tag("http.status_code", 200)
            span.set_tag("http.method", "GET")
            span.set_tag("cached", True)


def _between_rounds(tracer):
    # not timed: the in-memory reporter would otherwise grow without bound
    if isinstance(tracer.reporter, InMemoryReporter):
        tracer.reporter.clear()


@pytest.mark.parametrize("kind", ["in-memory", "batch-otlp-loopback"])
@pytest.mark.benchmark(group="export: per-span cost seen by the application")
def test_app_cost(benchmark, sink, kind):
    tracer = make_e2e_tracer(kind, sink)
    benchmark.extra_info["spans_per_call"] = E2E_SPANS
    benchmark.pedantic(run_spans, args=(tracer,), setup=lambda: _between_rounds(tracer),
                       rounds=60, warmup_rounds=3)
    tracer.flush(10)
    if kind != "in-memory":
        # 60 back-to-back rounds produce spans faster than one HTTP connection exports
        # them, so the bounded queue may drop some: counted, never blocking
        rep = tracer.stats()["reporter"]
        benchmark.extra_info["exported"] = rep["exported"]
        benchmark.extra_info["dropped"] = rep["dropped"]["queue_full"]
        assert rep["exported"] > 0
        assert rep["exported"] + rep["dropped"]["queue_full"] == tracer.stats()["finished"]
    tracer.close(5)


def test_ratios(request, sink):
    """The issue's two targets, measured side by side in one run."""
    costs = {}
    for kind in ("in-memory", "batch-otlp-loopback"):
        tracer = make_e2e_tracer(kind, sink)
        for _ in range(3):
            run_spans(tracer)
        costs[kind] = median_seconds(lambda: run_spans(tracer), 60,
                                      setup=lambda: _between_rounds(tracer)) / E2E_SPANS
        tracer.close(5)
    ratio = costs["batch-otlp-loopback"] / costs["in-memory"]
    encoders = request.getfixturevalue("encoders")     # after: see the fixture
    ours = median_seconds(encoders["fasttrace"], 15)
    theirs = median_seconds(encoders["otel-sdk"], 5)
    speedup = theirs / ours
    print(f"\nOTLP encode, 10,000 spans: fasttrace {ours * 1e3:.2f} ms "
          f"({N_SPANS / ours:,.0f} spans/s), OpenTelemetry SDK {theirs * 1e3:.2f} ms "
          f"({N_SPANS / theirs:,.0f} spans/s): {speedup:.1f}x")
    print(f"per-span cost seen by the application: in-memory {costs['in-memory'] * 1e9:.0f} ns, "
          f"BatchReporter -> loopback OTLP {costs['batch-otlp-loopback'] * 1e9:.0f} ns: "
          f"{ratio:.2f}x")
    # wide margins: these catch an order-of-magnitude regression, not noise
    assert speedup >= 5
    assert ratio <= 2.5

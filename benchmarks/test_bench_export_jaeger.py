# SPDX-License-Identifier: Apache-2.0
"""Jaeger Thrift encoding throughput: fasttrace's Cython encoders vs jaeger-client's own.

Workload: 10,000 realistic spans, each a child of one root, with eight tags (two strings,
two ints, two bools, two floats) and one log of two fields -- built once, before timing, by
both tracers with the same calls.

    fasttrace-compact   SpanEncoder.encode(batch) + agent_packets(process, 65000): the
                        UDP datagrams the JaegerExporter sends (Agent.emitBatch messages)
    fasttrace-binary    SpanEncoder.encode(batch) + collector_body(process): the HTTP body
    jaeger-compact      jaeger_client.thrift.make_jaeger_batch(spans, process), written with
                        TCompactProtocol into a TMemoryBuffer (what its reporter sends)
    jaeger-binary       the same with TBinaryProtocol.  (TBinaryProtocolAccelerated cannot
                        be used: the thrift_spec jaeger-client 4.8 ships is too old for the
                        C encoder of thrift >= 0.14, which rejects it.)

jaeger-client builds its Thrift Tag and Log objects when the span is tagged, so its
serialization work here is make_jaeger_batch plus the protocol writes; ours starts from the
columnar SpanBatch the tracer drains.  The whole batch is drained in one piece with the
tracer's arena (`tracer._arena.drain`); a reporter normally receives chunks of at most 4096.

    pytest benchmarks/test_bench_export_jaeger.py --benchmark-only      # medians
    pytest benchmarks/test_bench_export_jaeger.py --benchmark-disable   # + the 10x check
"""

import pytest

import fasttrace
from fasttrace import _thrift
from fasttrace.batch import SpanBatch

from _bench import median_seconds

N_SPANS = 10_000
TARGET_SPEEDUP = 10.0


def _populate(tracer):
    root = tracer.start_span("GET /checkout")
    spans = []
    for k in range(N_SPANS):
        span = tracer.start_span("SELECT orders" if k % 2 else "redis.GET", child_of=root)
        span.set_tag("component", "psycopg2")
        span.set_tag("db.statement", "SELECT id, total FROM orders WHERE user_id = %s")
        span.set_tag("http.status_code", 200)
        span.set_tag("db.rows", k)
        span.set_tag("error", False)
        span.set_tag("cache.hit", True)
        span.set_tag("sample.ratio", 0.75)
        span.set_tag("score", k / 7)
        span.log_kv({"event": "query.done", "rows": k})
        span.finish()
        spans.append(span)
    return root, spans


@pytest.fixture(scope="module")
def fasttrace_batch():
    class Hold(fasttrace.Reporter):
        drain_threshold = 1 << 20      # keep every span in the arena until we drain it

        def report(self, batch):
            raise AssertionError("drained before the benchmark asked")

    tracer = fasttrace.Tracer(service_name="bench", reporter=Hold(), capacity=1 << 15,
                              tags={"deployment": "prod"})
    _populate(tracer)
    batch = SpanBatch(tracer._arena.drain(N_SPANS), tracer.service_name, tracer.tags)
    assert len(batch) == N_SPANS
    return batch


@pytest.fixture(scope="module")
def jaeger_workload():
    jaeger_client = pytest.importorskip("jaeger_client")
    pytest.importorskip("thrift")
    from jaeger_client import thrift as jthrift
    from jaeger_client.reporter import NullReporter

    tracer = jaeger_client.Tracer("bench", reporter=NullReporter(),
                                  sampler=jaeger_client.ConstSampler(True),
                                  tags={"ip": "127.0.0.1", "deployment": "prod"})
    _, spans = _populate(tracer)
    process = jthrift.make_process("bench", tracer.tags, 4096)
    yield jthrift, spans, process
    tracer.close()


def _ours(batch, protocol):
    encoder = _thrift.SpanEncoder(protocol)
    process = _thrift.encode_process(batch.service_name, {"jaeger.version": "x", **batch.resource},
                                     protocol)
    if protocol == _thrift.PROTOCOL_COMPACT:
        def run():
            encoder.encode(batch)
            return encoder.agent_packets(process, 65000)[0]
    else:
        def run():
            encoder.encode(batch)
            return [encoder.collector_body(process)]
    return run


def _theirs(workload, protocol):
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.transport import TTransport

    jthrift, spans, process = workload
    factory = (TCompactProtocol.TCompactProtocol if protocol == _thrift.PROTOCOL_COMPACT
               else TBinaryProtocol.TBinaryProtocol)

    def run():
        batch = jthrift.make_jaeger_batch(spans, process)
        buf = TTransport.TMemoryBuffer()
        batch.write(factory(buf))
        return [buf.getvalue()]
    return run


PROTOCOLS = {"compact": _thrift.PROTOCOL_COMPACT, "binary": _thrift.PROTOCOL_BINARY}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_fasttrace(benchmark, fasttrace_batch, protocol):
    benchmark.group = f"jaeger-thrift-{protocol}-10k-spans"
    benchmark.name = f"fasttrace-{protocol}"
    out = benchmark(_ours(fasttrace_batch, PROTOCOLS[protocol]))
    assert sum(map(len, out)) > N_SPANS * 100
    benchmark.extra_info["spans"] = N_SPANS


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_jaeger_client(benchmark, jaeger_workload, protocol):
    benchmark.group = f"jaeger-thrift-{protocol}-10k-spans"
    benchmark.name = f"jaeger-client-{protocol}"
    out = benchmark.pedantic(_theirs(jaeger_workload, PROTOCOLS[protocol]), rounds=5,
                             iterations=1, warmup_rounds=1)
    assert sum(map(len, out)) > N_SPANS * 100
    benchmark.extra_info["spans"] = N_SPANS


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_speedup_over_jaeger_client(fasttrace_batch, jaeger_workload, protocol):
    """Same run, same machine: our median must be at least TARGET_SPEEDUP times faster.

    Runs with --benchmark-disable (or plain pytest); --benchmark-only skips it."""
    ours_fn = _ours(fasttrace_batch, PROTOCOLS[protocol])
    theirs_fn = _theirs(jaeger_workload, PROTOCOLS[protocol])
    ours_fn()
    theirs_fn()
    ours = median_seconds(ours_fn, 15)
    theirs = median_seconds(theirs_fn, 3)
    speedup = theirs / ours
    print(f"\n{protocol}: fasttrace {ours * 1e3:.2f} ms ({N_SPANS / ours:,.0f} spans/s), "
          f"jaeger-client {theirs * 1e3:.1f} ms ({N_SPANS / theirs:,.0f} spans/s): "
          f"{speedup:.0f}x")
    assert speedup >= TARGET_SPEEDUP


def test_same_content_as_jaeger_client(fasttrace_batch, jaeger_workload):
    """The comparison is fair: both sides encode the same spans, tags and logs."""
    from thrift.protocol import TCompactProtocol
    from thrift.transport import TTransport
    from jaeger_client.thrift_gen.jaeger import ttypes

    ours = ttypes.Batch()
    encoder = _thrift.SpanEncoder(_thrift.PROTOCOL_COMPACT)
    encoder.encode(fasttrace_batch)
    ours.read(TCompactProtocol.TCompactProtocol(TTransport.TMemoryBuffer(
        encoder.collector_body(_thrift.encode_process("bench", {})))))
    jthrift, spans, process = jaeger_workload
    theirs = jthrift.make_jaeger_batch(spans, process)
    assert len(ours.spans) == len(theirs.spans) == N_SPANS
    for a, b in zip(ours.spans[:50], theirs.spans[:50]):
        assert a.operationName == b.operationName
        assert [(t.key, t.vType) for t in a.tags] == [(t.key, t.vType) for t in b.tags]
        assert [[(f.key, f.vType, f.vStr, f.vLong) for f in log.fields] for log in a.logs] \
            == [[(f.key, f.vType, f.vStr, f.vLong) for f in log.fields] for log in b.logs]
        assert a.parentSpanId != 0 and b.parentSpanId != 0

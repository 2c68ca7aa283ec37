# SPDX-License-Identifier: Apache-2.0
"""JaegerExporter end to end: UDP agent datagrams and collector HTTP bodies from a real
tracer, decoded with the `thrift` package and jaeger-client's generated types."""
import socket
import threading
import time

import opentracing
import pytest

import fasttrace
from fasttrace import _thrift
from fasttrace.exporters.jaeger import CLIENT_VERSION, TRIMMED_TAG, JaegerExporter

from support.recording import RecordingReporter
from support.servers import ACCEPTED, UDPSink, delayed, free_port

thrift_transport = pytest.importorskip("thrift.transport.TTransport")
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402
from thrift.Thrift import TMessageType  # noqa: E402

Agent = pytest.importorskip("jaeger_client.thrift_gen.agent.Agent")
from jaeger_client.thrift_gen.jaeger import ttypes  # noqa: E402

U64 = (1 << 64) - 1


# -- loopback sinks -----------------------------------------------------------------------

@pytest.fixture
def udp_sink():
    with UDPSink() as sink:
        yield sink


# -- spans from a real tracer -----------------------------------------------------------------

PROCESS_TAGS = {"deployment": "prod", "replicas": 3, "canary": True, "weight": 0.5}
T0 = 1_700_000_000.0
REMOTE64 = fasttrace.SpanContext(trace_id=0x00000000000000000123456789ABCDEF,
                                 span_id=0xF000000000000001)
REMOTE_DEBUG = fasttrace.SpanContext(trace_id=0xFEDCBA9876543210FEDCBA9876543210,
                                     span_id=0x1111, debug=True)


def make_batch(**tracer_kwargs):
    """One drained SpanBatch with every case the encoders must get right."""
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer(service_name="svc", reporter=reporter, tags=PROCESS_TAGS,
                              **tracer_kwargs)
    root = tracer.start_span("root", start_time=T0 + 0.123456)
    root.set_tag("s", "plain")
    root.set_tag("unicode", "h\u00e9llo \u2713")
    root.set_tag("yes", True)
    root.set_tag("no", False)
    root.set_tag("neg", -5)
    root.set_tag("i64max", (1 << 63) - 1)
    root.set_tag("i64min", -(1 << 63))
    root.set_tag("f", 1.25)
    root.set_tag("big", (1 << 64) + 5)
    root.set_tag("span.kind", "server")
    root.log_kv({"event": "cache.miss", "key": "k1", "n": 7, "ratio": 0.25, "ok": False},
                timestamp=T0 + 0.2)
    root.log_kv({"message": "second"}, timestamp=T0 + 0.3)
    child = tracer.start_span("child", child_of=root, start_time=T0 + 0.13)
    child.finish(finish_time=T0 + 0.14)
    remote64 = tracer.start_span("remote64-child", child_of=REMOTE64, start_time=T0 + 1)
    remote64.finish(finish_time=T0 + 1.5)
    multi = tracer.start_span("multi", start_time=T0 + 2, references=[
        opentracing.follows_from(root.context),
        opentracing.child_of(REMOTE64),
        opentracing.follows_from(child.context),
    ])
    multi.finish(finish_time=T0 + 2.001)
    follows = tracer.start_span("follows", start_time=T0 + 3,
                                references=[opentracing.follows_from(root.context)])
    follows.finish(finish_time=T0 + 3.0000004)     # shorter than a microsecond
    debug = tracer.start_span("debug", child_of=REMOTE_DEBUG, start_time=T0 + 4)
    debug.finish(finish_time=T0 + 4.5)
    root.finish(finish_time=T0 + 0.5)
    tracer.flush()
    assert len(reporter.batches) == 1
    batch = reporter.batches[0]
    assert len(batch) == 6
    return batch, {s.operation_name: s for s in batch}


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def tag_values(tags):
    """{key: (type name, value)} from decoded jaeger Tags, checking only one value is set."""
    out = {}
    for tag in tags or ():
        kind = ttypes.TagType._VALUES_TO_NAMES[tag.vType]
        value = {"STRING": tag.vStr, "DOUBLE": tag.vDouble, "BOOL": tag.vBool,
                 "LONG": tag.vLong}[kind]
        others = [v for v in (tag.vStr, tag.vDouble, tag.vBool, tag.vLong, tag.vBinary)
                  if v is not None]
        assert others == [value], tag
        assert tag.key not in out
        out[tag.key] = (kind, value)
    return out


def check_process(process):
    assert process.serviceName == "svc"
    tags = tag_values(process.tags)
    assert tags["jaeger.version"] == ("STRING", CLIENT_VERSION)
    assert CLIENT_VERSION.startswith("Python-fasttrace-")
    assert tags["hostname"] == ("STRING", socket.gethostname())
    assert tags["ip"][0] == "STRING" and tags["ip"][1].count(".") == 3
    assert tags["deployment"] == ("STRING", "prod")
    assert tags["replicas"] == ("LONG", 3)
    assert tags["canary"] == ("BOOL", True)
    assert tags["weight"] == ("DOUBLE", 0.5)


def check_spans(jspans, records):
    """Every decoded jaeger.Span against the tracer's own FinishedSpan records."""
    assert len(jspans) == len(records)
    by_name = {s.operationName: s for s in jspans}
    assert set(by_name) == set(records)
    for name, rec in records.items():
        js = by_name[name]
        assert js.traceIdLow == signed(rec.trace_id & U64)
        assert js.traceIdHigh == signed(rec.trace_id >> 64)
        assert js.spanId == signed(rec.span_id)
        assert js.parentSpanId == signed(rec.parent_id or 0)
        assert js.startTime == rec.start_ns // 1000
        assert js.duration == (rec.end_ns - rec.start_ns) // 1000
        assert js.flags == (3 if name == "debug" else 1)

    root, child = by_name["root"], by_name["child"]
    r = records["root"]
    assert r.trace_id >> 64 != 0                       # a 128-bit trace id
    assert abs(root.startTime - round((T0 + 0.123456) * 1e6)) <= 1
    assert abs(root.duration - 376544) <= 2
    assert root.references is None and root.parentSpanId == 0
    tags = tag_values(root.tags)
    assert tags == {
        "s": ("STRING", "plain"),
        "unicode": ("STRING", "h\u00e9llo \u2713"),
        "yes": ("BOOL", True),
        "no": ("BOOL", False),
        "neg": ("LONG", -5),
        "i64max": ("LONG", (1 << 63) - 1),
        "i64min": ("LONG", -(1 << 63)),
        "f": ("DOUBLE", 1.25),
        "big": ("STRING", str((1 << 64) + 5)),
        "span.kind": ("STRING", "server"),
    }
    assert len(root.logs) == 2
    assert abs(root.logs[0].timestamp - round((T0 + 0.2) * 1e6)) <= 1
    assert root.logs[0].timestamp == r.logs[0][0] // 1000
    assert tag_values(root.logs[0].fields) == {
        "event": ("STRING", "cache.miss"), "key": ("STRING", "k1"), "n": ("LONG", 7),
        "ratio": ("DOUBLE", 0.25), "ok": ("BOOL", False)}
    assert [f.key for f in root.logs[0].fields] == ["event", "key", "n", "ratio", "ok"]
    assert tag_values(root.logs[1].fields) == {"message": ("STRING", "second")}

    # a lone child_of parent: parentSpanId, as jaeger-client's child_of= sends it
    assert child.parentSpanId == root.spanId and child.references is None
    assert (child.traceIdHigh, child.traceIdLow) == (root.traceIdHigh, root.traceIdLow)
    assert abs(child.duration - 10000) <= 1
    assert child.tags is None and child.logs is None

    # a 64-bit trace id from a peer, and a span id above 2**63 (negative as i64)
    r64 = by_name["remote64-child"]
    assert r64.traceIdHigh == 0 and r64.traceIdLow == 0x0123456789ABCDEF
    assert r64.parentSpanId == signed(0xF000000000000001) < 0

    # several references: all of them, in order, the parent (first child_of) included
    multi = by_name["multi"]
    assert multi.parentSpanId == signed(0xF000000000000001)
    assert (multi.traceIdHigh, multi.traceIdLow) == (0, 0x0123456789ABCDEF)
    refs = [(ttypes.SpanRefType._VALUES_TO_NAMES[x.refType], x.traceIdHigh, x.traceIdLow,
             x.spanId) for x in multi.references]
    assert refs == [
        ("FOLLOWS_FROM", root.traceIdHigh, root.traceIdLow, root.spanId),
        ("CHILD_OF", 0, 0x0123456789ABCDEF, signed(0xF000000000000001)),
        ("FOLLOWS_FROM", child.traceIdHigh, child.traceIdLow, child.spanId),
    ]
    assert abs(multi.duration - 1000) <= 1

    # follows_from only: the parent is that span, and the type is kept in references
    follows = by_name["follows"]
    assert follows.parentSpanId == root.spanId
    assert [(x.refType, x.spanId) for x in follows.references] == [
        (ttypes.SpanRefType.FOLLOWS_FROM, root.spanId)]
    assert follows.duration == 0

    debug = by_name["debug"]
    assert debug.flags == 3
    assert debug.traceIdHigh == signed(0xFEDCBA9876543210)


def decode_datagram(data):
    proto = TCompactProtocol.TCompactProtocol(thrift_transport.TMemoryBuffer(data))
    name, mtype, seqid = proto.readMessageBegin()
    assert name == "emitBatch" and mtype == TMessageType.ONEWAY
    args = Agent.emitBatch_args()
    args.read(proto)
    proto.readMessageEnd()
    return seqid, args.batch


def decode_collector_body(body):
    batch = ttypes.Batch()
    trans = thrift_transport.TMemoryBuffer(body)
    batch.read(TBinaryProtocol.TBinaryProtocol(trans))
    assert trans._buffer.read() == b""          # nothing after the struct
    return batch


# -- agent (UDP, compact) -----------------------------------------------------------------------

def test_agent_datagram_decodes_field_by_field(udp_sink):
    batch, records = make_batch()
    exporter = JaegerExporter(agent_host="127.0.0.1", agent_port=udp_sink.port)
    assert exporter.export(batch) is True
    datagrams = udp_sink.wait_for(1)
    assert len(udp_sink.settle()) == 1
    seqid, jbatch = decode_datagram(datagrams[0])
    check_process(jbatch.process)
    check_spans(jbatch.spans, records)
    stats = exporter.stats()
    assert stats["spans_sent"] == 6 and stats["packets_sent"] == 1
    assert stats["send_errors"] == stats["spans_dropped_too_large"] == 0
    exporter.shutdown()
    assert exporter.export(batch) is False


def test_collector_body_decodes_field_by_field(http_sink):
    sink = http_sink(ACCEPTED)
    batch, records = make_batch()
    exporter = JaegerExporter(collector_endpoint=sink.url + "/api/traces",
                              headers={"Authorization": "Bearer t0k"})
    assert exporter.export(batch) is True
    (req,) = sink.requests
    assert req.path == "/api/traces"
    assert req.headers["Content-Type"] == "application/vnd.apache.thrift.binary"
    assert req.headers["Authorization"] == "Bearer t0k"
    jbatch = decode_collector_body(req.body)
    check_process(jbatch.process)
    check_spans(jbatch.spans, records)
    # the same spans through both protocols
    _, from_agent = decode_datagram(_thrift.agent_packets(
        _thrift.encode_process("svc", {}), *_thrift.encode_spans(batch), 65000)[0][0])
    assert from_agent.spans == jbatch.spans
    # a second export reuses the kept-alive connection
    assert exporter.export(batch) is True
    assert len(sink.requests) == 2 and sink.requests[1].peer == req.peer
    assert exporter.stats()["requests_sent"] == 2
    exporter.shutdown()


def test_process_tags_from_tracer_override_defaults(udp_sink):
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer(service_name="other", reporter=reporter,
                              tags={"hostname": "web-1", "ip": "10.1.2.3"})
    tracer.start_span("x").finish()
    tracer.flush()
    exporter = JaegerExporter(agent_host="127.0.0.1", agent_port=udp_sink.port)
    assert exporter.export(reporter.batches[0])
    _, jbatch = decode_datagram(udp_sink.wait_for(1)[0])
    tags = tag_values(jbatch.process.tags)
    assert jbatch.process.serviceName == "other"
    assert tags["hostname"] == ("STRING", "web-1") and tags["ip"] == ("STRING", "10.1.2.3")
    assert tags["jaeger.version"] == ("STRING", CLIENT_VERSION)


def big_batch(n, tag_len, **tracer_kwargs):
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer(service_name="svc", reporter=reporter, **tracer_kwargs)
    for k in range(n):
        span = tracer.start_span(f"op{k % 7}")
        span.set_tag("payload", "x" * tag_len)
        span.set_tag("k", k)
        span.finish()
    tracer.flush()
    (batch,) = reporter.batches
    return batch


@pytest.mark.parametrize("max_packet_size, n, tag_len", [(65000, 300, 600), (2048, 60, 400)])
def test_agent_splits_batches_into_datagrams(udp_sink, max_packet_size, n, tag_len):
    batch = big_batch(n, tag_len)
    exporter = JaegerExporter(agent_host="127.0.0.1", agent_port=udp_sink.port,
                              max_packet_size=max_packet_size)
    assert exporter.export(batch) is True
    stats = exporter.stats()
    datagrams = udp_sink.wait_for(stats["packets_sent"])
    datagrams = udp_sink.settle()
    assert len(datagrams) == stats["packets_sent"] > 1
    assert all(len(d) <= max_packet_size for d in datagrams)
    # full enough: splitting is not one span per datagram
    assert sum(len(d) for d in datagrams) / len(datagrams) > max_packet_size * 0.6
    seen = []
    seqids = []
    for d in datagrams:
        seqid, jbatch = decode_datagram(d)
        seqids.append(seqid)
        assert jbatch.process.serviceName == "svc"
        seen += [(s.spanId, tag_values(s.tags)["k"][1]) for s in jbatch.spans]
    assert sorted(seen) == sorted((signed(int(s)), k) for k, s in enumerate(batch.span_id))
    assert len(set(seqids)) == len(seqids)
    assert stats["spans_sent"] == n and stats["spans_trimmed"] == 0


def test_oversized_spans_are_trimmed_or_dropped_and_counted(udp_sink):
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer(service_name="svc", reporter=reporter,
                              max_value_length=100_000)
    big_tags = tracer.start_span("big-tags")
    big_tags.set_tag("keep.small", "s")
    big_tags.set_tag("keep.n", 42)
    for k in range(6):
        big_tags.set_tag(f"huge{k}", "t" * (700 + k))
    big_tags.log_kv({"event": "small log"})
    big_tags.finish()
    big_logs = tracer.start_span("big-logs")
    big_logs.set_tag("keep", True)
    for k in range(5):
        big_logs.log_kv({"event": "dump", "data": "l" * 900})
    big_logs.log_kv({"event": "tiny"})
    big_logs.finish()
    hopeless = tracer.start_span("n" * 3000)          # its bare fields alone are too big
    hopeless.finish()
    normal = tracer.start_span("normal")
    normal.set_tag("ok", 1)
    normal.finish()
    tracer.flush()
    (batch,) = reporter.batches

    exporter = JaegerExporter(agent_host="127.0.0.1", agent_port=udp_sink.port,
                              max_packet_size=2048)
    assert exporter.export(batch) is True
    stats = exporter.stats()
    assert stats["spans_trimmed"] == 2
    assert stats["spans_dropped_too_large"] == 1
    assert stats["spans_sent"] == 3
    udp_sink.wait_for(stats["packets_sent"])
    datagrams = udp_sink.settle()
    assert len(datagrams) == stats["packets_sent"]
    assert all(len(d) <= 2048 for d in datagrams)
    spans = {s.operationName: s for d in datagrams for s in decode_datagram(d)[1].spans}
    assert set(spans) == {"big-tags", "big-logs", "normal"}

    tags = tag_values(spans["big-tags"].tags)
    assert tags["keep.small"] == ("STRING", "s") and tags["keep.n"] == ("LONG", 42)
    dropped = 6 - sum(k.startswith("huge") for k in tags)
    assert dropped >= 4
    assert tags[TRIMMED_TAG] == ("LONG", dropped)
    # the largest went first
    kept_huge = sorted(int(k[4:]) for k in tags if k.startswith("huge"))
    assert kept_huge == list(range(len(kept_huge)))
    assert [tag_values(log.fields) for log in spans["big-tags"].logs] == [
        {"event": ("STRING", "small log")}]

    logs = [tag_values(log.fields)["event"][1] for log in spans["big-logs"].logs]
    assert logs.count("dump") <= 1 and logs[-1] == "tiny"
    blt = tag_values(spans["big-logs"].tags)
    assert blt["keep"] == ("BOOL", True) and blt[TRIMMED_TAG] == ("LONG", 6 - len(logs))
    assert tag_values(spans["normal"].tags) == {"ok": ("LONG", 1)}


def test_agent_send_errors_are_counted():
    batch, _ = make_batch()
    exporter = JaegerExporter(agent_host="no-such-host.invalid", agent_port=6831)
    assert exporter.export(batch) is False
    stats = exporter.stats()
    assert stats["send_errors"] == 1 and stats["spans_failed"] == 6
    assert stats["spans_sent"] == 0


def test_unencodable_batch_fails_without_raising():
    batch, _ = make_batch()
    batch.tag_offsets = batch.tag_offsets[:-1]       # corrupt: one offset short
    exporter = JaegerExporter(agent_host="127.0.0.1", agent_port=free_port())
    assert exporter.export(batch) is False
    assert exporter.stats()["encode_errors"] == 1


# -- collector failures -------------------------------------------------------------------------

def collector(sink, timeout):
    return JaegerExporter(collector_endpoint=sink.url + "/api/traces", timeout=timeout)


def test_collector_down_fails_within_timeout():
    batch, _ = make_batch()
    exporter = JaegerExporter(collector_endpoint=f"http://127.0.0.1:{free_port()}/api/traces",
                              timeout=1.0)
    t0 = time.monotonic()
    assert exporter.export(batch) is False
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5
    stats = exporter.stats()
    assert stats["send_errors"] == 1 and stats["spans_failed"] == 6
    assert stats["retries"] >= 1                       # connection errors are retried


def test_collector_500_fails_at_once(http_sink):
    sink = http_sink((500, {}, b""))
    exporter = collector(sink, timeout=5.0)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is False
    assert time.monotonic() - t0 < 1.0
    assert len(sink.requests) == 1
    assert exporter.stats()["send_errors"] == 1 and exporter.stats()["retries"] == 0


def test_collector_400_is_not_retried(http_sink):
    sink = http_sink((400, {}, b""))
    exporter = collector(sink, timeout=5.0)
    assert exporter.export(make_batch()[0]) is False
    assert len(sink.requests) == 1
    assert exporter.stats()["spans_failed"] == 6


def test_collector_429_retry_after_is_honoured(http_sink):
    sink = http_sink((429, {"Retry-After": "1"}, b""), ACCEPTED)
    exporter = collector(sink, timeout=5.0)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is True
    elapsed = time.monotonic() - t0
    assert 0.95 <= elapsed < 3.0
    assert len(sink.requests) == 2
    assert sink.requests[0].body == sink.requests[1].body
    stats = exporter.stats()
    assert stats["retries"] == 1 and stats["spans_sent"] == 6 and stats["send_errors"] == 0


def test_collector_429_retry_after_beyond_timeout_gives_up_early(http_sink):
    sink = http_sink((429, {"Retry-After": "30"}, b""))
    exporter = collector(sink, timeout=1.0)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is False
    assert time.monotonic() - t0 < 0.5
    assert len(sink.requests) == 1
    assert exporter.stats()["send_errors"] == 1


def test_collector_503_then_202(http_sink):
    sink = http_sink((503, {}, b""), (502, {}, b""), ACCEPTED)
    exporter = collector(sink, timeout=5.0)
    assert exporter.export(make_batch()[0]) is True
    assert len(sink.requests) == 3
    assert exporter.stats()["retries"] == 2


def test_collector_slow_fails_within_timeout(http_sink):
    sink = http_sink(delayed(3.0, ACCEPTED))
    exporter = collector(sink, timeout=0.5)
    t0 = time.monotonic()
    assert exporter.export(make_batch()[0]) is False
    assert time.monotonic() - t0 < 1.2
    assert exporter.stats()["send_errors"] == 1


def test_shutdown_interrupts_backoff(http_sink):
    sink = http_sink((503, {"Retry-After": "3"}, b""))
    exporter = collector(sink, timeout=10.0)
    result = []
    thread = threading.Thread(target=lambda: result.append(exporter.export(make_batch()[0])))
    thread.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    exporter.shutdown()
    thread.join(5)
    assert result == [False] and time.monotonic() - t0 < 1.0


# -- encoder details ---------------------------------------------------------------------------

def test_compact_varints_and_long_lists_decode():
    """Lists of 15+ elements (long list header) and multi-byte field values."""
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer(service_name="svc", reporter=reporter)
    span = tracer.start_span("many")
    for k in range(40):
        span.set_tag(f"t{k}", k * 1_000_003 - 20_000_000)
    for k in range(20):
        span.log_kv({f"f{j}": j for j in range(k)})
    span.finish()
    tracer.flush()
    (batch,) = reporter.batches
    for protocol, decode in ((_thrift.PROTOCOL_COMPACT, TCompactProtocol.TCompactProtocol),
                             (_thrift.PROTOCOL_BINARY, TBinaryProtocol.TBinaryProtocol)):
        data, offsets = _thrift.encode_spans(batch, protocol)
        js = ttypes.Span()
        js.read(decode(thrift_transport.TMemoryBuffer(data)))
        assert tag_values(js.tags) == {f"t{k}": ("LONG", k * 1_000_003 - 20_000_000)
                                       for k in range(40)}
        assert [len(log.fields) for log in js.logs] == list(range(20))
        assert offsets.tolist() == [0, len(data)]


def test_encode_process_value_types():
    data = _thrift.encode_process("s\u00e9rvice", {"a": 1, "b": "x", "c": False, "d": 2.5,
                                                  "e": 1 << 70, "f": None})
    process = ttypes.Process()
    process.read(TCompactProtocol.TCompactProtocol(thrift_transport.TMemoryBuffer(data)))
    assert process.serviceName == "s\u00e9rvice"
    assert tag_values(process.tags) == {
        "a": ("LONG", 1), "b": ("STRING", "x"), "c": ("BOOL", False), "d": ("DOUBLE", 2.5),
        "e": ("STRING", str(1 << 70)), "f": ("STRING", "None")}


# SPDX-License-Identifier: Apache-2.0
"""A value the tracer accepted never fails a batch in an exporter.

log_kv() keeps any object; set_tag() keeps str/int/float subclasses a __str__ or
__int__ may have produced.  Subclasses of str, int and float are sent as their built-in
value, read without calling their methods (as the json module reads them); an object
whose str() raises is sent as "<unprintable TypeName>" and counted in the exporter's
stats()["unprintable_values"]; every other value, span and batch goes out as usual.
What arrives is decoded with the peers' own code."""
import io
import json
import warnings

import pytest

import fasttrace
from fasttrace import _thrift
from fasttrace._otlp import encode_export_request
from fasttrace.exporters import (ConsoleExporter, JaegerExporter, JsonLinesExporter,
                                 OTLPExporter, ZipkinExporter)
from fasttrace.exporters.console import format_span
from fasttrace.exporters.jsonl import span_to_json
from support.zipkin_oracle import encode_spans_json_py
from fasttrace.exporters.zipkin import encode_spans_json

from support.recording import RecordingReporter
from support.servers import ACCEPTED

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
thrift_transport = pytest.importorskip("thrift.transport.TTransport")
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402

pytest.importorskip("jaeger_client.thrift_gen.jaeger.ttypes")
from jaeger_client.thrift_gen.jaeger import ttypes  # noqa: E402


def boom(*args):
    raise RuntimeError("boom")


class BadStr:
    __str__ = __repr__ = boom


class BadInt(int):
    __int__ = __index__ = __str__ = __repr__ = __format__ = boom


class BadFloat(float):
    __float__ = __str__ = __repr__ = __format__ = boom


class BadStrSub(str):
    """A str whose own methods raise; str() gives it back itself, so the tracer keeps it."""
    __eq__ = __ne__ = __repr__ = __format__ = encode = strip = boom
    __hash__ = str.__hash__

    def __str__(self):
        return self


class Wide(int):
    """What an int subclass's __int__ may return (CPython warns): a big int of its own."""
    __str__ = __repr__ = __format__ = boom


class MakesWide(int):
    """An int whose __int__ says otherwise: the tracer stores the int's own value (as
    json and the C API read it) and never calls its methods."""
    def __int__(self):
        return Wide(2**70)


CYCLE = []
CYCLE.append(CYCLE)
N = 20
BAD = 7                               # the span with the hostile values


@pytest.fixture(scope="module")
def batch():
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer("svc", reporter=reporter)
    for i in range(N):
        span = tracer.start_span(BadStrSub(f"span-{i}") if i == BAD else f"span-{i}",
                                 start_time=1000.0 + i)
        span.set_tag("i", i)
        span.log_kv({"event": "plain", "i": i}, timestamp=1000.0 + i)
        if i == BAD:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                span.set_tag("wide", MakesWide(0))
            span.set_tag("sub", BadStrSub("tag text"))
            span.set_tag(BadStrSub("sub.key"), True)
            span.log_kv({"event": BadStrSub("odd"), "bad_str": BadStr(), "bad_int": BadInt(7),
                         "bad_float": BadFloat(1.5), "bad_sub": BadStrSub("abc"),
                         "big_bad": BadInt(2**70), "in_list": [1, BadStr()], "cycle": CYCLE,
                         BadStrSub("sub.field"): "x", "after": "kept"},
                        timestamp=1000.0 + i + 0.5)
        span.finish(finish_time=1000.0 + i + 0.9)
    assert tracer.flush(5)
    tracer.close()
    (out,) = reporter.batches
    assert len(out) == N
    return out


def check_plain_spans(names, i_values):
    assert sorted(names) == sorted(f"span-{i}" for i in range(N))
    assert sorted(i_values) == list(range(N))


# -- OTLP ------------------------------------------------------------------------------

def any_value(v):
    return getattr(v, v.WhichOneof("value"))


def test_otlp(batch, http_sink):
    sink = http_sink(path="/v1/traces")
    exporter = OTLPExporter(sink.url)
    assert exporter.export(batch) is True
    assert exporter.stats()["unprintable_values"] == 2        # bad_str, in_list
    req = pb.ExportTraceServiceRequest.FromString(sink.requests[0].body)
    spans = {s.name: s for s in req.resource_spans[0].scope_spans[0].spans}
    check_plain_spans(spans, [any_value(s.attributes[0].value) for s in spans.values()])
    bad = spans[f"span-{BAD}"]
    assert {kv.key: any_value(kv.value) for kv in bad.attributes} == {
        "i": BAD, "wide": 0, "sub": "tag text", "sub.key": True}
    plain, odd = bad.events
    assert plain.name == "plain"
    assert odd.name == "odd"
    got = {kv.key: any_value(kv.value) for kv in odd.attributes}
    assert got == {"bad_str": "<unprintable BadStr>", "bad_int": 7, "bad_float": 1.5,
                   "bad_sub": "abc", "big_bad": str(2**70), "in_list": "<unprintable list>",
                   "cycle": "[[...]]", "sub.field": "x", "after": "kept"}
    assert type(got["bad_int"]) is int and type(got["bad_float"]) is float
    exporter.shutdown()


def test_otlp_counts_into_the_given_stats(batch):
    stats = {"unprintable_values": 3}
    encode_export_request(batch, "", stats)
    assert stats == {"unprintable_values": 5}
    encode_export_request(batch)                    # no stats: nothing to count into


# -- Jaeger ------------------------------------------------------------------------------

def jaeger_tag(tag):
    return {ttypes.TagType.STRING: tag.vStr, ttypes.TagType.BOOL: tag.vBool,
            ttypes.TagType.LONG: tag.vLong, ttypes.TagType.DOUBLE: tag.vDouble}[tag.vType]


def check_jaeger(spans):
    check_plain_spans([s.operationName for s in spans],
                      [jaeger_tag(s.tags[0]) for s in spans])
    (bad,) = [s for s in spans if s.operationName == f"span-{BAD}"]
    assert {t.key: jaeger_tag(t) for t in bad.tags} == {
        "i": BAD, "wide": 0, "sub": "tag text", "sub.key": True}
    fields = {t.key: (t.vType, jaeger_tag(t)) for t in bad.logs[1].fields}
    S, L, D = ttypes.TagType.STRING, ttypes.TagType.LONG, ttypes.TagType.DOUBLE
    assert fields == {
        "event": (S, "odd"), "bad_str": (S, "<unprintable BadStr>"), "bad_int": (L, 7),
        "bad_float": (D, 1.5), "bad_sub": (S, "abc"), "big_bad": (S, str(2**70)),
        "in_list": (S, "<unprintable list>"), "cycle": (S, "[[...]]"),
        "sub.field": (S, "x"), "after": (S, "kept")}


def test_jaeger_collector_binary(batch, http_sink):
    sink = http_sink(ACCEPTED)
    exporter = JaegerExporter(collector_endpoint=sink.url + "/api/traces")
    assert exporter.export(batch) is True
    stats = exporter.stats()
    assert stats["unprintable_values"] == 2 and stats["encode_errors"] == 0
    assert stats["spans_sent"] == N
    jbatch = ttypes.Batch()
    jbatch.read(TBinaryProtocol.TBinaryProtocol(
        thrift_transport.TMemoryBuffer(sink.requests[0].body)))
    check_jaeger(jbatch.spans)
    exporter.shutdown()


def test_jaeger_agent_compact(batch):
    encoder = _thrift.SpanEncoder(_thrift.PROTOCOL_COMPACT)
    assert encoder.encode(batch) == N
    assert encoder.unprintable == 2
    data, _ = encoder.data()
    proto = TCompactProtocol.TCompactProtocol(thrift_transport.TMemoryBuffer(data))
    spans = []
    for _ in range(N):
        spans.append(ttypes.Span())
        spans[-1].read(proto)
    check_jaeger(spans)
    # what the agent path sends: the same bytes, counted once per export
    exporter = JaegerExporter(agent_host="127.0.0.1", agent_port=9)
    exporter.export(batch)
    assert exporter.stats()["unprintable_values"] == 2
    assert exporter.stats()["encode_errors"] == 0
    exporter.shutdown()


# -- Zipkin ------------------------------------------------------------------------------

def test_zipkin(batch, http_sink):
    sink = http_sink(ACCEPTED)
    exporter = ZipkinExporter(sink.url + "/api/v2/spans")
    assert exporter.export(batch) is True
    assert exporter.stats()["unprintable_values"] == 2
    spans = json.loads(sink.requests[0].body)
    check_plain_spans([s["name"] for s in spans], [int(s["tags"]["i"]) for s in spans])
    (bad,) = [s for s in spans if s["name"] == f"span-{BAD}"]
    assert bad["tags"] == {"i": str(BAD), "wide": "0", "sub": "tag text",
                           "sub.key": "true"}
    value = json.loads(bad["annotations"][1]["value"])
    assert value == {"event": "odd", "bad_str": "<unprintable BadStr>", "bad_int": 7,
                     "bad_float": 1.5, "bad_sub": "abc", "big_bad": 2**70,
                     "in_list": [1, "<unprintable BadStr>"], "cycle": "[[...]]",
                     "sub.field": "x", "after": "kept"}
    assert json.loads(encode_spans_json_py(batch, {})) == json.loads(
        encode_spans_json(batch, {}))
    exporter.shutdown()


# -- JSON lines and console ----------------------------------------------------------------

def test_jsonl(batch, tmp_path):
    path = tmp_path / "spans.jsonl"
    exporter = JsonLinesExporter(path)
    assert exporter.export(batch) is True
    assert exporter.stats() == {"unprintable_values": 2}
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    check_plain_spans([s["operation_name"] for s in spans], [s["tags"]["i"] for s in spans])
    (bad,) = [s for s in spans if s["operation_name"] == f"span-{BAD}"]
    assert bad["tags"] == {"i": BAD, "wide": 0, "sub": "tag text", "sub.key": True}
    assert bad["logs"][1]["fields"] == {
        "event": "odd", "bad_str": "<unprintable BadStr>", "bad_int": 7, "bad_float": 1.5,
        "bad_sub": "abc", "big_bad": 2**70, "in_list": [1, "<unprintable BadStr>"],
        "cycle": ["[[...]]"], "sub.field": "x", "after": "kept"}
    exporter.shutdown()


def test_console(batch):
    stream = io.StringIO()
    exporter = ConsoleExporter(stream)
    assert exporter.export(batch) is True
    lines = stream.getvalue().splitlines()
    assert len(lines) == N
    (bad,) = [line for line in lines if f" span-{BAD} " in line]
    assert f"i={BAD} wide=0 sub='tag text' sub.key=True" in bad
    assert exporter.stats() == {"unprintable_values": 0}


def test_console_and_jsonl_count_an_unprintable_name_and_key():
    span = fasttrace.FinishedSpan(1, 2, None, BadStr(), "svc", 0, 1, {BadStr(): 1}, [], [])
    stats = {}
    assert format_span(span, stats).startswith("[svc] <unprintable BadStr>  trace=")
    assert stats == {"unprintable_values": 2}
    stats = {}
    out = span_to_json(span, stats)
    assert out["operation_name"] == "<unprintable BadStr>"
    assert out["tags"] == {"<unprintable BadStr>": 1}
    assert stats == {"unprintable_values": 2}

# SPDX-License-Identifier: Apache-2.0
"""Tags whose key the arena did not intern (its key table full, or a key over 256
characters) reach every backend as SpanBatch.tags() reads them: with their type, with
`span.kind` and `error` understood, and once per key.  Decoded with the peers' own code:
opentelemetry-proto, jaeger-client's Thrift types, the json module."""
import io
import json

import numpy as np
import pytest

import fasttrace
from fasttrace import _thrift
from fasttrace._otlp import encode_export_request
from fasttrace.batch import UNINTERNED
from fasttrace.exporters.console import ConsoleExporter
from fasttrace.exporters.jsonl import JsonLinesExporter
from support.zipkin_oracle import encode_spans_json_py
from fasttrace.exporters.zipkin import encode_spans_json

from support.recording import RecordingReporter

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
trace_pb2 = pytest.importorskip("opentelemetry.proto.trace.v1.trace_pb2")
thrift_transport = pytest.importorskip("thrift.transport.TTransport")
from thrift.protocol import TBinaryProtocol, TCompactProtocol  # noqa: E402

pytest.importorskip("jaeger_client.thrift_gen.jaeger.ttypes")
from jaeger_client.thrift_gen.jaeger import ttypes  # noqa: E402

Span = trace_pb2.Span
LONG = "k" * 300                 # never interned
TRUNCATED = "t" * 5000           # stored cut to max_value_length: set_tag cannot match it


def record(tracer):
    """The same spans on any tracer (fixed times, so two tracers' spans compare)."""
    server = tracer.start_span("GET /cart", start_time=1000.0, tags={
        "span.kind": "server", "http.status_code": 500, "error": True, "ratio": 0.25,
        "cached": False, "big": 2**70, "neg": -(2**63), "s": "text", LONG: 12345,
        "peer.service": "db", "peer.port": 5432})
    server.log_kv({"event": "retry", "attempt": 2}, timestamp=1000.1)
    client = tracer.start_span("SELECT", child_of=server, start_time=1000.2,
                               tags={"span.kind": "client"})
    for value in ("first", "second", "third"):
        client.set_tag(TRUNCATED, value)            # OpenTracing: the last write wins
    client.set_tag("error", False)
    client.finish(finish_time=1000.3)
    odd = tracer.start_span("odd", start_time=1000.4, tags={"span.kind": "rpc"})
    odd.finish(finish_time=1000.5)
    server.finish(finish_time=1001.0)


def drained(tracer, reporter):
    assert tracer.flush(5)
    (batch,) = reporter.batches
    reporter.batches.clear()
    return batch


@pytest.fixture(scope="module")
def batches():
    """(a batch from a tracer whose key table is full, the same spans from a fresh one)."""
    full_reporter = RecordingReporter()
    full = fasttrace.Tracer("svc", reporter=full_reporter, max_tags=20000)
    filler = full.start_span("fill")
    for i in range(17000):
        filler.set_tag(f"user.{i}", "x")
    filler.finish()
    drained(full, full_reporter)
    assert full.stats()["interned_keys"] == 16384
    record(full)
    fresh_reporter = RecordingReporter()
    fresh = fasttrace.Tracer("svc", reporter=fresh_reporter)
    record(fresh)
    out = drained(full, full_reporter), drained(fresh, fresh_reporter)
    full.close()
    fresh.close()
    return out


def by_name(batch):
    return {batch.operation_name(i): i for i in range(len(batch))}


def test_the_full_table_really_leaves_every_key_uninterned(batches):
    full, fresh = batches
    assert np.all(full.tag_key == UNINTERNED)
    assert np.any(fresh.tag_key != UNINTERNED)
    for batch in batches:
        tags = batch.tags(by_name(batch)["SELECT"])
        assert tags == {"span.kind": "client", TRUNCATED[:4096]: "third", "error": False}
        # the truncated key is the tag's identity: set three times, stored once
        i = by_name(batch)["SELECT"]
        assert batch.tag_offsets[i + 1] - batch.tag_offsets[i] == 3


# -- OTLP ------------------------------------------------------------------------------

def any_value(v):
    return getattr(v, v.WhichOneof("value"))


def otlp_spans(batch):
    req = pb.ExportTraceServiceRequest.FromString(encode_export_request(batch))
    return {s.name: s for s in req.resource_spans[0].scope_spans[0].spans}


def otlp_expected(tags):
    out = {}
    for key, value in tags.items():
        if key == "span.kind" and value in ("server", "client", "producer", "consumer"):
            continue
        out[key] = str(value) if type(value) is int and not -2**63 <= value < 2**63 else value
    return out


def test_otlp_attributes_kind_and_status(batches):
    for batch in batches:
        spans = otlp_spans(batch)
        for name, i in by_name(batch).items():
            s = spans[name]
            keys = [kv.key for kv in s.attributes]
            assert len(keys) == len(set(keys)), name          # OTLP: keys are unique
            got = {kv.key: any_value(kv.value) for kv in s.attributes}
            expected = otlp_expected(batch.tags(i))
            assert got == expected
            assert {k: type(v) for k, v in got.items()} == \
                {k: type(v) for k, v in expected.items()}
            assert "None" not in got.values()
        assert spans["GET /cart"].kind == Span.SPAN_KIND_SERVER
        assert spans["SELECT"].kind == Span.SPAN_KIND_CLIENT
        assert spans["odd"].kind == Span.SPAN_KIND_INTERNAL
        assert spans["GET /cart"].status.code == trace_pb2.Status.STATUS_CODE_ERROR
        assert spans["SELECT"].status.code == trace_pb2.Status.STATUS_CODE_UNSET
        assert {kv.key: any_value(kv.value)
                for kv in spans["GET /cart"].attributes}[LONG] == 12345


def test_otlp_full_table_and_fresh_tracer_send_the_same(batches):
    full, fresh = (otlp_spans(b) for b in batches)
    for name in full:
        a, b = full[name], fresh[name]
        assert sorted((kv.key, kv.value.SerializeToString()) for kv in a.attributes) == \
            sorted((kv.key, kv.value.SerializeToString()) for kv in b.attributes)
        assert (a.kind, a.status, list(a.events)) == (b.kind, b.status, list(b.events))


# -- Jaeger ------------------------------------------------------------------------------

def jaeger_spans(batch, protocol):
    data, _ = _thrift.encode_spans(batch, protocol)
    decode = (TBinaryProtocol.TBinaryProtocol if protocol == _thrift.PROTOCOL_BINARY
              else TCompactProtocol.TCompactProtocol)
    proto = decode(thrift_transport.TMemoryBuffer(data))
    out = {}
    for _ in range(len(batch)):
        js = ttypes.Span()
        js.read(proto)
        out[js.operationName] = js
    return out


def jaeger_tag(tag):
    return {ttypes.TagType.STRING: ("STRING", tag.vStr), ttypes.TagType.BOOL: ("BOOL", tag.vBool),
            ttypes.TagType.LONG: ("LONG", tag.vLong),
            ttypes.TagType.DOUBLE: ("DOUBLE", tag.vDouble)}[tag.vType]


def jaeger_expected(value):
    if isinstance(value, bool):
        return ("BOOL", value)
    if isinstance(value, int):
        return ("LONG", value) if -2**63 <= value < 2**63 else ("STRING", str(value))
    if isinstance(value, float):
        return ("DOUBLE", value)
    return ("STRING", value)


@pytest.mark.parametrize("protocol", [_thrift.PROTOCOL_COMPACT, _thrift.PROTOCOL_BINARY])
def test_jaeger_tags_typed_and_once_per_key(batches, protocol):
    for batch in batches:
        spans = jaeger_spans(batch, protocol)
        for name, i in by_name(batch).items():
            keys = [t.key for t in spans[name].tags]
            assert len(keys) == len(set(keys)), name
            assert {t.key: jaeger_tag(t) for t in spans[name].tags} == \
                {k: jaeger_expected(v) for k, v in batch.tags(i).items()}


def test_jaeger_trimmed_span_keeps_the_last_value(batches):
    full, _ = batches
    i = by_name(full)["SELECT"]
    data, _ = _thrift.encode_spans(full, _thrift.PROTOCOL_COMPACT,
                                   trimmed={i: (set(), set(), ("fasttrace.trimmed", 0))},
                                   only=[i])
    js = ttypes.Span()
    js.read(TCompactProtocol.TCompactProtocol(thrift_transport.TMemoryBuffer(data)))
    assert {t.key: jaeger_tag(t) for t in js.tags} == {
        "span.kind": ("STRING", "client"), TRUNCATED[:4096]: ("STRING", "third"),
        "error": ("BOOL", False), "fasttrace.trimmed": ("LONG", 0)}


# -- Zipkin ------------------------------------------------------------------------------

def zipkin_expected(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def test_zipkin_tags_kind_and_remote_endpoint(batches):
    for batch in batches:
        spans = {s["name"]: s for s in json.loads(encode_spans_json(batch, {}))}
        assert spans == {s["name"]: s for s in json.loads(encode_spans_json_py(batch, {}))}
        for name, i in by_name(batch).items():
            expected = {k: zipkin_expected(v) for k, v in batch.tags(i).items()
                        if not (k == "span.kind" and v in ("server", "client"))}
            assert spans[name]["tags"] == expected
        assert spans["GET /cart"]["kind"] == "SERVER"
        assert spans["SELECT"]["kind"] == "CLIENT"
        assert "kind" not in spans["odd"]
        assert spans["GET /cart"]["remoteEndpoint"] == {"serviceName": "db", "port": 5432}


def test_zipkin_key_repeated_in_the_json_text_only_once(batches):
    full, _ = batches
    assert encode_spans_json(full, {}).count(TRUNCATED[:4096].encode()) == 1


# -- JSON lines and console ----------------------------------------------------------------

def test_jsonl_and_console(batches, tmp_path):
    for n, batch in enumerate(batches):
        path = tmp_path / f"{n}.jsonl"
        exporter = JsonLinesExporter(path)
        assert exporter.export(batch)
        exporter.shutdown()
        lines = {d["operation_name"]: d for d in map(json.loads, path.read_text().splitlines())}
        for name, i in by_name(batch).items():
            assert lines[name]["tags"] == batch.tags(i)      # ints beyond 64 bits too
        stream = io.StringIO()
        assert ConsoleExporter(stream).export(batch)
        line = next(x for x in stream.getvalue().splitlines() if " GET /cart " in x)
        assert f"{LONG}=12345" in line and "http.status_code=500" in line
        assert "error=True" in line and "None" not in line

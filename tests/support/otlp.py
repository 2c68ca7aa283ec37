# SPDX-License-Identifier: Apache-2.0
"""What the OTLP exporters' end-to-end tests share (HTTP and gRPC): a workload covering
every tag type, log, reference shape, kind and an error, the exporter that keeps what it
forwards, and the field-by-field check of the decoded ExportTraceServiceRequests
(opentelemetry-proto) against the FinishedSpans."""
import math

from opentracing import child_of, follows_from

import fasttrace
from fasttrace.reporting import Exporter

from opentelemetry.proto.trace.v1 import trace_pb2

Span = trace_pb2.Span
Status = trace_pb2.Status

RESOURCE_TAGS = {"deployment": "prod", "replicas": 3, "canary": True, "load": 0.5}


class Tee(Exporter):
    """Keeps the FinishedSpans of what it forwards, to compare with what arrived."""

    def __init__(self, inner):
        self.inner = inner
        self.finished = []

    def export(self, batch):
        self.finished.extend(batch)
        return self.inner.export(batch)

    def shutdown(self):
        self.inner.shutdown()


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def be(trace_id, width):
    return trace_id.to_bytes(width, "big")


KINDS = {"server": Span.SPAN_KIND_SERVER, "client": Span.SPAN_KIND_CLIENT,
         "producer": Span.SPAN_KIND_PRODUCER, "consumer": Span.SPAN_KIND_CONSUMER}


def record_workload(tracer):
    """Spans covering every tag type, logs, every reference shape, kinds and an error."""
    root = tracer.start_span("GET /cart", tags={
        "span.kind": "server", "http.method": "GET", "http.status_code": 200,
        "ok": True, "no": False, "ratio": 0.25, "neg": -7, "max": 2**63 - 1,
        "min": -(2**63), "huge": 2**80, "nan": float("nan"), "inf": float("inf"),
        "unicode": "čaj ☕"})
    root.log_kv({"event": "cache.miss", "key": "cart:42", "size": 3, "hit": False,
                 "latency": 1.5, "obj": [1, 2]})
    root.log_kv({"message": "no event field"})
    client = tracer.start_span("SELECT", child_of=root, tags={"span.kind": "client"})
    client.finish()
    producer = tracer.start_span("publish", child_of=root, tags={"span.kind": "producer"})
    producer.finish()
    consumer = tracer.start_span("consume", references=[follows_from(producer.context)],
                                 tags={"span.kind": "consumer"})
    consumer.finish()
    multi = tracer.start_span("join", references=[child_of(root.context),
                                                  follows_from(client.context),
                                                  child_of(producer.context)],
                              tags={"span.kind": "rpc"})
    multi.finish()
    try:
        with tracer.start_active_span("fails", child_of=root):
            raise ValueError("boom")
    except ValueError:
        pass
    root.finish()


def check_every_field(requests, finished):
    """Asserts that `requests` (decoded ExportTraceServiceRequests) carry `finished`
    (the Tee's FinishedSpans of `record_workload`, on a tracer named ``checkout`` with
    RESOURCE_TAGS) field by field."""
    rs = requests[0].resource_spans[0]
    assert attrs(rs.resource.attributes) == {
        "service.name": "checkout", "deployment": "prod", "replicas": 3, "canary": True,
        "load": 0.5, "telemetry.sdk.language": "python", "telemetry.sdk.name": "fasttrace",
        "telemetry.sdk.version": fasttrace.__version__}
    scope = rs.scope_spans[0].scope
    assert scope.name == "fasttrace" and scope.version == fasttrace.__version__

    got = {s.span_id: s for req in requests for rs in req.resource_spans
           for ss in rs.scope_spans for s in ss.spans}
    assert len(got) == len(finished) == 6
    for fin in finished:
        s = got[be(fin.span_id, 8)]
        assert s.trace_id == be(fin.trace_id, 16)
        assert s.parent_span_id == (b"" if fin.parent_id is None else be(fin.parent_id, 8))
        assert s.name == fin.operation_name
        assert s.start_time_unix_nano == fin.start_ns
        assert s.end_time_unix_nano == fin.end_ns
        assert s.flags & 0xFF == 1
        kind = fin.tags.get("span.kind")
        assert s.kind == KINDS.get(kind, Span.SPAN_KIND_INTERNAL)
        expected = {k: v for k, v in fin.tags.items()
                    if not (k == "span.kind" and v in KINDS)}
        got_attrs = attrs(s.attributes)
        assert set(got_attrs) == set(expected)
        for key, value in expected.items():
            if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
                assert got_attrs[key] == str(value)        # beyond int64: as string
            elif isinstance(value, float) and math.isnan(value):
                assert math.isnan(got_attrs[key])
            else:
                assert got_attrs[key] == value and type(got_attrs[key]) is type(value), key
        # logs -> events; the error log -> the exception event
        assert len(s.events) == len(fin.logs)
        for ev, (ts, fields) in zip(s.events, fin.logs):
            assert ev.time_unix_nano == ts
            if fields.get("event") == "error":
                assert ev.name == "exception"
                assert attrs(ev.attributes) == {
                    "exception.type": "ValueError", "exception.message": "boom",
                    "exception.stacktrace": fields["stack"], "exception.escaped": "True"}
                continue
            assert ev.name == fields.get("event", "log")
            expected = {k: v if isinstance(v, (str, bool, int, float)) else str(v)
                        for k, v in fields.items() if k != "event"}
            assert attrs(ev.attributes) == expected
        # references other than the parent's child_of -> links
        refs = list(fin.references)
        for i, (kind_, tid, sid) in enumerate(refs):
            if kind_ == "child_of" and sid == fin.parent_id:
                del refs[i]
                break
        assert [(attrs(link.attributes)["opentracing.ref_type"], link.trace_id, link.span_id)
                for link in s.links] == [(k, be(t, 16), be(i, 8)) for k, t, i in refs]
        # status
        if fin.tags.get("error") is True:
            assert s.status.code == Status.STATUS_CODE_ERROR
            assert s.status.message == "boom"
        else:
            assert s.status.code == Status.STATUS_CODE_UNSET

    by_name = {s.name: s for s in got.values()}
    assert by_name["GET /cart"].kind == Span.SPAN_KIND_SERVER
    assert "span.kind" not in attrs(by_name["GET /cart"].attributes)
    assert attrs(by_name["join"].attributes)["span.kind"] == "rpc"
    assert by_name["join"].kind == Span.SPAN_KIND_INTERNAL
    assert len(by_name["join"].links) == 2
    consume = by_name["consume"]
    assert consume.parent_span_id == by_name["publish"].span_id
    assert [attrs(lk.attributes)["opentracing.ref_type"] for lk in consume.links] == ["follows_from"]
    root_attrs = attrs(by_name["GET /cart"].attributes)
    assert root_attrs["http.status_code"] == 200 and root_attrs["neg"] == -7
    assert root_attrs["min"] == -(2**63) and root_attrs["max"] == 2**63 - 1
    assert root_attrs["huge"] == str(2**80) and root_attrs["unicode"] == "čaj ☕"
    assert [e.name for e in by_name["GET /cart"].events] == ["cache.miss", "log"]
    assert attrs(by_name["GET /cart"].events[0].attributes)["obj"] == "[1, 2]"
    assert by_name["fails"].status.code == Status.STATUS_CODE_ERROR
    assert attrs(by_name["fails"].attributes)["error"] is True

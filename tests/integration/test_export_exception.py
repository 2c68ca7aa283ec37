# SPDX-License-Identifier: Apache-2.0
"""fasttrace's error log (fasttrace.errors) as each backend reads it.

OTLP: the OpenTelemetry ``exception`` event, compared field by field with what the
OpenTelemetry SDK itself sends for the same exception (``Span.record_exception`` with
``escaped=True``, as its ``with span:`` does, encoded by the SDK's own OTLP encoder),
both decoded with opentelemetry-proto.  Jaeger and Zipkin: the OpenTracing log, with
exceptions, exception classes and tracebacks as text."""
import json
import traceback

import pytest

import fasttrace
from fasttrace import _thrift
from fasttrace._otlp import encode_export_request
from fasttrace.errors import log_error
from fasttrace.exporters.zipkin import encode_spans_json

from support.recording import RecordingReporter

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
trace_pb2 = pytest.importorskip("opentelemetry.proto.trace.v1.trace_pb2")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter)

thrift_transport = pytest.importorskip("thrift.transport.TTransport")
from thrift.protocol import TCompactProtocol  # noqa: E402

pytest.importorskip("jaeger_client.thrift_gen.jaeger.ttypes")
from jaeger_client.thrift_gen.jaeger import ttypes  # noqa: E402


class PaymentDeclined(Exception):
    class Retry(Exception):
        pass


def raised(exc):
    """`exc` with a traceback of a few frames."""
    def inner():
        raise exc

    def outer():
        inner()
    try:
        outer()
    except BaseException as caught:
        return caught


def fasttrace_request(record, **tracer_kwargs):
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer("svc", reporter=reporter, **tracer_kwargs)
    record(tracer)
    assert tracer.flush(5)
    tracer.close()
    return pb.ExportTraceServiceRequest.FromString(
        encode_export_request(reporter.batches, fasttrace.__version__))


def sdk_request(record):
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    record(provider.get_tracer("sdk"))
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def spans(request):
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def resource(request):
    return {kv.key: kv.value for kv in request.resource_spans[0].resource.attributes}


@pytest.mark.parametrize("exc", [ValueError("boom 42"), PaymentDeclined("card 4242"),
                                 PaymentDeclined.Retry(), KeyError("k"),
                                 UnicodeError("caf\u00e9")],
                         ids=lambda e: type(e).__qualname__)
def test_the_exception_event_is_the_sdks(exc):
    exc = raised(exc)

    def with_fasttrace(tracer):
        span = tracer.start_span("op")
        log_error(span, type(exc), exc, exc.__traceback__)   # what `with span:` does
        span.finish()

    def with_sdk(tracer):
        span = tracer.start_span("op")
        span.record_exception(exc, escaped=True)
        span.end()

    (ours,), (theirs,) = spans(fasttrace_request(with_fasttrace)), spans(sdk_request(with_sdk))
    assert [e.name for e in ours.events] == [e.name for e in theirs.events] == ["exception"]
    # the same keys in the same order, each with the same AnyValue (type and value)
    assert list(ours.events[0].attributes) == list(theirs.events[0].attributes)
    assert ours.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert ours.status.message == str(exc)


def test_an_exception_leaving_a_span_matches_the_sdks_with_block():
    def with_fasttrace(tracer):
        with pytest.raises(PaymentDeclined):
            with tracer.start_active_span("op"):
                raise PaymentDeclined("declined")

    def with_sdk(tracer):
        with pytest.raises(PaymentDeclined):
            with tracer.start_span("op"):
                raise PaymentDeclined("declined")

    (ours,), (theirs,) = spans(fasttrace_request(with_fasttrace)), spans(sdk_request(with_sdk))
    got = {kv.key: kv.value for kv in ours.events[0].attributes}
    want = {kv.key: kv.value for kv in theirs.events[0].attributes}
    assert list(got) == list(want)
    for key in ("exception.type", "exception.message", "exception.escaped"):
        assert got[key] == want[key], key
    assert got["exception.escaped"].string_value == "True"
    assert got["exception.type"].string_value == f"{__name__}.PaymentDeclined"
    # raised from a different line of this file: the same shape, the same last line
    ours_text = got["exception.stacktrace"].string_value
    theirs_text = want["exception.stacktrace"].string_value
    assert ours_text.startswith("Traceback (most recent call last):\n")
    assert ours_text.splitlines()[-1] == theirs_text.splitlines()[-1] == \
        f"{__name__}.PaymentDeclined: declined"
    assert ours.status.code == trace_pb2.Status.STATUS_CODE_ERROR


def test_other_fields_and_other_shapes_of_the_error_log():
    exc = raised(ValueError("bad input"))

    def record(tracer):
        span = tracer.start_span("extra-fields")
        span.set_tag("error", True)
        span.log_kv({"event": "error", "error.kind": "ValueError", "error.object": exc,
                     "message": "bad input", "stack": "the stack", "request.id": 7})
        span.finish()
        # the integrations' error log without an exception (an HTTP 500): not an exception
        span = tracer.start_span("message-only")
        fasttrace.errors.mark_error(span, message="HTTP 500")
        span.finish()
        # only a class name, as a foreign instrumentation may log it
        span = tracer.start_span("kind-only")
        span.log_kv({"event": "error", "error.kind": "TimeoutError", "message": "slow"})
        span.finish()
        # a class name and nothing else, after a log with a message on the same span
        span = tracer.start_span("no-message")
        span.set_tag("error", True)
        span.log_kv({"event": "retry", "message": "not this one"})
        span.log_kv({"event": "error", "error.kind": "TimeoutError"})
        span.finish()
        # an exception class and instance without a traceback (nothing made them text)
        span = tracer.start_span("class-and-instance")
        span.log_kv({"event": "error", "error.kind": PaymentDeclined,
                     "error.object": PaymentDeclined("no")})
        span.finish()

    got = {s.name: s for s in spans(fasttrace_request(record))}

    def event(name):
        (ev,) = got[name].events
        return ev.name, [(kv.key, getattr(kv.value, kv.value.WhichOneof("value")))
                         for kv in ev.attributes]

    assert event("extra-fields") == ("exception", [
        ("exception.type", "ValueError"), ("exception.message", "bad input"),
        ("exception.stacktrace", "the stack"), ("exception.escaped", "True"),
        ("request.id", 7)])
    assert got["extra-fields"].status.message == "bad input"
    assert event("message-only") == ("error", [("message", "HTTP 500")])
    assert got["message-only"].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert got["message-only"].status.message == "HTTP 500"
    assert event("kind-only") == ("exception", [
        ("exception.type", "TimeoutError"), ("exception.message", "slow"),
        ("exception.escaped", "True")])
    retry, timeout = got["no-message"].events
    assert (timeout.name, len(timeout.attributes)) == ("exception", 2)
    assert got["no-message"].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert got["no-message"].status.message == ""
    assert event("class-and-instance") == ("exception", [
        ("exception.type", f"{__name__}.PaymentDeclined"), ("exception.message", "no"),
        ("exception.stacktrace", f"{__name__}.PaymentDeclined: no\n"),
        ("exception.escaped", "True")])


def test_resource_describes_the_sdk_as_the_opentelemetry_sdk_does():
    def record(tracer):
        tracer.start_span("op").finish()

    theirs = resource(sdk_request(lambda tracer: tracer.start_span("op").end()))
    ours = resource(fasttrace_request(record, tags={"deployment": "prod"}))
    assert ours["telemetry.sdk.language"] == theirs["telemetry.sdk.language"]
    assert ours["telemetry.sdk.name"].string_value == "fasttrace"
    assert ours["telemetry.sdk.version"].string_value == fasttrace.__version__
    assert ours["service.name"].string_value == "svc"
    assert ours["deployment"].string_value == "prod"

    request = fasttrace_request(record, tags={"telemetry.sdk.name": "acme", "x": 1})
    keys = [kv.key for kv in request.resource_spans[0].resource.attributes]
    assert keys.count("telemetry.sdk.name") == 1
    assert resource(request)["telemetry.sdk.name"].string_value == "acme"
    assert resource(request)["telemetry.sdk.language"].string_value == "python"


# -- Jaeger and Zipkin: the OpenTracing log, as text ----------------------------------------

@pytest.fixture
def error_batch():
    """A span whose error log holds an exception class and instance and, as a reporter
    may be handed one, a traceback object."""
    exc = raised(PaymentDeclined("card 4242"))
    reporter = RecordingReporter()
    tracer = fasttrace.Tracer("svc", reporter=reporter)
    span = tracer.start_span("pay")
    span.set_tag("error", True)
    span.log_kv({"event": "error", "error.kind": PaymentDeclined, "error.object": exc,
                 "message": "card 4242"})
    span.finish()
    assert tracer.flush(5)
    tracer.close()
    (batch,) = reporter.batches
    batch.log_fields[0]["stack"] = exc.__traceback__
    return batch, "".join(traceback.format_tb(exc.__traceback__))


def test_jaeger_error_log_as_text(error_batch):
    batch, tb_text = error_batch
    data, _ = _thrift.encode_spans(batch, _thrift.PROTOCOL_COMPACT)
    js = ttypes.Span()
    js.read(TCompactProtocol.TCompactProtocol(thrift_transport.TMemoryBuffer(data)))
    fields = {f.key: f.vStr for f in js.logs[0].fields}
    assert fields == {"event": "error", "error.kind": "PaymentDeclined",
                      "error.object": "card 4242", "message": "card 4242", "stack": tb_text}
    assert "inner" in tb_text and "object at 0x" not in tb_text


def test_zipkin_error_log_as_text(error_batch):
    batch, tb_text = error_batch
    (span,) = json.loads(encode_spans_json(batch, {}))
    assert json.loads(span["annotations"][0]["value"]) == {
        "event": "error", "error.kind": "PaymentDeclined", "error.object": "card 4242",
        "message": "card 4242", "stack": tb_text}
    assert span["tags"] == {"error": "true"}


def test_otlp_traceback_object_in_the_error_log(error_batch):
    batch, _ = error_batch
    exc = batch.log_fields[0]["error.object"]
    (span,) = spans(pb.ExportTraceServiceRequest.FromString(encode_export_request(batch)))
    attrs = {kv.key: kv.value.string_value for kv in span.events[0].attributes}
    assert attrs["exception.stacktrace"] == "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert attrs["exception.type"] == f"{__name__}.PaymentDeclined"

# SPDX-License-Identifier: Apache-2.0
"""init_tracer(): every OTEL_* variable, and bad values -> a warning and the default."""
import logging
import sys
import types

import opentracing
import pytest

import fasttrace
from fasttrace.config import FanOutExporter, init_tracer
from fasttrace.exporters import ConsoleExporter, JsonLinesExporter, OTLPExporter
from fasttrace.reporting import BatchReporter, Exporter, InMemoryReporter


@pytest.fixture
def make(request):
    made = []

    def build(env=None, **overrides):
        tracer = init_tracer(environ=env or {}, set_global=False, **overrides)
        made.append(tracer)
        return tracer
    yield build
    for tracer in made:
        tracer.close(0.1)


def warned(caplog, *words):
    return [r for r in caplog.records if r.levelno == logging.WARNING
            and all(w in r.getMessage() for w in words)]


class FakeExporter(Exporter):
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def export(self, batch):
        return True


@pytest.fixture
def fake_jaeger_zipkin(monkeypatch):
    """Stand-ins for the Jaeger/Zipkin modules, to check what config passes them."""
    for mod, cls in (("jaeger", "JaegerExporter"), ("zipkin", "ZipkinExporter")):
        module = types.ModuleType(f"fasttrace.exporters.{mod}")
        setattr(module, cls, type(cls, (FakeExporter,), {}))
        monkeypatch.setitem(sys.modules, f"fasttrace.exporters.{mod}", module)
        monkeypatch.delitem(fasttrace.exporters.__dict__, cls, raising=False)


def test_defaults(make, caplog):
    tracer = make({})
    assert tracer.service_name == "unknown_service"
    assert tracer.tags == {}
    assert isinstance(tracer.sampler, fasttrace.ConstSampler) and tracer.sampler.decision
    assert tracer._propagator_names == ("tracecontext", "baggage")
    reporter = tracer.reporter
    assert isinstance(reporter, BatchReporter)
    assert (reporter.flush_interval, reporter.max_batch_size, reporter.max_queue_size) == \
        (1.0, 512, 65536)
    exporter = reporter.exporter
    assert isinstance(exporter, OTLPExporter)
    assert exporter.endpoint == "http://localhost:4318/v1/traces"
    assert exporter.timeout == 10.0 and exporter.compression is None
    assert not warned(caplog, "")


def test_service_and_resource(make, caplog):
    tracer = make({"OTEL_RESOURCE_ATTRIBUTES":
                   "service.name=fromres, deployment.environment=prod,team=a%2Cb,bad, =x",
                   "OTEL_TRACES_EXPORTER": "none"})
    assert tracer.service_name == "fromres"
    assert tracer.tags == {"deployment.environment": "prod", "team": "a,b"}
    assert len(warned(caplog, "OTEL_RESOURCE_ATTRIBUTES")) == 2
    tracer = make({"OTEL_SERVICE_NAME": "checkout",
                   "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored",
                   "OTEL_TRACES_EXPORTER": "none"})
    assert tracer.service_name == "checkout" and tracer.tags == {}


@pytest.mark.parametrize("name,cls,value", [
    ("always_on", fasttrace.ConstSampler, True),
    ("always_off", fasttrace.ConstSampler, False),
    ("parentbased_always_on", fasttrace.ConstSampler, True),
    ("parentbased_always_off", fasttrace.ConstSampler, False),
    ("traceidratio", fasttrace.ProbabilisticSampler, 0.25),
    ("parentbased_traceidratio", fasttrace.ProbabilisticSampler, 0.25),
    ("TraceIdRatio", fasttrace.ProbabilisticSampler, 0.25),
])
def test_samplers(make, name, cls, value):
    tracer = make({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": "0.25",
                   "OTEL_TRACES_EXPORTER": "none"})
    assert isinstance(tracer.sampler, cls)
    assert (tracer.sampler.decision if cls is fasttrace.ConstSampler
            else tracer.sampler.rate) == value


@pytest.mark.parametrize("env,warning", [
    ({"OTEL_TRACES_SAMPLER": "xray"}, "OTEL_TRACES_SAMPLER"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
     "OTEL_TRACES_SAMPLER_ARG"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
     "OTEL_TRACES_SAMPLER_ARG"),
])
def test_bad_sampler_values(make, caplog, env, warning):
    tracer = make(dict(env, OTEL_TRACES_EXPORTER="none"))
    assert warned(caplog, warning)
    if env["OTEL_TRACES_SAMPLER"] == "xray":
        assert isinstance(tracer.sampler, fasttrace.ConstSampler) and tracer.sampler.decision
    else:
        assert tracer.sampler.rate == 1.0


def test_propagators(make, caplog):
    tracer = make({"OTEL_PROPAGATORS": "b3multi, jaeger,xray,b3,baggage,tracecontext,jaeger",
                   "OTEL_TRACES_EXPORTER": "none"})
    assert tracer._propagator_names == ("b3multi", "jaeger", "b3", "baggage", "tracecontext")
    assert warned(caplog, "xray")
    carrier = {}
    span = tracer.start_span("op")
    tracer.inject(span.context, opentracing.Format.HTTP_HEADERS, carrier)
    assert "x-b3-traceid" in carrier and "uber-trace-id" in carrier and "b3" in carrier
    tracer = make({"OTEL_PROPAGATORS": "none", "OTEL_TRACES_EXPORTER": "none"})
    assert tracer._propagator_names == ()


def test_otlp_variables(make):
    tracer = make({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,x-tenant=t1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    })
    e = tracer.reporter.exporter
    assert e.endpoint == "https://collector:4318/v1/traces"
    assert e.headers["api-key"] == "s ecret" and e.headers["x-tenant"] == "t1"
    assert e.timeout == 2.5 and e.compression == "gzip"
    tracer = make({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/custom/path",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3000",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    })
    e = tracer.reporter.exporter
    assert e.endpoint == "http://tempo:4318/custom/path"
    assert "b" in e.headers and "a" not in e.headers
    assert e.timeout == 3.0 and e.compression is None
    tracer = make({"OTEL_BSP_EXPORT_TIMEOUT": "4000"})
    assert tracer.reporter.exporter.timeout == 4.0


@pytest.mark.parametrize("env,warning,check", [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT",
     lambda e: e.endpoint == "http://localhost:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:notaport/v1/traces"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
     lambda e: e.endpoint == "http://localhost:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT",
     lambda e: e.timeout == 10.0),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "-5"}, "OTEL_EXPORTER_OTLP_TIMEOUT",
     lambda e: e.timeout == 10.0),
    ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION",
     lambda e: e.compression is None),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL",
     lambda e: isinstance(e, OTLPExporter)),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue,k=v"}, "OTEL_EXPORTER_OTLP_HEADERS",
     lambda e: e.headers["k"] == "v" and "novalue" not in e.headers),
    ({"OTEL_TRACES_EXPORTER": "carrier-pigeon"}, "carrier-pigeon",
     lambda e: isinstance(e, OTLPExporter)),
])
def test_bad_exporter_values(make, caplog, env, warning, check):
    tracer = make(env)
    assert warned(caplog, warning), [r.getMessage() for r in caplog.records]
    assert check(tracer.reporter.exporter)


def test_bsp_variables(make, caplog):
    tracer = make({"OTEL_BSP_SCHEDULE_DELAY": "250", "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
                   "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "128"})
    r = tracer.reporter
    assert (r.flush_interval, r.max_queue_size, r.max_batch_size) == (0.25, 4096, 128)
    assert r.drain_threshold == 128
    assert not warned(caplog, "")


@pytest.mark.parametrize("env,warning,expected", [
    ({"OTEL_BSP_SCHEDULE_DELAY": "often"}, "OTEL_BSP_SCHEDULE_DELAY", (1.0, 65536, 512)),
    ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY", (1.0, 65536, 512)),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "-1"}, "OTEL_BSP_MAX_QUEUE_SIZE", (1.0, 65536, 512)),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "1e3"}, "OTEL_BSP_MAX_QUEUE_SIZE", (1.0, 65536, 512)),
    ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "x"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
     (1.0, 65536, 512)),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"},
     "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", (1.0, 100, 100)),
    ({"OTEL_BSP_EXPORT_TIMEOUT": "never"}, "OTEL_BSP_EXPORT_TIMEOUT", (1.0, 65536, 512)),
])
def test_bad_bsp_values(make, caplog, env, warning, expected):
    r = make(env).reporter
    assert warned(caplog, warning)
    assert (r.flush_interval, r.max_queue_size, r.max_batch_size) == expected


def test_console_jsonl_none_and_several(make, tmp_path):
    assert isinstance(make({"OTEL_TRACES_EXPORTER": "console"}).reporter.exporter,
                      ConsoleExporter)
    path = tmp_path / "out.jsonl"
    tracer = make({"OTEL_TRACES_EXPORTER": "jsonl", "FASTTRACE_JSONL_PATH": str(path)})
    assert isinstance(tracer.reporter.exporter, JsonLinesExporter)
    tracer.start_span("op").finish()
    assert tracer.flush(5)
    assert '"operation_name": "op"' in path.read_text()
    tracer = make({"OTEL_TRACES_EXPORTER": "none"})
    assert isinstance(tracer.reporter, InMemoryReporter)
    tracer = make({"OTEL_TRACES_EXPORTER": "console, jsonl",
                   "FASTTRACE_JSONL_PATH": str(path)})
    fan = tracer.reporter.exporter
    assert isinstance(fan, FanOutExporter)
    assert [type(e) for e in fan.exporters] == [ConsoleExporter, JsonLinesExporter]


def test_jaeger_and_zipkin_variables(make, fake_jaeger_zipkin):
    e = make({"OTEL_TRACES_EXPORTER": "jaeger"}).reporter.exporter
    assert e.kwargs == {"agent_host": "localhost", "agent_port": 6831}
    e = make({"OTEL_TRACES_EXPORTER": "jaeger", "OTEL_EXPORTER_JAEGER_AGENT_HOST": "agent",
              "OTEL_EXPORTER_JAEGER_AGENT_PORT": "6832"}).reporter.exporter
    assert e.kwargs == {"agent_host": "agent", "agent_port": 6832}
    e = make({"OTEL_TRACES_EXPORTER": "jaeger",
              "OTEL_EXPORTER_JAEGER_ENDPOINT": "http://jaeger:14268/api/traces"}
             ).reporter.exporter
    assert e.kwargs == {"collector_endpoint": "http://jaeger:14268/api/traces"}
    e = make({"OTEL_TRACES_EXPORTER": "zipkin"}).reporter.exporter
    assert e.kwargs == {"endpoint": "http://localhost:9411/api/v2/spans"}
    e = make({"OTEL_TRACES_EXPORTER": "zipkin",
              "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans"}
             ).reporter.exporter
    assert e.kwargs == {"endpoint": "http://zipkin:9411/api/v2/spans"}


def test_bad_jaeger_and_zipkin_values(make, caplog, fake_jaeger_zipkin):
    e = make({"OTEL_TRACES_EXPORTER": "jaeger",
              "OTEL_EXPORTER_JAEGER_AGENT_PORT": "70000"}).reporter.exporter
    assert e.kwargs["agent_port"] == 6831 and warned(caplog, "OTEL_EXPORTER_JAEGER_AGENT_PORT")
    e = make({"OTEL_TRACES_EXPORTER": "jaeger",
              "OTEL_EXPORTER_JAEGER_ENDPOINT": "jaeger:14268"}).reporter.exporter
    assert "agent_host" in e.kwargs and warned(caplog, "OTEL_EXPORTER_JAEGER_ENDPOINT")
    e = make({"OTEL_TRACES_EXPORTER": "zipkin",
              "OTEL_EXPORTER_ZIPKIN_ENDPOINT": "zipkin"}).reporter.exporter
    assert e.kwargs["endpoint"] == "http://localhost:9411/api/v2/spans"
    assert warned(caplog, "OTEL_EXPORTER_ZIPKIN_ENDPOINT")


def test_unavailable_exporter_falls_back_to_otlp(make, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "fasttrace.exporters.zipkin", None)   # import fails
    monkeypatch.delitem(fasttrace.exporters.__dict__, "ZipkinExporter", raising=False)
    tracer = make({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert isinstance(tracer.reporter.exporter, OTLPExporter)
    assert warned(caplog, "zipkin")


def test_sdk_disabled(make, caplog):
    tracer = make({"OTEL_SDK_DISABLED": "TRUE", "OTEL_SERVICE_NAME": "svc"})
    assert isinstance(tracer, fasttrace.Tracer)
    assert tracer.sampler.decision is False
    assert isinstance(tracer.reporter, InMemoryReporter)
    # nothing is recorded, but incoming context still passes through
    parent = tracer.extract(opentracing.Format.HTTP_HEADERS, {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    child = tracer.start_span("op", child_of=parent)
    carrier = {}
    tracer.inject(child.context, opentracing.Format.HTTP_HEADERS, carrier)
    assert carrier["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    tracer = make({"OTEL_SDK_DISABLED": "maybe"})
    assert isinstance(tracer.reporter, BatchReporter)
    assert warned(caplog, "OTEL_SDK_DISABLED")
    tracer = make({"OTEL_SDK_DISABLED": "false"})
    assert isinstance(tracer.reporter, BatchReporter)


def test_overrides_win(make):
    exporter = FakeExporter()
    tracer = make({"OTEL_SERVICE_NAME": "env", "OTEL_TRACES_SAMPLER": "always_off"},
                  service_name="code", sampler=fasttrace.ConstSampler(True), exporter=exporter,
                  capacity=1024)
    assert tracer.service_name == "code" and tracer.sampler.decision is True
    assert tracer.reporter.exporter is exporter
    reporter = InMemoryReporter()
    assert make({}, reporter=reporter).reporter is reporter


def test_reads_os_environ_and_sets_the_global_tracer(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-os")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setattr(opentracing, "tracer", opentracing.Tracer())
    tracer = init_tracer()
    try:
        assert tracer.service_name == "from-os"
        assert opentracing.global_tracer() is tracer
    finally:
        tracer.close(0.1)

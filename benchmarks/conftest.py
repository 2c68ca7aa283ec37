# SPDX-License-Identifier: Apache-2.0
"""Tracer factories for the overhead benchmarks.

Every benchmark compares the same calls on six tracers (ddtrace only where it has an
equivalent call), side by side in one pytest-benchmark group:

``noop``
    ``opentracing.Tracer()``, the OpenTracing no-op tracer with its default
    (no-op) scope manager.  It records nothing, so it is the floor: the cost of
    the OpenTracing calls themselves.  The ratios in the report are against it.
``fasttrace``
    ``fasttrace.Tracer(service_name="bench", sampler=ConstSampler(...),
    reporter=DiscardReporter(), capacity=65536)``.  Finished spans wait in the
    arena until the tracer drains them *inline* (in the timed code: every few
    hundred finished spans, or when the arena fills) into
    ``DiscardReporter.report``, which counts the batch and drops it.  Draining
    is therefore part of what is measured, amortised over the spans of a round
    (see ``DEFAULT_MIN_TIME``).
``otel-shim``
    The OpenTelemetry SDK behind its OpenTracing shim
    (``opentelemetry.shim.opentracing_shim.create_tracer(provider)``), called
    through the same OpenTracing code as ``noop`` and ``fasttrace``.
``otel-sdk``
    The OpenTelemetry SDK called natively (``start_span`` / ``set_attribute`` /
    ``end``, ``start_as_current_span``, ``add_event``, the global propagator).
``jaeger``
    ``jaeger_client.Tracer(..., reporter=NullReporter(), sampler=ConstSampler(...))``:
    jaeger-client builds its spans (thrift tags, log records) and its
    ``NullReporter`` drops them when they finish.
``ddtrace``
    Datadog's ``ddtrace`` (4.x) called natively: the global ``ddtrace.trace.tracer``
    (``start_span`` / ``set_tag`` / ``finish``, ``with tracer.trace(...)`` for the
    active pair, ``HTTPPropagator.inject`` / ``extract``, and for log_kv
    ``span._add_event(name, attributes)``: ddtrace has no public log call, and this
    private method is what its own OpenTelemetry API bridge's ``add_event`` calls).
    See below for how it is configured.

What is fair to the OpenTelemetry SDK: its ``TracerProvider`` gets one
``SimpleSpanProcessor`` in front of an exporter whose ``export`` returns
``SUCCESS`` without doing anything (``DiscardSpanExporter``).  Every span is
recorded and handed over in full when it ends, and then dropped: no background
thread competes with the benchmark for the GIL, no queue can silently drop
spans, no list grows during the run.  This is the *cheapest* recording
configuration of the SDK: measured here, a ``BatchSpanProcessor`` with the same
exporter costs the caller 10-16% more per span (its lock, its condition
variable and its worker thread sharing the GIL).  An ``InMemorySpanExporter`` would keep
every span alive, so it is only used by ``test_memory.py``.

What is fair to ddtrace: every finished span goes through ddtrace's whole in-process
pipeline as shipped (its span processors, the ``SpanAggregator`` that collects a
trace until its last span finishes, then the sampling, tags and service-name trace
processors), and the complete trace is handed to the writer -- which is replaced, before
any span finishes, by ``DiscardTraceWriter``, whose ``write(spans)`` counts the spans
and drops them (the counterpart of ``DiscardReporter`` and ``DiscardSpanExporter``).
ddtrace's own writer (a native, libdatadog writer) would encode the trace and send it
to an agent from a background thread; with no agent here it would only fail to connect,
and it is never started.  Everything that is not per-span tracing is turned off with
environment variables set before ddtrace is first imported (``DDTRACE_ENV``): telemetry,
remote configuration, runtime metrics, profiling, AppSec/IAST, data streams, crash
tracking, dynamic instrumentation, LLM observability, stats computation, startup logs;
the agent URL points at a closed local port.  Nothing is patched (no ``ddtrace-run``,
no ``patch_all``).  Per-span defaults are left alone (sampling rules, propagation
styles, the OpenTelemetry thread-context listener).  The unsampled case installs a
``DatadogSampler`` whose one rule has ``sample_rate=0``: ddtrace still records such a
trace in full and hands it to the writer with a rejecting sampling priority (the
agent, not the tracer, drops it; the factory checks the priority), so it costs about what a sampled one does -- that is ddtrace's design.

Isolation: ddtrace is imported only by ``make_ddtrace`` (never at collection), its pytest
plugin is blocked in ``pyproject.toml``, and its benchmarks are moved to the end of the
session (``pytest_collection_modifyitems``), so whatever its import leaves behind (a
``ModuleWatchdog`` on ``sys.meta_path``, about 300 modules, exit hooks) is not there
while the other tracers are measured.  Loading its native extension starts one
``tokio-rt-worker`` thread, idle here (one scheduler tick of CPU over a
200,000-span run); recording spans starts none (checked by the factory).  ddtrace supports one tracer per process, so every ddtrace case uses
the global tracer; the factory resets its writer and sampler, and ``close_tracer``
checks that no trace was left behind unfinished.

jaeger-client 4.8 works on Python 3.11 with the installed tornado for
everything used here (``NullReporter`` and ``ConstSampler`` need no IOLoop).
One wart is worked around: ``Tracer.__init__`` probes the host's IP with a UDP
socket that it never closes (``jaeger_client.utils.local_ip``), so each
construction leaks a socket and emits a ``ResourceWarning``.  We pass the
``ip`` process tag ourselves, which skips the probe; it only changes a process
tag, not any per-span work.

Round length: pytest-benchmark's default minimum round time (5 us) would put
only a few dozen spans in a round, so the median round would contain none of
fasttrace's periodic drains (nor the peers' garbage collections) and the median
would hide that cost.  Unless ``--benchmark-min-time`` / ``--benchmark-max-time``
are given on the command line, benchmarks here use rounds of at least
``DEFAULT_MIN_TIME`` (25 ms: tens of thousands of fasttrace spans, so every
round includes many drains and even a full arena's worth; for the peers, their
garbage collections) and run for ``DEFAULT_MAX_TIME`` per benchmark.  Both can
also be set with the environment variables ``FASTTRACE_BENCH_MIN_TIME`` and
``FASTTRACE_BENCH_MAX_TIME`` (seconds).

OpenBLAS: importing numpy (fasttrace imports it only when a SpanBatch column is
read as an array, or rows are picked out of a batch -- the tail stage's pending spans;
the OpenTelemetry SDK does not need it) starts OpenBLAS worker threads; on this 2-core machine ``perf`` has caught them
spinning (5.6% of a propagation benchmark's samples in ``blas_thread_server``) --
noise shared by every implementation in the run, but noise.  None of the benchmarked code calls BLAS, so the
benchmarks pin ``OPENBLAS_NUM_THREADS=1`` (unless it is set) before anything imports
numpy.
"""
from __future__ import annotations

import os
import socket

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import opentracing
import pytest


DEFAULT_MIN_TIME = float(os.environ.get("FASTTRACE_BENCH_MIN_TIME", "0.025"))
DEFAULT_MAX_TIME = float(os.environ.get("FASTTRACE_BENCH_MAX_TIME", "2.0"))
_PLUGIN_DEFAULT_MIN_TIME = 0.000005
_PLUGIN_DEFAULT_MAX_TIME = 1.0

FASTTRACE_CAPACITY = 65536
SERVICE = "bench"


def pytest_collection_modifyitems(config, items):
    """Give benchmarks long rounds by default (see the module docstring).

    A ``benchmark`` mark overrides the command line in pytest-benchmark, so the
    defaults are only added when the command line left the plugin's own.
    """
    _ddtrace_last(items)
    extra = {}
    if _seconds(config.getoption("benchmark_min_time", None)) == _PLUGIN_DEFAULT_MIN_TIME:
        extra["min_time"] = DEFAULT_MIN_TIME
    if _seconds(config.getoption("benchmark_max_time", None)) == _PLUGIN_DEFAULT_MAX_TIME:
        extra["max_time"] = DEFAULT_MAX_TIME
    if not extra:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if not str(item.path).startswith(here):
            continue
        if "benchmark" not in getattr(item, "fixturenames", ()):
            continue
        marker = item.get_closest_marker("benchmark")
        kwargs = dict(extra)
        if marker is not None:
            kwargs.update(marker.kwargs)  # a test's own settings win
        item.add_marker(pytest.mark.benchmark(**kwargs), append=False)


def _ddtrace_last(items):
    """Moves the ddtrace cases after every other test of the session, in their order:
    importing ddtrace leaves things behind (see the module docstring) that must not
    be there while the other tracers are measured."""
    def is_ddtrace(item):
        callspec = getattr(item, "callspec", None)
        return callspec is not None and callspec.params.get("kind") == "ddtrace"

    last = [item for item in items if is_ddtrace(item)]
    if last:
        items[:] = [item for item in items if not is_ddtrace(item)] + last


def _seconds(value):
    """The plugin parses these options to strings such as '0.000005'."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- factories


def _local_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def make_noop(sampled: bool = True):
    return opentracing.Tracer()


def make_fasttrace(sampled: bool = True, reporter=None, capacity: int = FASTTRACE_CAPACITY,
                   drain_threshold=None):
    """``drain_threshold``: how many finished spans the tracer lets wait before it
    drains them to the (discarding) reporter; None for fasttrace's default."""
    import fasttrace  # the subject: not skipped when missing, the benchmark fails

    if reporter is None:
        reporter = discard_reporter(drain_threshold)
    return fasttrace.Tracer(
        service_name=SERVICE,
        sampler=fasttrace.ConstSampler(sampled),
        reporter=reporter,
        capacity=capacity,
    )


_DiscardReporter = None


def discard_reporter(drain_threshold=None):
    """A ``fasttrace.Reporter`` whose ``report(batch)`` drops the batch."""
    global _DiscardReporter
    if _DiscardReporter is None:
        import fasttrace

        class DiscardReporter(fasttrace.Reporter):
            def __init__(self):
                super().__init__()
                self.batches = 0
                self.spans = 0

            def report(self, batch):
                self.batches += 1
                self.spans += len(batch)

            def flush(self, timeout=None):
                return True

            def close(self, timeout=None):
                pass

        _DiscardReporter = DiscardReporter
    reporter = _DiscardReporter()
    if drain_threshold is not None:
        reporter.drain_threshold = drain_threshold  # read by fasttrace.Tracer at construction
    return reporter


_DiscardSpanExporter = None


def discard_span_exporter():
    """An OpenTelemetry ``SpanExporter`` that drops everything it is given."""
    global _DiscardSpanExporter
    if _DiscardSpanExporter is None:
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class DiscardSpanExporter(SpanExporter):
            def export(self, spans):
                return SpanExportResult.SUCCESS

            def shutdown(self):
                pass

            def force_flush(self, timeout_millis=30000):
                return True

        _DiscardSpanExporter = DiscardSpanExporter
    return _DiscardSpanExporter()


def make_otel_provider(sampled: bool = True, exporter=None):
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter or discard_span_exporter()))
    return provider


def make_otel_shim(sampled: bool = True, exporter=None):
    pytest.importorskip("opentelemetry.shim.opentracing_shim")
    from opentelemetry.shim.opentracing_shim import create_tracer

    provider = make_otel_provider(sampled, exporter)
    tracer = create_tracer(provider)
    tracer._bench_provider = provider  # for close_tracer
    return tracer


def make_otel_sdk(sampled: bool = True, exporter=None):
    provider = make_otel_provider(sampled, exporter)
    tracer = provider.get_tracer(SERVICE)
    tracer._bench_provider = provider
    return tracer


def make_jaeger(sampled: bool = True, reporter=None):
    jaeger_client = pytest.importorskip("jaeger_client")
    from jaeger_client.reporter import NullReporter

    return jaeger_client.Tracer(
        SERVICE,
        reporter=reporter if reporter is not None else NullReporter(),
        sampler=jaeger_client.ConstSampler(sampled),
        tags={"ip": _local_ip()},  # skips jaeger_client.utils.local_ip, which leaks a socket
    )


# ddtrace reads these when it is first imported (make_ddtrace); the import benchmark
# runs `import ddtrace` under the same environment.  See the module docstring.
DDTRACE_ENV = {
    "DD_TRACE_ENABLED": "true",
    "DD_TRACE_AGENT_URL": "http://127.0.0.1:9",  # discard port: nothing is ever sent
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_TELEMETRY_DEPENDENCY_COLLECTION_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    "DD_RUNTIME_METRICS_ENABLED": "false",
    "DD_PROFILING_ENABLED": "false",
    "DD_APPSEC_ENABLED": "false",
    "DD_IAST_ENABLED": "false",
    "DD_APPSEC_SCA_ENABLED": "false",
    "DD_DATA_STREAMS_ENABLED": "false",
    "DD_CRASHTRACKING_ENABLED": "false",
    "DD_DYNAMIC_INSTRUMENTATION_ENABLED": "false",
    "DD_EXCEPTION_REPLAY_ENABLED": "false",
    "DD_CODE_ORIGIN_FOR_SPANS_ENABLED": "false",
    "DD_SYMBOL_DATABASE_UPLOAD_ENABLED": "false",
    "DD_LLMOBS_ENABLED": "false",
    "DD_TRACE_STATS_COMPUTATION_ENABLED": "false",
    "DD_TRACE_STARTUP_LOGS": "false",
    "DD_SERVICE": SERVICE,
}

_ddtrace = None  # (tracer, DiscardTraceWriter class, DatadogSampler, SamplingRule)


def _import_ddtrace():
    global _ddtrace
    if _ddtrace is None:
        for key, value in DDTRACE_ENV.items():
            os.environ.setdefault(key, value)
        try:
            from ddtrace.internal.writer.writer import TraceWriter
            from ddtrace.trace import tracer
            from ddtrace._trace.sampler import DatadogSampler
            from ddtrace._trace.sampling_rule import SamplingRule
        except Exception as exc:  # not installed, or an import this ddtrace cannot do here
            pytest.skip(f"ddtrace cannot be imported here: {type(exc).__name__}: {exc}")

        class DiscardTraceWriter(TraceWriter):
            """Counts the spans of each complete trace and drops them."""

            def __init__(self):
                self.traces = 0
                self.spans = 0

            def recreate(self, appsec_enabled=None, llmobs_enabled=None):
                return DiscardTraceWriter()

            def stop(self, timeout=None):
                pass

            def write(self, spans=None):
                if spans:
                    self.traces += 1
                    self.spans += len(spans)

            def flush_queue(self):
                pass

        _ddtrace = (tracer, DiscardTraceWriter, DatadogSampler, SamplingRule)
    return _ddtrace


def _native_threads():
    """Threads of this process, native ones included (ddtrace's writer is native)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def make_ddtrace(sampled: bool = True):
    """The global ``ddtrace.trace.tracer`` with a fresh ``DiscardTraceWriter`` (also
    ``tracer._bench_writer``) and a ``DatadogSampler``: no rules (ddtrace's default,
    every trace kept, no rate limiter) or one rule with ``sample_rate=0``."""
    tracer, DiscardTraceWriter, DatadogSampler, SamplingRule = _import_ddtrace()
    threads = _native_threads()
    aggregator = tracer._span_aggregator
    # ddtrace's own writer starts on its first write; no span has finished yet, so it never
    # does (its status stays STOPPED) and it is simply dropped
    writer = aggregator.writer = tracer._bench_writer = DiscardTraceWriter()
    tracer._sampler = DatadogSampler(rules=[] if sampled else [SamplingRule(sample_rate=0.0)])
    assert tracer.enabled
    span = tracer.start_span("check")
    span.finish()
    assert writer.spans == 1, "ddtrace did not hand the finished span to the writer"
    assert (span.context.sampling_priority > 0) == sampled, span.context.sampling_priority
    if threads is not None:
        assert _native_threads() <= threads, "ddtrace started a thread for its spans"
    writer.spans = writer.traces = 0
    return tracer

FACTORIES = {
    "noop": make_noop,
    "fasttrace": make_fasttrace,
    "otel-shim": make_otel_shim,
    "otel-sdk": make_otel_sdk,
    "jaeger": make_jaeger,
    "ddtrace": make_ddtrace,
}


def close_tracer(kind: str, tracer) -> None:
    if kind == "fasttrace":
        tracer.close()
    elif kind in ("otel-shim", "otel-sdk"):
        tracer._bench_provider.shutdown()
    elif kind == "jaeger":
        tracer.close()
    elif kind == "ddtrace":
        # the global tracer stays (one per process); nothing may be left unfinished
        assert not tracer._span_aggregator._traces, "ddtrace: unfinished traces left behind"


@pytest.fixture
def make_tracer():
    """``make_tracer(kind, sampled=True, **kw)`` -> a tracer, closed at teardown.

    Tracers are always built here, outside the timed code.
    """
    made = []

    def make(kind: str, sampled: bool = True, **kw):
        tracer = FACTORIES[kind](sampled, **kw)
        made.append((kind, tracer))
        return tracer

    yield make
    for kind, tracer in reversed(made):
        close_tracer(kind, tracer)

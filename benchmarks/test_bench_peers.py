# SPDX-License-Identifier: Apache-2.0
"""fasttrace against the no-op tracer, the OpenTelemetry SDK and jaeger-client.

The five scenarios of the README's table.  Each is one pytest-benchmark group
holding every tracer (see ``conftest.py`` for how each is configured and why),
so one run puts them side by side::

    pytest benchmarks/test_bench_peers.py --benchmark-only
    python benchmarks/report.py            # the same, as a markdown table

Tracers and inputs (span contexts, the log dict) are built before timing; the
timed callables contain only the calls named in the group.  Each is checked
once, untimed, to do real work (a child really has its parent, a context
survives the round trip), so a tracer cannot win by silently doing nothing.

Units: calling the benchmarked closure costs pytest-benchmark's loop about as
much as the no-op tracer's whole scenario, which would flatter every ratio to
the no-op.  So each timed call runs its scenario ``OPS`` times in a plain
``for`` loop, and pytest-benchmark's own tables show times per ``OPS``
operations; ``extra_info["ops_per_call"]`` records the divisor and
``report.py`` prints per-operation times.  Group ``0`` times the empty loop:
the overhead left in every per-operation time (about 7 ns here), reported so
that ratios can also be read net of it.

pytest-benchmark times one benchmark after another, so on a shared machine a
change of background load between the no-op's turn and fasttrace's moves their
ratio.  ``test_paired_ratio`` measures the ratios that have targets (scenarios
1, 2 and 5) robustly: it alternates rounds of the no-op and fasttrace, and
records the median of the per-pair ratios in ``extra_info``.
"""
from __future__ import annotations

import statistics
import time

import pytest
from opentracing import Format

from _bench import KINDS, OPS, REPS, bench_loop

G_HARNESS = "0 harness: empty loop"
G_ROOT = "1 root span + 2 tags"
G_NESTED = "2 nested active spans"
G_PROPAGATION = "3 inject+extract HTTP headers"
G_LOG = "4 log_kv"
G_UNSAMPLED = "5 unsampled root span + 2 tags"
G_PAIRED = "paired: fasttrace / no-op, interleaved (one run; see extra_info)"

# log_kv is timed on an open span, LOGS_PER_ROUND calls per round, with a fresh
# span per round started and finished outside the timing (pedantic setup and
# teardown).  A single long-lived span would hit per-span log limits (128 events
# in the OpenTelemetry SDK; fasttrace's max_logs) and then measure the cheaper
# "limit reached" path, or grow without bound (jaeger-client).
LOGS_PER_ROUND = 16
LOG_ROUNDS = 20000
LOG_KV = {"event": "x", "value": 1}

kinds = pytest.mark.parametrize("kind", KINDS)


# --------------------------------------------------------------------------- callables


def root_span(kind, tracer):
    if kind == "otel-sdk":
        def run():
            for _ in REPS:
                span = tracer.start_span("op")
                span.set_attribute("a", 1)
                span.set_attribute("b", "x")
                span.end()
    else:
        def run():
            for _ in REPS:
                span = tracer.start_span("op")
                span.set_tag("a", 1)
                span.set_tag("b", "x")
                span.finish()
    return run


def nested_active(kind, tracer):
    if kind == "otel-sdk":
        def run():
            for _ in REPS:
                with tracer.start_as_current_span("p"):
                    with tracer.start_as_current_span("c"):
                        pass
    else:
        def run():
            for _ in REPS:
                with tracer.start_active_span("p"):
                    with tracer.start_active_span("c"):
                        pass
    return run


def check_nested(kind, tracer):
    """Untimed: the child's parent is the active span."""
    if kind == "noop":
        return
    if kind == "otel-sdk":
        with tracer.start_as_current_span("p") as p:
            with tracer.start_as_current_span("c") as c:
                assert c.parent.span_id == p.get_span_context().span_id
        return
    with tracer.start_active_span("p") as ps:
        with tracer.start_active_span("c") as cs:
            assert tracer.active_span is cs.span
            if kind == "otel-shim":
                assert cs.span.unwrap().parent.span_id == ps.span.unwrap().get_span_context().span_id
            else:
                assert cs.span.parent_id == ps.span.span_id


def propagation(kind, tracer):
    """Returns (run, check, trace id of the injected context or None).

    ``check()`` does one round trip, untimed, and returns the extracted context.
    """
    if kind == "otel-sdk":
        from opentelemetry import propagate, trace

        span = tracer.start_span("op")
        ctx = trace.set_span_in_context(span)
        span.end()
        inject, extract, get_span = propagate.inject, propagate.extract, trace.get_current_span

        def run():
            for _ in REPS:
                carrier = {}
                inject(carrier, context=ctx)
                get_span(extract(carrier)).get_span_context()

        def check():
            carrier = {}
            inject(carrier, context=ctx)
            return get_span(extract(carrier)).get_span_context()

        return run, check, span.get_span_context().trace_id

    span = tracer.start_span("op")
    context = span.context
    span.finish()
    fmt = Format.HTTP_HEADERS
    inject, extract = tracer.inject, tracer.extract

    def run():
        for _ in REPS:
            carrier = {}
            inject(context, fmt, carrier)
            extract(fmt, carrier)

    def check():
        carrier = {}
        inject(context, fmt, carrier)
        return extract(fmt, carrier)

    return run, check, _trace_id(kind, context)


def _trace_id(kind, context):
    if kind == "noop":
        return None
    if kind == "otel-shim":
        return context.unwrap().trace_id
    return context.trace_id


# --------------------------------------------------------------------------- benchmarks


@pytest.mark.benchmark(group=G_HARNESS)
def test_harness_empty_loop(benchmark):
    """The loop every timed call runs its scenario in, with nothing in it: part
    of every per-operation time, the same for every tracer."""
    def run():
        for _ in REPS:
            pass

    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group=G_ROOT)
def test_root_span_two_tags(benchmark, make_tracer, kind):
    run = root_span(kind, make_tracer(kind))
    run()
    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group=G_NESTED)
def test_nested_active_spans(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    check_nested(kind, tracer)
    bench_loop(benchmark, nested_active(kind, tracer))


@kinds
@pytest.mark.benchmark(group=G_PROPAGATION)
def test_inject_extract_http_headers(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    run, check, trace_id = propagation(kind, tracer)
    extracted = check()
    if trace_id is not None:
        assert extracted is not None, kind
        got = extracted.trace_id if kind == "otel-sdk" else _trace_id(kind, extracted)
        assert got == trace_id, (kind, got, trace_id)
    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group=G_LOG)
def test_log_kv(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    kv = LOG_KV
    benchmark.extra_info["ops_per_call"] = LOGS_PER_ROUND

    if kind == "otel-sdk":
        def setup():
            return (tracer.start_span("op"),), {}

        def teardown(span):
            span.end()

        def target(span):
            log = span.add_event
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
    else:
        def setup():
            return (tracer.start_span("op"),), {}

        def teardown(span):
            span.finish()

        def target(span):
            log = span.log_kv
            log(kv); log(kv); log(kv); log(kv)  # noqa: E702
            log(kv); log(kv); log(kv); log(kv)  # noqa: E702
            log(kv); log(kv); log(kv); log(kv)  # noqa: E702
            log(kv); log(kv); log(kv); log(kv)  # noqa: E702

    benchmark.pedantic(
        target, setup=setup, teardown=teardown, rounds=LOG_ROUNDS, warmup_rounds=LOG_ROUNDS // 100
    )


@kinds
@pytest.mark.benchmark(group=G_UNSAMPLED)
def test_unsampled_root_span_two_tags(benchmark, make_tracer, kind):
    tracer = make_tracer(kind, sampled=False)
    run = root_span(kind, tracer)
    run()
    bench_loop(benchmark, run)


# --------------------------------------------------------------------------- paired ratios

PAIRED_ROUNDS = 400          # pairs of rounds
PAIRED_CALLS = 20            # run() calls per round: 2,000 operations, several fasttrace drains
PAIRED = {
    "1 root span + 2 tags": (root_span, True),
    "2 nested active spans": (nested_active, True),
    "5 unsampled root span + 2 tags": (root_span, False),
}


@pytest.mark.parametrize("scenario", list(PAIRED))
@pytest.mark.benchmark(group=G_PAIRED)
def test_paired_ratio(benchmark, make_tracer, scenario):
    factory, sampled = PAIRED[scenario]
    noop = factory("noop", make_tracer("noop"))
    fast = factory("fasttrace", make_tracer("fasttrace", sampled=sampled))
    rounds, calls = (PAIRED_ROUNDS, PAIRED_CALLS) if benchmark.enabled else (2, 1)
    clock = time.perf_counter_ns

    def timed(run):
        t0 = clock()
        for _ in range(calls):
            run()
        return (clock() - t0) / (calls * OPS)

    def measure():
        noop(), fast()  # warm up
        t_noop, t_fast, ratios = [], [], []
        for i in range(rounds):
            if i % 2:
                b, a = timed(fast), timed(noop)
            else:
                a, b = timed(noop), timed(fast)
            t_noop.append(a)
            t_fast.append(b)
            ratios.append(b / a)
        return statistics.median(t_noop), statistics.median(t_fast), statistics.median(ratios)

    noop_ns, fast_ns, ratio = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(
        scenario=scenario, paired_rounds=rounds, noop_ns=round(noop_ns, 1),
        fasttrace_ns=round(fast_ns, 1), paired_ratio=round(ratio, 3))

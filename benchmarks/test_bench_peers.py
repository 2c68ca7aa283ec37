# SPDX-License-Identifier: Apache-2.0
"""fasttrace against the no-op tracer, the OpenTelemetry SDK, jaeger-client and ddtrace.

The five scenarios of the README's table.  Each is one pytest-benchmark group
holding every tracer (see ``conftest.py`` for how each is configured and why),
so one run puts them side by side::

    pytest benchmarks/test_bench_peers.py --benchmark-only
    python benchmarks/report.py            # the same, as a markdown table

Tracers and inputs (span contexts, the log dict) are built before timing; the
timed callables contain only the calls named in the group.  Each is checked
once, untimed, to do real work (a child really has its parent, a context
survives the round trip), so a tracer cannot win by silently doing nothing; for
ddtrace, whose spans go to a writer that only counts them, the count is checked too.
ddtrace is called natively (``start_span``/``set_tag``/``finish``, ``tracer.trace``,
``HTTPPropagator``, and ``span._add_event`` for log_kv), and its cases run last
(see ``conftest.py``).

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
from conftest import discard_reporter, make_fasttrace

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
    if kind == "ddtrace":
        def run():
            for _ in REPS:
                with tracer.trace("p"):
                    with tracer.trace("c"):
                        pass
    elif kind == "otel-sdk":
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
    if kind == "ddtrace":
        with tracer.trace("p") as p:
            with tracer.trace("c") as c:
                assert tracer.current_span() is c
                assert c.parent_id == p.span_id
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

    if kind == "ddtrace":
        from ddtrace.propagation.http import HTTPPropagator

        span = tracer.start_span("op")
        context = span.context
        span.finish()
        inject, extract = HTTPPropagator.inject, HTTPPropagator.extract

        def run():
            for _ in REPS:
                carrier = {}
                inject(context, carrier)
                extract(carrier)

        def check():
            carrier = {}
            inject(context, carrier)
            return extract(carrier)

        return run, check, context.trace_id

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


def check_recorded(kind, tracer, run, spans_per_run):
    """Untimed, ddtrace only: one run() hands every span to the (counting) writer."""
    if kind != "ddtrace":
        return
    writer = tracer._bench_writer
    before = writer.spans
    run()
    assert writer.spans - before == spans_per_run, (writer.spans - before, spans_per_run)


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
    tracer = make_tracer(kind)
    run = root_span(kind, tracer)
    run()
    check_recorded(kind, tracer, run, OPS)
    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group=G_NESTED)
def test_nested_active_spans(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    check_nested(kind, tracer)
    run = nested_active(kind, tracer)
    check_recorded(kind, tracer, run, 2 * OPS)
    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group=G_PROPAGATION)
def test_inject_extract_http_headers(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    run, check, trace_id = propagation(kind, tracer)
    extracted = check()
    if trace_id is not None:
        assert extracted is not None, kind
        got = extracted.trace_id if kind in ("otel-sdk", "ddtrace") else _trace_id(kind, extracted)
        assert got == trace_id, (kind, got, trace_id)
    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group=G_LOG)
def test_log_kv(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    kv = LOG_KV
    benchmark.extra_info["ops_per_call"] = LOGS_PER_ROUND

    if kind == "ddtrace":
        # ddtrace has no public log call: _add_event is what its OpenTelemetry API bridge's
        # Span.add_event calls (a span event with attributes)
        check = tracer.start_span("op")
        check._add_event("x", kv)
        assert check._has_events()
        check.finish()
        opened = []  # --benchmark-disable calls setup but not teardown: finished below

        def setup():
            opened.append(tracer.start_span("op"))
            return (opened[-1],), {}

        def teardown(span):
            span.finish()
            opened.remove(span)

        def target(span):
            log = span._add_event
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
            log("x", kv); log("x", kv); log("x", kv); log("x", kv)  # noqa: E702
    elif kind == "otel-sdk":
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
    if kind == "ddtrace":
        for span in opened:
            span.finish()  # a trace left open would stay in ddtrace's (global) aggregator


@kinds
@pytest.mark.benchmark(group=G_UNSAMPLED)
def test_unsampled_root_span_two_tags(benchmark, make_tracer, kind):
    tracer = make_tracer(kind, sampled=False)
    run = root_span(kind, tracer)
    run()
    check_recorded(kind, tracer, run, OPS)  # ddtrace records unsampled traces too
    bench_loop(benchmark, run)


# --------------------------------------------------------------------------- paired ratios

# pairs of rounds, run() calls per round.  A round must hold the periodic costs whole:
# 10,000 operations are about five of fasttrace's inline drains (every 2,048 finished
# spans); a round of the BatchReporter pair spans several of the interpreter's 5 ms
# thread switch intervals, which is when the reporter's thread gets the GIL to drain
# (shorter rounds would leave its drains to a minority of rounds, which the median
# would not see).
PAIRED_ROUNDS = 200
PAIRED_CALLS = 100


def _pair_same_calls(factory, sampled):
    """The no-op tracer against fasttrace, the same OpenTracing calls on each."""
    def make(make_tracer):
        return (factory("noop", make_tracer("noop")),
                factory("fasttrace", make_tracer("fasttrace", sampled=sampled)))
    return make


def _log_kv_runs(make_tracer):
    """OPS log_kv calls on spans started before the timed call (OPS // LOGS_PER_SPAN
    spans, LOGS_PER_SPAN logs each, well within every per-span limit), finished
    between timed calls.  Each round ends with a timed drain of the round's spans
    (fasttrace: 25 spans per call, their logs moved out of the arena into a
    SpanBatch), so the logs' share of the drain is in the measured cost -- with the
    spans' own share on top, which only counts against fasttrace."""
    def runs(tracer):
        spans = []

        def setup():
            for s in spans:
                s.finish()
            spans[:] = [tracer.start_span("op") for _ in range(OPS // LOGS_PER_SPAN)]

        def run():
            kv = LOG_KV
            for s in spans:
                log = s.log_kv
                log(kv); log(kv); log(kv); log(kv)  # noqa: E702

        def end_of_round():
            for s in spans:
                s.finish()
            spans.clear()
            drain = getattr(tracer, "drain", None)
            if drain is not None:
                while drain() is not None:
                    pass
        return run, setup, end_of_round
    never_inline = make_fasttrace(reporter=discard_reporter(drain_threshold=10 ** 6))
    return runs(make_tracer("noop")), runs(never_inline)


def _batch_reporter_runs(make_tracer):
    """fasttrace with a BatchReporter (its thread drains and exports to an exporter that
    drops every batch) against fasttrace with the in-memory case (the application
    thread drains into a reporter that drops the batch): what export costs the
    application beyond recording."""
    import fasttrace

    class DiscardExporter(fasttrace.Exporter):
        def export(self, batch):
            return True

    inline = make_tracer("fasttrace")
    threaded = make_fasttrace(reporter=fasttrace.BatchReporter(DiscardExporter()))
    return root_span("fasttrace", inline), root_span("fasttrace", threaded), threaded.close


LOGS_PER_SPAN = 4
# scenario -> make(make_tracer) -> (baseline run, subject run[, close]); a run may be
# (run, setup, end_of_round): setup() untimed before each call, end_of_round() timed
# scenario -> (make, rounds, calls)
PAIRED = {
    "1 root span + 2 tags": (_pair_same_calls(root_span, True), PAIRED_ROUNDS, PAIRED_CALLS),
    "2 nested active spans": (_pair_same_calls(nested_active, True), PAIRED_ROUNDS,
                              PAIRED_CALLS // 2),
    "4 log_kv": (_log_kv_runs, PAIRED_ROUNDS, PAIRED_CALLS),
    "5 unsampled root span + 2 tags": (_pair_same_calls(root_span, False), PAIRED_ROUNDS,
                                       PAIRED_CALLS),
    "6 root span + 2 tags, BatchReporter / in-memory": (_batch_reporter_runs,
                                                        PAIRED_ROUNDS // 4, PAIRED_CALLS * 4),
}


@pytest.mark.parametrize("scenario", list(PAIRED))
@pytest.mark.benchmark(group=G_PAIRED)
def test_paired_ratio(benchmark, make_tracer, scenario):
    make, rounds, calls = PAIRED[scenario]
    base, subject, *close = make(make_tracer)
    if not benchmark.enabled:
        rounds, calls = 2, 1
    clock = time.perf_counter_ns

    def timed(run):
        run, setup, end_of_round = run if isinstance(run, tuple) else (run, None, None)
        total = 0
        for _ in range(calls):
            if setup is not None:
                setup()
            t0 = clock()
            run()
            total += clock() - t0
        if end_of_round is not None:
            t0 = clock()
            end_of_round()
            total += clock() - t0
        return total / (calls * OPS)

    def measure():
        timed(base), timed(subject)  # warm up
        t_base, t_subject, ratios = [], [], []
        for i in range(rounds):
            if i % 2:
                b, a = timed(subject), timed(base)
            else:
                a, b = timed(base), timed(subject)
            t_base.append(a)
            t_subject.append(b)
            ratios.append(b / a)
        return statistics.median(t_base), statistics.median(t_subject), statistics.median(ratios)

    try:
        base_ns, subject_ns, ratio = benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        for c in close:
            c()
    benchmark.extra_info.update(
        scenario=scenario, paired_rounds=rounds, ops_per_round=calls * OPS, noop_ns=round(base_ns, 1),
        fasttrace_ns=round(subject_ns, 1), paired_ratio=round(ratio, 3))

# SPDX-License-Identifier: Apache-2.0
"""fasttrace's span API, call by call, next to the no-op tracer.

Finer-grained than ``test_bench_peers.py`` (which holds the README's
comparison with other tracers): one group per shape of span work, each with
``opentracing.Tracer()`` (the floor) and fasttrace, to find where the time
goes.  Groups are named ``span: ...``; ``python benchmarks/report.py --all``
tabulates them per operation.  As in ``test_bench_peers.py``, each timed call
loops ``OPS`` times (pytest-benchmark's tables show times per ``OPS``
operations; ``extra_info["ops_per_call"]`` is the divisor).
"""
from __future__ import annotations

import pytest

from _bench import OPS, REPS, bench_loop

kinds = pytest.mark.parametrize("kind", ("noop", "fasttrace"))


@kinds
@pytest.mark.benchmark(group="span: start_span + finish")
def test_bare_span(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)

    def run():
        for _ in REPS:
            tracer.start_span("op").finish()

    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group="span: start_span(tags={2 tags}) + finish")
def test_tags_at_start(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    tags = {"a": 1, "b": "x"}

    def run():
        for _ in REPS:
            tracer.start_span("op", tags=tags).finish()

    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group="span: 8 tags of every type + finish")
def test_eight_tags(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)

    def run():
        for _ in REPS:
            span = tracer.start_span("op")
            span.set_tag("http.method", "GET")
            span.set_tag("http.url", "https://example.com/checkout")
            span.set_tag("http.status_code", 200)
            span.set_tag("error", False)
            span.set_tag("span.kind", "server")
            span.set_tag("component", "bench")
            span.set_tag("latency", 0.25)
            span.set_tag("peer.port", 8080)
            span.finish()

    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group="span: child_of an explicit parent + finish")
def test_child_of(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    parent = tracer.start_span("parent")

    def run():
        for _ in REPS:
            tracer.start_span("child", child_of=parent).finish()

    bench_loop(benchmark, run)
    parent.finish()


@kinds
@pytest.mark.benchmark(group="span: with start_span(): pass")
def test_span_context_manager(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)

    def run():
        for _ in REPS:
            with tracer.start_span("op"):
                pass

    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group="span: one start_active_span")
def test_one_active_span(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)

    def run():
        for _ in REPS:
            with tracer.start_active_span("op"):
                pass

    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group="span: tracer.active_span under an active scope")
def test_active_span_lookup(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)
    scope = tracer.start_active_span("op")

    def run():
        for _ in REPS:
            tracer.active_span

    try:
        bench_loop(benchmark, run)
    finally:
        scope.close()


@kinds
@pytest.mark.benchmark(group="span: set_baggage_item + get_baggage_item")
def test_baggage(benchmark, make_tracer, kind):
    tracer = make_tracer(kind)

    def run():
        for _ in REPS:
            span = tracer.start_span("op")
            span.set_baggage_item("user", "42")
            span.get_baggage_item("user")
            span.finish()

    bench_loop(benchmark, run)


@kinds
@pytest.mark.benchmark(group="span: root + 2 tags, arena full of open spans (dropped)")
def test_arena_full(benchmark, make_tracer, kind):
    """The overflow path: every slot holds an open span, so new spans are not
    recorded (counted as dropped) and must stay cheap and never block."""
    capacity = 64
    tracer = make_tracer(kind, capacity=capacity) if kind == "fasttrace" else make_tracer(kind)
    held = [tracer.start_span("held") for _ in range(capacity)]

    def run():
        for _ in REPS:
            span = tracer.start_span("op")
            span.set_tag("a", 1)
            span.set_tag("b", "x")
            span.finish()

    bench_loop(benchmark, run)
    if kind == "fasttrace":
        assert tracer.stats()["dropped"]["arena_full"] >= OPS
    for span in held:
        span.finish()

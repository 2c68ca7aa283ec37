# SPDX-License-Identifier: Apache-2.0
"""Span and trace ids: never zero, unique, 128-bit, independent of Python's random."""
import random
import threading

import numpy as np

import fasttrace


def _unsampled_tracer(make_tracer):
    # ids are made the same way for unsampled spans, which cost no arena slot
    return make_tracer(sampler=fasttrace.ConstSampler(False))


def test_ids_nonzero_and_unique_over_100k(make_tracer):
    tracer = _unsampled_tracer(make_tracer)
    n = 100_000
    span_ids = set()
    trace_ids = set()
    for _ in range(n):
        span = tracer.start_span("x")
        span_ids.add(span.span_id)
        trace_ids.add(span.trace_id)
    assert len(span_ids) == n and len(trace_ids) == n
    assert 0 not in span_ids and 0 not in trace_ids
    assert max(span_ids) < 2 ** 64
    assert max(trace_ids) < 2 ** 128


def test_recorded_ids_unique(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    for _ in range(20_000):
        with tracer.start_active_span("a"):
            tracer.start_span("b").finish()
    spans = reporter.spans
    assert len({s.span_id for s in spans}) == len(spans) == 40_000
    assert len({s.trace_id for s in spans}) == 20_000


def test_trace_ids_use_128_bits(make_tracer):
    tracer = _unsampled_tracer(make_tracer)
    ids = [tracer.start_span("x").trace_id for _ in range(2000)]
    high = [t >> 64 for t in ids]
    low = [t & (2 ** 64 - 1) for t in ids]
    assert sum(1 for h in high if h) >= 1990          # random high halves
    assert len(set(high)) >= 1990
    assert all(lo != 0 for lo in low)                 # W3C: low half never zero
    # bits look random: each of the 128 bit positions is set in roughly half the ids
    for bit in range(128):
        ones = sum((t >> bit) & 1 for t in ids)
        assert 800 < ones < 1200, bit


def test_span_ids_look_random(make_tracer):
    tracer = _unsampled_tracer(make_tracer)
    ids = [tracer.start_span("x").span_id for _ in range(2000)]
    for bit in range(64):
        ones = sum((s >> bit) & 1 for s in ids)
        assert 800 < ones < 1200, bit
    assert ids != sorted(ids)


def test_child_ids(make_tracer):
    tracer = _unsampled_tracer(make_tracer)
    root = tracer.start_span("root")
    children = [tracer.start_span("c", child_of=root) for _ in range(1000)]
    assert {c.trace_id for c in children} == {root.trace_id}
    ids = {c.span_id for c in children}
    assert len(ids) == 1000 and root.span_id not in ids


def test_unique_across_threads(make_tracer):
    tracer = _unsampled_tracer(make_tracer)
    n_threads, per_thread = 8, 20_000
    results = [None] * n_threads
    barrier = threading.Barrier(n_threads)

    def worker(i):
        barrier.wait()
        out = []
        for _ in range(per_thread):
            span = tracer.start_span("t")
            out.append((span.trace_id, span.span_id))
        results[i] = out

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [pair for r in results for pair in r]
    assert len(all_ids) == n_threads * per_thread
    assert len({t for t, _ in all_ids}) == len(all_ids)
    assert len({s for _, s in all_ids}) == len(all_ids)


def test_python_random_seed_does_not_change_ids(make_tracer):
    tracer = _unsampled_tracer(make_tracer)

    def draw():
        return [(s.trace_id, s.span_id) for s in
                (tracer.start_span("x") for _ in range(50))]

    random.seed(1)
    np.random.seed(1)
    first = draw()
    random.seed(1)
    np.random.seed(1)
    second = draw()
    assert not set(first) & set(second)


def test_ids_differ_between_tracers(make_tracer):
    a = _unsampled_tracer(make_tracer)
    b = _unsampled_tracer(make_tracer)
    ids_a = {a.start_span("x").span_id for _ in range(1000)}
    ids_b = {b.start_span("x").span_id for _ in range(1000)}
    assert not ids_a & ids_b


def test_context_ids_match_span(make_tracer):
    tracer = make_tracer()
    span = tracer.start_span("x")
    ctx = span.context
    assert ctx.trace_id == span.trace_id and ctx.span_id == span.span_id
    assert isinstance(ctx.trace_id, int) and isinstance(ctx.span_id, int)

# SPDX-License-Identifier: Apache-2.0
"""Tail-based sampling's cost to the application: a root span with 2 tags, finished,
with ``tail_sampling=TailSampling()`` next to plain head sampling, same run.

Both tracers use ``ConstSampler(True)`` and the benchmarks' discard reporter, so every
span is recorded and drained inline (in the timed code) in both; the difference is the
tail stage each drained batch passes through (the decision table, the decision, the
``sampling.decision`` value written into the entry the arena reserved for it).  ``test_tail_vs_head_ratio`` times
both in alternating rounds and prints the ratio (it asserts nothing about time).

``test_tail_synthetic_load_share`` runs the acceptance load (20,000 local traces of 3-4
spans, exactly every 137th with an error=True child, head sampler off, a 1% baseline)
and prints the share of spans exported and the error traces kept; it asserts those (all
error traces kept whole, the non-error share <= 2%), nothing about time.  The same
load, with the bound's binomial numbers, is tests/reliability/test_tail_acceptance.py.
"""
from __future__ import annotations

import pytest

import fasttrace
from _bench import OPS, REPS, bench_loop, median_seconds
from conftest import discard_reporter

TAGS = {"http.method": "GET", "http.status_code": 200}
LOAD_TRACES = 20_000
ERROR_EVERY = 137


def _tracer(kind):
    return fasttrace.Tracer(
        service_name="bench", sampler=fasttrace.ConstSampler(True),
        reporter=discard_reporter(), capacity=65536,
        tail_sampling=fasttrace.TailSampling() if kind == "tail" else None)


def _run(tracer):
    def run():
        for _ in REPS:
            tracer.start_span("op", tags=TAGS).finish()
    return run


@pytest.mark.parametrize("kind", ("head", "tail"))
@pytest.mark.benchmark(group="tail: 1 root span + 2 tags")
def test_root_span_two_tags(benchmark, kind):
    tracer = _tracer(kind)
    bench_loop(benchmark, _run(tracer))
    tracer.close()


def test_tail_vs_head_ratio(capsys):
    """Median per-span cost, head vs tail, in the same run (printed)."""
    tracers = {kind: _tracer(kind) for kind in ("head", "tail")}
    loops = 200      # 20,000 spans per round: many inline drains in each

    def timed(kind):
        run = _run(tracers[kind])

        def many():
            for _ in range(loops):
                run()
        return many

    for kind in tracers:
        timed(kind)()                      # warm up
    costs = {kind: 0.0 for kind in tracers}
    rounds = 15
    samples = {kind: [] for kind in tracers}
    for _ in range(rounds):
        for kind in tracers:               # alternate, so drift hits both alike
            samples[kind].append(median_seconds(timed(kind), 1))
    for kind in tracers:
        samples[kind].sort()
        costs[kind] = samples[kind][rounds // 2] / (loops * OPS)
    kept = tracers["tail"].stats()["tail_sampling"]["kept"]["head"]
    for tracer in tracers.values():
        tracer.close()
    assert kept > 0                        # the tail stage did run
    with capsys.disabled():
        print(f"\nroot span + 2 tags: head {costs['head'] * 1e9:.0f} ns, "
              f"tail {costs['tail'] * 1e9:.0f} ns, ratio {costs['tail'] / costs['head']:.2f}")


def _synthetic_load(tracer, n):
    """n local traces: a root, two children finishing before it, every other trace a
    third finishing after it; every ERROR_EVERY-th trace's first child has error=True.
    Returns {trace_id: (spans, error)}."""
    traces = {}
    for k in range(n):
        root = tracer.start_span("GET /orders", ignore_active_span=True)
        error = k % ERROR_EVERY == ERROR_EVERY - 1
        query = tracer.start_span("db.query", child_of=root)
        if error:
            query.set_tag("error", True)
        query.finish()
        tracer.start_span("cache.get", child_of=root).finish()
        late = tracer.start_span("publish", child_of=root) if k % 2 == 0 else None
        root.finish()
        if late is not None:
            late.finish()
        traces[root.trace_id] = (3 if late is None else 4, error)
    return traces


def test_tail_synthetic_load_share(capsys):
    """What a 1% baseline exports of a load with a known error rate (printed)."""
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(
        service_name="bench", sampler=fasttrace.ConstSampler(False), reporter=reporter,
        capacity=65536, tail_sampling=fasttrace.TailSampling(baseline_ratio=0.01,
                                                             keep_head_sampled=False))
    traces = _synthetic_load(tracer, LOAD_TRACES)
    assert tracer.flush(60)
    tail = tracer.stats()["tail_sampling"]
    exported = reporter.spans
    tracer.close()
    total = sum(n for n, _ in traces.values())
    errors = {tid for tid, (_, error) in traces.items() if error}
    by_trace = {}
    for span in exported:
        by_trace.setdefault(span.trace_id, []).append(span.tags["sampling.decision"])
    kept_whole = sum(1 for tid in errors
                     if by_trace.get(tid, []) == ["error"] * traces[tid][0])
    other = sum(len(d) for tid, d in by_trace.items() if tid not in errors)
    assert kept_whole == len(errors) == LOAD_TRACES // ERROR_EVERY
    assert other / total <= 0.02
    assert len(exported) + tail["spans_discarded"] == total
    with capsys.disabled():
        print(f"\n1% baseline, {LOAD_TRACES} traces ({total} spans), 1 in {ERROR_EVERY} "
              f"with an error: exported {len(exported)} spans ({100 * len(exported) / total:.2f}%"
              f"), of which not error {other} ({100 * other / total:.2f}%); error traces kept "
              f"whole {kept_whole}/{len(errors)}; kept {tail['kept']['error']} error + "
              f"{tail['kept']['baseline']} baseline traces, discarded "
              f"{tail['traces_discarded']}")

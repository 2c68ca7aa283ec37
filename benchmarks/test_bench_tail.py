# SPDX-License-Identifier: Apache-2.0
"""Tail-based sampling's cost to the application: a root span with 2 tags, finished,
with ``tail_sampling=TailSampling()`` next to plain head sampling, same run.

Both tracers use ``ConstSampler(True)`` and the benchmarks' discard reporter, so every
span is recorded and drained inline (in the timed code) in both; the difference is the
tail stage each drained batch passes through (grouping by trace, the decision, the
subset batch with its ``sampling.decision`` tag).  ``test_tail_vs_head_ratio`` times
both in alternating rounds and prints the ratio (it asserts nothing about time).
"""
from __future__ import annotations

import pytest

import fasttrace
from _bench import OPS, REPS, bench_loop, median_seconds
from conftest import discard_reporter

TAGS = {"http.method": "GET", "http.status_code": 200}


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

# SPDX-License-Identifier: Apache-2.0
"""RemoteSampler's per-span decision cost against ProbabilisticSampler's.

Three samplers, all at a 10% rate: ``probabilistic`` (ProbabilisticSampler(0.1)),
``remote-probabilistic`` (a RemoteSampler whose strategy is probabilistic 0.1) and
``remote-per-operation`` (a RemoteSampler with a per-operation strategy: 20 named
operations, the benchmarked one at 0.1, jaeger-client's default lower bound of 1/600
traces/s, so its bucket is asked on every decision).  The RemoteSamplers never poll
(``start=False``): the strategy is installed directly, what a good poll would do.

``test_remote_sampler_root_span`` times a root span (start + finish) per sampler with
pytest-benchmark.  ``test_remote_vs_probabilistic_ratio`` times, in alternating rounds of
one run, both the root span and the decision alone (``_remote.bench_decisions``: the
sampler's C ``sample`` called in a C loop, as the tracer calls it) and prints the
medians and the ratios to ProbabilisticSampler; it asserts nothing about time.
"""
from __future__ import annotations

import pytest

import fasttrace
from _bench import OPS, REPS, bench_loop, median_seconds
from conftest import discard_reporter
from fasttrace._remote import Strategy, bench_decisions

KINDS = ("probabilistic", "remote-probabilistic", "remote-per-operation")
RATE = 0.1
NAME = "GET /orders"


def _sampler(kind):
    if kind == "probabilistic":
        return fasttrace.ProbabilisticSampler(RATE)
    sampler = fasttrace.RemoteSampler("bench", start=False)
    if kind == "remote-probabilistic":
        sampler._install(Strategy.probabilistic(RATE))
    else:
        rates = {f"op-{i}": 0.5 for i in range(19)}
        rates[NAME] = RATE
        sampler._install(Strategy.per_operation(0.001, 1.0 / 600.0, 0.0, rates))
    return sampler


def _tracer(kind):
    return fasttrace.Tracer(service_name="bench", sampler=_sampler(kind),
                            reporter=discard_reporter(), capacity=65536)


def _run(tracer):
    def run():
        for _ in REPS:
            tracer.start_span(NAME).finish()
    return run


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.benchmark(group="remote sampler: 1 root span")
def test_remote_sampler_root_span(benchmark, kind):
    tracer = _tracer(kind)
    bench_loop(benchmark, _run(tracer))
    tracer.close()


def test_remote_vs_probabilistic_ratio(capsys):
    """Median per-span and per-decision costs in the same run (printed)."""
    tracers = {kind: _tracer(kind) for kind in KINDS}
    loops = 200                    # 20,000 spans a round
    decisions = 1_000_000

    def span_round(kind):
        run = _run(tracers[kind])

        def many():
            for _ in range(loops):
                run()
        return many

    def decision_round(kind):
        sampler = tracers[kind].sampler
        return lambda: bench_decisions(sampler, decisions, NAME)

    for kind in KINDS:             # warm up
        span_round(kind)()
        decision_round(kind)()
    rounds = 15
    spans = {kind: [] for kind in KINDS}
    decided = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:         # alternate, so drift hits all alike
            spans[kind].append(median_seconds(span_round(kind), 1))
            decided[kind].append(median_seconds(decision_round(kind), 1))
    span_ns = {k: sorted(v)[rounds // 2] / (loops * OPS) * 1e9 for k, v in spans.items()}
    decision_ns = {k: sorted(v)[rounds // 2] / decisions * 1e9 for k, v in decided.items()}
    for kind, sampler in ((k, tracers[k].sampler) for k in KINDS):
        assert sampler.errors == 0
    for tracer in tracers.values():
        tracer.close()
    base_span, base_decision = span_ns["probabilistic"], decision_ns["probabilistic"]
    with capsys.disabled():
        print()
        for kind in KINDS:
            print(f"{kind:>22}: root span {span_ns[kind]:6.1f} ns "
                  f"(ratio {span_ns[kind] / base_span:.3f}), decision alone "
                  f"{decision_ns[kind]:5.1f} ns (ratio {decision_ns[kind] / base_decision:.2f})")

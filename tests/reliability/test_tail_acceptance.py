# SPDX-License-Identifier: Apache-2.0
"""Tail sampling's acceptance measurements (issue 14), as tests: what a 1% baseline
exports of a synthetic load with a known error rate, and the pending table's memory
under a load that exceeds its budget.

Nothing here depends on timing or scheduling: the reporters have no thread (the tracer
drains inline, at its threshold, and on ``flush()``), no test sleeps, and no test looks
at a duration.  The figures are printed (``report``: visible with ``-s``); the README's
"Measured" paragraph quotes them.
"""
import tracemalloc

import opentracing
import pytest
from support.servers import report

import fasttrace
from fasttrace import ConstSampler, InMemoryReporter, ProbabilisticSampler, TailSampling
from fasttrace.tail import ratio_bound

N_TRACES = 20_000
ERROR_EVERY = 137           # exactly every 137th trace has a child with error=True
BASELINE = 0.01
LOW_64 = (1 << 64) - 1


class CountingReporter(fasttrace.Reporter):
    """Counts the spans it is given and their sampling.decision tags; keeps nothing (so
    the memory measured is the tracer's, not the reporter's)."""

    def __init__(self):
        super().__init__()
        self.spans = 0
        self.batches = 0

    def report(self, batch):
        self.batches += 1
        self.spans += len(batch)

    def flush(self, timeout=None):
        return True

    def close(self, timeout=None):
        pass


def synthetic_load(tracer, n, error_every=ERROR_EVERY):
    """n local traces: a root with two children that finish before it, and (every other
    trace) a third child that finishes after it; the trace k with
    ``k % error_every == error_every - 1`` has its first child tagged error=True.

    Returns {trace_id: (spans, error)}."""
    traces = {}
    for k in range(n):
        root = tracer.start_span("GET /orders", ignore_active_span=True)
        error = k % error_every == error_every - 1
        query = tracer.start_span("db.query", child_of=root)
        if error:
            query.set_tag("error", True)
        query.finish()
        tracer.start_span("cache.get", child_of=root).finish()
        late = tracer.start_span("publish", child_of=root) if k % 2 == 0 else None
        root.finish()
        if late is not None:
            late.finish()                     # after its local root: follows the decision
        traces[root.trace_id] = (3 if late is None else 4, error)
    return traces


def tail_tracer(reporter, head, **policy):
    return fasttrace.Tracer("acceptance", reporter=reporter, sampler=head,
                            tail_sampling=TailSampling(**policy))


# -- 1. what a 1% baseline exports ------------------------------------------------------

# The bound on the non-error share (<= 2% of all spans) and the baseline: the baseline
# keeps a trace when its random id's lower 64 bits are below 1% of 2**64, so the number
# of non-error traces it keeps is Binomial(n=19,855, p=0.01): mean 198.6, sd 14.0.  At 4
# spans a trace at most, 2% of the ~70,000 spans (1,400) needs more than 350 baseline
# traces, 1.76 times the mean: by Chernoff, P(X >= (1+d)mu) <= exp(-d^2 mu / (2+d)) =
# exp(-0.76^2 * 198.6 / 2.76) = exp(-41.6) < 1e-18 per run.  Everything else is
# asserted exactly, against the ids drawn (the test computes the baseline rule itself).

@pytest.mark.parametrize("head", ["off", "probabilistic-1%"])
def test_one_percent_baseline_keeps_every_error_trace_whole(head):
    if head == "off":
        sampler, keep_head = ConstSampler(False), False
    else:
        sampler, keep_head = ProbabilisticSampler(0.01), True
    reporter = InMemoryReporter()
    tracer = tail_tracer(reporter, sampler, baseline_ratio=BASELINE,
                         keep_head_sampled=keep_head)
    traces = synthetic_load(tracer, N_TRACES)
    assert tracer.flush(60)
    stats = tracer.stats()
    tail = stats["tail_sampling"]
    exported = reporter.spans
    tracer.close()

    total_spans = sum(n for n, _ in traces.values())
    errors = {tid for tid, (_, error) in traces.items() if error}
    assert len(errors) == N_TRACES // ERROR_EVERY == 145
    bound = ratio_bound(BASELINE)
    baseline = {tid for tid in traces if tid not in errors and tid & LOW_64 < bound}
    by_trace = {}
    for span in exported:
        by_trace.setdefault(span.trace_id, []).append(span)

    # every span of every error trace, decided "error"
    for tid in errors:
        spans = by_trace.get(tid, [])
        assert len(spans) == traces[tid][0], f"{tid:032x}"
        assert {s.tags["sampling.decision"] for s in spans} == {"error"}
    # the rest: exactly the traces the baseline rule keeps by id, whole.  A 1% head by
    # the same rule (ProbabilisticSampler is TraceIdRatioBased too) samples the same
    # traces, so "baseline" (tried first) names them all and "head" keeps none more.
    assert set(by_trace) == errors | baseline
    for tid in baseline:
        assert len(by_trace[tid]) == traces[tid][0]
        assert {s.tags["sampling.decision"] for s in by_trace[tid]} == {"baseline"}
    assert all(s.sampled for s in exported)
    other = sum(len(by_trace[tid]) for tid in baseline)
    share = other / total_spans
    assert share <= 0.02

    # the counters add up exactly
    assert tail["kept"] == {"error": len(errors), "latency": 0, "downstream": 0, "tag": 0,
                            "baseline": len(baseline), "head": 0, "early": 0}
    assert sum(tail["kept"].values()) + tail["traces_discarded"] == N_TRACES
    assert stats["finished"] == total_spans
    assert stats["reported"] == len(exported)
    assert len(exported) + tail["spans_discarded"] == total_spans
    assert tail["late_spans"] == N_TRACES // 2          # every "publish" span
    assert tail["traces_decided_early"] == 0
    assert tail["pending_spans"] == tail["pending_traces"] == 0
    assert stats["dropped"] == {"arena_full": 0, "abandoned": 0, "reporter_error": 0}
    report(f"tail acceptance ({head} head)", traces=N_TRACES, spans=total_spans,
           error_traces=len(errors), error_traces_kept=len(errors),
           baseline_traces=len(baseline), exported_spans=len(exported),
           non_error_share_pct=100 * share, exported_share_pct=100 * len(exported) / total_spans)


# -- 2. the budget: a load that exceeds it ------------------------------------------------

MAX_SPANS, MAX_TRACES = 2000, 500
WAVE = 1000                # traces whose roots stay open while their children finish


def over_budget_load(tracer, reporter, waves, children):
    """`waves` times: WAVE roots opened, `children` children of each finished (so the
    traces wait in the tail stage, 3,000 or 8,000 spans against a budget of 2,000 spans
    and 500 traces), a flush; then the roots finished, a flush.  Checks the table after
    every flush and returns the tracemalloc peak over the waves, in bytes above what was
    allocated before them (the tracer's preallocated arena among it): what the drained
    batches, the tail stage's pending table and decisions, and the open spans take."""
    pending_after = min(MAX_TRACES, MAX_SPANS // children)
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    for wave in range(waves):
        roots = [tracer.start_span("job", ignore_active_span=True) for _ in range(WAVE)]
        for i, root in enumerate(roots):
            for c in range(children):
                child = tracer.start_span("step", child_of=root)
                if c == 0 and i % ERROR_EVERY == 0:
                    child.set_tag("error", True)
                child.finish()
        assert tracer.flush(60)
        tail = tracer.stats()["tail_sampling"]
        assert tail["pending_spans"] <= MAX_SPANS and tail["pending_traces"] <= MAX_TRACES
        # the oldest were pushed out; the newest `pending_after` traces wait, whole
        assert tail["pending_traces"] == pending_after
        assert tail["pending_spans"] == pending_after * children
        assert tail["traces_decided_early"] == (wave + 1) * (WAVE - pending_after)
        for root in roots:
            root.finish()
        del roots, root
        assert tracer.flush(60)
        tail = tracer.stats()["tail_sampling"]
        assert tail["pending_spans"] == tail["pending_traces"] == 0
    return tracemalloc.get_traced_memory()[1] - before


@pytest.mark.parametrize("children", [3, 8])
def test_over_budget_load_stays_within_the_budget_and_bounded(children):
    """Past the budget the oldest pending traces are decided early (by their head
    decision: 1% here), each counted; no span is lost uncounted; and the memory the
    tracer allocates while doing it does not grow with the load (10x more waves)."""
    peaks = {}
    figures = {}
    tracemalloc.start()
    try:
        for waves in (1, 3, 30):        # the first, unmeasured: one-time allocations
            reporter = CountingReporter()
            tracer = tail_tracer(reporter, ProbabilisticSampler(0.01),
                                 baseline_ratio=0.0, keep_head_sampled=True,
                                 max_pending_spans=MAX_SPANS, max_pending_traces=MAX_TRACES,
                                 decision_cache_size=2 * WAVE)
            peaks[waves] = over_budget_load(tracer, reporter, waves, children)
            stats = tracer.stats()
            tail = stats["tail_sampling"]
            pending_after = min(MAX_TRACES, MAX_SPANS // children)
            traces = waves * WAVE
            finished = traces * (children + 1)
            # nothing lost uncounted: what was exported and what was discarded is what
            # finished; every trace decided once
            assert stats["finished"] == finished
            assert stats["reported"] == reporter.spans
            assert reporter.spans + tail["spans_discarded"] == finished
            assert sum(tail["kept"].values()) + tail["traces_discarded"] == traces
            assert tail["traces_decided_early"] == waves * (WAVE - pending_after)
            # the early ones: kept only if head-sampled; their roots came late
            assert tail["late_spans"] == tail["traces_decided_early"]
            assert {k for k, v in tail["kept"].items() if v} <= {"error", "head", "early"}
            assert stats["dropped"] == {"arena_full": 0, "abandoned": 0, "reporter_error": 0}
            figures[waves] = (traces, tail["traces_decided_early"], reporter.spans)
            del tail, stats
            tracer.close()
            del tracer
    finally:
        tracemalloc.stop()
    small, large = peaks[3], peaks[30]
    report(f"tail budget ({children} children a trace)",
           budget=f"{MAX_SPANS}spans/{MAX_TRACES}traces",
           traces_small=figures[3][0], decided_early_small=figures[3][1],
           peak_kib_small=small / 1024, traces_large=figures[30][0],
           decided_early_large=figures[30][1], peak_kib_large=large / 1024,
           growth=large / small)
    # 10x the load: the peak stays where it was (a leak would be ~10x); the slack is
    # for allocator and interning noise, not for growth with the load
    assert large <= 1.25 * small + 256 * 1024, (small, large)


# -- a trace met twice in one process, and two tracers in one process ------------------

def test_an_error_under_a_second_local_root_keeps_the_trace():
    """A second call into this service within one trace, after the first call's trace
    was discarded: its error=True span keeps the trace from then on."""
    reporter = InMemoryReporter()
    upstream = fasttrace.Tracer("gateway", reporter=InMemoryReporter())
    tracer = tail_tracer(reporter, ConstSampler(False), baseline_ratio=0.0,
                         keep_head_sampled=False)
    request = upstream.start_span("GET /checkout")
    headers = {}
    upstream.inject(request.context, opentracing.Format.HTTP_HEADERS, headers)
    for name, fails in (("GET /stock/{sku}", False), ("POST /reserve", True)):
        served = tracer.start_span(name, child_of=tracer.extract(
            opentracing.Format.HTTP_HEADERS, headers))
        tracer.start_span("warehouse.reserve" if fails else "db.query", child_of=served,
                          tags={"error": True} if fails else None).finish()
        served.finish()
    assert tracer.flush(5)
    kept = {s.operation_name: s.tags.get("sampling.decision") for s in reporter.spans}
    tracer.close()
    upstream.close()
    assert kept.get("warehouse.reserve") == "error"


def test_a_span_under_another_tracers_span_is_a_local_root():
    """A parent Span of another tracer (two services in one process) makes a local root."""
    reporter = InMemoryReporter()
    upstream = fasttrace.Tracer("gateway", reporter=InMemoryReporter())
    tracer = tail_tracer(reporter, ConstSampler(False), baseline_ratio=0.0,
                         keep_head_sampled=False)
    request = upstream.start_span("GET /checkout")
    served = tracer.start_span("GET /stock/{sku}", child_of=request,
                               tags={"error": True})
    served.finish()
    assert tracer.flush(5)
    tail = tracer.stats()["tail_sampling"]
    tracer.close()
    upstream.close()
    assert tail["kept"]["error"] == 1 and tail["pending_traces"] == 0

# SPDX-License-Identifier: Apache-2.0
"""Samplers: decisions, statistics, propagation of the decision, sampling.priority."""
import math
import random
import time

import pytest
from opentracing import Format
from opentracing.ext import tags as ext_tags

import fasttrace

SAMPLING_PRIORITY = ext_tags.SAMPLING_PRIORITY


def _five_sigma(n, p):
    return 5 * math.sqrt(n * p * (1 - p)) + 1


# -- ConstSampler ----------------------------------------------------------------------

@pytest.mark.parametrize("decision", [True, False])
def test_const_sampler(decision):
    sampler = fasttrace.ConstSampler(decision)
    sampled, tags = sampler.is_sampled(12345, "op")
    assert sampled is decision
    assert isinstance(tags, dict)


def test_const_false_tracer_records_nothing_but_propagates(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False))
    with tracer.start_active_span("root") as scope:
        span = scope.span
        assert span.context.sampled is False
        assert span.trace_id != 0 and span.span_id != 0
        child = tracer.start_span("child")
        assert child.parent_id == span.span_id and child.trace_id == span.trace_id
        assert child.context.sampled is False
        child.finish()
        carrier = {}
        tracer.inject(span.context, Format.HTTP_HEADERS, carrier)
        ctx = tracer.extract(Format.HTTP_HEADERS, carrier)
        assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (span.trace_id, span.span_id,
                                                             False)
    assert reporter.spans == []
    stats = tracer.stats()
    assert stats["unsampled"] == 2 and stats["sampled"] == 0
    assert stats["started"] == 2


def test_unsampled_spans_take_no_slot(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False),
                         capacity=2)
    spans = [tracer.start_span(f"u{i}") for i in range(100)]     # all open at once
    stats = tracer.stats()
    assert stats["dropped"]["arena_full"] == 0
    assert stats["unsampled"] == 100
    # a sampled child of an extracted, sampled context still finds a free slot
    ctx = fasttrace.SpanContext(99, 98, sampled=True)
    recorded = tracer.start_span("forced", child_of=ctx)
    recorded.finish()
    for s in spans:
        s.finish()
    assert [s.operation_name for s in reporter.spans] == ["forced"]


def test_unsampled_span_api_never_raises(make_tracer):
    tracer = make_tracer(sampler=fasttrace.ConstSampler(False))
    span = tracer.start_span("u", tags={"a": 1})
    span.set_tag("b", object()).log_kv({"c": 1}).log_event("e").set_operation_name("v")
    span.set_baggage_item("k", "v")
    assert span.get_baggage_item("k") == "v"
    assert span.operation_name == "v"
    with span:
        pass
    span.finish()


# -- ProbabilisticSampler --------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_probabilistic_rate_within_tolerance(make_tracer, reporter, rate):
    n = 20_000
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ProbabilisticSampler(rate))
    sampled = 0
    for _ in range(n):
        span = tracer.start_span("root")
        sampled += span.context.sampled
        span.finish()
    assert abs(sampled - n * rate) <= _five_sigma(n, rate), sampled
    assert len(reporter.spans) == sampled
    stats = tracer.stats()
    assert stats["sampled"] == sampled and stats["unsampled"] == n - sampled


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_probabilistic_extremes(make_tracer, rate):
    tracer = make_tracer(sampler=fasttrace.ProbabilisticSampler(rate))
    decisions = {tracer.start_span("r").context.sampled for _ in range(2000)}
    assert decisions == {bool(rate)}


def test_probabilistic_decision_from_trace_id_low_bits():
    rate = 0.3
    sampler = fasttrace.ProbabilisticSampler(rate)
    bound = rate * 2 ** 64
    rng = random.Random(7)
    for _ in range(5000):
        lo = rng.getrandbits(64)
        hi = rng.getrandbits(64)
        sampled, tags = sampler.is_sampled((hi << 64) | lo, "op")
        if abs(lo - bound) > 2 ** 12:                 # away from the rounding edge
            assert sampled is (lo < bound), hex(lo)
        # the high half does not matter
        assert sampler.is_sampled(lo, "op")[0] is sampled
        assert sampler.is_sampled(((hi ^ 0xFFFF) << 64) | lo, "other")[0] is sampled
    assert isinstance(tags, dict)


def test_probabilistic_boundaries():
    sampler = fasttrace.ProbabilisticSampler(0.5)
    assert sampler.is_sampled(1, "op")[0] is True
    assert sampler.is_sampled(2 ** 63 - 1, "op")[0] is True
    assert sampler.is_sampled(2 ** 63 + 1, "op")[0] is False
    assert sampler.is_sampled(2 ** 64 - 1, "op")[0] is False


def test_probabilistic_deterministic_per_trace_id():
    a = fasttrace.ProbabilisticSampler(0.2)
    b = fasttrace.ProbabilisticSampler(0.2)
    rng = random.Random(3)
    ids = [rng.getrandbits(128) or 1 for _ in range(2000)]
    first = [a.is_sampled(t, "x")[0] for t in ids]
    assert first == [a.is_sampled(t, "y")[0] for t in ids]
    assert first == [b.is_sampled(t, "x")[0] for t in ids]
    assert 0 < sum(first) < len(ids)


def test_same_decision_across_tracers_for_extracted_contexts(make_tracer):
    # a trace started by another service: each tracer with the same rate, deciding on
    # its own (the upstream decision was not propagated), agrees on every trace id
    t1 = make_tracer(sampler=fasttrace.ProbabilisticSampler(0.3))
    t2 = make_tracer(sampler=fasttrace.ProbabilisticSampler(0.3))
    agree = 0
    sampled = 0
    for _ in range(2000):
        root = t1.start_span("root")
        carrier = {}
        t1.inject(root.context, Format.TEXT_MAP, carrier)
        ctx = t2.extract(Format.TEXT_MAP, carrier)
        remote = t2.start_span("remote", child_of=ctx)
        agree += remote.context.sampled == root.context.sampled
        sampled += root.context.sampled
        # and the other way round: t2 starting a root for the same trace id decides alike
        assert t2.sampler.is_sampled(root.trace_id, "x")[0] == root.context.sampled
        root.finish()
        remote.finish()
    assert agree == 2000
    assert 0 < sampled < 2000


def test_two_tracers_decide_alike_for_contexts_without_a_decision(make_tracer):
    # B3 headers with ids but no sampling decision: each receiving tracer decides on its
    # own, from the trace id, and every tracer with the same rate decides the same
    rate = 0.3
    t1 = make_tracer(propagators=("b3multi",), sampler=fasttrace.ProbabilisticSampler(rate))
    t2 = make_tracer(propagators=("b3multi",), sampler=fasttrace.ProbabilisticSampler(rate))
    rng = random.Random(11)
    sampled = 0
    for _ in range(2000):
        trace_id = rng.getrandbits(128) | 1
        headers = {"X-B3-TraceId": f"{trace_id:032x}",
                   "X-B3-SpanId": f"{rng.getrandbits(63) | 1:016x}"}
        d1 = t1.start_span("a", child_of=t1.extract(Format.HTTP_HEADERS, dict(headers)))
        d2 = t2.start_span("b", child_of=t2.extract(Format.HTTP_HEADERS, dict(headers)))
        assert d1.trace_id == d2.trace_id == trace_id
        assert d1.context.sampled == d2.context.sampled
        lo = trace_id & (2 ** 64 - 1)
        if abs(lo - rate * 2 ** 64) > 2 ** 12:
            assert d1.context.sampled == (lo < rate * 2 ** 64)
        sampled += d1.context.sampled
    assert abs(sampled - 2000 * rate) <= _five_sigma(2000, rate)


def test_children_follow_parent_decision(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ProbabilisticSampler(0.5))
    for _ in range(200):
        with tracer.start_active_span("root") as root:
            decision = root.span.context.sampled
            for _ in range(3):
                with tracer.start_active_span("child") as child:
                    assert child.span.context.sampled == decision
                    with tracer.start_active_span("grandchild") as g:
                        assert g.span.context.sampled == decision
    spans = reporter.spans
    by_trace = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, []).append(s)
    assert all(len(v) == 7 for v in by_trace.values())     # whole traces or nothing
    assert 0 < len(by_trace) < 200


def test_sampler_ignores_children_with_explicit_parent(make_tracer):
    calls = []

    class Counting(fasttrace.Sampler):
        def is_sampled(self, trace_id, operation_name=None):
            calls.append((trace_id, operation_name))
            return True, {}

    tracer = make_tracer(sampler=Counting())
    root = tracer.start_span("root")
    tracer.start_span("child", child_of=root)
    with tracer.start_active_span("root2"):
        tracer.start_span("child2")
    assert [name for _, name in calls] == ["root", "root2"]
    assert calls[0][0] == root.trace_id


def test_custom_sampler_subclass(make_tracer, reporter):
    class ByName(fasttrace.Sampler):
        def is_sampled(self, trace_id, operation_name=None):
            return operation_name.startswith("keep"), {}

    tracer = make_tracer(reporter=reporter, sampler=ByName())
    tracer.start_span("keep-me").finish()
    tracer.start_span("drop-me").finish()
    assert [s.operation_name for s in reporter.spans] == ["keep-me"]


# -- RateLimitingSampler ---------------------------------------------------------------

def test_rate_limiting_burst_then_refill():
    sampler = fasttrace.RateLimitingSampler(10)
    # the bucket starts full with max(rate, 1) = 10 tokens
    first = [sampler.is_sampled(i + 1, "op")[0] for i in range(100)]
    assert 10 <= sum(first) <= 12        # the burst (+ what refills while looping)
    assert first[:10] == [True] * 10
    time.sleep(0.35)                     # refills ~3.5 tokens (more if the host stalls)
    later = sum(sampler.is_sampled(i + 1, "op")[0] for i in range(100))
    assert 2 <= later <= 10


def test_rate_limiting_over_a_controlled_window():
    rate = 50.0
    sampler = fasttrace.RateLimitingSampler(rate)
    start = time.monotonic()
    sampled = 0
    while time.monotonic() - start < 1.0:
        sampled += sampler.is_sampled(1, "op")[0]
        time.sleep(0.0005)
    elapsed = time.monotonic() - start
    # burst + rate * elapsed, with generous bounds (timers, scheduling)
    expected = rate + rate * elapsed
    assert expected * 0.6 <= sampled <= expected * 1.2 + 2, (sampled, elapsed)


def test_rate_limiting_below_one_per_second():
    sampler = fasttrace.RateLimitingSampler(0.5)
    results = [sampler.is_sampled(1, "op")[0] for _ in range(50)]
    assert results[0] is True and sum(results) == 1     # burst of max(0.5, 1) = 1


def test_rate_limiting_zero_samples_nothing():
    sampler = fasttrace.RateLimitingSampler(0)
    assert sum(sampler.is_sampled(1, "op")[0] for _ in range(10)) <= 1


def test_rate_limiting_in_a_tracer(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.RateLimitingSampler(5))
    for _ in range(200):
        with tracer.start_active_span("root"):
            with tracer.start_active_span("child"):
                pass
    spans = reporter.spans
    roots = [s for s in spans if s.parent_id is None]
    assert 5 <= len(roots) <= 8
    assert len(spans) == 2 * len(roots)        # children follow their root


@pytest.mark.parametrize("sampler", [fasttrace.ConstSampler(True),
                                     fasttrace.ProbabilisticSampler(0.5),
                                     fasttrace.RateLimitingSampler(10)])
def test_is_sampled_signature(sampler):
    result = sampler.is_sampled(2 ** 100 + 5, "op")
    assert isinstance(result, tuple) and len(result) == 2
    assert isinstance(result[0], bool) and isinstance(result[1], dict)
    assert sampler.is_sampled(5)[0] in (True, False)      # operation name optional


# -- sampling.priority -----------------------------------------------------------------

def test_priority_at_start_forces_sampling(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False))
    span = tracer.start_span("forced", tags={SAMPLING_PRIORITY: 1, "k": "v"})
    assert span.context.sampled is True
    assert span.context.debug is True
    child = tracer.start_span("child", child_of=span)
    assert child.context.sampled is True
    child.finish()
    span.finish()
    recs = {s.operation_name: s for s in reporter.spans}
    assert set(recs) == {"forced", "child"}
    assert recs["forced"].tags["k"] == "v"
    assert recs["forced"].sampled is True


def test_priority_later_forces_sampling(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False))
    span = tracer.start_span("late", start_time=10.0)
    span.set_tag("before", 1)
    assert span.context.sampled is False
    span.set_tag(SAMPLING_PRIORITY, 1)
    assert span.context.sampled is True and span.context.debug is True
    span.set_tag("after", 2)
    span.log_kv({"e": 1})
    span.finish(finish_time=11.0)
    (rec,) = reporter.spans
    assert rec.operation_name == "late"
    assert rec.tags["after"] == 2
    assert rec.start_ns == 10_000_000_000 and rec.end_ns == 11_000_000_000
    assert len(rec.logs) == 1
    stats = tracer.stats()
    assert stats["sampled"] == 1 and stats["unsampled"] == 0


def test_priority_later_forces_sampling_with_implicit_start(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False))
    before = time.time_ns()
    span = tracer.start_span("late")
    span.set_tag(SAMPLING_PRIORITY, 2)
    span.finish()
    (rec,) = reporter.spans
    assert rec.start_ns >= before - 50_000_000
    assert 0 <= rec.duration_ns < 5_000_000_000


def test_priority_zero_unsamples(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=1)
    span = tracer.start_span("unwanted", tags={SAMPLING_PRIORITY: 0})
    assert span.context.sampled is False
    child = tracer.start_span("child", child_of=span)
    assert child.context.sampled is False
    # its slot was given back (capacity 1)
    other = tracer.start_span("other")
    assert tracer.stats()["dropped"]["arena_full"] == 0
    for s in (child, span, other):
        s.finish()
    assert [s.operation_name for s in reporter.spans] == ["other"]


def test_priority_zero_set_later(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    span = tracer.start_span("unwanted")
    span.set_tag("a", 1)
    span.set_tag(SAMPLING_PRIORITY, 0)
    assert span.context.sampled is False
    carrier = {}
    tracer.inject(span.context, Format.HTTP_HEADERS, carrier)
    assert tracer.extract(Format.HTTP_HEADERS, carrier).sampled is False
    span.finish()
    assert reporter.spans == []
    stats = tracer.stats()
    assert stats["sampled"] == 0 and stats["unsampled"] == 1


def test_priority_forced_context_propagates_sampled(make_tracer):
    tracer = make_tracer(sampler=fasttrace.ConstSampler(False))
    span = tracer.start_span("forced")
    span.set_tag(SAMPLING_PRIORITY, 1)
    for fmt, carrier in ((Format.HTTP_HEADERS, {}), (Format.TEXT_MAP, {}),
                         (Format.BINARY, bytearray())):
        tracer.inject(span.context, fmt, carrier)
        assert tracer.extract(fmt, carrier).sampled is True


def test_unsampled_context_propagates_through_all_formats(make_tracer):
    tracer = make_tracer(sampler=fasttrace.ConstSampler(False))
    span = tracer.start_span("u")
    span.set_baggage_item("k", "v")
    for fmt, carrier in ((Format.HTTP_HEADERS, {}), (Format.TEXT_MAP, {}),
                         (Format.BINARY, bytearray())):
        tracer.inject(span.context, fmt, carrier)
        ctx = tracer.extract(fmt, carrier)
        assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (span.trace_id, span.span_id,
                                                             False)
        assert ctx.baggage == {"k": "v"}


def test_sampled_upstream_decision_wins_over_local_sampler(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False))
    ctx = fasttrace.SpanContext(0xABC, 0xDEF, sampled=True)
    tracer.start_span("server", child_of=ctx).finish()
    assert [s.operation_name for s in reporter.spans] == ["server"]


def test_priority_on_a_recording_span_records_debug(make_tracer, reporter):
    # sampled by the sampler, then forced: the record carries the debug flag the
    # context shows (exporters read it from the batch's flags column)
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(True))
    at_start = tracer.start_span("at-start", tags={SAMPLING_PRIORITY: 1})
    later = tracer.start_span("later")
    later.set_tag(SAMPLING_PRIORITY, 1)
    assert at_start.context.debug is True and later.context.debug is True
    at_start.finish()
    later.finish()
    recs = {s.operation_name: s for s in reporter.spans}
    assert recs["at-start"].debug is True
    assert recs["later"].debug is True


def test_priority_forced_unsampled_span_records_debug(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False))
    tracer.start_span("forced", tags={SAMPLING_PRIORITY: 1}).finish()
    (rec,) = reporter.spans
    assert rec.sampled is True and rec.debug is True


def test_priority_odd_values_never_raise(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    span = tracer.start_span("odd")
    for value in ("abc", None, object(), 1.5, "1", -3, 2 ** 70):
        span.set_tag(SAMPLING_PRIORITY, value)
    span.finish()


def test_priority_zero_on_a_span_dropped_for_a_full_arena_is_counted_once(make_tracer, reporter):
    # found by tests/test_state_machine.py: the span stayed counted as arena_full, and a
    # later priority 1 recorded it, so it was both reported and counted as lost (and
    # took one off another span's unsampled count)
    tracer = make_tracer(reporter=reporter, capacity=1)
    tracer.start_span("unsampled", child_of=fasttrace.SpanContext(1, 2, sampled=False)).finish()
    holder = tracer.start_span("holder")
    dropped = tracer.start_span("dropped")
    assert tracer.stats()["dropped"]["arena_full"] == 1
    dropped.set_tag(SAMPLING_PRIORITY, 0)
    stats = tracer.stats()
    assert stats["dropped"]["arena_full"] == 0 and stats["unsampled"] == 2
    holder.finish()
    dropped.set_tag(SAMPLING_PRIORITY, 1)
    dropped.finish()
    assert [s.operation_name for s in reporter.spans] == ["holder", "dropped"]
    stats = tracer.stats()
    assert stats["dropped"]["arena_full"] == 0 and stats["unsampled"] == 1


def test_priority_one_recording_a_span_later_keeps_its_references(make_tracer, reporter):
    # found by tests/test_state_machine.py: a span recorded only once sampling.priority
    # 1 opened a slot for it was reported as child_of its follows_from parent, and
    # without its other references
    from opentracing import child_of, follows_from
    tracer = make_tracer(reporter=reporter, sampler=fasttrace.ConstSampler(False))
    a = tracer.start_span("a")          # unsampled, and so are the spans below
    b = tracer.start_span("b")
    follows = tracer.start_span("follows", references=[follows_from(a.context)])
    both = tracer.start_span("both", references=[child_of(a.context), follows_from(b.context)])
    for span in (follows, both):
        span.set_tag(SAMPLING_PRIORITY, 1)
        span.finish()
    recs = {s.operation_name: s for s in reporter.spans}
    assert recs["follows"].references == [("follows_from", a.trace_id, a.span_id)]
    assert recs["follows"].parent_id == a.span_id
    assert recs["both"].references == [("child_of", a.trace_id, a.span_id),
                                       ("follows_from", b.trace_id, b.span_id)]

# SPDX-License-Identifier: Apache-2.0
"""Tail-based sampling (fasttrace.TailSampling, fasttrace/tail.py): the policies, spans
finishing after their local root, the budget, stats, the sampling.decision tag, the
environment, and the baseline's agreement with OpenTelemetry's TraceIdRatioBased."""
import logging
import time

import numpy as np
import opentracing
import pytest
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

import fasttrace
from fasttrace import ConstSampler, InMemoryReporter, TailSampling
from fasttrace.config import init_tracer
from support.recording import RecordingExporter

T0 = 1_700_000_000.0


@pytest.fixture
def tail_tracer(make_tracer):
    """tail_tracer(policy kwargs..., head=False) -> (tracer, reporter)."""
    def make(head=False, **policy):
        reporter = InMemoryReporter()
        tracer = make_tracer(sampler=ConstSampler(head), reporter=reporter,
                             tail_sampling=TailSampling(**policy))
        return tracer, reporter
    return make


def _trace(tracer, root_tags=None, child_tags=None, seconds=0.001, name="root",
           child_of=None):
    """A local root with one child, timed exactly (start_time/finish_time)."""
    root = tracer.start_span(name, child_of=child_of, tags=root_tags, start_time=T0)
    child = tracer.start_span("child", child_of=root, tags=child_tags, start_time=T0)
    child.finish(finish_time=T0 + seconds / 2)
    root.finish(finish_time=T0 + seconds)
    return root


def _decisions(spans):
    return {(s.operation_name, s.tags.get("sampling.decision")) for s in spans}


def _tail(tracer):
    return tracer.stats()["tail_sampling"]


# -- the policy object --------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error", [
    ({"errors": 1}, TypeError),
    ({"keep_head_sampled": "yes"}, TypeError),
    ({"latency_ms": "10"}, TypeError),
    ({"latency_ms": True}, TypeError),
    ({"latency_ms": -1}, ValueError),
    ({"latency_ms": float("nan")}, ValueError),
    ({"latency_ms": float("inf")}, ValueError),
    ({"latency_ms_by_operation": [("a", 1)]}, TypeError),
    ({"latency_ms_by_operation": {1: 10}}, TypeError),
    ({"latency_ms_by_operation": {"a": -5}}, ValueError),
    ({"tags": "error"}, TypeError),
    ({"tags": [("a", 1, 2)]}, TypeError),
    ({"tags": [(1, "a")]}, TypeError),
    ({"tags": 5}, TypeError),
    ({"baseline_ratio": "0.5"}, TypeError),
    ({"baseline_ratio": 1.5}, ValueError),
    ({"baseline_ratio": -0.1}, ValueError),
    ({"max_pending_spans": 0}, ValueError),
    ({"max_pending_spans": 1.5}, TypeError),
    ({"max_pending_traces": -1}, ValueError),
    ({"decision_cache_size": None}, TypeError),
])
def test_bad_arguments_raise(kwargs, error):
    with pytest.raises(error):
        TailSampling(**kwargs)


def test_arguments_are_keyword_only_and_kept():
    with pytest.raises(TypeError):
        TailSampling(True)
    p = TailSampling(latency_ms=5, latency_ms_by_operation={"slow": 50},
                     tags={"tier": "gold"}, baseline_ratio=0.25, max_pending_spans=10)
    assert (p.latency_ms, p.latency_ms_by_operation, p.tags) == (5.0, {"slow": 50.0},
                                                                (("tier", "gold"),))
    assert p.baseline_ratio == 0.25 and p.max_pending_spans == 10
    assert "TailSampling(" in repr(p)


def test_tracer_takes_only_a_tail_sampling():
    with pytest.raises(TypeError):
        fasttrace.Tracer(tail_sampling={"errors": True})


# -- the policies -------------------------------------------------------------------

def test_errors_keep_the_whole_trace_and_others_are_discarded(tail_tracer):
    tracer, reporter = tail_tracer()
    _trace(tracer, child_tags={"error": True})
    _trace(tracer)                                   # head-unsampled, nothing special
    _trace(tracer, child_tags={"error": "true"})     # not the boolean tag
    spans = reporter.spans
    assert _decisions(spans) == {("root", "error"), ("child", "error")}
    assert len(spans) == 2
    stats = _tail(tracer)
    assert stats["kept"]["error"] == 1
    assert stats["traces_discarded"] == 2 and stats["spans_discarded"] == 4
    assert stats["pending_spans"] == stats["pending_traces"] == 0


def test_errors_off_does_not_keep_errors(tail_tracer):
    tracer, reporter = tail_tracer(errors=False)
    _trace(tracer, child_tags={"error": True})
    assert reporter.spans == []


def test_an_error_tag_set_twice_keeps_its_last_value(tail_tracer):
    tracer, reporter = tail_tracer()
    root = tracer.start_span("root")
    root.set_tag("error", True)
    root.set_tag("error", False)
    root.finish()
    assert reporter.spans == []


def test_latency_of_the_local_root(tail_tracer):
    tracer, reporter = tail_tracer(latency_ms=100)
    _trace(tracer, seconds=0.150, name="slow")
    _trace(tracer, seconds=0.050, name="fast")
    spans = reporter.spans
    assert _decisions(spans) == {("slow", "latency"), ("child", "latency")}
    assert _tail(tracer)["kept"]["latency"] == 1


def test_latency_by_operation_overrides_the_global_threshold(tail_tracer):
    tracer, reporter = tail_tracer(latency_ms=100,
                                   latency_ms_by_operation={"batch": 1000, "login": 10})
    _trace(tracer, seconds=0.5, name="batch")     # under its own 1 s
    _trace(tracer, seconds=0.02, name="login")    # over its own 10 ms
    _trace(tracer, seconds=0.2, name="other")     # over the global 100 ms
    names = {s.operation_name for s in reporter.spans if s.operation_name != "child"}
    assert names == {"login", "other"}


def test_tags_keep_on_an_exact_value(tail_tracer):
    tracer, reporter = tail_tracer(tags=[("customer", "vip"), ("retry", 1)])
    _trace(tracer, root_tags={"customer": "vip"}, name="a")
    _trace(tracer, child_tags={"retry": 1}, name="b")
    _trace(tracer, root_tags={"customer": "other"}, name="c")
    _trace(tracer, child_tags={"retry": True}, name="d")     # True is not 1 here
    _trace(tracer, root_tags={"nothing": "vip"}, name="e")
    spans = reporter.spans
    assert {s.operation_name for s in spans if s.operation_name != "child"} == {"a", "b"}
    assert {s.tags["sampling.decision"] for s in spans} == {"tag"}


def test_the_first_policy_that_keeps_names_the_decision(tail_tracer):
    tracer, reporter = tail_tracer(head=True, latency_ms=1, tags=[("k", "v")])
    _trace(tracer, root_tags={"k": "v", "error": True}, seconds=1, name="all")
    _trace(tracer, root_tags={"k": "v"}, seconds=1, name="latency_tag_head")
    _trace(tracer, root_tags={"k": "v"}, seconds=0, name="tag_head")
    _trace(tracer, seconds=0, name="head_only")
    got = {s.operation_name: s.tags["sampling.decision"] for s in reporter.spans}
    assert got == {"all": "error", "latency_tag_head": "latency", "tag_head": "tag",
                   "head_only": "head", "child": "head"}


def test_keep_head_sampled(tail_tracer):
    tracer, reporter = tail_tracer(head=True)
    _trace(tracer)
    assert _decisions(reporter.spans) == {("root", "head"), ("child", "head")}
    tracer, reporter = tail_tracer(head=True, keep_head_sampled=False)
    _trace(tracer)
    assert reporter.spans == []


def test_kept_spans_are_exported_as_sampled_and_keep_their_tags_and_logs(tail_tracer):
    tracer, reporter = tail_tracer()
    root = tracer.start_span("root", tags={"a": 1, "b": "two", "c": 1.5, "d": 2 ** 70})
    root.log_kv({"event": "x"})
    child = tracer.start_span("child", child_of=root)
    child.set_tag("error", True)
    child.log_kv({"event": "y"})
    child.log_kv({"event": "z"})
    child.finish()
    root.finish()
    by_name = {s.operation_name: s for s in reporter.spans}
    assert by_name["root"].tags == {"a": 1, "b": "two", "c": 1.5, "d": 2 ** 70,
                                    "sampling.decision": "error"}
    assert [f for _, f in by_name["root"].logs] == [{"event": "x"}]
    assert [f["event"] for _, f in by_name["child"].logs] == ["y", "z"]
    assert all(s.sampled for s in by_name.values())
    assert by_name["child"].parent_id == by_name["root"].span_id


# -- what the context carries -------------------------------------------------------

@pytest.mark.parametrize("head, flag", [(False, "00"), (True, "01")])
def test_traceparent_carries_the_head_decision_while_pending(tail_tracer, head, flag):
    tracer, reporter = tail_tracer(head=head)
    with tracer.start_active_span("root") as scope:
        carrier = {}
        tracer.inject(scope.span.context, opentracing.Format.HTTP_HEADERS, carrier)
        assert carrier["traceparent"].endswith("-" + flag)
        assert scope.span.context.sampled is head
        scope.span.set_tag("error", True)
    assert len(reporter.spans) == 1


def test_a_span_under_an_extracted_parent_is_a_local_root(tail_tracer):
    tracer, reporter = tail_tracer()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    ctx = tracer.extract(opentracing.Format.HTTP_HEADERS,
                         {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"})
    server = tracer.start_span("server", child_of=ctx)
    inner = tracer.start_span("inner", child_of=server)
    inner.finish()
    assert reporter.spans == [] and _tail(tracer)["pending_spans"] == 1
    server.set_tag("error", True)
    server.finish()
    spans = reporter.spans
    assert _decisions(spans) == {("server", "error"), ("inner", "error")}
    assert {s.trace_id_hex for s in spans} == {trace_id}
    assert _tail(tracer)["pending_traces"] == 0


def test_without_tail_sampling_unsampled_spans_are_still_not_recorded(make_tracer):
    reporter = InMemoryReporter()
    tracer = make_tracer(sampler=ConstSampler(False), reporter=reporter)
    _trace(tracer, child_tags={"error": True})
    assert reporter.spans == []
    assert tracer.stats()["sampled"] == 0 and "tail_sampling" not in tracer.stats()


# -- late spans ---------------------------------------------------------------------

def test_spans_finishing_after_their_root_follow_its_decision(tail_tracer):
    tracer, reporter = tail_tracer()
    kept = tracer.start_span("kept-root", tags={"error": True})
    kept_late = tracer.start_span("kept-late", child_of=kept)
    dropped = tracer.start_span("dropped-root")
    dropped_late = tracer.start_span("dropped-late", child_of=dropped)
    kept.finish()
    dropped.finish()
    assert {s.operation_name for s in reporter.spans} == {"kept-root"}
    kept_late.finish()
    dropped_late.finish()
    late = [s for s in reporter.spans if s.operation_name == "kept-late"]
    assert len(late) == 1 and late[0].tags["sampling.decision"] == "error"
    stats = _tail(tracer)
    assert stats["late_spans"] == 2
    assert stats["spans_discarded"] == 2 and stats["traces_discarded"] == 1


def test_the_decision_cache_is_bounded(tail_tracer):
    tracer, reporter = tail_tracer(decision_cache_size=2)
    first = tracer.start_span("first", tags={"error": True})
    late = tracer.start_span("late", child_of=first)
    first.finish()
    for _ in range(3):      # three newer decisions push the first one out
        tracer.start_span("other", tags={"error": True}).finish()
    tracer.flush()      # decided (and cached) before the late span is drained
    late.finish()
    assert len(reporter.spans) == 4      # (drains)
    stats = _tail(tracer)
    # not a late span any more: its trace is pending again, waiting for a root
    assert stats["late_spans"] == 0 and stats["pending_spans"] == 1


# -- the budget ---------------------------------------------------------------------

def _remote(tracer, trace_hex, sampled):
    return tracer.extract(opentracing.Format.HTTP_HEADERS, {
        "traceparent": f"00-{trace_hex}-00f067aa0ba902b7-{'01' if sampled else '00'}"})


def test_past_max_pending_traces_the_oldest_are_decided_early(tail_tracer):
    tracer, reporter = tail_tracer(max_pending_traces=1)
    a_hex, b_hex = "a" * 32, "b" * 32
    a_root = tracer.start_span("a", child_of=_remote(tracer, a_hex, sampled=True))
    b_root = tracer.start_span("b", child_of=_remote(tracer, b_hex, sampled=False))
    tracer.start_span("a-child", child_of=a_root).finish()
    tracer.flush()
    assert _tail(tracer)["pending_traces"] == 1
    tracer.start_span("b-child", child_of=b_root).finish()
    tracer.flush()
    # a (head sampled) went out early; b waits
    assert _decisions(reporter.spans) == {("a-child", "early")}
    stats = _tail(tracer)
    assert stats["traces_decided_early"] == 1 and stats["kept"]["early"] == 1
    assert stats["pending_traces"] == 1 and stats["pending_spans"] == 1
    a_root.finish()       # late: follows "early"
    assert ("a", "early") in _decisions(reporter.spans)
    tracer.start_span("c", child_of=_remote(tracer, "c" * 32, sampled=False))  # open
    tracer.start_span("c-child", child_of=_remote(tracer, "c" * 32, sampled=False))
    b_root.finish()
    assert _tail(tracer)["late_spans"] == 1


def test_past_max_pending_spans_head_unsampled_traces_are_dropped_and_counted(tail_tracer):
    tracer, reporter = tail_tracer(max_pending_spans=3)
    roots = [tracer.start_span(f"root{i}") for i in range(2)]
    for root in roots:
        for _ in range(2):
            tracer.start_span("child", child_of=root).finish()
    tracer.flush()
    stats = _tail(tracer)
    assert stats["pending_spans"] <= 3
    assert stats["traces_decided_early"] == 1
    assert stats["spans_discarded"] == 2 and stats["traces_discarded"] == 1
    for root in roots:
        root.set_tag("error", True)
        root.finish()
    # the first trace was discarded early; its root comes late with error=True, which
    # keeps the trace from then on (its two children stay dropped and counted)
    assert _decisions(reporter.spans) == {("child", "error"), ("root1", "error"),
                                          ("root0", "error")}
    assert len(reporter.spans) == 4
    stats = _tail(tracer)
    assert stats["late_spans"] == 1 and stats["spans_discarded"] == 2
    assert stats["kept"]["error"] == 2 and stats["traces_discarded"] == 0


def test_many_traces_never_grow_the_table_past_its_budget(tail_tracer):
    tracer, reporter = tail_tracer(max_pending_spans=50, max_pending_traces=20)
    roots = [tracer.start_span("root") for _ in range(200)]
    for root in roots:
        tracer.start_span("child", child_of=root).finish()
        tracer.start_span("child", child_of=root).finish()
    tracer.flush()
    stats = _tail(tracer)
    assert stats["pending_spans"] <= 50 and stats["pending_traces"] <= 20
    assert stats["traces_decided_early"] == 200 - stats["pending_traces"]


# -- stats --------------------------------------------------------------------------

def test_stats_keys(tail_tracer):
    tracer, _ = tail_tracer()
    assert _tail(tracer) == {
        "kept": {"error": 0, "latency": 0, "downstream": 0, "tag": 0, "baseline": 0,
                 "head": 0, "early": 0},
        "traces_discarded": 0, "spans_discarded": 0, "traces_decided_early": 0,
        "late_spans": 0, "downstream_too_late": 0, "pending_spans": 0, "pending_bytes": 0,
        "pending_traces": 0}


# -- the baseline -------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_baseline_keeps_what_opentelemetry_traceidratio_keeps(tail_tracer, ratio):
    tracer, reporter = tail_tracer(baseline_ratio=ratio)
    otel = TraceIdRatioBased(ratio)
    ids = []
    for _ in range(400):
        span = tracer.start_span("root")
        ids.append(span.trace_id)
        span.finish()
    # and ids at the edge of the bound
    bound = otel.bound
    for lo in {max(bound - 1, 1), bound, min(bound + 1, 2 ** 64 - 1)}:
        ctx = _remote(tracer, f"{7:016x}{lo:016x}", sampled=False)
        span = tracer.start_span("edge", child_of=ctx)
        ids.append(span.trace_id)
        span.finish()
    expected = {t for t in ids
                if otel.should_sample(None, t, "root").decision.is_sampled()}
    kept = {s.trace_id for s in reporter.spans}
    assert kept == expected
    assert all(s.tags["sampling.decision"] == "baseline" for s in reporter.spans)
    if 0.0 < ratio < 1.0:
        assert 0 < len(kept) < len(ids)


# -- the subset batch ---------------------------------------------------------------

def test_select_and_concat_keep_the_tag_and_log_tables(make_tracer):
    reporter = InMemoryReporter()
    tracer = make_tracer(reporter=reporter)
    for i in range(6):
        span = tracer.start_span(f"s{i}", tags={f"k{j}": j for j in range(i)})
        for j in range(i % 3):
            span.log_kv({"n": j})
        span.finish()
    batch = tracer.drain()
    part = batch.select([4, 1, 5])
    assert [s.operation_name for s in part] == ["s4", "s1", "s5"]
    for got, i in zip(part, [4, 1, 5]):
        want = batch[i]
        assert got.tags == want.tags and got.logs == want.logs
    assert int(part.tag_offsets[0]) == 0 and int(part.log_offsets[0]) == 0
    assert len(batch.select([])) == 0
    whole = part.concat([part, batch.select([0, 2])])
    assert [s.operation_name for s in whole] == ["s4", "s1", "s5", "s0", "s2"]
    assert whole[4].tags == batch[2].tags and whole[4].logs == batch[2].logs
    assert whole[1].tags == batch[1].tags


def test_kept_batches_reach_a_batch_reporters_exporter(make_tracer):
    exporter = RecordingExporter()
    reporter = fasttrace.BatchReporter(exporter)
    tracer = make_tracer(sampler=ConstSampler(False), reporter=reporter,
                         tail_sampling=TailSampling())
    for i in range(50):
        _trace(tracer, child_tags={"error": True} if i % 5 == 0 else None)
    assert tracer.flush(30)
    spans = [s for b in exporter.batches for s in b]
    assert len(spans) == 20
    assert {s.tags["sampling.decision"] for s in spans} == {"error"}
    assert _tail(tracer)["traces_discarded"] == 40


# -- the environment ----------------------------------------------------------------

def _env_tracer(**env):
    env.setdefault("OTEL_TRACES_EXPORTER", "none")
    return init_tracer(env, set_global=False)


def test_env_off_by_default():
    tracer = _env_tracer()
    assert tracer.tail_sampling is None and "tail_sampling" not in tracer.stats()
    assert _env_tracer(FASTTRACE_TAIL_SAMPLING="off").tail_sampling is None


def test_env_values():
    tracer = _env_tracer(FASTTRACE_TAIL_SAMPLING="on", FASTTRACE_TAIL_ERRORS="false",
                         FASTTRACE_TAIL_LATENCY_MS="250", FASTTRACE_TAIL_BASELINE_RATIO="0.05",
                         FASTTRACE_TAIL_KEEP_HEAD_SAMPLED="off",
                         FASTTRACE_TAIL_MAX_PENDING_SPANS="1000",
                         FASTTRACE_TAIL_MAX_PENDING_TRACES="30",
                         FASTTRACE_TAIL_MAX_PENDING_BYTES="4096")
    p = tracer.tail_sampling
    assert (p.errors, p.latency_ms, p.baseline_ratio, p.keep_head_sampled) == \
        (False, 250.0, 0.05, False)
    assert (p.max_pending_spans, p.max_pending_traces, p.max_pending_bytes) == \
        (1000, 30, 4096)
    assert "tail_sampling" in tracer.stats()
    tracer.close()


@pytest.mark.parametrize("name, value", [
    ("FASTTRACE_TAIL_SAMPLING", "maybe"),
    ("FASTTRACE_TAIL_ERRORS", "sometimes"),
    ("FASTTRACE_TAIL_LATENCY_MS", "fast"),
    ("FASTTRACE_TAIL_LATENCY_MS", "-3"),
    ("FASTTRACE_TAIL_LATENCY_MS", "inf"),
    ("FASTTRACE_TAIL_BASELINE_RATIO", "2"),
    ("FASTTRACE_TAIL_BASELINE_RATIO", "nan"),
    ("FASTTRACE_TAIL_KEEP_HEAD_SAMPLED", "?"),
    ("FASTTRACE_TAIL_MAX_PENDING_SPANS", "0"),
    ("FASTTRACE_TAIL_MAX_PENDING_SPANS", "many"),
    ("FASTTRACE_TAIL_MAX_PENDING_TRACES", "-1"),
    ("FASTTRACE_TAIL_MAX_PENDING_BYTES", "0"),
])
def test_env_bad_values_warn_once_and_fall_back(caplog, name, value):
    env = {"FASTTRACE_TAIL_SAMPLING": "on", name: value}
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        tracer = _env_tracer(**env)
    warnings = [r for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1
    defaults = TailSampling()
    p = tracer.tail_sampling
    if name == "FASTTRACE_TAIL_SAMPLING":
        assert p is None
    else:
        assert repr(p) == repr(defaults)
    tracer.close()


def test_env_override_wins():
    policy = TailSampling(latency_ms=1)
    tracer = init_tracer({"FASTTRACE_TAIL_SAMPLING": "on", "OTEL_TRACES_EXPORTER": "none"},
                         set_global=False, tail_sampling=policy)
    assert tracer.tail_sampling is policy
    tracer.close()


def test_stage_batches_are_plain_columns():
    # the kept batch's columns are numpy arrays of the layout's types
    tracer = fasttrace.Tracer(sampler=ConstSampler(False), tail_sampling=TailSampling())
    _trace(tracer, child_tags={"error": True})
    batch = tracer.drain()
    assert batch.span_id.dtype == np.uint64 and batch.tag_offsets.dtype == np.int32
    assert len(batch) == 2
    assert tracer.drain() is None


# -- close --------------------------------------------------------------------------

@pytest.mark.parametrize("threaded", [False, True])
def test_close_decides_what_is_still_pending_by_its_head_decision(make_tracer, threaded):
    exporter = RecordingExporter()
    reporter = fasttrace.BatchReporter(exporter) if threaded else InMemoryReporter()
    tracer = make_tracer(sampler=ConstSampler(False), reporter=reporter,
                         tail_sampling=TailSampling())
    kept_root = tracer.start_span("kept", child_of=_remote(tracer, "d" * 32, sampled=True))
    dropped_root = tracer.start_span("dropped")
    tracer.start_span("kept-child", child_of=kept_root).finish()
    tracer.start_span("dropped-child", child_of=dropped_root).finish()
    tracer.flush(30)
    assert _tail(tracer)["pending_spans"] == 2
    assert tracer.close(30)
    spans = ([s for b in exporter.batches for s in b] if threaded else reporter.spans)
    assert _decisions(spans) == {("kept-child", "early")}
    stats = _tail(tracer)
    assert stats["pending_spans"] == 0 and stats["traces_decided_early"] == 2
    assert stats["spans_discarded"] == 1


# -- a callee kept the trace (keep_trace) and what is told upstream (tail_verdict) ------

def test_keep_trace_keeps_the_local_trace_as_downstream(tail_tracer):
    tracer, reporter = tail_tracer()
    root = tracer.start_span("root", start_time=T0)
    client = tracer.start_span("call", child_of=root, start_time=T0)
    assert tracer.keep_trace(client.context) is True
    client.finish(finish_time=T0 + 0.001)
    root.finish(finish_time=T0 + 0.002)
    other = tracer.start_span("other")        # an unmarked trace beside it is discarded
    other.finish()
    tracer.flush()
    assert _decisions(reporter.spans) == {("root", "downstream"), ("call", "downstream")}
    assert _tail(tracer)["kept"]["downstream"] == 1
    assert _tail(tracer)["traces_discarded"] == 1


def test_keep_trace_marks_a_lone_root_batch_too(tail_tracer):
    # the columnar path (every row a local root) must not skip the mark
    tracer, reporter = tail_tracer()
    spans = [tracer.start_span(f"r{i}") for i in range(5)]
    tracer.keep_trace(spans[3].context)
    for span in spans:
        span.finish()
    tracer.flush()
    assert _decisions(reporter.spans) == {("r3", "downstream")}


def test_error_and_latency_come_before_downstream(tail_tracer):
    tracer, reporter = tail_tracer(latency_ms=1)
    root = tracer.start_span("root", tags={"error": True}, start_time=T0)
    tracer.keep_trace(root.context)
    root.finish(finish_time=T0 + 0.0001)
    slow = tracer.start_span("slow", start_time=T0)
    tracer.keep_trace(slow.context)
    slow.finish(finish_time=T0 + 0.01)
    tracer.flush()
    assert _decisions(reporter.spans) == {("root", "error"), ("slow", "latency")}


def test_keep_trace_after_the_trace_was_discarded_is_counted(tail_tracer):
    tracer, reporter = tail_tracer()
    root = tracer.start_span("root")
    root.finish()
    tracer.flush()
    late = tracer.start_span("late", child_of=root)
    assert tracer.keep_trace(late.context) is False     # the root is gone already
    late.finish()
    tracer.flush()
    # what the mark still reaches is kept: the spans drained after it
    assert _decisions(reporter.spans) == {("late", "downstream")}
    stats = _tail(tracer)
    assert stats["downstream_too_late"] == 1
    assert stats["kept"]["downstream"] == 1 and stats["traces_discarded"] == 0


def test_a_late_span_of_a_discarded_trace_follows_unless_it_brings_a_reason(tail_tracer):
    tracer, reporter = tail_tracer(latency_ms=5)
    root = tracer.start_span("root", start_time=T0)
    root.finish(finish_time=T0 + 0.001)
    tracer.flush()
    tracer.start_span("quiet", child_of=root).finish()            # follows: dropped
    again = tracer.start_span("second-call", child_of=root.context, start_time=T0)
    again.finish(finish_time=T0 + 0.002)                        # a local root, fast
    tracer.flush()
    assert reporter.spans == []
    slow = tracer.start_span("third-call", child_of=root.context, start_time=T0)
    slow.finish(finish_time=T0 + 0.01)                          # slow: keeps the trace
    tracer.start_span("after", child_of=slow).finish()
    tracer.flush()
    assert _decisions(reporter.spans) == {("third-call", "latency"), ("after", "latency")}
    stats = _tail(tracer)
    assert stats["spans_discarded"] == 3 and stats["late_spans"] == 4
    assert stats["traces_discarded"] == 0 and stats["kept"]["latency"] == 1


def test_keep_trace_without_tail_sampling_or_with_a_foreign_context(make_tracer, tail_tracer):
    plain = make_tracer(reporter=InMemoryReporter())
    span = plain.start_span("x")
    assert plain.keep_trace(span.context) is False
    assert plain.tail_verdict(span) == ""
    tracer, _ = tail_tracer()
    assert tracer.keep_trace(opentracing.SpanContext()) is False
    assert tracer.keep_trace(None) is False


def test_marked_pending_trace_decided_early_is_kept_as_downstream(tail_tracer):
    tracer, reporter = tail_tracer(max_pending_traces=1)
    root = tracer.start_span("root")
    tracer.start_span("child", child_of=root).finish()
    tracer.keep_trace(root.context)
    tracer.flush()
    other = tracer.start_span("other-root")
    tracer.start_span("other-child", child_of=other).finish()
    tracer.flush()                             # over budget: "root"'s trace goes early
    assert _decisions(reporter.spans) == {("child", "downstream")}
    assert _tail(tracer)["traces_decided_early"] == 1


def test_marks_are_bounded_by_the_decision_cache(tail_tracer):
    tracer, _ = tail_tracer(decision_cache_size=3)
    spans = [tracer.start_span(f"r{i}") for i in range(10)]
    for span in spans:
        tracer.keep_trace(span.context)
    assert len(tracer._tail._marks) == 3


def test_tail_verdict(tail_tracer):
    tracer, _ = tail_tracer(latency_ms=50, latency_ms_by_operation={"batch": 10_000})
    root = tracer.start_span("root")
    assert tracer.tail_verdict(root) == ""
    assert tracer.tail_verdict(root, error=True) == "error"
    tracer.keep_trace(root.context)
    assert tracer.tail_verdict(root) == "downstream"
    old = tracer.start_span("root", start_time=T0)       # running for years
    assert tracer.tail_verdict(old) == "latency"
    second_ago = time.time() - 1                 # 1000 ms: over 50, under batch's 10 s
    assert tracer.tail_verdict(tracer.start_span("root", start_time=second_ago)) == "latency"
    assert tracer.tail_verdict(tracer.start_span("batch", start_time=second_ago)) == ""
    # an error=True span of the trace that finished and was drained counts
    failing = tracer.start_span("root")
    tracer.start_span("child", child_of=failing, tags={"error": True}).finish()
    tracer.flush()
    assert tracer.tail_verdict(failing) == "error"
    assert tracer.tail_verdict(object()) == ""


def test_past_max_pending_bytes_the_oldest_traces_are_decided_early(tail_tracer):
    # each pending child: one tag (and the entry reserved for sampling.decision) and one
    # log; the budget holds three of them
    per_span = fasttrace.tail.pending_span_bytes(2, 1)
    tracer, reporter = tail_tracer(max_pending_bytes=3 * per_span)
    roots = [tracer.start_span(f"root{i}") for i in range(5)]
    for root in roots:
        child = tracer.start_span("child", child_of=root, tags={"k": 1})
        child.log_kv({"event": "x"})
        child.finish()
    tracer.flush()
    stats = _tail(tracer)
    assert stats["pending_bytes"] == 3 * per_span and stats["pending_spans"] == 3
    assert stats["traces_decided_early"] == 2
    for root in roots:
        root.finish()
    tracer.flush()
    stats = _tail(tracer)
    assert stats["pending_bytes"] == 0 and stats["pending_spans"] == 0
    assert stats["late_spans"] == 2        # the two roots whose traces went early


def test_a_span_that_sets_sampling_decision_itself_gets_the_stages_value(tail_tracer):
    tracer, reporter = tail_tracer(head=True)
    tracer.start_span("root", tags={"sampling.decision": "mine", "k": "v"}).finish()
    tracer.flush()
    (span,) = reporter.spans
    assert span.tags == {"sampling.decision": "head", "k": "v"}


def test_decision_table_keeps_exactly_the_newest_decisions():
    """Against a model (an insertion-ordered dict cut to size), with ids that share
    their low or high halves, so probing and backward-shift deletion both run."""
    import random
    from collections import OrderedDict
    from fasttrace._tail import DecisionTable
    rng = random.Random(7)
    size = 500
    table, model = DecisionTable(size), OrderedDict()
    names = ("",) + fasttrace.tail.DECISIONS
    pool = [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(300)]
    pool += [(hi, 42) for hi in range(200)] + [(42, lo) for lo in range(200)]
    for step in range(6000):
        key = rng.choice(pool) if rng.random() < 0.5 else (rng.getrandbits(64), step)
        name = rng.choice(names)
        table.record(key[0], key[1], name)
        if key in model:
            model[key] = name
        else:
            model[key] = name
            if len(model) > size:
                model.popitem(last=False)
        if step % 97 == 0:
            for probe in pool + list(model)[-50:]:
                assert table.lookup(*probe) == model.get(probe), (step, probe)
    assert len(table) == size


# -- the entry the arena reserves for sampling.decision ---------------------------------

def test_every_exporter_gets_one_sampling_decision_per_span(tail_tracer):
    """The arena reserves each span's last tag entry, the stage fills it in place: the
    OTLP request, decoded by opentelemetry-proto, carries the tag once per span, a value
    the span set itself under that key replaced, the span's own tags unchanged."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
    from fasttrace._otlp import encode_export_request
    tracer, _ = tail_tracer(head=True)
    root = tracer.start_span("root", tags={"sampling.decision": "mine", "a": 1})
    tracer.start_span("child", child_of=root, tags={"b": "x"}).finish()
    root.finish()
    batch = tracer.drain()         # through the stage, as the reporter would get it
    request = pb.ExportTraceServiceRequest.FromString(encode_export_request(batch))
    spans = request.resource_spans[0].scope_spans[0].spans
    got = {s.name: [(kv.key, kv.value.string_value or kv.value.int_value)
                    for kv in s.attributes] for s in spans}
    assert sorted(got["root"]) == [("a", 1), ("sampling.decision", "head")]
    assert got["child"] == [("b", "x"), ("sampling.decision", "head")]


def test_a_batch_without_reserved_entries_gets_the_tag_appended(make_tracer):
    """The stage does not rely on the arena's reserved entries: a batch from a tracer
    without tail sampling gets the entry appended (a value of the span's own dropped)."""
    from fasttrace.tail import TailStage
    plain = make_tracer(reporter=InMemoryReporter())
    plain.reporter.drain_threshold = 10**9
    root = plain.start_span("root", tags={"k": "v", "sampling.decision": "mine"})
    plain.start_span("child", child_of=root).finish()
    root.finish()
    lone = plain.start_span("lone")
    lone.finish()
    batch = plain.drain()
    assert batch is not None and len(batch) == 3
    kept = TailStage(TailSampling()).process(batch)
    assert sorted((s.operation_name, tuple(sorted(s.tags.items()))) for s in kept) == [
        ("child", (("sampling.decision", "head"),)),
        ("lone", (("sampling.decision", "head"),)),
        ("root", (("k", "v"), ("sampling.decision", "head")))]
    assert list(kept.tag_key).count(1) == 3     # once per span, under the interned key


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 17])
def test_a_decision_table_smaller_than_the_prefetch_distance(tail_tracer, size):
    """The lone-roots loop looks a few rows (and evictions) ahead: with a table of fewer
    entries than that, every look stays inside it (the ASAN build in .ci/debug-builds
    checks the memory; here the decisions are checked)."""
    tracer, reporter = tail_tracer(head=True, decision_cache_size=size)
    roots = []
    for _ in range(3):
        for _ in range(40):
            span = tracer.start_span("root")
            span.finish()
            roots.append(span)
        tracer.flush()
    assert _tail(tracer)["kept"]["head"] == 120
    assert len(tracer._tail._decided) == size
    late = tracer.start_span("late", child_of=roots[-1])
    late.finish()
    tracer.flush()
    assert ("late", "head") in _decisions(reporter.spans)

# SPDX-License-Identifier: Apache-2.0
"""Bad input never raises into the application: it is dropped, replaced or truncated,
and counted; a slot is never kept by a span no one has; counters never wrap."""
import gc
import logging
import math
import time

import opentracing
import pytest

import fasttrace

NOW_SLACK_NS = 3600 * 10**9       # "now" means within the hour around the test


@pytest.fixture
def tracer(reporter):
    return fasttrace.Tracer(reporter=reporter)


class BadStr:
    def __str__(self):
        raise RuntimeError("no str")

    __repr__ = __str__


class BadHash(str):
    def __str__(self):
        return self          # str() keeps the subclass

    def __hash__(self):
        raise RuntimeError("no hash")

    def __eq__(self, other):
        raise RuntimeError("no eq")


class BadInt(int):
    def __int__(self):
        raise RuntimeError("no int")

    __index__ = __int__


class BadFloat(float):
    def __float__(self):
        raise RuntimeError("no float")


class BadClass:
    @property
    def __class__(self):
        raise RuntimeError("no class")


class BadBool:
    def __bool__(self):
        raise RuntimeError("no bool")


class NotPairs:
    def items(self):
        return [1, (2,), ("ok", "kept"), (3, 4, 5)]


HOSTILE_TIMES = [float("nan"), float("inf"), float("-inf"), -1.0, 1e300, 1e10, 10**10,
                 10**30, -(10**30), "x", BadFloat(1.0), object()]


def _near_now(ns):
    return abs(ns - time.time_ns()) < NOW_SLACK_NS


@pytest.mark.parametrize("when", HOSTILE_TIMES, ids=repr)
def test_a_timestamp_that_is_no_time_becomes_now_and_is_counted(tracer, reporter, when):
    span = tracer.start_span("a", start_time=when)
    span.log_kv({"k": 1}, timestamp=when)
    span.finish(when)
    assert not span.is_recording                 # a failed finish would leave it open
    (record,) = reporter.spans
    assert _near_now(record.start_ns) and _near_now(record.end_ns)
    assert record.end_ns >= record.start_ns
    assert _near_now(record.logs[0][0])
    assert tracer.stats()["truncated"]["timestamps"] == 3
    with tracer.start_active_span("b", start_time=when):
        pass


@pytest.mark.parametrize("when", [0, 0.0, 1e-10, 50.0])
def test_a_finish_time_before_the_start_is_clamped_to_it(tracer, reporter, when):
    span = tracer.start_span("a", start_time=100.0)
    span.finish(when)
    (record,) = reporter.spans
    assert record.start_ns == record.end_ns == 100 * 10**9
    assert tracer.stats()["truncated"]["timestamps"] == 0


def test_a_big_int_timestamp_in_range_is_exact(tracer, reporter):
    span = tracer.start_span("a", start_time=1_700_000_000)
    span.finish(1_700_000_001)
    (record,) = reporter.spans
    assert (record.start_ns, record.end_ns) == (1_700_000_000 * 10**9, 1_700_000_001 * 10**9)


CALLS = [
    ("set_tag value BadStr", lambda t, s: s.set_tag("k", BadStr())),
    ("set_tag key BadStr", lambda t, s: s.set_tag(BadStr(), 1)),
    ("set_tag key with raising hash", lambda t, s: s.set_tag(BadHash("kk"), 1)),
    ("set_tag value with raising __class__", lambda t, s: s.set_tag("k", BadClass())),
    ("set_tag BadInt", lambda t, s: s.set_tag("k", BadInt(5))),
    ("set_tag big BadInt", lambda t, s: s.set_tag("k", BadInt(2**70))),
    ("set_tag BadFloat", lambda t, s: s.set_tag("k", BadFloat(1.5))),
    ("set_tag None key", lambda t, s: s.set_tag(None, None)),
    ("set_tag bytes", lambda t, s: s.set_tag(b"k", b"\xff\x00")),
    ("set_tag nan", lambda t, s: s.set_tag("k", math.nan)),
    ("set_operation_name BadStr", lambda t, s: s.set_operation_name(BadStr())),
    ("operation_name = BadHash", lambda t, s: setattr(s, "operation_name", BadHash("n"))),
    ("start_span BadStr name", lambda t, s: t.start_span(BadStr())),
    ("start_span raising-hash name", lambda t, s: t.start_span(BadHash("op"))),
    ("start_active_span BadStr", lambda t, s: t.start_active_span(BadStr()).close()),
    ("set_baggage_item BadStr key", lambda t, s: s.set_baggage_item(BadStr(), "v")),
    ("set_baggage_item BadStr value", lambda t, s: s.set_baggage_item("k", BadStr())),
    ("set_baggage_item raising-hash key", lambda t, s: s.set_baggage_item(BadHash("k"), "v")),
    ("log_kv BadStr key", lambda t, s: s.log_kv({BadStr(): 1})),
    ("log_kv raising-hash key", lambda t, s: s.log_kv({"a": 1, 2: 3})),
    ("log_kv items not pairs", lambda t, s: s.log_kv(NotPairs())),
    ("log_kv a list", lambda t, s: s.log_kv([("a", 1)])),
    ("log_kv None", lambda t, s: s.log_kv(None)),
    ("start_span tags not pairs", lambda t, s: t.start_span("w", tags=NotPairs())),
    ("start_span tags raising __bool__", lambda t, s: t.start_span("w", tags=BadBool())),
    ("start_span references=5", lambda t, s: t.start_span("r", references=5)),
    ("start_span references raising __bool__",
     lambda t, s: t.start_span("r", references=BadBool())),
    ("start_span references of garbage", lambda t, s: t.start_span("r", references=[1, "x"])),
    ("child_of=42", lambda t, s: t.start_span("n", child_of=42)),
    ("sampling.priority BadStr", lambda t, s: s.set_tag("sampling.priority", BadStr())),
    ("sampling.priority nan", lambda t, s: s.set_tag("sampling.priority", math.nan)),
    ("sampling.priority 2**100", lambda t, s: t.start_span("p").set_tag(
        "sampling.priority", 2**100)),
    ("sampling.priority -2**100", lambda t, s: t.start_span("p").set_tag(
        "sampling.priority", -2**100)),
    ("sampling.priority raising __bool__", lambda t, s: s.set_tag(
        "sampling.priority", BadBool())),
]


@pytest.mark.parametrize("call", [c[1] for c in CALLS], ids=[c[0] for c in CALLS])
def test_hostile_input_never_raises_and_the_span_still_reports(tracer, reporter, call):
    span = tracer.start_span("x")
    call(tracer, span)
    span.set_tag("after", True)
    span.finish()
    gc.collect()
    records = [r for r in reporter.spans if r.span_id == span.span_id]
    assert len(records) == 1 and records[0].tags.get("after") is True
    st = tracer.stats()
    assert st["arena_open"] == 0


def test_hostile_values_are_stored_as_the_tracer_reads_them(tracer, reporter):
    span = tracer.start_span("x")
    span.set_tag("bad_str", BadStr())
    span.set_tag("bad_int", BadInt(5))            # its own value, never its __int__
    span.set_tag("bad_big", BadInt(2**70))
    span.set_tag("bad_float", BadFloat(1.5))
    span.set_tag(BadHash("hash_key"), 1)
    span.log_kv(NotPairs())
    span.finish()
    (record,) = reporter.spans
    assert record.tags == {"bad_str": "<unprintable BadStr>", "bad_int": 5,
                           "bad_big": 2**70, "bad_float": 1.5, "hash_key": 1}
    assert type(record.tags["bad_int"]) is int and type(record.tags["bad_big"]) is int
    assert record.logs[0][1] == {"ok": "kept"}
    truncated = tracer.stats()["truncated"]
    assert truncated["unprintable"] == 1 + 3     # BadStr, and three items that are not pairs


def test_a_start_that_fails_late_keeps_no_slot():
    # 8 starts with a name whose hash raises: once, each took a slot and raised
    tracer = fasttrace.Tracer(reporter=fasttrace.InMemoryReporter(), capacity=8)
    for _ in range(8):
        tracer.start_span(BadHash("op")).finish()
    span = tracer.start_span("ordinary")
    assert span.is_recording
    assert tracer.stats()["dropped"]["arena_full"] == 0


def test_spans_dropped_unfinished_give_their_slots_back():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter, capacity=1024)
    for i in range(1024):
        tracer.start_span(f"abandoned-{i}")           # never finished, never kept
    kept = tracer.start_span("kept")
    assert kept.is_recording
    kept.finish()
    st = tracer.stats()
    assert st["dropped"]["abandoned"] == 1024 and st["dropped"]["arena_full"] == 0
    assert st["arena_open"] == 0
    assert [r.operation_name for r in reporter.spans] == ["kept"]


def test_a_span_abandoned_in_a_forked_childs_copy_touches_nothing(tracer):
    # a handle whose generation is stale (its slot was reused) must not free the slot
    a = tracer.start_span("a")
    a.finish()
    tracer.flush()                # a's slot is free and will be reused
    b = tracer.start_span("b")
    del a
    gc.collect()
    assert b.is_recording and tracer.stats()["dropped"]["abandoned"] == 0


def test_the_unsampled_counter_never_wraps():
    tracer = fasttrace.Tracer(reporter=fasttrace.InMemoryReporter(), capacity=1)
    keep = tracer.start_span("holds the only slot")
    dropped = tracer.start_span("dropped: arena full")
    dropped.set_tag("sampling.priority", 1)          # forced on: still no slot
    st = tracer.stats()
    assert st["unsampled"] == 0 and st["dropped"]["arena_full"] == 1
    keep.finish()
    tracer.flush()
    forced = tracer.start_span("unsampled", child_of=fasttrace.SpanContext(1, 2, sampled=False))
    forced.set_tag("sampling.priority", 1)
    st = tracer.stats()
    assert st["unsampled"] == 0 and st["sampled"] == 2
    assert all(0 <= v < 2**63 for v in st.values() if isinstance(v, int))


def test_a_sampler_that_raises_means_not_sampled_logged_once_and_counted(caplog):
    class Flaky:
        def is_sampled(self, trace_id, operation_name):
            raise ConnectionError("remote sampling config unavailable")

    tracer = fasttrace.Tracer(sampler=Flaky(), reporter=fasttrace.InMemoryReporter())
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        for _ in range(3):
            with tracer.start_active_span("request") as scope:
                assert not scope.span.context.sampled
    assert tracer.stats()["sampler_errors"] == 3
    assert sum("sampler" in r.getMessage() for r in caplog.records) == 1


def test_stats_work_after_the_in_memory_reporter_dropped_spans():
    reporter = fasttrace.InMemoryReporter(max_spans=10)
    tracer = fasttrace.Tracer(reporter=reporter)
    for _ in range(11):
        tracer.start_span("x").finish()
    tracer.flush()
    assert tracer.stats()["dropped"]["reporter_dropped"] == 1
    assert reporter.stats() == {"kept": 10, "dropped": 1}


def test_a_noop_tracers_span_is_an_unusable_parent_not_an_error(tracer):
    noop = opentracing.Tracer().start_span("noop")
    span = tracer.start_span("x", child_of=noop)
    assert span.parent_id is None
    assert tracer.stats()["foreign_parents"]["unusable"] == 1

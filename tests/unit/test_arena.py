# SPDX-License-Identifier: Apache-2.0
"""The arena seen through the public API: capacity, overflow, slot recycling, stale
handles."""

from opentracing import Format

import fasttrace


def test_stale_handle_cannot_touch_recycled_slot(make_tracer, reporter):
    # capacity 1: the second span necessarily reuses the first span's slot
    tracer = make_tracer(reporter=reporter, capacity=1)
    old = tracer.start_span("old", tags={"who": "old"})
    old.finish()
    assert [s.operation_name for s in reporter.spans] == ["old"]     # drained
    reporter.clear()

    new = tracer.start_span("new", tags={"who": "new"}, start_time=100.0)
    assert tracer.stats()["dropped"]["arena_full"] == 0
    # everything the old handle can do
    old.set_tag("who", "old-again").set_tag("intruder", True)
    old.log_kv({"event": "intrusion"})
    old.log_event("intrusion")
    old.log(event="intrusion")
    old.set_operation_name("hijacked")
    old.set_baggage_item("k", "v")
    old.finish(finish_time=101.0)
    old.finish()
    # the new span is still open: nothing was reported
    assert reporter.spans == []
    new.set_tag("mine", 1)
    new.finish(finish_time=102.0)
    (rec,) = reporter.spans
    assert rec.operation_name == "new"
    assert rec.span_id == new.span_id
    assert rec.tags == {"who": "new", "mine": 1}
    assert rec.logs == []
    assert rec.end_ns == 102_000_000_000
    assert tracer.stats()["finished"] == 2


def test_stale_handle_after_many_recycles(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=2)
    stale = []
    for i in range(50):
        s = tracer.start_span(f"s{i}")
        s.finish()
        stale.append(s)
        tracer.flush()
    current = tracer.start_span("current")
    for s in stale:
        s.set_tag("bad", True)
        s.log_kv({"bad": True})
        s.finish()
    current.finish()
    recs = {r.operation_name: r for r in reporter.spans}
    assert len(recs) == 51
    assert all(r.tags == {} and r.logs == [] for r in recs.values())


def test_overflow_is_counted_and_never_raises(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=4)
    open_spans = [tracer.start_span(f"open{i}") for i in range(4)]
    extra = [tracer.start_span(f"extra{i}", tags={"t": i}) for i in range(6)]
    stats = tracer.stats()
    assert stats["dropped"]["arena_full"] == 6
    assert stats["started"] == 10
    for span in extra:
        # non-recording spans still accept the whole API without raising
        span.set_tag("x", 1).log_kv({"y": 2}).set_operation_name("renamed")
        span.set_baggage_item("b", "1")
        assert span.get_baggage_item("b") == "1"
        span.finish()
    for span in open_spans:
        span.finish()
    names = sorted(s.operation_name for s in reporter.spans)
    assert names == [f"open{i}" for i in range(4)]
    # with room again, spans record again
    tracer.start_span("after").finish()
    assert [s.operation_name for s in reporter.spans][-1] == "after"
    assert tracer.stats()["dropped"]["arena_full"] == 6


def test_dropped_span_context_still_propagates(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=1)
    holder = tracer.start_span("holder")
    dropped = tracer.start_span("dropped", child_of=holder)
    assert tracer.stats()["dropped"]["arena_full"] == 1
    assert dropped.trace_id == holder.trace_id
    assert dropped.parent_id == holder.span_id
    assert dropped.span_id not in (0, holder.span_id)
    ctx = dropped.context
    assert (ctx.trace_id, ctx.span_id) == (dropped.trace_id, dropped.span_id)
    carrier = {}
    tracer.inject(ctx, Format.HTTP_HEADERS, carrier)
    extracted = tracer.extract(Format.HTTP_HEADERS, carrier)
    assert (extracted.trace_id, extracted.span_id) == (dropped.trace_id, dropped.span_id)
    holder.finish()
    # a child of the non-recorded span records (there is room now) under its id
    grandchild = tracer.start_span("grandchild", child_of=dropped)
    grandchild.finish()
    dropped.finish()
    recs = {s.operation_name: s for s in reporter.spans}
    assert set(recs) == {"holder", "grandchild"}
    assert recs["grandchild"].parent_id == dropped.span_id
    assert recs["grandchild"].trace_id == holder.trace_id


def test_dropped_active_span_is_still_the_parent(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=1)
    with tracer.start_active_span("a") as a:
        with tracer.start_active_span("b") as b:       # dropped: arena full
            assert tracer.active_span is b.span
            assert b.span.parent_id == a.span.span_id
            inner = tracer.start_span("c")
            assert inner.parent_id == b.span.span_id
            inner.finish()
    assert tracer.stats()["dropped"]["arena_full"] == 2
    assert [s.operation_name for s in reporter.spans] == ["a"]


def test_finished_spans_free_their_slots(make_tracer, reporter):
    # many more spans than slots, finished as they go: nothing is dropped
    tracer = make_tracer(reporter=reporter, capacity=8)
    for i in range(1000):
        with tracer.start_active_span(f"outer{i}"):
            with tracer.start_active_span("inner"):
                pass
    stats = tracer.stats()
    assert stats["dropped"]["arena_full"] == 0
    assert stats["finished"] == 2000
    assert len(reporter.spans) == 2000


def test_arena_holds_open_plus_finished_up_to_capacity(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=3)
    a = tracer.start_span("a")
    b = tracer.start_span("b")
    b.finish()                      # finished, not drained
    c = tracer.start_span("c")      # third slot
    d = tracer.start_span("d")      # full of 2 open + 1 finished: the finished one drains
    assert tracer.stats()["dropped"]["arena_full"] == 0
    e = tracer.start_span("e")      # 3 open spans: dropped
    assert tracer.stats()["dropped"]["arena_full"] == 1
    for s in (a, c, d, e):
        s.finish()
    assert sorted(s.operation_name for s in reporter.spans) == ["a", "b", "c", "d"]


def test_a_span_dropped_open_gives_its_slot_back(make_tracer, reporter):
    # a span that is never finished and no longer referenced frees its slot, counted as
    # abandoned (unreported, as jaeger-client drops an unfinished span)
    tracer = make_tracer(reporter=reporter, capacity=2)
    tracer.start_span("leaked")
    second = tracer.start_span("second")
    third = tracer.start_span("third")
    assert second.is_recording and third.is_recording
    stats = tracer.stats()
    assert stats["dropped"]["arena_full"] == 0 and stats["dropped"]["abandoned"] == 1
    second.finish()
    third.finish()
    assert [s.operation_name for s in reporter.spans] == ["second", "third"]


def test_capacity_one(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=1)
    for i in range(100):
        tracer.start_span(f"s{i}").finish()
    assert len(reporter.spans) == 100
    assert tracer.stats()["dropped"]["arena_full"] == 0


def test_many_tags_and_logs_across_spans_are_bounded(make_tracer, reporter):
    # a span with many tags/logs does not corrupt other spans' data
    tracer = make_tracer(reporter=reporter, capacity=4, max_tags=64, max_logs=64)
    spans = [tracer.start_span(f"s{i}") for i in range(4)]
    for round_ in range(64):
        for i, span in enumerate(spans):
            span.set_tag(f"k{round_}", i * 1000 + round_)
            span.log_kv({"i": i, "r": round_})
    for span in spans:
        span.finish()
    for rec in reporter.spans:
        i = int(rec.operation_name[1:])
        for key, value in rec.tags.items():
            assert value == i * 1000 + int(key[1:])
        assert all(f["i"] == i for _, f in rec.logs)
        assert [f["r"] for _, f in rec.logs] == sorted(f["r"] for _, f in rec.logs)
    stats = tracer.stats()
    kept_tags = sum(len(r.tags) for r in reporter.spans)
    kept_logs = sum(len(r.logs) for r in reporter.spans)
    # everything is either kept or counted
    assert kept_tags + sum(stats["truncated"].get(k, 0)
                           for k in ("tags", "tag_pool_full")) == 256
    assert kept_logs + sum(stats["truncated"].get(k, 0)
                           for k in ("logs", "log_pool_full")) == 256


def test_operation_names_beyond_interning(make_tracer, reporter):
    # many distinct operation names (e.g. a URL used as the name): all kept right
    tracer = make_tracer(reporter=reporter)
    for i in range(20000):
        tracer.start_span(f"GET /item/{i}").finish()
    names = [s.operation_name for s in reporter.spans]
    assert names == [f"GET /item/{i}" for i in range(20000)]


def test_tag_keys_beyond_interning(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    for i in range(20000):
        tracer.start_span("k", tags={f"key{i}": i}).finish()
    spans = reporter.spans
    assert [s.tags for s in spans] == [{f"key{i}": i} for i in range(20000)]


def test_implementation_is_the_compiled_one():
    assert fasttrace.IMPLEMENTATION == "cython"

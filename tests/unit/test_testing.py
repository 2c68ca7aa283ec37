# SPDX-License-Identifier: Apache-2.0
"""fasttrace.testing.MockTracer: opentracing's MockTracer API on a real fasttrace.Tracer.

The records must read like opentracing's MockSpan (the same scenario is run against
both tracers and compared), come back in finish order even when several threads finish
and read at once, and be fasttrace's own spans underneath."""
import threading
import time
import weakref

import opentracing
import pytest
from opentracing import Format, child_of, follows_from
from opentracing.mocktracer import MockTracer as OpentracingMockTracer
from opentracing.scope_managers import ThreadLocalScopeManager
from opentracing.scope_managers.asyncio import AsyncioScopeManager
from opentracing.scope_managers.contextvars import \
    ContextVarsScopeManager as OpentracingContextVarsScopeManager

import fasttrace
from fasttrace.scope import ContextVarsScopeManager
from fasttrace.testing import LogData, MockTracer, SpanRecord

# the span clock is the TSC rebased on the system clock every 50 ms: generous bounds
CLOCK_SLACK_S = 5.0


@pytest.fixture
def tracer():
    t = MockTracer()
    yield t
    t.close()


# -- it is fasttrace --------------------------------------------------------------------

def test_is_a_fasttrace_tracer_recording_through_the_core(tracer):
    assert isinstance(tracer, fasttrace.Tracer)
    assert isinstance(tracer, opentracing.Tracer)
    assert isinstance(tracer.reporter, fasttrace.InMemoryReporter)
    with tracer.start_active_span("a") as scope:
        assert type(scope.span) is fasttrace.Span
        assert type(scope.span.context) is fasttrace.SpanContext
    record, = tracer.finished_spans()
    assert isinstance(record, SpanRecord)
    assert isinstance(record.finished_span, fasttrace.FinishedSpan)
    assert record.finished_span.span_id == record.context.span_id
    stats = tracer.stats()
    assert stats["started"] == stats["finished"] == 1
    assert stats["reported"] == 1


@pytest.mark.parametrize("make_manager", [
    ThreadLocalScopeManager, ContextVarsScopeManager, AsyncioScopeManager,
    OpentracingContextVarsScopeManager])
def test_scope_manager_argument_as_in_mocktracer(make_manager):
    manager = make_manager()
    for tracer in (MockTracer(manager), MockTracer(scope_manager=manager)):
        assert tracer.scope_manager is manager
        with tracer.start_active_span("parent") as scope:
            assert tracer.active_span is scope.span
            assert manager.active is scope
            tracer.start_span("child").finish()
        assert tracer.active_span is None
        child, parent = tracer.finished_spans()
        assert child.parent_id == parent.context.span_id
        assert parent.parent_id is None
        tracer.close()


def test_default_scope_manager_is_mocktracers(tracer):
    # opentracing's MockTracer() uses a ThreadLocalScopeManager of its own
    assert isinstance(tracer.scope_manager, ThreadLocalScopeManager)


def test_tracer_keywords_are_passed_on():
    tracer = MockTracer(service_name="svc", tags={"deployment": "test"})
    tracer.start_span("a").finish()
    record, = tracer.finished_spans()
    assert record.finished_span.service_name == "svc"
    assert tracer.tags == {"deployment": "test"}

    quiet = MockTracer(sampler=fasttrace.ConstSampler(False))
    with quiet.start_active_span("not sampled"):
        pass
    assert quiet.finished_spans() == []


def test_reporter_must_be_in_memory():
    class Elsewhere(fasttrace.Reporter):
        def report(self, batch):
            pass

    with pytest.raises(TypeError, match="InMemoryReporter"):
        MockTracer(reporter=Elsewhere())
    mine = fasttrace.InMemoryReporter()
    tracer = MockTracer(reporter=mine)
    tracer.start_span("a").finish()
    assert [s.operation_name for s in mine.spans] == ["a"]
    assert [r.operation_name for r in tracer.finished_spans()] == ["a"]


# -- records read like MockSpan ---------------------------------------------------------

def _scenario(tracer):
    """Instrumentation as a user's test would exercise it (explicit times are exact in
    binary, so both tracers must give them back unchanged)."""
    root = tracer.start_span("root", tags={"component": "test", "n": 3},
                             start_time=1700000000.5)
    root.set_baggage_item("tenant", "acme")
    with tracer.scope_manager.activate(root, False):
        with tracer.start_active_span("child", tags={"ok": True}) as scope:
            scope.span.log_kv({"event": "cache-miss", "key": "k1"}, timestamp=1700000001.25)
            scope.span.set_tag("ratio", 0.5)
            scope.span.set_operation_name("child-renamed")
        sibling = tracer.start_span("sibling", child_of=root.context,
                                    start_time=1700000002.5)
        sibling.log_event("ping", payload={"a": 1})
        sibling.set_baggage_item("extra", "1")
        sibling.finish(finish_time=1700000003.75)
    detached = tracer.start_span("detached", ignore_active_span=True)
    detached.finish()
    root.finish(finish_time=1700000004.0)


def _normalized(spans):
    """Records as comparable data: parents as indexes into the list."""
    index = {s.context.span_id: i for i, s in enumerate(spans)}
    out = []
    for s in spans:
        out.append({
            "name": s.operation_name,
            "parent": None if s.parent_id is None else index[s.parent_id],
            "same_trace_as_first": s.context.trace_id == spans[-2].context.trace_id,
            "tags": s.tags,
            "logs": [log.key_values for log in s.logs],
            "baggage": dict(s.context.baggage),
            "finished": s.finished,
        })
    return out


def test_same_records_as_opentracing_mocktracer():
    theirs = OpentracingMockTracer()
    ours = MockTracer(ThreadLocalScopeManager())
    _scenario(theirs)
    _scenario(ours)
    expected, got = theirs.finished_spans(), ours.finished_spans()
    assert _normalized(got) == _normalized(expected)
    assert [s.operation_name for s in got] == ["child-renamed", "sibling", "detached", "root"]
    # the explicit times come back as given
    by_name = {s.operation_name: s for s in got}
    assert (by_name["root"].start_time, by_name["root"].finish_time) == (1700000000.5,
                                                                         1700000004.0)
    assert (by_name["sibling"].start_time, by_name["sibling"].finish_time) == (
        1700000002.5, 1700000003.75)
    child = got[0]
    assert [log.timestamp for log in child.logs] == [1700000001.25]
    assert child.get_baggage_item("tenant") == "acme"
    assert got[1].get_baggage_item("extra") == "1"
    assert got[2].context.baggage == {}


def test_record_fields_and_types(tracer):
    t0 = time.time()
    with tracer.start_active_span("parent") as parent:
        with tracer.start_active_span("child", tags={"s": "x", "i": 7, "b": False,
                                                     "f": 1.5, "big": 2 ** 70}) as child:
            child.span.log_kv({"event": "e", "value": 1})
            child.span.log(event="old-style", payload="p")
    t1 = time.time()
    c, p = tracer.finished_spans()
    assert c.tags == {"s": "x", "i": 7, "b": False, "f": 1.5, "big": 2 ** 70}
    assert c.finished is True and p.finished is True
    assert c.tracer is tracer
    assert isinstance(c.parent_id, int) and c.parent_id == p.context.span_id
    assert p.parent_id is None
    assert c.context.trace_id == p.context.trace_id == parent.span.trace_id
    assert c.context.span_id == child.span.span_id
    for record in (c, p):
        assert isinstance(record.start_time, float) and isinstance(record.finish_time, float)
        assert t0 - CLOCK_SLACK_S <= record.start_time <= record.finish_time
        assert record.finish_time <= t1 + CLOCK_SLACK_S
    assert p.start_time <= c.start_time and c.finish_time <= p.finish_time
    assert all(isinstance(log, LogData) for log in c.logs)
    assert [log.key_values for log in c.logs] == [{"event": "e", "value": 1},
                                                  {"event": "old-style", "payload": "p"}]
    for log in c.logs:
        assert isinstance(log.timestamp, float)
        assert c.start_time <= log.timestamp <= c.finish_time
    assert p.logs == [] and p.tags == {}


def test_tag_values_that_are_not_primitive_become_strings(tracer):
    # a documented difference: MockSpan keeps the object itself
    span = tracer.start_span("a", tags={"obj": ("x", 1)})
    span.finish()
    assert tracer.finished_spans()[0].tags == {"obj": "('x', 1)"}


def test_references(tracer):
    a = tracer.start_span("a")
    b = tracer.start_span("b")
    linked = tracer.start_span("linked", references=[follows_from(a.context),
                                                     child_of(b.context)])
    follower = tracer.start_span("follower", references=[follows_from(a.context)])
    for span in (linked, follower, b, a):
        span.finish()
    r_linked, r_follower, r_b, r_a = tracer.finished_spans()
    # the first child_of reference is the parent (fasttrace's rule)
    assert r_linked.parent_id == r_b.context.span_id
    assert [(ref.type, ref.referenced_context.span_id) for ref in r_linked.references] == [
        ("follows_from", a.span_id), ("child_of", b.span_id)]
    assert all(isinstance(ref, opentracing.Reference) for ref in r_linked.references)
    assert r_follower.parent_id == r_a.context.span_id
    assert [(ref.type, ref.referenced_context.trace_id) for ref in r_follower.references] == [
        ("follows_from", a.trace_id)]
    assert r_a.references == [] and r_b.references == []


def test_records_equal_the_spans_they_were_recorded_from(tracer):
    with tracer.start_active_span("parent") as scope:
        child = tracer.start_span("child")
        child.finish()
    records = tracer.finished_spans()
    assert records == [child, scope.span]
    assert child == records[0]               # the reflected comparison works too
    assert records[0] != scope.span
    assert records == tracer.finished_spans()
    assert len({*records, *tracer.finished_spans()}) == 2
    # a record (or its context) can be a parent, and can be injected
    late = tracer.start_span("late", child_of=records[1])
    late.finish()
    assert tracer.finished_spans()[-1].parent_id == scope.span.span_id
    carrier = {}
    tracer.inject(records[1].context, Format.HTTP_HEADERS, carrier)
    assert tracer.extract(Format.HTTP_HEADERS, carrier).span_id == scope.span.span_id


# -- finish order, reset ------------------------------------------------------------------

def test_finish_order_not_start_order(tracer):
    a, b, c = (tracer.start_span(name) for name in "abc")
    b.finish()
    c.finish(finish_time=time.time() - 3600)   # an earlier timestamp does not reorder
    a.finish()
    assert [s.operation_name for s in tracer.finished_spans()] == ["b", "c", "a"]


def test_finish_order_with_threads_finishing_and_reading_at_once(tracer):
    """4 threads finish 12,000 spans (several automatic drains of 2,048), while another
    thread keeps reading: the records still come in the order finish() was called."""
    n_threads, per_thread = 4, 3000
    order_lock = threading.Lock()
    counter = iter(range(n_threads * per_thread))
    stop = threading.Event()
    errors = []
    seen_lengths = []

    def worker():
        try:
            for _ in range(per_thread):
                span = tracer.start_span("s")
                with order_lock:
                    span.set_tag("n", next(counter))
                    span.finish()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        while not stop.is_set():
            seen_lengths.append(len(tracer.finished_spans()))

    reading = threading.Thread(target=reader)
    reading.start()
    workers = [threading.Thread(target=worker) for _ in range(n_threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    stop.set()
    reading.join(60)
    assert not errors
    numbers = [s.tags["n"] for s in tracer.finished_spans()]
    assert numbers == list(range(n_threads * per_thread))
    assert seen_lengths == sorted(seen_lengths)
    assert tracer.stats()["dropped"]["arena_full"] == 0


def test_reset_forgets_finished_spans_not_open_ones(tracer):
    open_span = tracer.start_span("open")
    tracer.start_span("done").finish()
    tracer.start_span("also done").finish()
    assert len(tracer.finished_spans()) == 2
    tracer.start_span("finished, never read").finish()
    tracer.reset()
    assert tracer.finished_spans() == []
    open_span.set_baggage_item("k", "v")
    open_span.finish()
    record, = tracer.finished_spans()
    assert record.operation_name == "open"
    assert record.context.baggage == {"k": "v"}
    tracer.reset()
    assert tracer.finished_spans() == []


def test_spans_that_never_record_leave_nothing_behind(tracer):
    dropped = tracer.start_span("dropped", tags={"sampling.priority": 0})
    dropped.finish()
    kept = tracer.start_span("kept")
    kept.finish()
    assert [s.operation_name for s in tracer.finished_spans()] == ["kept"]
    # the live-span table (baggage lookup) does not keep them
    assert tracer._live == {}

    unsampled = MockTracer(sampler=fasttrace.ConstSampler(False))
    for _ in range(10):
        unsampled.start_span("x").finish()
    assert unsampled.finished_spans() == []
    assert unsampled._live == {}


# -- propagation ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", [Format.TEXT_MAP, Format.HTTP_HEADERS, Format.BINARY])
def test_propagation_formats_of_mocktracer(tracer, fmt):
    with tracer.start_active_span("client") as scope:
        scope.span.set_baggage_item("user", "42")
        carrier = bytearray() if fmt == Format.BINARY else {}
        tracer.inject(scope.span.context, fmt, carrier)
    assert carrier
    context = tracer.extract(fmt, carrier)
    with tracer.start_active_span("server", child_of=context):
        pass
    client, server = tracer.finished_spans()
    assert server.parent_id == client.context.span_id
    assert server.context.trace_id == client.context.trace_id
    assert server.context.baggage == {"user": "42"}


def test_register_propagator_as_in_mocktracer(tracer):
    class Plain:
        def inject(self, span_context, carrier):
            carrier["ids"] = f"{span_context.trace_id}:{span_context.span_id}"

        def extract(self, carrier):
            trace_id, span_id = map(int, carrier["ids"].split(":"))
            return fasttrace.SpanContext(trace_id, span_id)

    tracer.register_propagator("plain", Plain())
    tracer.register_propagator(Format.TEXT_MAP, Plain())   # replaces the built-in one
    for fmt in ("plain", Format.TEXT_MAP):
        with tracer.start_active_span("out") as scope:
            carrier = {}
            tracer.inject(scope.span, fmt, carrier)          # a span works too
        assert list(carrier) == ["ids"]
        with tracer.start_active_span("in", child_of=tracer.extract(fmt, carrier)):
            pass
        out, inner = tracer.finished_spans()[-2:]
        assert inner.parent_id == out.context.span_id
    with pytest.raises(opentracing.UnsupportedFormatException):
        tracer.inject(out.context, "unknown", {})


# -- what users of other tracers rely on ----------------------------------------------------

def test_spans_contexts_scopes_are_opentracing_instances(tracer):
    with tracer.start_active_span("a") as scope:
        assert isinstance(scope, opentracing.Scope)
        assert isinstance(scope.span, opentracing.Span)
        assert isinstance(scope.span.context, opentracing.SpanContext)


def test_span_accepts_attributes(tracer):
    span = tracer.start_span("a")
    span._ref_count = 1
    span.custom = {"x": 1}
    assert span._ref_count == 1 and span.custom == {"x": 1}
    span.finish()
    assert tracer.finished_spans()[0].operation_name == "a"


def test_span_can_be_weakly_referenced(tracer):
    span = tracer.start_span("a")
    ref = weakref.ref(span)
    assert ref() is span
    span.finish()


def test_error_log_of_with_span_is_the_one_of_traced(tracer):
    @fasttrace.traced("decorated", tracer=tracer)
    def fails():
        raise ValueError("boom")

    with pytest.raises(ValueError):
        with tracer.start_span("with-span"):
            raise ValueError("boom")
    with pytest.raises(ValueError):
        with tracer.start_active_span("with-scope"):
            raise ValueError("boom")
    with pytest.raises(ValueError):
        fails()
    records = {r.operation_name: r for r in tracer.finished_spans()}
    reference = records["decorated"]
    assert reference.tags == {"error": True}
    fields, = [log.key_values for log in reference.logs]
    for name in ("with-span", "with-scope"):
        other, = [log.key_values for log in records[name].logs]
        assert records[name].tags == {"error": True}
        assert set(other) == set(fields), name
        assert {k: type(v) for k, v in other.items()} == {k: type(v) for k, v in fields.items()}
        assert (other["event"], other["message"]) == (fields["event"], fields["message"])
        assert other["error.kind"] == fields["error.kind"], name
        assert isinstance(other["error.object"], ValueError)

# SPDX-License-Identifier: Apache-2.0
"""fasttrace's objects behave like every other tracer's under third-party OpenTracing code.

Each test is one row of what instrumentation written for MockTracer, jaeger-client or
the OpenTelemetry shim does with spans, contexts, scopes, parents and reporters.
"""
import asyncio
import gc
import logging
import weakref

import opentracing
import pytest
from opentracing import Format
from opentracing.mocktracer import MockTracer
from opentracing.scope_managers.contextvars import ContextVarsScopeManager as OTContextVars
from opentracing.scope_managers.contextvars import no_parent_scope

import fasttrace
from fasttrace.tracer import Closed


# -- spans, contexts and scopes are the OpenTracing classes ---------------------------

def test_spans_contexts_and_scopes_are_opentracing_instances(tracer):
    scope = tracer.start_active_span("op")
    span = scope.span
    assert isinstance(span, opentracing.Span)
    assert isinstance(span.context, opentracing.SpanContext)
    assert isinstance(scope, opentracing.Scope)
    assert isinstance(fasttrace.SpanContext(1, 2), opentracing.SpanContext)
    assert issubclass(fasttrace.Span, opentracing.Span)
    assert issubclass(fasttrace.SpanContext, opentracing.SpanContext)
    assert isinstance(tracer.scope_manager, opentracing.ScopeManager)
    # opentracing_instrumentation's RequestContextManager(span) keeps a span only when
    # this holds, else treats it as a context object and get_current_span() raises
    scope.close()


def test_the_opentracing_base_adds_nothing_that_shadows_fasttrace(tracer):
    # every public method of the API classes resolves to fasttrace's own
    span = tracer.start_span("op")
    for name in ("set_tag", "log_kv", "finish", "set_operation_name", "set_baggage_item",
                 "get_baggage_item", "log_event", "log", "__enter__", "__exit__"):
        assert getattr(type(span), name) is fasttrace.Span.__dict__[name], name
    assert span.context is span.context and span.tracer is tracer


# -- attributes third-party code keeps on spans --------------------------------------

def test_span_accepts_attribute_assignment(tracer, reporter):
    span = tracer.start_span("parent")
    span._ref_count = 1
    span._ref_count += 1
    assert span._ref_count == 2
    assert vars(span) == {"_ref_count": 2}
    del span._ref_count
    with pytest.raises(AttributeError):
        span._ref_count
    with pytest.raises(AttributeError):
        del span._ref_count
    span.finish()
    assert reporter.spans[0].operation_name == "parent"


def test_attributes_belong_to_their_own_span(tracer):
    a, b = tracer.start_span("a"), tracer.start_span("b")
    a.__dict__["x"] = 1          # through the dict itself, too
    b.y = 2
    assert vars(a) == {"x": 1} and vars(b) == {"y": 2}
    assert vars(tracer.start_span("c")) == {}
    with pytest.raises(AttributeError):
        tracer.start_span("d").x


def test_contexts_and_scopes_accept_attributes_too(tracer):
    scope = tracer.start_active_span("op")
    scope.request_id = "r1"
    scope.span.context.origin = "test"
    assert scope.request_id == "r1" and scope.span.context.origin == "test"
    scope.close()


def test_identity_stays_read_only_and_methods_can_still_be_patched(tracer, reporter):
    span = tracer.start_span("op")
    with pytest.raises(AttributeError):
        span.trace_id = 1
    calls = []
    original = span.finish
    span.finish = lambda *a: (calls.append(a), original(*a))
    with tracer.scope_manager.activate(span, True):
        pass
    assert calls == [()]
    assert [s.operation_name for s in reporter.spans] == ["op"]


def test_object_setattr_cannot_bypass_the_span(tracer):
    # CPython refuses object.__setattr__ on a type with its own C-level setattr, so the
    # shared empty dict of a fresh span (CPython 3.11) can never be written through
    span = tracer.start_span("op")
    with pytest.raises(TypeError):
        object.__setattr__(span, "x", 1)
    assert vars(tracer.start_span("other")) == {}


def test_a_span_referenced_from_its_own_attributes_is_collected(tracer):
    span = tracer.start_span("cycle")
    scope = tracer.scope_manager.activate(span, False)
    span.scope = scope          # span -> its dict -> scope -> span
    scope.me = scope
    ref = weakref.ref(span)
    scope.close()
    span.finish()
    del span, scope
    gc.collect()
    assert ref() is None


# -- weak references ------------------------------------------------------------------

def test_spans_contexts_and_scopes_can_be_weakly_referenced(tracer):
    scope = tracer.start_active_span("op")
    span, ctx = scope.span, scope.span.context
    table = weakref.WeakKeyDictionary()
    table[span] = "span"
    refs = [weakref.ref(span), weakref.ref(ctx), weakref.ref(scope)]
    fired = []
    watched = weakref.ref(tracer.start_span("short-lived"), fired.append)
    assert [r() for r in refs] == [span, ctx, scope] and table[span] == "span"
    assert len(fired) == 1 and watched() is None     # the temporary died at once
    scope.close()
    del span, ctx, scope
    gc.collect()
    assert [r() for r in refs] == [None, None, None] and len(table) == 0


# -- the active scope is opentracing's ---------------------------------------------------

def test_no_parent_scope_works_under_the_default_scope_manager(tracer, reporter):
    with tracer.start_active_span("root"):
        with no_parent_scope():
            assert tracer.active_span is None
            with tracer.start_active_span("detached") as scope:
                assert scope.span.parent_id is None
        assert tracer.active_span.operation_name == "root"


def test_no_parent_scope_reaches_tasks_started_inside_it(tracer):
    async def child():
        with tracer.start_active_span("task") as scope:
            return scope.span.parent_id

    async def main():
        with tracer.start_active_span("root") as root:
            with no_parent_scope():
                detached = await asyncio.create_task(child())
            attached = await asyncio.create_task(child())
            return detached, attached, root.span.span_id

    detached, attached, root_id = asyncio.run(main())
    assert detached is None and attached == root_id


def test_activating_none_means_no_parent(tracer):
    with tracer.start_active_span("root"):
        with tracer.scope_manager.activate(None, False):
            with tracer.start_active_span("child") as scope:
                assert scope.span.parent_id is None
    assert tracer.stats()["foreign_parents"] == {"adopted": 0, "unusable": 0}


def test_opentracings_contextvars_manager_sees_the_same_active_scope(tracer):
    theirs = OTContextVars()
    with tracer.start_active_span("ours") as scope:
        assert theirs.active is scope
    other = fasttrace.Tracer(scope_manager=theirs, reporter=fasttrace.InMemoryReporter())
    with other.start_active_span("theirs") as their_scope:
        assert tracer.active_span is their_scope.span
        with tracer.start_active_span("child") as child:
            assert child.span.parent_id == their_scope.span.span_id
            assert child.span.trace_id == their_scope.span.trace_id


def test_opentracing_scope_managers_still_work_when_passed_in(reporter):
    for manager in (OTContextVars(), opentracing.scope_managers.ThreadLocalScopeManager()):
        t = fasttrace.Tracer(scope_manager=manager, reporter=reporter)
        with t.start_active_span("p") as p:
            with t.start_active_span("c") as c:
                assert c.span.parent_id == p.span.span_id
        assert t.active_span is None


# -- parents from other tracers ---------------------------------------------------------

def test_a_mocktracer_parent_is_adopted(tracer, reporter):
    mock = MockTracer()
    parent = mock.start_span("theirs")
    for given in (parent, parent.context):
        child = tracer.start_span("ours", child_of=given)
        assert child.trace_id == parent.context.trace_id
        assert child.parent_id == parent.context.span_id
        child.finish()
    assert tracer.stats()["foreign_parents"] == {"adopted": 2, "unusable": 0}
    assert {s.parent_id for s in reporter.spans} == {parent.context.span_id}


def test_a_jaeger_client_parent_keeps_its_64_bit_trace_id_and_decision(tracer):
    jaeger_client = pytest.importorskip("jaeger_client")
    from jaeger_client.reporter import NullReporter
    jaeger = jaeger_client.Tracer("peer", reporter=NullReporter(),
                                  sampler=jaeger_client.ConstSampler(False),
                                  tags={"ip": "127.0.0.1"})
    parent = jaeger.start_span("theirs")
    parent.set_baggage_item("user", "alice")
    child = tracer.start_span("ours", child_of=parent)
    assert child.trace_id == parent.trace_id < 2 ** 64
    assert child.parent_id == parent.span_id
    assert child.context.sampled is False               # jaeger said: not sampled
    assert child.get_baggage_item("user") == "alice"
    headers = {}
    t = fasttrace.Tracer(propagators=("jaeger",))
    t.inject(child.context, Format.HTTP_HEADERS, headers)
    assert headers["uber-trace-id"].startswith(f"{parent.trace_id:016x}:")


def test_an_opentelemetry_shim_parent_is_adopted(tracer):
    shim_module = pytest.importorskip("opentelemetry.shim.opentracing_shim")
    from opentelemetry.sdk.trace import TracerProvider
    shim = shim_module.create_tracer(TracerProvider())
    with shim.start_active_span("theirs") as scope:
        otel = scope.span.unwrap().get_span_context()
        child = tracer.start_span("ours", child_of=scope.span)
        assert (child.trace_id, child.parent_id) == (otel.trace_id, otel.span_id)
        assert child.context.sampled is True


def test_a_foreign_active_span_is_the_parent(tracer):
    mock = MockTracer(scope_manager=OTContextVars())
    with mock.start_active_span("theirs") as scope:
        with tracer.start_active_span("ours") as ours:
            assert ours.span.parent_id == scope.span.context.span_id


def test_a_foreign_reference_is_kept(tracer, reporter):
    mock_ctx = MockTracer().start_span("theirs").context
    span = tracer.start_span("ours", references=[opentracing.follows_from(mock_ctx)])
    span.finish()
    (record,) = reporter.spans
    assert record.references == [("follows_from", mock_ctx.trace_id, mock_ctx.span_id)]


@pytest.mark.parametrize("parent", [
    object(), opentracing.SpanContext(), opentracing.Tracer().start_span("noop"),
    type("Ids", (), {"trace_id": "abc", "span_id": 1})(),
    type("Ids", (), {"trace_id": 0, "span_id": 1})(),
    type("Ids", (), {"trace_id": 1, "span_id": 2 ** 64})(),
    type("Ids", (), {"trace_id": True, "span_id": 1})(),
    type("Raises", (), {"trace_id": property(lambda self: 1 / 0), "span_id": 1})(),
], ids=["object", "noop-context", "noop-span", "str-id", "zero-id", "wide-span-id",
        "bool-id", "raising"])
def test_an_unusable_parent_starts_a_new_trace_logged_once_and_counted(
        make_tracer, reporter, caplog, parent):
    tracer = make_tracer(reporter=reporter)
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        first = tracer.start_span("a", child_of=parent)
        second = tracer.start_span("b", references=[opentracing.child_of(parent)])
    assert first.parent_id is None and second.parent_id is None
    assert first.trace_id != second.trace_id
    assert tracer.stats()["foreign_parents"] == {"adopted": 0, "unusable": 2}
    warnings = [r for r in caplog.records if "new trace" in r.getMessage()]
    assert len(warnings) == 1


# -- reporters written against the documented interface ------------------------------------

class PlainReporter:
    """Only what the README documents: report, flush, close."""

    def __init__(self):
        self.batches = []
        self.closed = False

    def report(self, batch):
        self.batches.append(batch)

    def flush(self, timeout=None):
        return True

    def close(self, timeout=None):
        self.closed = True


def test_a_reporter_with_only_report_flush_and_close_works():
    reporter = PlainReporter()
    tracer = fasttrace.Tracer(reporter=reporter, capacity=64)
    for i in range(200):                     # drains inline more than once
        tracer.start_span(f"op{i % 3}").finish()
    assert tracer.flush() is True
    assert sum(len(b) for b in reporter.batches) == 200
    assert bool(tracer.close()) is True and reporter.closed


def test_reporter_hooks_that_raise_are_logged_once_and_tracing_goes_on(caplog):
    class Broken(PlainReporter):
        drain_threshold = "many"

        def attach(self, tracer):
            raise RuntimeError("attach")

        def batch_ready(self, tracer):
            raise RuntimeError("batch_ready")

    reporter = Broken()
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        tracer = fasttrace.Tracer(reporter=reporter, capacity=64)
        for _ in range(300):
            tracer.start_span("op").finish()
        tracer.flush()
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert sum("attach" in m for m in failures) == 1
    assert sum("batch_ready" in m for m in failures) == 1
    assert sum(len(b) for b in reporter.batches) == 300     # nothing lost
    assert tracer.stats()["dropped"]["arena_full"] == 0


def test_batch_ready_is_called_once_per_batch_not_once_per_span_finished():
    """A reporter whose thread has not drained yet (it waits for the GIL) is told once
    per drain_threshold spans; then again only after it drained."""
    class Waiting(PlainReporter):
        drain_threshold = 10

        def __init__(self):
            super().__init__()
            self.notices = 0

        def batch_ready(self, tracer):
            self.notices += 1

    reporter = Waiting()
    tracer = fasttrace.Tracer(reporter=reporter, capacity=1024)
    for _ in range(95):
        tracer.start_span("op").finish()
    assert reporter.notices == 9            # at 10, 20, ... 90 waiting: not 86 times
    batch = tracer.drain(50)                # the reporter's thread takes part of them
    assert len(batch) == 50
    for _ in range(4):                      # 45 + 4 wait: under the next notice at 55
        tracer.start_span("op").finish()
    assert reporter.notices == 9
    for _ in range(6):
        tracer.start_span("op").finish()
    assert reporter.notices == 10
    assert len(tracer.drain()) == 55
    assert tracer.stats()["dropped"]["arena_full"] == 0


# -- close() ------------------------------------------------------------------------------

def test_close_returns_a_completed_future_of_delivery(tracer):
    tracer.start_span("op").finish()
    closed = tracer.close(5)
    assert isinstance(closed, Closed) and closed.done() and closed.result() is True
    assert bool(closed) is True
    assert tracer.close() is closed                      # idempotent

    async def awaited():
        return await closed
    assert asyncio.run(awaited()) is True


def test_close_can_be_yielded_from_a_tornado_coroutine(tracer):
    gen = pytest.importorskip("tornado.gen")
    ioloop = pytest.importorskip("tornado.ioloop")

    @gen.coroutine
    def shutdown():
        delivered = yield tracer.close()
        return delivered

    loop = ioloop.IOLoop()
    try:
        assert loop.run_sync(shutdown) is True
    finally:
        loop.close()


def test_close_reports_a_failed_delivery_as_false():
    class Failing(PlainReporter):
        def flush(self, timeout=None):
            return False

    tracer = fasttrace.Tracer(reporter=Failing())
    tracer.start_span("op").finish()
    closed = tracer.close()
    assert closed.result() is False and not closed and tracer.close() is closed


# -- what a jaeger-client user meets --------------------------------------------------------

def test_64_bit_trace_ids_on_request(reporter):
    tracer = fasttrace.Tracer(reporter=reporter, trace_id_bits=64,
                              propagators=("jaeger", "tracecontext"))
    with tracer.start_active_span("root") as root:
        child = tracer.start_span("child")
        assert 0 < root.span.trace_id < 2 ** 64
        assert child.trace_id == root.span.trace_id
        headers = {}
        tracer.inject(child.context, Format.HTTP_HEADERS, headers)
        child.finish()
    assert headers["uber-trace-id"].split(":")[0] == f"{root.span.trace_id:016x}"
    assert headers["traceparent"].split("-")[1] == f"{root.span.trace_id:032x}"
    assert all(s.trace_id < 2 ** 64 for s in reporter.spans)
    with pytest.raises(ValueError):
        fasttrace.Tracer(trace_id_bits=96)


def test_128_bit_trace_ids_by_default(tracer):
    ids = {tracer.start_span("x").trace_id for _ in range(64)}
    assert any(i >= 2 ** 64 for i in ids)

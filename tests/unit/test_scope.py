# SPDX-License-Identifier: Apache-2.0
"""Active spans across threads and asyncio tasks; scope semantics."""
import asyncio
import random
import threading

import pytest
from opentracing.ext import tags as ext_tags

import fasttrace
from fasttrace.scope import ContextVarsScopeManager, ThreadLocalScopeManager

pytestmark = pytest.mark.usefixtures("fresh_asyncio_policy")

SCOPE_MANAGERS = [ContextVarsScopeManager, ThreadLocalScopeManager]


def _run_threads(targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("manager_cls", SCOPE_MANAGERS)
def test_explicit_parent_from_another_thread(make_tracer, reporter, manager_cls):
    tracer = make_tracer(reporter=reporter, scope_manager=manager_cls())
    with tracer.start_active_span("main") as scope:
        parent = scope.span
        seen = {}

        def worker():
            # the main thread's active scope does not leak into this thread
            seen["active_before"] = tracer.active_span
            span = tracer.start_span("worker", child_of=parent)
            seen["ids"] = (span.trace_id, span.parent_id)
            with tracer.scope_manager.activate(span, True):
                with tracer.start_active_span("worker-child") as inner:
                    seen["inner_parent"] = inner.span.parent_id
                    seen["worker_span_id"] = span.span_id
            seen["active_after"] = tracer.active_span

        _run_threads([worker])
        # nor does the worker's scope leak back
        assert tracer.active_span is parent
    assert seen["active_before"] is None
    assert seen["active_after"] is None
    assert seen["ids"] == (parent.trace_id, parent.span_id)
    assert seen["inner_parent"] == seen["worker_span_id"]
    spans = {s.operation_name: s for s in reporter.spans}
    assert spans["worker"].parent_id == spans["main"].span_id
    assert spans["worker-child"].parent_id == spans["worker"].span_id
    assert {s.trace_id for s in spans.values()} == {spans["main"].trace_id}


@pytest.mark.parametrize("manager_cls", SCOPE_MANAGERS)
def test_concurrent_threads_nest_independently(make_tracer, reporter, manager_cls):
    tracer = make_tracer(reporter=reporter, scope_manager=manager_cls())
    n_threads, depth, rounds = 8, 4, 50
    barrier = threading.Barrier(n_threads)

    def worker(i):
        def run():
            barrier.wait()
            for r in range(rounds):
                scopes = []
                for d in range(depth):
                    scope = tracer.start_active_span(f"t{i}-d{d}", tags={"thread": i,
                                                                         "round": r})
                    if d:
                        assert scope.span.parent_id == scopes[-1].span.span_id
                    else:
                        assert scope.span.parent_id is None
                    scopes.append(scope)
                for scope in reversed(scopes):
                    assert tracer.active_span is scope.span
                    scope.close()
                assert tracer.active_span is None
        return run

    _run_threads([worker(i) for i in range(n_threads)])
    spans = reporter.spans
    assert len(spans) == n_threads * depth * rounds
    by_id = {s.span_id: s for s in spans}
    for s in spans:
        thread, rnd = s.tags["thread"], s.tags["round"]
        d = int(s.operation_name.rsplit("-d", 1)[1])
        if d == 0:
            assert s.parent_id is None
        else:
            parent = by_id[s.parent_id]
            assert parent.tags == {"thread": thread, "round": rnd}
            assert parent.operation_name == f"t{thread}-d{d - 1}"
            assert parent.trace_id == s.trace_id


def test_fresh_thread_has_no_active_span_contextvars(tracer):
    # threads start with an empty context: a request's span does not become the parent
    # of unrelated work in a thread pool
    seen = []
    with tracer.start_active_span("request"):
        _run_threads([lambda: seen.append(tracer.active_span)])
    assert seen == [None]


@pytest.mark.parametrize("n_tasks", [500])
def test_many_concurrent_asyncio_tasks_parent_their_own_spans(tracer, reporter, n_tasks):
    rng = random.Random(1234)
    delays = [[rng.random() * 0.002 for _ in range(3)] for _ in range(n_tasks)]

    async def worker(i, request_span):
        d = delays[i]
        assert tracer.active_span is request_span      # inherited from main()
        with tracer.start_active_span("outer", tags={"task": i}) as outer:
            await asyncio.sleep(d[0])
            assert tracer.active_span is outer.span
            with tracer.start_active_span("mid", tags={"task": i}) as mid:
                await asyncio.sleep(d[1])
                assert tracer.active_span is mid.span
                with tracer.start_active_span("inner", tags={"task": i}) as inner:
                    await asyncio.sleep(0)
                    assert tracer.active_span is inner.span
                    # a plain start_span also picks up this task's active span
                    leaf = tracer.start_span("leaf", tags={"task": i})
                    await asyncio.sleep(d[2])
                    leaf.finish()
                assert tracer.active_span is mid.span
            assert tracer.active_span is outer.span
        assert tracer.active_span is request_span

    async def main():
        with tracer.start_active_span("request") as request:
            await asyncio.gather(*(worker(i, request.span) for i in range(n_tasks)))
            assert tracer.active_span is request.span
        assert tracer.active_span is None

    asyncio.run(main())

    spans = reporter.spans
    assert len(spans) == 1 + 4 * n_tasks
    request = [s for s in spans if s.operation_name == "request"]
    assert len(request) == 1
    request = request[0]
    by_task = {}
    for s in spans:
        if s.operation_name != "request":
            by_task.setdefault(s.tags["task"], {})[s.operation_name] = s
    assert len(by_task) == n_tasks
    chain = [("outer", "request"), ("mid", "outer"), ("inner", "mid"), ("leaf", "inner")]
    for i, mine in by_task.items():
        assert set(mine) == {"outer", "mid", "inner", "leaf"}
        for child, parent in chain:
            parent_span = request if parent == "request" else mine[parent]
            assert mine[child].parent_id == parent_span.span_id, (i, child)
            assert mine[child].trace_id == request.trace_id


def test_task_starts_with_the_scope_active_where_it_was_created(tracer):
    results = {}

    async def child_task():
        results["active"] = tracer.active_span
        with tracer.start_active_span("in-task") as scope:
            results["parent_id"] = scope.span.parent_id
        # closing the task's own scope restores the inherited one, in the task only
        results["after"] = tracer.active_span

    async def main():
        with tracer.start_active_span("creator") as scope:
            task = asyncio.get_running_loop().create_task(child_task())
            results["creator"] = scope.span
        # the creator's scope is closed before the task runs; the task kept its copy
        assert tracer.active_span is None
        await task

    asyncio.run(main())
    assert results["active"] is results["creator"]
    assert results["parent_id"] == results["creator"].span_id
    assert results["after"] is results["creator"]


def test_scopes_in_sibling_tasks_do_not_see_each_other(tracer):
    gate = None
    seen = {}

    async def a():
        with tracer.start_active_span("a") as scope:
            seen["a_span"] = scope.span
            gate.set()
            await asyncio.sleep(0.01)
            seen["a_active_after_b"] = tracer.active_span

    async def b():
        await gate.wait()
        seen["b_active"] = tracer.active_span
        with tracer.start_active_span("b") as scope:
            seen["b_parent"] = scope.span.parent_id
            await asyncio.sleep(0.02)

    async def main():
        nonlocal gate
        gate = asyncio.Event()
        await asyncio.gather(a(), b())

    asyncio.run(main())
    assert seen["b_active"] is None
    assert seen["b_parent"] is None
    assert seen["a_active_after_b"] is seen["a_span"]


@pytest.mark.parametrize("manager_cls", SCOPE_MANAGERS)
def test_scope_exit_with_exception_logs_error_and_finishes(make_tracer, reporter,
                                                           manager_cls):
    tracer = make_tracer(reporter=reporter, scope_manager=manager_cls())
    with pytest.raises(KeyError):
        with tracer.start_active_span("failing"):
            raise KeyError("missing")
    assert tracer.active_span is None
    (span,) = reporter.spans
    assert span.tags[ext_tags.ERROR] is True
    assert len(span.logs) == 1
    fields = span.logs[0][1]
    assert fields["event"] == "error"
    assert fields["error.kind"] == "KeyError"
    assert isinstance(fields["error.object"], KeyError)
    assert fields["message"] == str(KeyError("missing"))
    assert "KeyError: 'missing'" in fields["stack"]


def test_close_only_the_active_scope(tracer, reporter):
    parent = tracer.start_active_span("parent")
    child = tracer.start_active_span("child")
    parent.close()                      # not active: ignored
    assert tracer.active_span is child.span
    assert reporter.spans == []
    child.close()
    assert tracer.active_span is parent.span
    parent.close()
    assert tracer.active_span is None
    assert sorted(s.operation_name for s in reporter.spans) == ["child", "parent"]
    child.close()                       # closing twice does nothing
    parent.close()
    assert len(reporter.spans) == 2


def test_finish_on_close_false_keeps_span_open(tracer, reporter):
    scope = tracer.start_active_span("kept", finish_on_close=False)
    span = scope.span
    scope.close()
    assert tracer.active_span is None
    assert reporter.spans == []
    span.set_tag("later", True)
    span.finish()
    (record,) = reporter.spans
    assert record.tags == {"later": True}


def test_activate_existing_span_makes_it_the_parent(tracer, reporter):
    span = tracer.start_span("manual")
    with tracer.scope_manager.activate(span, finish_on_close=True) as scope:
        assert scope.span is span
        assert tracer.active_span is span
        child = tracer.start_span("child")
        assert child.parent_id == span.span_id
        child.finish()
    names = sorted(s.operation_name for s in reporter.spans)
    assert names == ["child", "manual"]


def test_ignore_active_span_makes_a_new_trace(tracer):
    with tracer.start_active_span("a") as scope:
        other = tracer.start_span("b", ignore_active_span=True)
        assert other.parent_id is None
        assert other.trace_id != scope.span.trace_id
        explicit = tracer.start_span("c", child_of=other)
        assert explicit.parent_id == other.span_id     # child_of wins over the active span


def test_threadlocal_manager_across_asyncio_is_thread_scoped(make_tracer, reporter):
    # sanity check of the alternative: ThreadLocalScopeManager still nests correctly in
    # sequential code inside one event loop
    tracer = make_tracer(reporter=reporter, scope_manager=ThreadLocalScopeManager())

    async def main():
        with tracer.start_active_span("a") as a:
            await asyncio.sleep(0)
            with tracer.start_active_span("b") as b:
                assert b.span.parent_id == a.span.span_id

    asyncio.run(main())
    assert len(reporter.spans) == 2


def test_default_scope_manager(tracer):
    assert isinstance(tracer.scope_manager, ContextVarsScopeManager)
    assert isinstance(fasttrace.Tracer().scope_manager, ContextVarsScopeManager)

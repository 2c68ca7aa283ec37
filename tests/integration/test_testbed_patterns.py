# SPDX-License-Identifier: Apache-2.0
"""The concurrency patterns of OpenTracing's testbed, with fasttrace.testing.MockTracer.

Each pattern is written here for threads, asyncio with explicit span passing, asyncio
with context propagation (contextvars) and tornado; gevent runs in a subprocess
(tests/support/gevent_patterns.py).  fasttrace's own ContextVarsScopeManager is used
everywhere, and opentracing's scope managers for the same flavour too (users pass
theirs to MockTracer).

Patterns: active span replacement, client-server (through every carrier format),
common request handler, late span finish, listener per request, multiple callbacks,
nested callbacks, subtask span propagation; for contextvars also callbacks scheduled on
the loop and tasks scheduling tasks.

Nothing here waits for time to pass: events, queues, futures and barriers order what
must be ordered, and every wait has a generous deadline (CI runs on 2 busy cores).
"""
import asyncio
import contextlib
import contextvars
import json
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentracing import Format
from opentracing.ext import tags
from opentracing.scope_managers import ThreadLocalScopeManager
from opentracing.scope_managers.asyncio import AsyncioScopeManager
from opentracing.scope_managers.contextvars import \
    ContextVarsScopeManager as OpentracingContextVarsScopeManager
from opentracing.scope_managers.contextvars import no_parent_scope

import fasttrace
from fasttrace.scope import ContextVarsScopeManager
from fasttrace.testing import MockTracer

pytestmark = pytest.mark.usefixtures("fresh_asyncio_policy")

DEADLINE = 60.0     # seconds; only reached when something is broken
FORMATS = [Format.TEXT_MAP, Format.HTTP_HEADERS, Format.BINARY]


# -- helpers ------------------------------------------------------------------------------

def names(spans):
    return [s.operation_name for s in spans]


def assert_child_of(child, parent):
    assert child.context.trace_id == parent.context.trace_id, (child, parent)
    assert child.parent_id == parent.context.span_id, (child, parent)


def assert_root(span):
    assert span.parent_id is None, span


def one(spans, name):
    found = [s for s in spans if s.operation_name == name]
    assert len(found) == 1, (name, names(spans))
    return found[0]


class Countdown:
    """A thread-safe reference count kept beside a span (not on it)."""

    def __init__(self, count):
        self._lock = threading.Lock()
        self._count = count

    def add(self):
        with self._lock:
            self._count += 1

    def done(self):
        with self._lock:
            self._count -= 1
            return self._count == 0


class RequestHandler:
    """One handler shared by every request: `before` opens the request's client span and
    `after` closes it, each in whatever worker the client runs it."""

    def __init__(self, tracer, parent=None, ignore_active_span=True):
        self.tracer = tracer
        self.parent = parent
        self.ignore_active_span = ignore_active_span

    def before(self, request, state):
        if self.ignore_active_span:
            span = self.tracer.start_span("send", child_of=self.parent,
                                          ignore_active_span=True)
        else:
            span = self.tracer.start_span("send")
        span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_CLIENT)
        span.set_tag("request", request)
        state["span"] = span

    def after(self, request, state):
        state["span"].finish()


class ResponseListener:
    """Finishes its request's span when the response arrives."""

    def __init__(self, span):
        self.span = span

    def on_response(self, response):
        self.span.set_tag("response", response)
        self.span.finish()
        return response


def new_carrier(fmt):
    return bytearray() if fmt == Format.BINARY else {}


# -- fixtures -------------------------------------------------------------------------------

THREAD_MANAGERS = {"fasttrace": ContextVarsScopeManager,
                   "opentracing-threadlocal": ThreadLocalScopeManager}
ASYNCIO_MANAGERS = {"fasttrace": ContextVarsScopeManager,
                    "opentracing-asyncio": AsyncioScopeManager,
                    "opentracing-contextvars": OpentracingContextVarsScopeManager}
# the ones that carry the active span into tasks and callbacks
CONTEXTVARS_MANAGERS = {"fasttrace": ContextVarsScopeManager,
                        "opentracing-contextvars": OpentracingContextVarsScopeManager}


def _tracer(manager_cls):
    tracer = MockTracer(manager_cls())
    return tracer


@pytest.fixture(params=sorted(THREAD_MANAGERS))
def threads_tracer(request):
    tracer = _tracer(THREAD_MANAGERS[request.param])
    yield tracer
    tracer.close()


@pytest.fixture(params=sorted(ASYNCIO_MANAGERS))
def asyncio_tracer(request):
    tracer = _tracer(ASYNCIO_MANAGERS[request.param])
    yield tracer
    tracer.close()


@pytest.fixture(params=sorted(CONTEXTVARS_MANAGERS))
def contextvars_tracer(request):
    tracer = _tracer(CONTEXTVARS_MANAGERS[request.param])
    yield tracer
    tracer.close()


@pytest.fixture
def fasttrace_tracer():
    tracer = MockTracer()
    assert type(tracer.scope_manager) is ContextVarsScopeManager
    yield tracer
    tracer.close()


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=3)
    yield executor
    executor.shutdown(wait=True)


def run(coro):
    """Runs a coroutine on a new event loop, within the deadline."""
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


# == threads ================================================================================

def test_threads_active_span_replacement(threads_tracer, pool):
    tracer = threads_tracer
    initial = tracer.start_span("initial")

    def task():
        with tracer.start_active_span("task") as task_scope:
            with tracer.scope_manager.activate(initial, True):
                assert tracer.active_span is initial
            assert tracer.active_span is task_scope.span
            with tracer.start_active_span("subtask"):
                pass

    pool.submit(task).result(DEADLINE)
    spans = tracer.finished_spans()
    assert names(spans) == ["initial", "subtask", "task"]
    first, subtask, task_span = spans
    assert_child_of(subtask, task_span)
    assert_root(task_span)         # the worker thread had no active span
    assert_root(first)
    assert first.context.trace_id != task_span.context.trace_id
    assert tracer.active_span is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_threads_client_server(threads_tracer, fmt):
    tracer = threads_tracer
    inbox, acks = queue.Queue(), queue.Queue()

    def server():
        try:
            message = inbox.get(timeout=DEADLINE)
            context = tracer.extract(fmt, message)
            with tracer.start_active_span("receive", child_of=context) as scope:
                scope.span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_SERVER)
            acks.put(None)
        except BaseException as exc:
            acks.put(exc)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    with tracer.start_active_span("send") as scope:
        scope.span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_CLIENT)
        scope.span.set_baggage_item("request-id", "r1")
        message = new_carrier(fmt)
        tracer.inject(scope.span.context, fmt, message)
        inbox.put(message)
        assert acks.get(timeout=DEADLINE) is None    # the server's span finishes first
    thread.join(DEADLINE)
    receive, send = tracer.finished_spans()
    assert names([receive, send]) == ["receive", "send"]
    assert receive.tags == {tags.SPAN_KIND: tags.SPAN_KIND_RPC_SERVER}
    assert send.tags == {tags.SPAN_KIND: tags.SPAN_KIND_RPC_CLIENT}
    assert_child_of(receive, send)
    assert receive.context.baggage == {"request-id": "r1"}


def _send_in_threads(handler, pool, request):
    state = {}
    pool.submit(handler.before, request, state).result(DEADLINE)
    pool.submit(handler.after, request, state).result(DEADLINE)
    return f"{request}::response"


def test_threads_common_request_handler_concurrent_requests(threads_tracer, pool):
    tracer = threads_tracer
    handler = RequestHandler(tracer)
    with ThreadPoolExecutor(max_workers=2) as clients:
        futures = [clients.submit(_send_in_threads, handler, pool, m)
                   for m in ("m1", "m2")]
        assert [f.result(DEADLINE) for f in futures] == ["m1::response", "m2::response"]
    spans = tracer.finished_spans()
    assert sorted(s.tags["request"] for s in spans) == ["m1", "m2"]
    for span in spans:
        assert span.tags[tags.SPAN_KIND] == tags.SPAN_KIND_RPC_CLIENT
        assert_root(span)
    assert spans[0].context.trace_id != spans[1].context.trace_id


def test_threads_common_request_handler_ignores_the_active_span(threads_tracer, pool):
    tracer = threads_tracer
    handler = RequestHandler(tracer)
    with tracer.start_active_span("parent"):
        state = {}
        handler.before("m", state)      # right here, where "parent" is active
        pool.submit(handler.after, "m", state).result(DEADLINE)
    send, parent = tracer.finished_spans()
    assert names([send, parent]) == ["send", "parent"]
    assert_root(send)
    assert send.context.trace_id != parent.context.trace_id


def test_threads_common_request_handler_with_a_fixed_parent(threads_tracer, pool):
    tracer = threads_tracer
    with tracer.start_active_span("parent") as scope:
        handler = RequestHandler(tracer, parent=scope.span.context)
        _send_in_threads(handler, pool, "inside")
    _send_in_threads(handler, pool, "after")
    inside, parent, after = tracer.finished_spans()
    assert names([inside, parent, after]) == ["send", "parent", "send"]
    # the handler's parent is per handler, so the later request is its child too
    assert_child_of(inside, parent)
    assert_child_of(after, parent)


def test_threads_late_span_finish(threads_tracer, pool):
    tracer = threads_tracer
    parent = tracer.start_span("parent")
    first_done = threading.Event()

    def task(name, wait_for=None, then=None):
        with tracer.scope_manager.activate(parent, False):
            with tracer.start_active_span(name):
                if wait_for is not None:
                    assert wait_for.wait(DEADLINE)
        if then is not None:
            then.set()

    second = pool.submit(task, "task2", wait_for=first_done)
    first = pool.submit(task, "task1", then=first_done)
    first.result(DEADLINE)
    second.result(DEADLINE)
    assert names(tracer.finished_spans()) == ["task1", "task2"]    # parent still open
    parent.finish()
    spans = tracer.finished_spans()
    assert names(spans) == ["task1", "task2", "parent"]
    for child in spans[:2]:
        assert_child_of(child, spans[2])
        assert child.finish_time <= spans[2].finish_time
    assert_root(spans[2])


def test_threads_listener_per_request(threads_tracer, pool):
    tracer = threads_tracer
    span = tracer.start_span("send", tags={tags.SPAN_KIND: tags.SPAN_KIND_RPC_CLIENT})
    listener = ResponseListener(span)
    assert tracer.finished_spans() == []
    assert pool.submit(listener.on_response, "m::response").result(DEADLINE) == "m::response"
    record, = tracer.finished_spans()
    assert record.operation_name == "send"
    assert record.tags == {tags.SPAN_KIND: tags.SPAN_KIND_RPC_CLIENT,
                           "response": "m::response"}
    assert_root(record)


def _multiple_callbacks_in_threads(tracer, pool, count_on_span):
    n = 3
    together = threading.Barrier(n)    # the callbacks' spans are all open at once
    scope = tracer.start_active_span("parent", finish_on_close=False)
    parent = scope.span
    pending = None

    def callback(i):
        try:
            with tracer.scope_manager.activate(parent, False):
                with tracer.start_active_span("task", tags={"i": i}):
                    together.wait(DEADLINE)
        finally:
            if pending.done():
                parent.finish()

    futures = []
    try:
        if count_on_span:
            parent._ref_count = Countdown(1)
            pending = parent._ref_count
        else:
            pending = Countdown(1)
        for i in range(n):
            pending.add()
            futures.append(pool.submit(callback, i))
    finally:
        scope.close()
        if pending is not None and pending.done():
            parent.finish()
    for f in futures:
        f.result(DEADLINE)
    spans = tracer.finished_spans()
    assert names(spans) == ["task"] * n + ["parent"]
    assert sorted(s.tags["i"] for s in spans[:n]) == list(range(n))
    for child in spans[:n]:
        assert_child_of(child, spans[-1])
    assert_root(spans[-1])


def test_threads_multiple_callbacks(threads_tracer, pool):
    _multiple_callbacks_in_threads(threads_tracer, pool, count_on_span=False)


def test_threads_multiple_callbacks_count_kept_on_the_span(threads_tracer, pool):
    _multiple_callbacks_in_threads(threads_tracer, pool, count_on_span=True)


def test_threads_nested_callbacks(threads_tracer, pool):
    tracer = threads_tracer
    done = threading.Event()
    errors = []
    with tracer.start_active_span("one", finish_on_close=False) as scope:
        span = scope.span

    def step(k):
        try:
            # the last step's scope finishes the span
            with tracer.scope_manager.activate(span, k == 3):
                assert tracer.active_span is span
                span.set_tag(f"key{k}", str(k))
                if k < 3:
                    pool.submit(step, k + 1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            if k == 3 or errors:
                done.set()

    pool.submit(step, 1)
    assert tracer.finished_spans() == [] or done.is_set()
    assert done.wait(DEADLINE)
    assert not errors, errors
    record, = tracer.finished_spans()
    assert record.operation_name == "one"
    assert record.tags == {"key1": "1", "key2": "2", "key3": "3"}


def test_threads_subtask_span_propagation(threads_tracer, pool):
    tracer = threads_tracer

    def child_task(span):
        with tracer.scope_manager.activate(span, False):
            with tracer.start_active_span("child"):
                return "message::response"

    def parent_task():
        with tracer.start_active_span("parent") as scope:
            return pool.submit(child_task, scope.span).result(DEADLINE)

    assert pool.submit(parent_task).result(DEADLINE) == "message::response"
    child, parent = tracer.finished_spans()
    assert names([child, parent]) == ["child", "parent"]
    assert_child_of(child, parent)
    assert_root(parent)


# == asyncio, spans passed explicitly =======================================================

def test_asyncio_active_span_replacement(asyncio_tracer):
    tracer = asyncio_tracer

    async def task(initial):
        with tracer.start_active_span("task") as task_scope:
            with tracer.scope_manager.activate(initial, True):
                assert tracer.active_span is initial
                await asyncio.sleep(0)      # a switch while the span is replaced
                assert tracer.active_span is initial
            assert tracer.active_span is task_scope.span
            with tracer.start_active_span("subtask"):
                pass

    async def main():
        initial = tracer.start_span("initial")
        await asyncio.get_running_loop().create_task(task(initial))
        assert tracer.active_span is None

    run(main())
    first, subtask, task_span = tracer.finished_spans()
    assert names([first, subtask, task_span]) == ["initial", "subtask", "task"]
    assert_child_of(subtask, task_span)
    assert_root(task_span)
    assert_root(first)
    assert first.context.trace_id != task_span.context.trace_id


@pytest.mark.parametrize("fmt", FORMATS)
def test_asyncio_client_server(asyncio_tracer, fmt):
    tracer = asyncio_tracer

    async def server(inbox, acks):
        message = await inbox.get()
        context = tracer.extract(fmt, message)
        with tracer.start_active_span("receive", child_of=context) as scope:
            scope.span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_SERVER)
        await acks.put("ack")

    async def main():
        inbox, acks = asyncio.Queue(), asyncio.Queue()
        serving = asyncio.get_running_loop().create_task(server(inbox, acks))
        with tracer.start_active_span("send") as scope:
            scope.span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_CLIENT)
            message = new_carrier(fmt)
            tracer.inject(scope.span.context, fmt, message)
            await inbox.put(message)
            assert await acks.get() == "ack"
        await serving

    run(main())
    receive, send = tracer.finished_spans()
    assert names([receive, send]) == ["receive", "send"]
    assert receive.tags == {tags.SPAN_KIND: tags.SPAN_KIND_RPC_SERVER}
    assert_child_of(receive, send)


async def _send_in_tasks(handler, request):
    """before() and after() each in a task of their own."""
    state = {}
    loop = asyncio.get_running_loop()

    async def before():
        handler.before(request, state)

    async def after():
        handler.after(request, state)

    await loop.create_task(before())
    await loop.create_task(after())
    return f"{request}::response"


def test_asyncio_common_request_handler_concurrent_requests(asyncio_tracer):
    tracer = asyncio_tracer
    handler = RequestHandler(tracer)

    async def main():
        return await asyncio.gather(_send_in_tasks(handler, "m1"),
                                    _send_in_tasks(handler, "m2"))

    assert run(main()) == ["m1::response", "m2::response"]
    spans = tracer.finished_spans()
    assert sorted(s.tags["request"] for s in spans) == ["m1", "m2"]
    for span in spans:
        assert_root(span)
    assert spans[0].context.trace_id != spans[1].context.trace_id


def test_asyncio_common_request_handler_ignores_the_active_span(asyncio_tracer):
    tracer = asyncio_tracer
    handler = RequestHandler(tracer)

    async def main():
        with tracer.start_active_span("parent"):
            assert await _send_in_tasks(handler, "m") == "m::response"

    run(main())
    send, parent = tracer.finished_spans()
    assert names([send, parent]) == ["send", "parent"]
    assert_root(send)
    assert send.context.trace_id != parent.context.trace_id


def test_asyncio_common_request_handler_with_a_fixed_parent(asyncio_tracer):
    tracer = asyncio_tracer

    async def main():
        with tracer.start_active_span("parent") as scope:
            handler = RequestHandler(tracer, parent=scope.span.context)
            await _send_in_tasks(handler, "inside")
        await _send_in_tasks(handler, "after")

    run(main())
    inside, parent, after = tracer.finished_spans()
    assert names([inside, parent, after]) == ["send", "parent", "send"]
    assert_child_of(inside, parent)
    assert_child_of(after, parent)


def test_asyncio_late_span_finish(asyncio_tracer):
    tracer = asyncio_tracer

    async def task(parent, name, wait_for=None, then=None):
        with tracer.scope_manager.activate(parent, False):
            with tracer.start_active_span(name):
                if wait_for is not None:
                    await wait_for.wait()
        if then is not None:
            then.set()

    async def main():
        loop = asyncio.get_running_loop()
        parent = tracer.start_span("parent")
        first_done = asyncio.Event()
        await asyncio.gather(loop.create_task(task(parent, "task2", wait_for=first_done)),
                             loop.create_task(task(parent, "task1", then=first_done)))
        assert names(tracer.finished_spans()) == ["task1", "task2"]
        parent.finish()

    run(main())
    spans = tracer.finished_spans()
    assert names(spans) == ["task1", "task2", "parent"]
    for child in spans[:2]:
        assert_child_of(child, spans[2])
        assert child.finish_time <= spans[2].finish_time


def test_asyncio_listener_per_request(asyncio_tracer):
    tracer = asyncio_tracer

    async def respond(listener, message):
        return listener.on_response(f"{message}::response")

    async def main():
        span = tracer.start_span("send")
        span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_CLIENT)
        assert tracer.finished_spans() == []
        listener = ResponseListener(span)
        return await asyncio.get_running_loop().create_task(respond(listener, "m"))

    assert run(main()) == "m::response"
    record, = tracer.finished_spans()
    assert record.tags == {tags.SPAN_KIND: tags.SPAN_KIND_RPC_CLIENT,
                           "response": "m::response"}
    assert_root(record)


async def _all_arrived(n):
    """An asyncio barrier for n tasks (asyncio.Barrier needs Python 3.11)."""
    arrived = 0
    event = asyncio.Event()

    async def wait():
        nonlocal arrived
        arrived += 1
        if arrived == n:
            event.set()
        await event.wait()
    return wait


def test_asyncio_multiple_callbacks(asyncio_tracer):
    tracer = asyncio_tracer
    n = 3

    async def callback(parent, i, together):
        with tracer.scope_manager.activate(parent, False):
            with tracer.start_active_span("task", tags={"i": i}):
                await together()

    async def main():
        together = await _all_arrived(n)
        loop = asyncio.get_running_loop()
        with tracer.start_active_span("parent") as scope:
            parent = tracer.scope_manager.active.span
            assert parent is scope.span
            await asyncio.gather(*[loop.create_task(callback(parent, i, together))
                                   for i in range(n)])

    run(main())
    spans = tracer.finished_spans()
    assert names(spans) == ["task"] * n + ["parent"]
    assert sorted(s.tags["i"] for s in spans[:n]) == list(range(n))
    for child in spans[:n]:
        assert_child_of(child, spans[-1])


def test_asyncio_nested_callbacks(asyncio_tracer):
    tracer = asyncio_tracer

    async def step(span, k, done):
        with tracer.scope_manager.activate(span, False):
            assert tracer.active_span is span
            span.set_tag(f"key{k}", str(k))
            if k < 3:
                asyncio.get_running_loop().create_task(step(span, k + 1, done))
            else:
                span.finish()
                done.set_result(k)

    async def main():
        done = asyncio.get_running_loop().create_future()
        with tracer.start_active_span("one", finish_on_close=False) as scope:
            asyncio.get_running_loop().create_task(step(scope.span, 1, done))
        assert tracer.finished_spans() == []
        assert await done == 3

    run(main())
    record, = tracer.finished_spans()
    assert record.operation_name == "one"
    assert record.tags == {"key1": "1", "key2": "2", "key3": "3"}


def test_asyncio_subtask_span_propagation(asyncio_tracer):
    tracer = asyncio_tracer

    async def child_task(message, span):
        with tracer.scope_manager.activate(span, False):
            with tracer.start_active_span("child"):
                return f"{message}::response"

    async def parent_task(message):
        with tracer.start_active_span("parent") as scope:
            return await child_task(message, scope.span)

    assert run(parent_task("message")) == "message::response"
    child, parent = tracer.finished_spans()
    assert names([child, parent]) == ["child", "parent"]
    assert_child_of(child, parent)


# == asyncio with context propagation (contextvars) =========================================

def test_contextvars_active_span_follows_into_tasks(contextvars_tracer):
    tracer = contextvars_tracer
    n = 3

    async def callback(i, together):
        parent = tracer.active_span       # nothing passed: it came with the context
        assert parent is not None and parent.operation_name == "parent"
        with tracer.start_active_span("task", tags={"i": i}):
            await together()

    async def main():
        together = await _all_arrived(n)
        loop = asyncio.get_running_loop()
        with tracer.start_active_span("parent"):
            tasks = [loop.create_task(callback(i, together)) for i in range(n)]
            await asyncio.gather(*tasks)
        assert tracer.active_span is None

    run(main())
    spans = tracer.finished_spans()
    assert names(spans) == ["task"] * n + ["parent"]
    for child in spans[:n]:
        assert_child_of(child, spans[-1])


def test_contextvars_late_span_finish(contextvars_tracer):
    tracer = contextvars_tracer

    async def task(name, wait_for=None, then=None):
        with tracer.start_active_span(name):
            if wait_for is not None:
                await wait_for.wait()
        if then is not None:
            then.set()

    async def main():
        loop = asyncio.get_running_loop()
        first_done = asyncio.Event()
        parent_scope = tracer.start_active_span("parent")
        tasks = [loop.create_task(task("task2", wait_for=first_done)),
                 loop.create_task(task("task1", then=first_done))]
        await asyncio.gather(*tasks)
        assert names(tracer.finished_spans()) == ["task1", "task2"]
        parent_scope.close()

    run(main())
    spans = tracer.finished_spans()
    assert names(spans) == ["task1", "task2", "parent"]
    for child in spans[:2]:
        assert_child_of(child, spans[2])
        assert child.finish_time <= spans[2].finish_time


def test_contextvars_nested_callbacks_see_the_span(contextvars_tracer):
    tracer = contextvars_tracer

    async def step(span, k, done):
        assert tracer.active_span is span   # not re-activated: inherited
        tracer.active_span.set_tag(f"key{k}", str(k))
        if k < 3:
            asyncio.get_running_loop().create_task(step(span, k + 1, done))
        else:
            tracer.active_span.finish()
            done.set_result(k)

    async def main():
        done = asyncio.get_running_loop().create_future()
        with tracer.start_active_span("one", finish_on_close=False) as scope:
            asyncio.get_running_loop().create_task(step(scope.span, 1, done))
        assert await done == 3

    run(main())
    record, = tracer.finished_spans()
    assert record.tags == {"key1": "1", "key2": "2", "key3": "3"}


def test_contextvars_subtask_span_propagation(contextvars_tracer):
    tracer = contextvars_tracer

    async def child_task(message):
        with tracer.start_active_span("child"):
            return f"{message}::response"

    async def parent_task(message):
        with tracer.start_active_span("parent"):
            return await child_task(message)

    assert run(parent_task("message")) == "message::response"
    child, parent = tracer.finished_spans()
    assert names([child, parent]) == ["child", "parent"]
    assert_child_of(child, parent)


def test_contextvars_common_request_handler_uses_the_active_span(contextvars_tracer):
    tracer = contextvars_tracer
    handler = RequestHandler(tracer, ignore_active_span=False)

    async def main():
        with tracer.start_active_span("parent"):
            await _send_in_tasks(handler, "inside")
        await _send_in_tasks(handler, "after")

    run(main())
    inside, parent, after = tracer.finished_spans()
    assert names([inside, parent, after]) == ["send", "parent", "send"]
    assert_child_of(inside, parent)
    assert_root(after)


def test_contextvars_callbacks_scheduled_on_the_loop(contextvars_tracer):
    tracer = contextvars_tracer
    expected = 4

    async def main():
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def callback(name):
            with tracer.start_active_span(name, child_of=tracer.active_span):
                pass
            if len(tracer.finished_spans()) == expected:
                finished.set()

        def callback_scheduling_another(name):
            with tracer.start_active_span(name, child_of=tracer.active_span):
                loop.call_soon(callback, f"childof:{name}")

        with tracer.start_active_span("root"):
            loop.call_soon(callback_scheduling_another, "first")
            loop.call_soon(callback, "second")
        await finished.wait()

    run(main())
    spans = tracer.finished_spans()
    # call_soon runs callbacks first in, first out
    assert names(spans) == ["root", "first", "second", "childof:first"]
    root, first, second, grandchild = spans
    assert_root(root)
    assert_child_of(first, root)
    assert_child_of(second, root)
    assert_child_of(grandchild, first)


def test_contextvars_tasks_scheduling_tasks(contextvars_tracer):
    tracer = contextvars_tracer
    depth = 4

    async def main():
        loop = asyncio.get_running_loop()
        last = loop.create_future()

        async def task(n):
            with tracer.start_active_span(str(n), child_of=tracer.active_span):
                if n + 1 < depth:
                    loop.create_task(task(n + 1))
            if n + 1 == depth:
                last.set_result(n)

        loop.create_task(task(0))
        await last

    run(main())
    spans = tracer.finished_spans()
    assert names(spans) == [str(n) for n in range(depth)]
    assert_root(spans[0])
    for parent, child in zip(spans, spans[1:]):
        assert_child_of(child, parent)


def test_contextvars_ignore_active_span_breaks_the_chain(contextvars_tracer):
    tracer = contextvars_tracer
    depth = 4

    async def main():
        loop = asyncio.get_running_loop()
        last = loop.create_future()

        async def task(n):
            with tracer.start_active_span(str(n), ignore_active_span=n >= depth // 2):
                if n + 1 < depth:
                    loop.create_task(task(n + 1))
            if n + 1 == depth:
                last.set_result(n)

        loop.create_task(task(0))
        await last

    run(main())
    s0, s1, s2, s3 = tracer.finished_spans()
    assert names([s0, s1, s2, s3]) == ["0", "1", "2", "3"]
    assert_root(s0)
    assert_child_of(s1, s0)
    assert_root(s2)
    assert_root(s3)
    assert len({s0.context.trace_id, s2.context.trace_id, s3.context.trace_id}) == 3


def test_contextvars_task_started_in_an_empty_context_has_no_parent(contextvars_tracer):
    """fasttrace's way to cut propagation for one task: create it in a new Context."""
    tracer = contextvars_tracer

    async def child(name):
        with tracer.start_active_span(name):
            pass

    async def main():
        loop = asyncio.get_running_loop()
        with tracer.start_active_span("root"):
            inherited = loop.create_task(child("inherited"))
            detached = contextvars.Context().run(loop.create_task, child("detached"))
            await asyncio.gather(inherited, detached)

    run(main())
    spans = tracer.finished_spans()
    root = one(spans, "root")
    assert_child_of(one(spans, "inherited"), root)
    assert_root(one(spans, "detached"))


# opentracing's no_parent_scope() resets opentracing's own ContextVar, which fasttrace's
# ContextVarsScopeManager shares
NO_PARENT_MANAGERS = [
    pytest.param(OpentracingContextVarsScopeManager, id="opentracing-contextvars"),
    pytest.param(ContextVarsScopeManager, id="fasttrace"),
]


@pytest.mark.parametrize("manager_cls", NO_PARENT_MANAGERS)
def test_contextvars_no_parent_scope_for_tasks(manager_cls):
    tracer = MockTracer(manager_cls())

    async def task(name, started):
        with tracer.start_active_span(name):
            pass
        started.set()

    async def main():
        loop = asyncio.get_running_loop()
        events = [asyncio.Event() for _ in range(3)]
        with tracer.start_active_span("root"):
            loop.create_task(task("task_1", events[0]))
            with no_parent_scope():
                loop.create_task(task("task_2", events[1]))
            loop.create_task(task("task_3", events[2]))
        for event in events:
            await event.wait()

    run(main())
    spans = tracer.finished_spans()
    root = one(spans, "root")
    assert_child_of(one(spans, "task_1"), root)
    assert_child_of(one(spans, "task_3"), root)
    assert_root(one(spans, "task_2"))


@pytest.mark.parametrize("manager_cls", NO_PARENT_MANAGERS)
def test_contextvars_no_parent_scope_for_callbacks(manager_cls):
    tracer = MockTracer(manager_cls())

    async def main():
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def callback(name):
            with tracer.start_active_span(name):
                pass
            if name == "cb_3":
                done.set()

        with tracer.start_active_span("root"):
            loop.call_soon(callback, "cb_1")
            with no_parent_scope():
                loop.call_soon(callback, "cb_2")
            loop.call_soon(callback, "cb_3")
        await done.wait()

    run(main())
    root, cb1, cb2, cb3 = tracer.finished_spans()
    assert names([root, cb1, cb2, cb3]) == ["root", "cb_1", "cb_2", "cb_3"]
    assert_child_of(cb1, root)
    assert_child_of(cb3, root)
    assert_root(cb2)


@pytest.mark.parametrize("manager_cls", NO_PARENT_MANAGERS)
def test_contextvars_no_parent_scope_for_awaited_coroutines(manager_cls):
    tracer = MockTracer(manager_cls())

    async def coro(name):
        with tracer.start_active_span(name):
            pass

    async def main():
        with tracer.start_active_span("root"):
            await coro("coro_1")
            with no_parent_scope():
                assert tracer.active_span is None
                await coro("coro_2")
            await coro("coro_3")

    run(main())
    c1, c2, c3, root = tracer.finished_spans()
    assert names([c1, c2, c3, root]) == ["coro_1", "coro_2", "coro_3", "root"]
    assert_child_of(c1, root)
    assert_child_of(c3, root)
    assert_root(c2)


# == tornado ================================================================================

def _tornado_managers():
    """fasttrace's ContextVarsScopeManager (tornado >= 5 runs on asyncio, and its
    coroutines carry contextvars), and TornadoScopeManager where tornado < 6 has
    stack_context."""
    params = [pytest.param("fasttrace", id="fasttrace")]
    try:
        import tornado.stack_context  # noqa: F401
        has_stack_context = True
    except ImportError:
        has_stack_context = False
    params.append(pytest.param("tornado", id="opentracing-tornado", marks=pytest.mark.skipif(
        not has_stack_context, reason="TornadoScopeManager needs tornado < 6")))
    return params


@pytest.fixture(params=_tornado_managers())
def tornado_tracer(request):
    pytest.importorskip("tornado")
    if request.param == "fasttrace":
        tracer = MockTracer(ContextVarsScopeManager())
        tracer.stack_context = contextlib.nullcontext
    else:
        from opentracing.scope_managers.tornado import (TornadoScopeManager,
                                                        tracer_stack_context)
        tracer = MockTracer(TornadoScopeManager())
        tracer.stack_context = tracer_stack_context
    yield tracer
    tracer.close()


def run_tornado(func):
    from tornado import ioloop
    loop = ioloop.IOLoop()
    try:
        return loop.run_sync(func, timeout=DEADLINE)
    finally:
        loop.close()


def test_tornado_subtask_span_propagation(tornado_tracer):
    from tornado import gen
    tracer = tornado_tracer

    @gen.coroutine
    def child_task(message):
        with tracer.start_active_span("child"):       # the parent came with the context
            raise gen.Return(f"{message}::response")

    @gen.coroutine
    def parent_task():
        with tracer.start_active_span("parent"):
            result = yield child_task("message")
        raise gen.Return(result)

    def main():
        with tracer.stack_context():
            return parent_task()

    assert run_tornado(main) == "message::response"
    child, parent = tracer.finished_spans()
    assert names([child, parent]) == ["child", "parent"]
    assert_child_of(child, parent)


def test_tornado_nested_callbacks(tornado_tracer):
    from tornado import gen
    tracer = tornado_tracer

    @gen.coroutine
    def step(span, k):
        assert tracer.scope_manager.active.span is span
        span.set_tag(f"key{k}", str(k))
        if k < 3:
            yield step(span, k + 1)
        else:
            span.finish()

    @gen.coroutine
    def main():
        with tracer.start_active_span("one", finish_on_close=False) as scope:
            yield step(scope.span, 1)

    def start():
        with tracer.stack_context():
            return main()

    run_tornado(start)
    record, = tracer.finished_spans()
    assert record.tags == {"key1": "1", "key2": "2", "key3": "3"}


def test_tornado_multiple_callbacks(tornado_tracer):
    from tornado import gen, locks
    tracer = tornado_tracer
    n = 3

    @gen.coroutine
    def callback(i, counter, together):
        assert tracer.active_span is not None
        # yielding on several coroutines at once shares the context: no activation here
        with tracer.start_span("task", tags={"i": i}):
            counter.append(i)
            if len(counter) == n:
                together.set()
            yield together.wait()

    @gen.coroutine
    def main():
        together = locks.Event()
        counter = []
        with tracer.start_active_span("parent"):
            yield [callback(i, counter, together) for i in range(n)]

    def start():
        with tracer.stack_context():
            return main()

    run_tornado(start)
    spans = tracer.finished_spans()
    assert names(spans) == ["task"] * n + ["parent"]
    for child in spans[:n]:
        assert_child_of(child, spans[-1])


@pytest.mark.parametrize("fmt", FORMATS)
def test_tornado_client_server(tornado_tracer, fmt):
    from tornado import gen, queues
    tracer = tornado_tracer

    @gen.coroutine
    def server(inbox, acks):
        message = yield inbox.get()
        with tracer.start_active_span("receive",
                                      child_of=tracer.extract(fmt, message)) as scope:
            scope.span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_SERVER)
        yield acks.put("ack")

    @gen.coroutine
    def main():
        inbox, acks = queues.Queue(), queues.Queue()
        serving = server(inbox, acks)
        with tracer.start_active_span("send") as scope:
            message = new_carrier(fmt)
            tracer.inject(scope.span.context, fmt, message)
            yield inbox.put(message)
            ack = yield acks.get()
            assert ack == "ack"
        yield serving

    def start():
        with tracer.stack_context():
            return main()

    run_tornado(start)
    receive, send = tracer.finished_spans()
    assert names([receive, send]) == ["receive", "send"]
    assert_child_of(receive, send)


def test_tornado_late_span_finish(tornado_tracer):
    from tornado import gen, locks
    tracer = tornado_tracer

    @gen.coroutine
    def task(parent, name, wait_for=None, then=None):
        with tracer.scope_manager.activate(parent, False):
            with tracer.start_active_span(name):
                if wait_for is not None:
                    yield wait_for.wait()
        if then is not None:
            then.set()

    @gen.coroutine
    def main():
        parent = tracer.start_span("parent")
        first_done = locks.Event()
        second = task(parent, "task2", wait_for=first_done)
        first = task(parent, "task1", then=first_done)
        yield [first, second]
        assert names(tracer.finished_spans()) == ["task1", "task2"]
        parent.finish()

    def start():
        with tracer.stack_context():
            return main()

    run_tornado(start)
    spans = tracer.finished_spans()
    assert names(spans) == ["task1", "task2", "parent"]
    for child in spans[:2]:
        assert_child_of(child, spans[2])


# == gevent (a subprocess: tests/support/gevent_patterns.py) ================================

GEVENT_SCENARIOS = ["active_span_replacement", "client_server_text_map",
                    "client_server_http_headers", "client_server_binary",
                    "common_request_handler", "late_span_finish", "listener_per_request",
                    "multiple_callbacks", "nested_callbacks", "subtask_span_propagation",
                    "fresh_greenlet_has_no_active_span"]
GEVENT_MANAGERS = ["fasttrace", "opentracing-gevent"]


@pytest.fixture(scope="module")
def gevent_results(tmp_path_factory):
    """{manager: {scenario: None or the traceback}}, one subprocess per manager."""
    pytest.importorskip("gevent", reason="gevent is not installed (pip install gevent)")
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(tests, "support", "gevent_patterns.py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fasttrace.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    results = {}
    for manager in GEVENT_MANAGERS:
        out = tmp_path_factory.mktemp("gevent") / "results.json"
        proc = subprocess.run([sys.executable, script, manager, str(out)],
                              capture_output=True, text=True, timeout=300, env=env,
                              cwd=root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results[manager] = json.loads(out.read_text())
    return results


@pytest.mark.parametrize("manager", GEVENT_MANAGERS)
@pytest.mark.parametrize("scenario", GEVENT_SCENARIOS)
def test_gevent_pattern(gevent_results, manager, scenario):
    results = gevent_results[manager]
    assert scenario in results, sorted(results)
    assert results[scenario] is None, results[scenario]


def test_gevent_runs_every_scenario(gevent_results):
    for manager in GEVENT_MANAGERS:
        assert sorted(gevent_results[manager]) == sorted(GEVENT_SCENARIOS)

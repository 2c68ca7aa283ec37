# SPDX-License-Identifier: Apache-2.0
"""The testbed patterns with greenlets, under gevent.monkey.patch_all() (run by
tests/integration/test_testbed_patterns.py in a subprocess, so the patching stays here).

    python tests/support/gevent_patterns.py fasttrace|opentracing-gevent OUT.json

writes {scenario: null, or the traceback of its failed check}.  Greenlets are ordered
with events, queues and joins, never with sleeps; every wait has a deadline.
"""
from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.queue  # noqa: E402
from opentracing import Format  # noqa: E402
from opentracing.ext import tags  # noqa: E402
from opentracing.scope_managers.gevent import GeventScopeManager  # noqa: E402

from fasttrace.scope import ContextVarsScopeManager  # noqa: E402
from fasttrace.testing import MockTracer  # noqa: E402

DEADLINE = 60.0
MANAGERS = {"fasttrace": ContextVarsScopeManager, "opentracing-gevent": GeventScopeManager}
SCENARIOS = {}


def scenario(func):
    SCENARIOS[func.__name__] = func
    return func


def names(spans):
    return [s.operation_name for s in spans]


def assert_child_of(child, parent):
    assert child.context.trace_id == parent.context.trace_id, (child, parent)
    assert child.parent_id == parent.context.span_id, (child, parent)


def assert_root(span):
    assert span.parent_id is None, span


def spawn_and_get(func, *args):
    """Runs func in a new greenlet; its result, or its exception raised here."""
    return gevent.spawn(func, *args).get(timeout=DEADLINE)


@scenario
def active_span_replacement(tracer):
    initial = tracer.start_span("initial")

    def task():
        with tracer.start_active_span("task") as task_scope:
            with tracer.scope_manager.activate(initial, True):
                assert tracer.active_span is initial
                gevent.sleep(0)        # a switch while the span is replaced
                assert tracer.active_span is initial
            assert tracer.active_span is task_scope.span
            with tracer.start_active_span("subtask"):
                pass

    spawn_and_get(task)
    first, subtask, task_span = tracer.finished_spans()
    assert names([first, subtask, task_span]) == ["initial", "subtask", "task"]
    assert_child_of(subtask, task_span)
    assert_root(task_span)
    assert_root(first)
    assert first.context.trace_id != task_span.context.trace_id


def _client_server(tracer, fmt):
    inbox, acks = gevent.queue.Queue(), gevent.queue.Queue()

    def server():
        message = inbox.get(timeout=DEADLINE)
        with tracer.start_active_span("receive",
                                      child_of=tracer.extract(fmt, message)) as scope:
            scope.span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_SERVER)
        acks.put("ack")

    serving = gevent.spawn(server)

    def client():
        with tracer.start_active_span("send") as scope:
            scope.span.set_tag(tags.SPAN_KIND, tags.SPAN_KIND_RPC_CLIENT)
            message = bytearray() if fmt == Format.BINARY else {}
            tracer.inject(scope.span.context, fmt, message)
            inbox.put(message)
            assert acks.get(timeout=DEADLINE) == "ack"

    spawn_and_get(client)
    serving.get(timeout=DEADLINE)
    receive, send = tracer.finished_spans()
    assert names([receive, send]) == ["receive", "send"]
    assert receive.tags == {tags.SPAN_KIND: tags.SPAN_KIND_RPC_SERVER}
    assert_child_of(receive, send)


@scenario
def client_server_text_map(tracer):
    _client_server(tracer, Format.TEXT_MAP)


@scenario
def client_server_http_headers(tracer):
    _client_server(tracer, Format.HTTP_HEADERS)


@scenario
def client_server_binary(tracer):
    _client_server(tracer, Format.BINARY)


@scenario
def common_request_handler(tracer):
    def before(request, state, parent):
        span = tracer.start_span("send", child_of=parent, ignore_active_span=True)
        span.set_tag("request", request)
        state["span"] = span

    def after(request, state):
        state["span"].finish()

    def send(request, parent=None):
        state = {}
        spawn_and_get(before, request, state, parent)
        spawn_and_get(after, request, state)
        return f"{request}::response"

    # two requests at once: two traces
    requests = [gevent.spawn(send, m) for m in ("m1", "m2")]
    assert [g.get(timeout=DEADLINE) for g in requests] == ["m1::response", "m2::response"]
    first, second = tracer.finished_spans()
    assert sorted([first.tags["request"], second.tags["request"]]) == ["m1", "m2"]
    assert_root(first)
    assert_root(second)
    assert first.context.trace_id != second.context.trace_id
    tracer.reset()
    # the active span is not picked up; a parent given to the handler is
    with tracer.start_active_span("parent") as scope:
        send("no-parent")
        send("fixed", scope.span.context)
    no_parent, fixed, parent = tracer.finished_spans()
    assert names([no_parent, fixed, parent]) == ["send", "send", "parent"]
    assert_root(no_parent)
    assert_child_of(fixed, parent)


@scenario
def late_span_finish(tracer):
    parent = tracer.start_span("parent")
    first_done = gevent.event.Event()

    def task(name, wait_for=None, then=None):
        with tracer.scope_manager.activate(parent, False):
            with tracer.start_active_span(name):
                if wait_for is not None:
                    assert wait_for.wait(DEADLINE)
        if then is not None:
            then.set()

    greenlets = [gevent.spawn(task, "task2", first_done),
                 gevent.spawn(task, "task1", None, first_done)]
    for g in greenlets:
        g.get(timeout=DEADLINE)
    assert names(tracer.finished_spans()) == ["task1", "task2"]
    parent.finish()
    spans = tracer.finished_spans()
    assert names(spans) == ["task1", "task2", "parent"]
    for child in spans[:2]:
        assert_child_of(child, spans[2])
        assert child.finish_time <= spans[2].finish_time


@scenario
def listener_per_request(tracer):
    span = tracer.start_span("send", tags={tags.SPAN_KIND: tags.SPAN_KIND_RPC_CLIENT})

    def on_response(response):
        span.set_tag("response", response)
        span.finish()
        return response

    assert tracer.finished_spans() == []
    assert spawn_and_get(on_response, "m::response") == "m::response"
    record, = tracer.finished_spans()
    assert record.tags == {tags.SPAN_KIND: tags.SPAN_KIND_RPC_CLIENT,
                           "response": "m::response"}
    assert_root(record)


@scenario
def multiple_callbacks(tracer):
    n = 3
    arrived = []
    together = gevent.event.Event()

    def callback(i, parent):
        with tracer.scope_manager.activate(parent, False):
            with tracer.start_active_span("task", tags={"i": i}):
                arrived.append(i)
                if len(arrived) == n:
                    together.set()
                assert together.wait(DEADLINE)

    def main():
        with tracer.start_active_span("parent"):
            parent = tracer.scope_manager.active.span
            greenlets = [gevent.spawn(callback, i, parent) for i in range(n)]
            for g in greenlets:
                g.get(timeout=DEADLINE)

    spawn_and_get(main)
    spans = tracer.finished_spans()
    assert names(spans) == ["task"] * n + ["parent"]
    assert sorted(s.tags["i"] for s in spans[:n]) == list(range(n))
    for child in spans[:n]:
        assert_child_of(child, spans[-1])


@scenario
def nested_callbacks(tracer):
    done = gevent.event.AsyncResult()
    with tracer.start_active_span("one", finish_on_close=False) as scope:
        span = scope.span

    def step(k):
        try:
            with tracer.scope_manager.activate(span, k == 3):
                assert tracer.active_span is span
                span.set_tag(f"key{k}", str(k))
                if k < 3:
                    gevent.spawn(step, k + 1)
            if k == 3:
                done.set(k)
        except BaseException as exc:
            done.set_exception(exc)

    gevent.spawn(step, 1)
    assert done.get(timeout=DEADLINE) == 3
    record, = tracer.finished_spans()
    assert record.tags == {"key1": "1", "key2": "2", "key3": "3"}


@scenario
def subtask_span_propagation(tracer):
    def child_task(message, span):
        with tracer.scope_manager.activate(span, False):
            with tracer.start_active_span("child"):
                return f"{message}::response"

    def parent_task(message):
        with tracer.start_active_span("parent") as scope:
            return spawn_and_get(child_task, message, scope.span)

    assert spawn_and_get(parent_task, "message") == "message::response"
    child, parent = tracer.finished_spans()
    assert names([child, parent]) == ["child", "parent"]
    assert_child_of(child, parent)


@scenario
def fresh_greenlet_has_no_active_span(tracer):
    # what makes the explicit activations above necessary under both managers
    with tracer.start_active_span("outer") as scope:
        assert spawn_and_get(lambda: tracer.active_span) is None
        assert tracer.active_span is scope.span


def main():
    manager, out = sys.argv[1], sys.argv[2]
    results = {}
    for name, func in SCENARIOS.items():
        tracer = MockTracer(MANAGERS[manager]())
        try:
            func(tracer)
            results[name] = None
        except BaseException:
            results[name] = traceback.format_exc()
        finally:
            tracer.close()
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: Apache-2.0
"""Thousands of concurrent asyncio tasks with nested active spans: every span's parent
is the span that was active in its own task, never one from a task that ran meanwhile."""
import asyncio
import random
import time

import fasttrace
from fasttrace.reporting import BatchReporter

from support.recording import RecordingExporter
from support.servers import report, scale


async def _request(tracer, i, expected, depth):
    with tracer.start_active_span("request", tags={"task": i}) as root:
        expected[root.span.span_id] = (None, "request", i)
        await asyncio.sleep(random.random() * 0.002)
        await _nested(tracer, i, expected, depth, root.span)
        # the scope survived every await and the children run meanwhile
        assert tracer.active_span is root.span


async def _nested(tracer, i, expected, depth, parent):
    if depth == 0:
        return
    with tracer.start_active_span(f"level{depth}") as scope:
        assert scope.span.parent_id == parent.span_id
        assert scope.span.trace_id == parent.trace_id
        expected[scope.span.span_id] = (parent.span_id, f"level{depth}", i)
        await asyncio.sleep(0)
        if depth % 2:
            # a fan-out: sibling subtasks inherit this span as their parent
            await asyncio.gather(*(_leaf(tracer, i, expected, scope.span, k)
                                   for k in range(2)))
        await _nested(tracer, i, expected, depth - 1, scope.span)
        assert tracer.active_span is scope.span


async def _leaf(tracer, i, expected, parent, k):
    assert tracer.active_span is parent
    with tracer.start_active_span(f"leaf{k}") as scope:
        expected[scope.span.span_id] = (parent.span_id, f"leaf{k}", i)
        await asyncio.sleep(random.random() * 0.001)
        assert tracer.active_span is scope.span
    assert tracer.active_span is parent


def test_thousands_of_tasks_keep_their_own_parents(fresh_asyncio_policy):
    tasks, depth = int(3000 * scale()), 4
    exporter = RecordingExporter()
    tracer = fasttrace.Tracer("async", reporter=BatchReporter(
        exporter, flush_interval=0.05, max_batch_size=1024))
    expected = {}

    async def main():
        await asyncio.gather(*(_request(tracer, i, expected, depth) for i in range(tasks)))
        assert tracer.active_span is None

    t0 = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - t0
    assert tracer.flush(30)
    tracer.close(10)
    stats = tracer.stats()
    got = exporter.spans
    per_task = 1 + depth + 2 * (depth // 2 + depth % 2)
    assert len(expected) == tasks * per_task
    assert len(got) == len(expected) == stats["exported"]
    assert len({s.span_id for s in got}) == len(got)
    task_of = {}
    for s in got:
        parent, name, i = expected[s.span_id]
        assert s.parent_id == parent, (s.operation_name, name)
        assert s.operation_name == name
        task_of[s.span_id] = i
    # every span's trace is its own task's trace
    roots = {s.trace_id: task_of[s.span_id] for s in got if s.parent_id is None}
    assert len(roots) == tasks
    for s in got:
        assert roots[s.trace_id] == task_of[s.span_id]
    for s in got:
        if s.operation_name == "request":
            assert s.tags == {"task": task_of[s.span_id]}
    report("asyncio", tasks=tasks, spans=len(got), seconds=elapsed,
           spans_per_s=len(got) / elapsed)

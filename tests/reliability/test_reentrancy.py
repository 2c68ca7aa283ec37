# SPDX-License-Identifier: Apache-2.0
"""Tracer code run by the host at moments the tracer does not choose: finalizers that a
garbage collection runs inside any allocation, signal handlers that run between any two
bytecodes of the main thread, other threads.  Nothing may hang, crash, be lost or be
counted twice.

The moments are picked deterministically: a gc callback (or a finalizer) acts when the
tracer is at the point under test, and a hang is caught by running the scenario in a
daemon thread joined with a generous deadline."""
import asyncio
import gc
import inspect
import os
import signal
import sys
import threading

import opentracing
import pytest
from opentracing import Format

import fasttrace
from fasttrace.reporting import BatchReporter, Exporter

DEADLINE = 120      # seconds; a scenario that takes this long has hung


def finishes_within_deadline(scenario):
    """Runs scenario() in a daemon thread; its result, or a failure if it hangs."""
    out = {}

    def run():
        try:
            out["result"] = scenario()
        except BaseException as exc:      # re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the scenario hung (a deadlock)"
    if "error" in out:
        raise out["error"]
    return out.get("result")


class gc_when:
    """While active, every collection whose start finds `condition()` true calls
    `action()` (once, unless `repeat`); collections happen at every allocation."""

    def __init__(self, condition, action, repeat=False):
        self.condition = condition
        self.action = action
        self.limit = 25 if repeat else 1
        self.fired = 0
        self.acting = False

    def _callback(self, phase, info):
        # not again from inside the action's own collections
        if (phase == "start" and not self.acting and self.fired < self.limit
                and self.condition()):
            self.fired += 1
            self.acting = True
            try:
                self.action()
            finally:
                self.acting = False

    def __enter__(self):
        self.threshold = gc.get_threshold()
        gc.callbacks.append(self._callback)
        gc.set_threshold(1)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._callback)
        gc.set_threshold(*self.threshold)


def in_frame(name, filename_end):
    f = sys._getframe(2)
    while f is not None:
        if f.f_code.co_name == name and f.f_code.co_filename.endswith(filename_end):
            return True
        f = f.f_back
    return False


class Finisher:
    """Cyclic garbage that finishes its span when the collector frees it."""

    def __init__(self, span):
        self.span = span
        self.me = self

    def __del__(self):
        self.span.finish()


class Null(Exporter):
    def __init__(self):
        self.spans = 0

    def export(self, batch):
        self.spans += len(batch)
        return True


# -- finalizers inside the arena -------------------------------------------------------------

def test_a_finalizer_that_finishes_a_span_being_discarded_frees_its_slot_once():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter, capacity=4)

    class Closer:
        def __init__(self, span):
            self.span = span

        def __del__(self):
            self.span.finish()          # runs while sampling.priority=0 discards it

    span = tracer.start_span("discarded")
    span.log_kv({"resource": Closer(span)})
    span.set_tag("sampling.priority", 0)
    assert not span.is_recording
    tracer.flush()
    assert tracer.stats()["arena_open"] == 0 and tracer.stats()["arena_finished"] == 0
    spans = [tracer.start_span(f"s{i}") for i in range(5)]
    assert [s.is_recording for s in spans] == [True] * 4 + [False]   # capacity 4: never 5
    for s in spans:
        s.set_tag("who", s.operation_name)
        s.finish()
    records = reporter.spans
    assert [(r.operation_name, r.tags) for r in records] == [
        (f"s{i}", {"who": f"s{i}"}) for i in range(4)]
    assert all(r.end_ns >= r.start_ns > 0 for r in records)
    st = tracer.stats()
    assert st["arena_open"] == 0 and st["dropped"]["arena_full"] == 1
    assert st["unsampled_by_priority"] == 1


def test_a_finalizer_that_logs_on_a_span_being_discarded_takes_no_pool_entry():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter, capacity=4)     # log pool: 4 entries

    class LateLog:
        def __init__(self, span):
            self.span = span

        def __del__(self):
            self.span.log_kv({"late": True})

    for i in range(3):
        span = tracer.start_span(f"discarded-{i}")
        span.log_kv({"resource": LateLog(span)})
        span.set_tag("sampling.priority", 0)
    spans = [tracer.start_span(f"ordinary-{i}") for i in range(4)]
    for span in spans:
        span.log_kv({"event": "hello"})
        span.finish()
    assert [len(r.logs) for r in reporter.spans] == [1, 1, 1, 1]
    assert tracer.stats()["truncated"]["log_pool_full"] == 0


def test_a_finalizer_that_drains_while_a_long_key_is_compared():
    # a str subclass's __eq__ once ran inside set_tag's walk of the span's long keys; the
    # key becomes an exact str first, so nothing of the caller's runs there
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter, capacity=4)
    span = tracer.start_span("op")
    calls = []

    class Key(str):
        def __str__(self):
            return self

        __hash__ = str.__hash__

        def __eq__(self, other):
            calls.append(other)
            span.finish()
            tracer.flush()
            return str.__eq__(self, other)

    span.set_tag("a" * 300, 1)
    span.set_tag("b" * 300, 2)
    span.set_tag(Key("c" * 300), 3)
    span.finish()
    (record,) = reporter.spans
    assert record.tags == {"a" * 300: 1, "b" * 300: 2, "c" * 300: 3}
    assert tracer.stats()["arena_open"] == 0


# -- finalizers and signal handlers inside the reporters ---------------------------------------

def test_finalizers_finish_spans_while_in_memory_records_are_built():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter, capacity=8)    # inline drain at 4 finished

    def scenario():
        for i in range(3):
            tracer.start_span(f"s{i}").finish()
        tracer.flush()
        with gc_when(lambda: reporter._lock.held_here(),
                     lambda: [Finisher(tracer.start_span(f"by-finalizer-{i}"))
                              for i in range(4)]) as trigger:
            first = reporter.spans
        assert trigger.fired == 1
        return first, reporter.spans

    first, after = finishes_within_deadline(scenario)
    names = [r.operation_name for r in after]
    assert names[:3] == ["s0", "s1", "s2"]
    assert sorted(names[3:]) == [f"by-finalizer-{i}" for i in range(4)]
    assert len(set(r.span_id for r in after)) == 7


def test_finalizers_finish_spans_while_batch_reporter_stats_are_read():
    exporter = Null()
    reporter = BatchReporter(exporter, max_batch_size=4, flush_interval=3600)
    tracer = fasttrace.Tracer(reporter=reporter, capacity=64)

    def scenario():
        with gc_when(lambda: in_frame("stats", os.path.basename(inspect.getfile(BatchReporter))),
                     lambda: [Finisher(tracer.start_span(f"by-finalizer-{i}"))
                              for i in range(4)]) as trigger:
            tracer.stats()
        assert trigger.fired == 1
        assert tracer.flush(60)
        return tracer.stats()

    st = finishes_within_deadline(scenario)
    assert st["exported"] == exporter.spans == 4
    tracer.close(5)


@pytest.mark.skipif(not hasattr(signal, "raise_signal") or sys.platform == "win32",
                    reason="POSIX signals")
@pytest.mark.parametrize("where", ["InMemoryReporter.spans", "BatchReporter.stats",
                                   "BatchReporter.flush"])
def test_a_signal_handler_that_records_spans_interrupts_a_reporter(where):
    # Python runs a signal handler in the main thread between two bytecodes, wherever the
    # thread is: here, inside the reporter call under test.  raise_signal() makes that
    # moment deterministic.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread")
    if where.startswith("InMemory"):
        reporter = fasttrace.InMemoryReporter()
        tracer = fasttrace.Tracer(reporter=reporter, capacity=2)   # drains at each finish
    else:
        exporter = Null()
        reporter = BatchReporter(exporter, max_batch_size=1, flush_interval=3600)
        tracer = fasttrace.Tracer(reporter=reporter)
    method = where.split(".")[1]
    module = os.path.basename(inspect.getfile(type(reporter)))    # where `method` runs
    handled = []

    def on_signal(signum, frame):
        handled.append(signum)
        trigger.acting = True          # its own collections raise no further signal
        try:
            with tracer.start_active_span("from-signal-handler"):
                pass
        finally:
            trigger.acting = False

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        trigger = gc_when(lambda: in_frame(method, module),
                          lambda: signal.raise_signal(signal.SIGUSR1), repeat=True)
        with trigger:
            for i in range(50):
                with tracer.start_active_span(f"request-{i}"):
                    pass
                if method == "spans":
                    reporter.spans
                elif method == "stats":
                    tracer.stats()
                elif i % 10 == 0:
                    tracer.flush(60)
        assert trigger.fired >= 1 and len(handled) == trigger.fired
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert tracer.flush(60)
    names = ([r.operation_name for r in reporter.spans] if where.startswith("InMemory")
             else None)
    if names is not None:
        assert names.count("from-signal-handler") == len(handled)
        assert sum(n.startswith("request-") for n in names) == 50
    else:
        assert exporter.spans == 50 + len(handled)
    tracer.close(5)


def test_cyclic_requests_finish_their_spans_while_stats_are_read():
    # no callbacks: ordinary cyclic garbage, freed wherever the collector runs
    exporter = Null()
    reporter = BatchReporter(exporter, max_batch_size=1, flush_interval=3600)
    tracer = fasttrace.Tracer(reporter=reporter)

    class Request:
        def __init__(self):
            self.span = tracer.start_span("request")
            self.on_done = lambda: self

        def __del__(self):
            self.span.finish()

    def scenario():
        for _ in range(20_000):
            Request()
            tracer.stats()
        gc.collect()
        assert tracer.flush(60)

    finishes_within_deadline(scenario)
    assert exporter.spans == 20_000
    tracer.close(5)


def test_a_traced_generator_abandoned_in_a_cycle():
    exporter = Null()
    tracer = fasttrace.Tracer(reporter=BatchReporter(exporter, flush_interval=3600))

    @fasttrace.traced("rows", tracer=tracer)
    def rows(holder):
        yield 1
        yield 2

    def scenario():
        for _ in range(20_000):
            holder = []
            g = rows(holder)
            holder.append(g)           # generator -> frame -> holder -> generator
            next(g)
            del g, holder
            tracer.stats()
        gc.collect()
        assert tracer.flush(60)

    finishes_within_deadline(scenario)
    assert exporter.spans == 20_000
    tracer.close(5)


# -- scopes and references --------------------------------------------------------------------

def test_a_scope_closed_from_another_task_is_no_longer_active_in_its_owner():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter)

    async def main():
        scope = tracer.start_active_span("parent")

        async def closer():
            scope.close()

        await asyncio.create_task(closer())
        assert tracer.active_span is None
        scope.close()                                  # the owner's own close: a no-op
        with tracer.start_active_span("next") as nxt:
            assert nxt.span.parent_id is None
        return scope.span

    parent = asyncio.run(main())
    assert not parent.is_recording
    assert sorted(r.operation_name for r in reporter.spans) == ["next", "parent"]


def test_a_scope_closed_in_its_own_context_stays_the_parent_of_tasks_started_under_it():
    tracer = fasttrace.Tracer(reporter=fasttrace.InMemoryReporter())

    async def main():
        started = asyncio.Event()
        with tracer.start_active_span("parent") as scope:
            async def child():
                await started.wait()
                with tracer.start_active_span("child") as c:
                    return c.span.parent_id
            task = asyncio.create_task(child())
        started.set()                           # the parent scope is closed by now
        return await task, scope.span.span_id

    parent_id, expected = asyncio.run(main())
    assert parent_id == expected


def test_a_baggage_only_context_is_no_reference():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter)
    container = tracer.extract(Format.HTTP_HEADERS, {"baggage": "k=v"})
    assert container is not None and container.trace_id == 0
    other = tracer.start_span("other")
    x = tracer.start_span("x", references=[opentracing.follows_from(container),
                                            opentracing.child_of(other.context)])
    y = tracer.start_span("y", references=[opentracing.follows_from(container)])
    assert y.get_baggage_item("k") == "v" and y.parent_id is None
    for s in (x, y, other):
        s.finish()
    records = {r.operation_name: r for r in reporter.spans}
    assert records["x"].references == [("child_of", other.trace_id, other.span_id)]
    assert records["x"].parent_id == other.span_id
    assert records["y"].references == []

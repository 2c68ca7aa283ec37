# SPDX-License-Identifier: Apache-2.0
"""InMemoryReporter, SpanBatch columns, custom reporters, draining."""
import gc
import threading
import time

import numpy as np
import opentracing
import pytest

import fasttrace

from support.recording import RecordingReporter

FOLLOWS_FROM = opentracing.ReferenceType.FOLLOWS_FROM


# -- InMemoryReporter ------------------------------------------------------------------

def test_spans_drains_finished_spans(tracer, reporter):
    a = tracer.start_span("a")
    a.finish()
    b = tracer.start_span("b")
    # no flush(): reading .spans drains what has finished
    assert [s.operation_name for s in reporter.spans] == ["a"]
    b.finish()
    assert [s.operation_name for s in reporter.spans] == ["a", "b"]
    assert all(isinstance(s, fasttrace.FinishedSpan) for s in reporter.spans)


def test_spans_returns_a_copy(tracer, reporter):
    tracer.start_span("a").finish()
    spans = reporter.spans
    spans.clear()
    assert len(reporter.spans) == 1


def test_clear(tracer, reporter):
    tracer.start_span("a").finish()
    assert len(reporter.spans) == 1
    reporter.clear()
    assert reporter.spans == []
    tracer.start_span("b").finish()
    assert [s.operation_name for s in reporter.spans] == ["b"]


def test_clear_then_finished_undrained(tracer, reporter):
    tracer.start_span("undrained").finish()
    reporter.clear()
    # clear() empties what was reported; a span still waiting in the arena is reported
    # at the next read or dropped with it -- either way it is never reported twice
    names = [s.operation_name for s in reporter.spans]
    assert names in ([], ["undrained"])
    assert [s.operation_name for s in reporter.spans] == names


def test_one_reporter_two_tracers(make_tracer, reporter):
    t1 = make_tracer(reporter=reporter, service_name="one")
    t2 = make_tracer(reporter=reporter, service_name="two")
    t1.start_span("a").finish()
    t2.start_span("b").finish()
    got = {(s.service_name, s.operation_name) for s in reporter.spans}
    assert got == {("one", "a"), ("two", "b")}


def test_finished_span_fields(tracer, reporter):
    parent = tracer.start_span("parent", start_time=10.0)
    child = tracer.start_span("child", child_of=parent, start_time=10.5,
                              tags={"s": "x", "i": 1, "b": False, "f": 0.5})
    child.log_kv({"event": "e"}, timestamp=10.75)
    child.finish(finish_time=11.0)
    parent.finish(finish_time=12.0)
    recs = {s.operation_name: s for s in reporter.spans}
    c = recs["child"]
    assert c.trace_id == parent.trace_id
    assert c.span_id == child.span_id
    assert c.parent_id == parent.span_id
    assert c.operation_name == "child"
    assert c.service_name == "test-svc"
    assert (c.start_ns, c.end_ns, c.duration_ns) == (10_500_000_000, 11_000_000_000,
                                                     500_000_000)
    assert c.tags == {"s": "x", "i": 1, "b": False, "f": 0.5}
    assert c.logs == [(10_750_000_000, {"event": "e"})]
    assert c.references == [("child_of", parent.trace_id, parent.span_id)]
    assert c.sampled is True
    p = recs["parent"]
    assert p.parent_id is None and p.references == [] and p.duration_ns == 2_000_000_000


# -- SpanBatch -------------------------------------------------------------------------

def _make_spans(tracer):
    root = tracer.start_span("root", start_time=1.0, tags={"k": "v", "n": 3})
    root.log_kv({"a": 1}, timestamp=1.25)
    other = tracer.start_span("other", start_time=1.1)
    child = tracer.start_span("child", child_of=root, start_time=1.5)
    follower = tracer.start_span("follower", start_time=1.6,
                                 references=[opentracing.follows_from(other.context)])
    follower.finish(finish_time=1.7)
    child.set_tag("x", True)
    child.finish(finish_time=2.0)
    other.finish(finish_time=2.5)
    root.finish(finish_time=3.0)
    return {"root": root, "other": other, "child": child, "follower": follower}


def test_span_batch_columns_agree_with_iteration(make_tracer):
    capture = RecordingReporter()
    tracer = make_tracer(reporter=capture)
    handles = _make_spans(tracer)
    assert tracer.flush() is True
    assert capture.batches
    total = 0
    for batch in capture.batches:
        assert isinstance(batch, fasttrace.SpanBatch)
        n = len(batch)
        total += n
        for name in ("trace_id_hi", "trace_id_lo", "span_id", "parent_id", "start_ns",
                     "end_ns", "flags", "name_id"):
            column = getattr(batch, name)
            assert isinstance(column, np.ndarray), name
            assert len(column) == n, name
        records = list(batch)
        assert len(records) == n
        for i, rec in enumerate(records):
            assert isinstance(rec, fasttrace.FinishedSpan)
            trace_id = (int(batch.trace_id_hi[i]) << 64) | int(batch.trace_id_lo[i])
            assert rec.trace_id == trace_id
            assert rec.span_id == int(batch.span_id[i])
            assert (rec.parent_id or 0) == int(batch.parent_id[i])
            assert rec.start_ns == int(batch.start_ns[i])
            assert rec.end_ns == int(batch.end_ns[i])
            assert rec.operation_name == batch.operation_names[int(batch.name_id[i])]
            assert rec.sampled == bool(int(batch.flags[i]) & 1)
            h = handles[rec.operation_name]
            assert (rec.trace_id, rec.span_id) == (h.trace_id, h.span_id)
    assert total == 4
    recs = {s.operation_name: s for s in capture.spans}
    assert recs["root"].tags == {"k": "v", "n": 3}
    assert recs["root"].logs == [(1_250_000_000, {"a": 1})]
    assert recs["child"].tags == {"x": True}
    assert recs["follower"].references == [
        (FOLLOWS_FROM, handles["other"].trace_id, handles["other"].span_id)]
    assert recs["follower"].parent_id == handles["other"].span_id


def test_span_batch_ids_are_unsigned_64(make_tracer):
    capture = RecordingReporter()
    tracer = make_tracer(reporter=capture)
    for _ in range(200):
        tracer.start_span("x").finish()
    tracer.flush()
    batch = capture.batches[0]
    assert batch.span_id.dtype == np.uint64
    assert batch.trace_id_hi.dtype == np.uint64 and batch.trace_id_lo.dtype == np.uint64
    # ids with the top bit set survive the column round trip
    assert any(int(v) >= 2 ** 63 for v in batch.span_id)
    for rec, sid in zip(batch, batch.span_id):
        assert rec.span_id == int(sid)


# -- custom reporter, flush, close ---------------------------------------------------------

def test_custom_reporter_receives_batches_on_flush(make_tracer):
    capture = RecordingReporter()
    tracer = make_tracer(reporter=capture)
    for i in range(10):
        tracer.start_span(f"s{i}").finish()
    assert tracer.flush(timeout=2.0) is True
    assert sorted(s.operation_name for s in capture.spans) == sorted(f"s{i}"
                                                                     for i in range(10))
    assert capture.flushes and capture.flushes[-1] == 2.0
    assert tracer.stats()["reported"] == 10
    assert tracer.flush() is True
    assert len(capture.spans) == 10          # nothing reported twice


def test_flush_false_when_reporter_says_so(make_tracer):
    class Failing(RecordingReporter):
        def flush(self, timeout=None):
            return False

    tracer = make_tracer(reporter=Failing())
    tracer.start_span("a").finish()
    assert tracer.flush() is False


def test_close_drains_and_closes_reporter(make_tracer):
    capture = RecordingReporter()
    tracer = make_tracer(reporter=capture)
    tracer.start_span("last").finish()
    tracer.close()
    assert [s.operation_name for s in capture.spans] == ["last"]
    assert capture.closed == 1
    tracer.close()
    assert capture.closed == 1


def test_reporter_exception_never_reaches_the_application(make_tracer):
    class Broken(fasttrace.Reporter):
        def report(self, batch):
            raise RuntimeError("backend down")

    tracer = make_tracer(reporter=Broken(), capacity=4)
    for i in range(100):
        tracer.start_span(f"s{i}").finish()      # drains (and fails) as the arena fills
    tracer.flush()
    stats = tracer.stats()
    assert stats["finished"] == 100
    assert stats["dropped"]["arena_full"] == 0


def test_finished_spans_are_drained_not_dropped_when_arena_fills(make_tracer):
    capture = RecordingReporter()
    tracer = make_tracer(reporter=capture, capacity=8)
    for i in range(1000):
        tracer.start_span(f"s{i}").finish()
    stats = tracer.stats()
    assert stats["dropped"]["arena_full"] == 0
    assert len(capture.spans) >= 1000 - 8          # drained on their own, without flush
    tracer.flush()
    names = [s.operation_name for s in capture.spans]
    assert sorted(names) == sorted(f"s{i}" for i in range(1000))
    assert len(set(names)) == 1000


def test_in_memory_reporter_fills_arena_with_finished(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=8)
    for i in range(100):
        tracer.start_span(f"s{i}").finish()
    assert tracer.stats()["dropped"]["arena_full"] == 0
    assert [s.operation_name for s in reporter.spans] == [f"s{i}" for i in range(100)]


def test_concurrent_finishing_threads_lose_nothing(make_tracer):
    capture = RecordingReporter()
    tracer = make_tracer(reporter=capture, capacity=64)
    n_threads, per_thread = 8, 2000

    def worker(t):
        for i in range(per_thread):
            with tracer.start_active_span(f"t{t}"):
                pass

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tracer.flush()
    spans = capture.spans
    assert len(spans) == n_threads * per_thread
    assert len({s.span_id for s in spans}) == len(spans)
    stats = tracer.stats()
    assert stats["finished"] == n_threads * per_thread
    assert stats["dropped"]["arena_full"] == 0


def test_exporter_interface():
    class MyExporter(fasttrace.Exporter):
        def __init__(self):
            self.exported = []

        def export(self, batch):
            self.exported.append(len(batch))
            return True

    exporter = MyExporter()
    assert isinstance(exporter, fasttrace.Exporter)
    exporter.shutdown()             # the base class provides a no-op


@pytest.mark.parametrize("method", ["report"])
def test_reporter_base_requires_report(method):
    with pytest.raises(NotImplementedError):
        getattr(fasttrace.Reporter(), method)(None)
    assert fasttrace.Reporter().flush(1.0) is True


def _nested_spans_in_threads(tracer, n_threads=8, per_thread=4000):
    """Each thread keeps at most two spans open; returns the number of spans made."""
    def worker():
        for _ in range(per_thread):
            with tracer.start_active_span("outer"):
                with tracer.start_active_span("inner"):
                    pass

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return n_threads * per_thread * 2


def test_reading_spans_while_threads_finish_drops_nothing(make_tracer, reporter):
    # at most 16 spans are open at any time, far below capacity: a drain running in
    # another thread must never make the arena look full
    tracer = make_tracer(reporter=reporter, capacity=64)
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            reporter.spans

    rt = threading.Thread(target=reader)
    rt.start()
    try:
        made = _nested_spans_in_threads(tracer)
    finally:
        stop.set()
        rt.join()
    assert tracer.stats()["dropped"]["arena_full"] == 0
    assert len(reporter.spans) == made


def test_no_span_is_dropped_while_a_collection_interrupts_a_drain(make_tracer, reporter):
    # A garbage collection inside a drain (making its arrays) may run Python code
    # (finalizers, gc.callbacks) and switch threads; the drain holds no slot then, so
    # the other threads find the finished slots still there to drain or already free,
    # and never a full arena.  Here every collection yields the GIL, and collections
    # are frequent.
    tracer = make_tracer(reporter=reporter, capacity=64)

    def yield_gil(phase, info):
        if phase == "stop":
            time.sleep(0)

    threshold = gc.get_threshold()
    gc.callbacks.append(yield_gil)
    gc.set_threshold(50)
    try:
        made = _nested_spans_in_threads(tracer, per_thread=1500)
        tracer.flush()
    finally:
        gc.callbacks.remove(yield_gil)
        gc.set_threshold(*threshold)
    assert tracer.stats()["dropped"]["arena_full"] == 0
    assert len(reporter.spans) == made


def test_batch_reporter_draining_drops_nothing(make_tracer):
    exported = []

    class Collect(fasttrace.Exporter):
        def export(self, batch):
            exported.append(len(batch))
            return True

    # the reporter's thread drains the arena while the application threads record
    reporter = fasttrace.BatchReporter(Collect(), flush_interval=0.001, max_batch_size=16)
    tracer = make_tracer(reporter=reporter, capacity=64)
    made = _nested_spans_in_threads(tracer)
    assert tracer.flush(timeout=10) is True
    assert tracer.stats()["dropped"]["arena_full"] == 0
    assert sum(exported) == made

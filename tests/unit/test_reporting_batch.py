# SPDX-License-Identifier: Apache-2.0
"""BatchReporter: interval and size triggers, chunking, flush/close, atexit, fork."""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fasttrace
from fasttrace.reporting import BatchReporter

from support.recording import RecordingExporter
from support.waits import wait_for


def test_exports_on_the_interval_without_flush():
    exporter = RecordingExporter()
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=0.05))
    tracer.start_span("op").finish()
    assert wait_for(lambda: len(exporter.spans) == 1)
    assert threading.get_ident() not in exporter.threads
    tracer.close(1)


def test_a_full_batch_wakes_the_thread_before_the_interval():
    exporter = RecordingExporter()
    reporter = BatchReporter(exporter, flush_interval=3600, max_batch_size=10)
    tracer = fasttrace.Tracer("svc", reporter=reporter)
    assert reporter.drain_threshold == 10
    for _ in range(9):
        tracer.start_span("op").finish()
    time.sleep(0.2)
    assert exporter.spans == []           # neither the interval nor a full batch yet
    tracer.start_span("op").finish()
    assert wait_for(lambda: len(exporter.spans) >= 10)
    tracer.close(1)


def test_chunks_respect_max_batch_size_and_nothing_is_duplicated():
    exporter = RecordingExporter()
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=3600,
                                                            max_batch_size=37))
    ids = set()
    for i in range(1000):
        span = tracer.start_span("op", tags={"i": i})
        ids.add(span.span_id)
        span.finish()
    assert tracer.flush(5) is True
    assert all(len(b) <= 37 for b in exporter.batches)
    assert len(exporter.spans) == 1000
    assert {s.span_id for s in exporter.spans} == ids
    stats = tracer.stats()["reporter"]
    assert stats["exported"] == 1000 and stats["queue_length"] == 0
    assert stats["export_calls"] == len(exporter.batches)
    tracer.close(1)


def test_many_threads():
    exporter = RecordingExporter()
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=0.01,
                                                            max_batch_size=64))

    def work():
        for _ in range(2000):
            with tracer.start_active_span("op"):
                pass
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tracer.flush(10)
    assert len({s.span_id for s in exporter.spans}) == len(exporter.spans) == 16000
    tracer.close(1)


def test_close_is_idempotent_and_shuts_the_exporter_down_once():
    exporter = RecordingExporter()
    reporter = BatchReporter(exporter, flush_interval=3600)
    tracer = fasttrace.Tracer("svc", reporter=reporter)
    tracer.start_span("op").finish()
    tracer.close(2)
    assert len(exporter.spans) == 1            # close flushed
    reporter.close(2)
    tracer.close(2)
    assert exporter.shutdowns == 1
    assert not reporter._thread.is_alive()
    # spans after close are dropped and counted, not exported, not raised
    tracer.start_span("late").finish()
    tracer._drain_to_reporter()
    assert reporter.stats()["dropped"]["closed"] == 1
    t0 = time.monotonic()
    assert isinstance(reporter.flush(1.0), bool)     # no thread to wait for: returns at once
    assert time.monotonic() - t0 < 0.5


def test_invalid_arguments():
    for kwargs in ({"flush_interval": 0}, {"max_batch_size": 0}, {"max_queue_size": 0}):
        with pytest.raises(ValueError):
            BatchReporter(RecordingExporter(), **kwargs)
    r = BatchReporter(RecordingExporter(), max_batch_size=100, max_queue_size=10)
    assert r.max_batch_size == 10
    r.close(1)


def test_span_batch_slice():
    batches = []
    tracer = fasttrace.Tracer("svc", reporter=fasttrace.InMemoryReporter())
    tracer.reporter.report = batches.append
    for i in range(10):
        span = tracer.start_span(f"op{i}", tags={"i": i})
        span.log_kv({"n": i})
        span.finish()
    tracer._drain_to_reporter()
    (batch,) = batches
    whole = list(batch)
    part = batch.slice(3, 7)
    assert len(part) == 4
    assert list(part) == whole[3:7]
    assert list(batch.slice(8, 100)) == whole[8:]
    assert len(batch.slice(5, 2)) == 0


def run_script(tmp_path, body, timeout=60):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd()] + sys.path)
    return subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_atexit_exports_what_is_left(tmp_path):
    out = tmp_path / "spans.jsonl"
    proc = run_script(tmp_path, f"""
        import fasttrace
        from fasttrace.reporting import BatchReporter
        from fasttrace.exporters import JsonLinesExporter
        tracer = fasttrace.Tracer("svc", reporter=BatchReporter(
            JsonLinesExporter({str(out)!r}), flush_interval=3600))
        for i in range(300):
            tracer.start_span("op", tags={{"i": i}}).finish()
        # no flush, no close: the atexit hook must export them
    """)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(s["tags"]["i"] for s in lines) == list(range(300))


def test_atexit_never_hangs_on_a_stuck_exporter(tmp_path):
    proc = run_script(tmp_path, """
        import threading, fasttrace
        from fasttrace.reporting import BatchReporter, Exporter
        class Stuck(Exporter):
            def export(self, batch):
                threading.Event().wait(3600)
        tracer = fasttrace.Tracer("svc", reporter=BatchReporter(
            Stuck(), flush_interval=0.01, exit_timeout=0.5))
        tracer.start_span("op").finish()
    """, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_a_fresh_thread_and_never_re_exports_parent_spans(tmp_path):
    out = tmp_path / "spans.jsonl"
    proc = run_script(tmp_path, f"""
        import os, fasttrace
        from fasttrace.reporting import BatchReporter
        from fasttrace.exporters import JsonLinesExporter
        reporter = BatchReporter(JsonLinesExporter({str(out)!r}), flush_interval=3600)
        tracer = fasttrace.Tracer("svc", reporter=reporter)
        for _ in range(5):
            tracer.start_span("parent-before-fork").finish()
        tracer._drain_to_reporter()       # some queued in the reporter ...
        for _ in range(4):
            tracer.start_span("parent-in-arena").finish()   # ... some in the arena
        parent_thread = reporter._thread
        pid = os.fork()
        if pid == 0:
            ok = reporter._thread is not parent_thread and reporter._thread.is_alive()
            for _ in range(3):
                tracer.start_span("child").finish()
            flushed = tracer.flush(10)
            tracer.close(5)
            os._exit(0 if ok and flushed else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        tracer.close(5)
    """)
    assert proc.returncode == 0, proc.stderr
    names = [json.loads(line)["operation_name"] for line in out.read_text().splitlines()]
    assert sorted(names) == sorted(["parent-before-fork"] * 5 + ["parent-in-arena"] * 4
                                   + ["child"] * 3)


class _GateExporter(RecordingExporter):
    """A RecordingExporter whose first export waits until `release` is set."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, batch):
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(60)
        return super().export(batch)


def test_spans_drained_at_once_go_out_in_whole_batches_in_finish_order():
    exporter = _GateExporter()
    reporter = BatchReporter(exporter, flush_interval=3600, max_batch_size=100)
    tracer = fasttrace.Tracer("svc", reporter=reporter)
    ids = []

    def record(n):
        for _ in range(n):
            span = tracer.start_span("op")
            ids.append(span.span_id)
            span.finish()
    record(100)                 # a full batch: the thread drains it and exports it
    assert exporter.entered.wait(60)
    record(1050)                # finished while that export runs: drained in one go
    exporter.release.set()
    assert tracer.flush(10) is True
    assert [len(b) for b in exporter.batches] == [100] * 11 + [50]
    assert [s.span_id for s in exporter.spans] == ids
    stats = reporter.stats()
    assert stats["exported"] == 1150 and stats["export_calls"] == 12
    assert stats["queue_length"] == 0
    tracer.close(1)


def test_a_queued_batch_is_exported_from_a_cursor_across_cycles():
    from fasttrace.batching import _Pipeline

    batches = []
    tracer = fasttrace.Tracer("svc", reporter=fasttrace.InMemoryReporter())
    tracer.reporter.report = batches.append
    for i in range(250):
        tracer.start_span("op", tags={"i": i}).finish()
    tracer._drain_to_reporter()
    (batch,) = batches
    whole = [s.span_id for s in batch]

    exporter = RecordingExporter()
    pipe = _Pipeline(exporter, 1.0, 100, 1000)
    pipe.enqueue(batch, len(batch))
    pipe.export_queued(1)               # one export's worth: the first 100
    assert [len(b) for b in exporter.batches] == [100]
    assert pipe.queued == 150 and pipe.queue_out == 100
    pipe.export_queued(pipe.queued)     # the rest, from where the first left off
    assert [len(b) for b in exporter.batches] == [100, 100, 50]
    assert [s.span_id for s in exporter.spans] == whole
    assert pipe.queued == 0 and not pipe.queue and pipe.queue_out == pipe.queue_in == 250
    assert pipe.exported == 250 and pipe.export_calls == 3


def test_a_signal_set_twice_wakes_once():
    from fasttrace._reentry import Signal

    signal = Signal()
    assert signal.take() is False
    signal.set()
    signal.set()                        # already set: nothing raised, nothing counted
    assert signal.wait(0) is True
    assert signal.take() is False

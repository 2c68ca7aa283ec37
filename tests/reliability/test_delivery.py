# SPDX-License-Identifier: Apache-2.0
"""What flush() and close() deliver, and how what they could not deliver is counted."""
import gc
import threading
import time

import pytest

import fasttrace
from fasttrace.exporters.otlp import OTLPExporter
from fasttrace.reporting import BatchReporter, Exporter

from support.servers import free_port


class Paced(Exporter):
    """An exporter that takes a little time per batch, as a real backend does."""

    def __init__(self, seconds_per_batch=0.001):
        self.delay = seconds_per_batch
        self.spans = 0
        self.ids = set()

    def export(self, batch):
        time.sleep(self.delay)
        self.spans += len(batch)
        self.ids.update(int(i) for i in batch.span_id)
        return True


def test_a_burst_larger_than_the_arena_is_all_delivered_by_flush():
    # 100,000 spans recorded faster than the exporter takes them: what does not fit the
    # queue waits in the arena, and flush() moves it at the exporter's pace
    exporter = Paced()
    tracer = fasttrace.Tracer(reporter=BatchReporter(exporter))
    for i in range(100_000):
        with tracer.start_active_span("burst"):
            pass
    assert tracer.flush(timeout=60) is True
    st = tracer.stats()
    assert exporter.spans == len(exporter.ids) == st["exported"] == 100_000
    assert not any(st["dropped"].values()), st["dropped"]
    tracer.close(5)


def test_close_delivers_what_finished_before_it():
    exporter = Paced()
    tracer = fasttrace.Tracer(reporter=BatchReporter(exporter, flush_interval=3600))
    for _ in range(30_000):
        tracer.start_span("op").finish()
    assert tracer.close(60)
    assert exporter.spans == 30_000
    assert not any(tracer.stats()["dropped"].values())


def test_what_close_could_not_send_is_counted_as_shutdown_not_as_failed():
    # nothing listens on the port: every request fails after connecting is refused;
    # close(0.5) runs out long before the retries of 10 batches are over
    exporter = OTLPExporter(f"http://127.0.0.1:{free_port()}/v1/traces", timeout=5)
    tracer = fasttrace.Tracer(reporter=BatchReporter(exporter, flush_interval=3600))
    for _ in range(5000):
        tracer.start_span("op").finish()
    tracer.close(0.5)
    rep = tracer.stats()["reporter"]
    dropped = rep["dropped"]
    # a failure is a request the exporter made and lost, never a batch it was not given
    assert rep["export_failures"] <= rep["exporter"]["failed_exports"]
    assert dropped["export_failed"] + dropped["shutdown"] == 5000
    assert dropped["shutdown"] > 0 and rep["exported"] == 0


def test_flush_after_close_reports_the_spans_dropped_since():
    exporter = Paced(0)
    tracer = fasttrace.Tracer(reporter=BatchReporter(exporter, flush_interval=0.05))
    tracer.start_span("before-close").finish()
    tracer.close(5)
    for i in range(10):
        tracer.start_span(f"after-close-{i}").finish()
    assert tracer.flush(1.0) is False
    st = tracer.stats()
    assert exporter.spans == 1 and st["dropped"]["reporter_closed"] == 10


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, GeneratorExit,
                                    RuntimeError])
def test_an_exporter_that_raises_anything_leaves_the_reporter_working(raised):
    class RaisesOnce(Exporter):
        def __init__(self):
            self.calls = 0
            self.spans = 0

        def export(self, batch):
            self.calls += 1
            if self.calls == 1:
                raise raised("from the exporter")
            self.spans += len(batch)
            return True

    exporter = RaisesOnce()
    reporter = BatchReporter(exporter, flush_interval=0.05)
    tracer = fasttrace.Tracer(reporter=reporter)
    tracer.start_span("first").finish()
    assert tracer.flush(10) is False                      # the first batch was lost ...
    for i in range(100):
        tracer.start_span(f"later-{i}").finish()
    assert tracer.flush(10) is True                       # ... and the thread lives on
    assert reporter._thread.is_alive()
    assert exporter.spans == 100
    assert tracer.stats()["dropped"]["reporter_export_failed"] == 1
    tracer.close(5)


def test_tracers_and_reporters_dropped_without_close_export_and_end_their_threads():
    before = threading.active_count()
    exporter = Paced(0)
    for _ in range(50):
        t = fasttrace.Tracer(reporter=BatchReporter(exporter, flush_interval=3600))
        t.start_span("x").finish()
    del t
    gc.collect()
    deadline = time.monotonic() + 60
    while (threading.active_count() > before or exporter.spans < 50) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before
    assert exporter.spans == 50


def test_flush_does_not_wait_for_spans_finished_after_it():
    exporter = Paced(0.002)
    tracer = fasttrace.Tracer(capacity=4096, reporter=BatchReporter(
        exporter, flush_interval=0.05, max_queue_size=4096))
    stop = threading.Event()

    def keep_recording():
        while not stop.is_set():
            with tracer.start_active_span("busy"):
                pass

    worker = threading.Thread(target=keep_recording, daemon=True)
    worker.start()
    try:
        for _ in range(2000):
            tracer.start_span("before-flush").finish()
        t0 = time.monotonic()
        tracer.flush(60)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        worker.join(10)
    tracer.close(5)
    assert elapsed < 30, elapsed       # it would reach 60 if it waited for later spans

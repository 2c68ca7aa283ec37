# SPDX-License-Identifier: Apache-2.0
"""A backend that is down, slow, failing or throttling must not hurt the application:
span calls keep recording, memory stays bounded, failures and drops are counted,
flush/close return within their timeouts, and retries follow the OTLP spec."""
import functools
import logging
import threading
import time

import pytest

import fasttrace
from fasttrace.exporters import OTLPExporter
from fasttrace.reporting import BatchReporter, Exporter

from support.batches import make_batch
from support.servers import OK, free_port

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")


@pytest.fixture
def collector(http_sink):
    """collector(*replies) -> an OTLP/HTTP collector on loopback answering with `replies`
    (the i-th request the i-th, the last one repeating; see support.servers.HttpSink)."""
    return functools.partial(http_sink, path="/v1/traces")


def test_backend_down_counts_failures_and_keeps_recording():
    exporter = OTLPExporter(f"http://127.0.0.1:{free_port()}/v1/traces", timeout=0.5)
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=0.05,
                                                            max_batch_size=64))
    for i in range(1000):
        tracer.start_span("op", tags={"i": i}).finish()
    # 16 batches, each tried and retried against a closed port: ~4.5 s on an idle
    # machine, so the flush gets ample time -- it must still report the loss
    assert tracer.flush(60) is False
    stats = tracer.stats()
    assert stats["finished"] == 1000
    rep = stats["reporter"]
    assert rep["exported"] == 0
    assert rep["export_failures"] >= 1
    assert rep["dropped"]["export_failed"] + rep["dropped"]["queue_full"] == 1000
    assert rep["exporter"]["retries"] >= 1            # connection errors are retried
    assert "ConnectionRefused" in rep["exporter"]["last_error"]
    t0 = time.monotonic()
    tracer.close(2)
    assert time.monotonic() - t0 < 4


def test_slow_backend_neither_blocks_spans_nor_flush_nor_close(collector):
    release = threading.Event()

    def slow(handler):
        release.wait(10)
        return OK
    sink = collector(slow)
    exporter = OTLPExporter(sink.url, timeout=0.5)
    reporter = BatchReporter(exporter, flush_interval=0.05, max_batch_size=100,
                             max_queue_size=1000)
    tracer = fasttrace.Tracer("svc", reporter=reporter, capacity=4096)
    # while the exporter is stuck on the first request, the application keeps recording
    tracer.start_span("first").finish()
    assert not tracer.flush(0.2)
    deadline = time.monotonic() + 5
    while not sink.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.requests, "the export never started"
    for i in range(20000):
        with tracer.start_active_span("op") as scope:
            scope.span.set_tag("i", i)
    stats = tracer.stats()
    # what the queue could not take waited in the arena; past that, spans were dropped
    assert stats["started"] == 20001
    assert stats["finished"] + stats["dropped"]["arena_full"] == 20001
    # bounded: neither the queue nor the arena grew past their limits
    assert stats["reporter"]["queue_length"] <= 1000
    assert stats["arena_open"] + stats["arena_finished"] <= 4096
    t0 = time.monotonic()
    assert tracer.flush(0.3) is False
    assert time.monotonic() - t0 < 2.0
    t0 = time.monotonic()
    tracer.close(0.5)
    assert time.monotonic() - t0 < 3.0
    release.set()
    st = tracer.stats()
    rep = st["reporter"]
    assert sum(rep["dropped"].values()) + st["dropped"]["arena_full"] > 0
    assert rep["exporter"]["failed_exports"] >= 1      # the slow request timed out


def test_queue_limit_is_honoured_and_drops_counted():
    gate = threading.Event()

    class Stuck(Exporter):
        def __init__(self):
            self.spans = 0

        def export(self, batch):
            gate.wait(10)
            self.spans += len(batch)
            return True

        def shutdown(self):
            gate.set()
    exporter = Stuck()
    reporter = BatchReporter(exporter, flush_interval=0.02, max_batch_size=50,
                             max_queue_size=300)
    tracer = fasttrace.Tracer("svc", reporter=reporter, capacity=2000)
    peak = 0
    for i in range(5000):
        tracer.start_span("op").finish()
        if i % 100 == 0:
            peak = max(peak, reporter.stats()["queue_length"])
    peak = max(peak, reporter.stats()["queue_length"])
    assert peak <= 300
    # a drain that hands the reporter more than its queue holds (a tracer dropped
    # without close() does) drops the excess, counted
    tracer._drain_to_reporter()
    assert reporter.stats()["queue_length"] <= 300
    gate.set()
    assert tracer.flush(5) is False           # spans were dropped, so not everything got out
    st = tracer.stats()
    assert st["dropped"]["arena_full"] > 0    # the arena held what the queue could not...
    assert st["reporter"]["dropped"]["queue_full"] > 0      # ... until it was full
    assert st["exported"] == exporter.spans
    assert st["exported"] + st["dropped"]["reporter_queue_full"] == st["sampled"]
    assert st["sampled"] + st["dropped"]["arena_full"] == 5000
    tracer.close(2)


def test_500_is_not_retried(collector):
    sink = collector((500, {}, b"oops"))
    exporter = OTLPExporter(sink.url, timeout=5)
    assert exporter.export(make_batch()) is False
    assert len(sink.requests) == 1
    assert exporter.stats()["last_error"].startswith("HTTP 500")


def test_400_is_never_retried(collector):
    sink = collector((400, {}, b"bad request"))
    exporter = OTLPExporter(sink.url, timeout=5)
    t0 = time.monotonic()
    assert exporter.export(make_batch()) is False
    assert time.monotonic() - t0 < 2
    assert len(sink.requests) == 1
    assert exporter.stats()["retries"] == 0


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried(collector, status):
    sink = collector((status, {}, b""), OK)
    exporter = OTLPExporter(sink.url, timeout=5)
    assert exporter.export(make_batch()) is True
    assert len(sink.requests) == 2
    assert exporter.stats()["retries"] == 1


def test_429_retry_after_is_honoured(collector):
    sink = collector((429, {"Retry-After": "1"}, b""), OK)
    exporter = OTLPExporter(sink.url, timeout=5)
    assert exporter.export(make_batch()) is True
    assert len(sink.requests) == 2
    assert sink.requests[1].time - sink.requests[0].time >= 0.9


def test_retry_after_beyond_the_timeout_gives_up_at_once(collector):
    sink = collector((503, {"Retry-After": "30"}, b""))
    exporter = OTLPExporter(sink.url, timeout=1)
    t0 = time.monotonic()
    assert exporter.export(make_batch()) is False
    assert time.monotonic() - t0 < 1
    assert len(sink.requests) == 1
    assert "no time left" in exporter.stats()["last_error"]


def test_backoff_stops_at_the_timeout(collector):
    sink = collector((503, {}, b""))
    exporter = OTLPExporter(sink.url, timeout=1.5)
    t0 = time.monotonic()
    assert exporter.export(make_batch()) is False
    assert time.monotonic() - t0 < 2.0
    assert len(sink.requests) >= 2


def test_partial_success_is_logged_counted_not_retried(collector, caplog):
    body = pb.ExportTraceServiceResponse(
        partial_success={"rejected_spans": 2, "error_message": "spans too old"}
    ).SerializeToString()
    sink = collector((200, {"Content-Type": "application/x-protobuf"}, body))
    exporter = OTLPExporter(sink.url, timeout=5)
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        assert exporter.export(make_batch()) is True
    assert len(sink.requests) == 1
    stats = exporter.stats()
    assert stats["rejected_spans"] == 2 and stats["partial_successes"] == 1
    assert any("rejected 2 spans" in r.getMessage() and "spans too old" in r.getMessage()
               for r in caplog.records)


def test_exporter_exceptions_never_reach_the_application(caplog):
    class Broken(Exporter):
        calls = 0

        def export(self, batch):
            Broken.calls += 1
            raise RuntimeError("kaput")

    reporter = BatchReporter(Broken(), flush_interval=10, max_batch_size=10)
    tracer = fasttrace.Tracer("svc", reporter=reporter)
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        for _ in range(100):
            tracer.start_span("op").finish()
        assert tracer.flush(5) is False
    rep = tracer.stats()["reporter"]
    assert rep["export_failures"] == Broken.calls >= 10
    assert rep["dropped"]["export_failed"] == 100
    # logged at most once per flush interval, not once per failure
    assert 1 <= len([r for r in caplog.records if "kaput" in (r.exc_text or "")
                     or "raised" in r.getMessage()]) <= 2
    tracer.close(1)


def test_close_with_stuck_exporter_returns_in_time_and_shuts_it_down():
    entered = threading.Event()

    class Stuck(Exporter):
        shut = threading.Event()

        def export(self, batch):
            entered.set()
            Stuck.shut.wait(30)
            return False

        def shutdown(self):
            Stuck.shut.set()
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(Stuck(), flush_interval=0.01))
    tracer.start_span("op").finish()
    tracer._drain_to_reporter()
    assert entered.wait(5)
    t0 = time.monotonic()
    tracer.close(0.3)
    assert time.monotonic() - t0 < 2
    assert Stuck.shut.is_set()

# SPDX-License-Identifier: Apache-2.0
"""A backend that is down, slow, flapping or answering errors for a sustained period:
memory stays bounded (the queue limit), every lost span is counted, the application's
span calls keep working (they never wait for the exporter), and spans recorded after
the backend comes back arrive.  Secrets in exporter headers never reach the logs.

One exporter call at a time, against a scripted OTLP collector (from what was
tests/test_export_failures.py): a backend that is down, slow, failing or throttling must
not hurt the application: span calls keep recording, memory stays bounded, failures and
drops are counted, flush/close return within their timeouts, retries follow the OTLP
spec, and an exporter that raises or hangs never reaches the application."""
import functools
import logging
import threading
import time

import pytest

import fasttrace
from fasttrace.exporters import JaegerExporter, OTLPExporter, ZipkinExporter
from fasttrace.reporting import BatchReporter, Exporter

from support.batches import make_batch
from support.servers import OTLPSink, UDPSink, blackhole, free_port, read_rss_bytes, report
from support.servers import OK, scale

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

QUEUE = 2048
SECRET = "sk-live-7f3a9c2e1b5d4f60-SECRET"


def _accounted(tracer):
    """After close: every sampled span was exported or counted as dropped."""
    st = tracer.stats()
    lost = sum(v for k, v in st["dropped"].items() if k != "arena_full")
    assert st["arena_open"] == 0, st
    assert st["sampled"] == st["exported"] + lost, st
    return st, lost


class Load:
    """Records nested spans for `seconds`, checking the bounds as it goes."""

    def __init__(self, tracer, label):
        self.tracer = tracer
        self.label = label
        self.spans = 0
        self.max_queue = 0
        self.max_arena = 0
        self.slowest_chunk = 0.0

    def run(self, seconds, chunk=1000, pause=0.001):
        tracer = self.tracer
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            for i in range(chunk // 2):
                with tracer.start_active_span(self.label, tags={"i": i}):
                    with tracer.start_active_span(self.label + "-child"):
                        pass
            self.slowest_chunk = max(self.slowest_chunk, time.perf_counter() - t0)
            self.spans += chunk
            st = tracer.stats()
            self.max_queue = max(self.max_queue, st["reporter"]["queue_length"])
            self.max_arena = max(self.max_arena, st["arena_open"] + st["arena_finished"])
            time.sleep(pause)
        return self

    def check_bounds(self, capacity):
        assert self.max_queue <= QUEUE, self.max_queue
        assert self.max_arena <= capacity
        # 1000 spans normally take ~2-5 ms; a call that waited for the exporter (0.5 s
        # timeouts, 1-2 s answers) would show here.  Generous for a loaded CI machine.
        assert self.slowest_chunk < 0.5, self.slowest_chunk


def _tracer(exporter, capacity=8192, **kw):
    kw.setdefault("flush_interval", 0.05)
    kw.setdefault("max_batch_size", 256)
    kw.setdefault("max_queue_size", QUEUE)
    return fasttrace.Tracer("faulty", capacity=capacity,
                            reporter=BatchReporter(exporter, **kw))


def _recovery(tracer, sink, label="after"):
    """Spans recorded once the backend is healthy again arrive."""
    tracer.flush(10)                      # may report False: losses since last flush
    ids = []
    for _ in range(200):
        with tracer.start_active_span(label) as sc:
            ids.append(sc.span.span_id)
    t0 = time.perf_counter()
    assert tracer.flush(15) is True, tracer.stats()["reporter"]
    recovery_s = time.perf_counter() - t0
    got = {r.span_id for r in sink.snapshot() if r.name == label}
    assert set(ids) <= got
    return recovery_s


def test_backend_down_then_back(caplog):
    caplog.set_level(logging.WARNING, logger="fasttrace")
    sink = OTLPSink()
    sink.down()
    try:
        tracer = _tracer(OTLPExporter(sink.url, timeout=0.5))
        rss0 = read_rss_bytes()
        load = Load(tracer, "while-down").run(2.0 * scale())
        rss1 = read_rss_bytes()
        load.check_bounds(8192)
        st = tracer.stats()
        assert st["dropped"]["arena_full"] + st["dropped"][
            "reporter_export_failed"] > 0
        assert st["exported"] == 0
        assert "ConnectionRefused" in st["reporter"]["exporter"]["last_error"]
        sink.up()
        recovery_s = _recovery(tracer, sink)
        tracer.close(5)
        st, lost = _accounted(tracer)
    finally:
        sink.close()
    # a dead backend is worth a warning, but not one per export attempt
    warnings = [r for r in caplog.records if r.name == "fasttrace"]
    assert len(warnings) <= 2.0 * scale() / 0.05 + 10
    report("faults/down", spans=load.spans, dropped=lost, exported=st["exported"],
           max_queue=load.max_queue, slowest_1000_spans_s=load.slowest_chunk,
           rss_growth_mb=((rss1 - rss0) / 2**20 if rss0 and rss1 else -1),
           recovery_flush_s=recovery_s, warnings=len(warnings))


def test_backend_slow_then_fast():
    with OTLPSink(mode="slow", delay=1.5) as sink:
        tracer = _tracer(OTLPExporter(sink.url, timeout=5))
        load = Load(tracer, "while-slow").run(2.0 * scale())
        load.check_bounds(8192)
        st = tracer.stats()
        # the queue limit held: what did not fit waited in the arena, and once that was
        # full too, new spans were dropped there
        assert st["dropped"]["arena_full"] > 0
        sink.mode = "up"
        recovery_s = _recovery(tracer, sink)
        tracer.close(10)
        st, lost = _accounted(tracer)
        assert not sink.duplicates()
        assert sink.span_count == st["exported"]
    report("faults/slow", spans=load.spans, exported=st["exported"], dropped=lost,
           slowest_1000_spans_s=load.slowest_chunk, recovery_flush_s=recovery_s)


def test_backend_hangs_without_answering():
    with OTLPSink(mode="hang") as sink:
        tracer = _tracer(OTLPExporter(sink.url, timeout=1.0))
        load = Load(tracer, "while-hung").run(1.5)
        load.check_bounds(8192)
        t0 = time.perf_counter()
        assert tracer.flush(0.5) is False
        flush_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tracer.close(2)
        close_s = time.perf_counter() - t0
        assert flush_s < 1.5 and close_s < 4
        _accounted(tracer)
    report("faults/hang", spans=load.spans, flush_s=flush_s, close_s=close_s)


def test_backend_flapping():
    with OTLPSink(mode="flap", flap_period=0.15) as sink:
        tracer = _tracer(OTLPExporter(sink.url, timeout=0.3))
        load = Load(tracer, "while-flapping").run(3.0 * scale(), pause=0.02)
        load.check_bounds(8192)
        sink.mode = "up"
        recovery_s = _recovery(tracer, sink)
        tracer.close(10)
        st, lost = _accounted(tracer)
        assert not sink.duplicates()
        # every span counted as exported arrived; a request whose 200 came after the
        # client's 0.3 s timeout (a loaded machine) is counted lost although the sink
        # kept it -- loss over-reported, never hidden, and never sent twice
        assert st["exported"] <= sink.span_count <= st["exported"] + lost
        assert st["exported"] > 0
    report("faults/flapping", spans=load.spans, exported=st["exported"], dropped=lost,
           retries=st["reporter"]["exporter"]["retries"], recovery_flush_s=recovery_s)


@pytest.mark.parametrize("status", ["500", "429"])
def test_backend_answering_errors(status, caplog):
    caplog.set_level(logging.WARNING, logger="fasttrace")
    with OTLPSink(mode=status, retry_after=1) as sink:
        tracer = _tracer(OTLPExporter(sink.url, timeout=2.0))
        load = Load(tracer, f"while-{status}").run(2.0)
        load.check_bounds(8192)
        st = tracer.stats()
        assert st["export_failures"] > 0 or st["dropped"]["reporter_queue_full"] > 0
        if status == "500":
            # not retryable: one request per failed export
            assert st["reporter"]["exporter"]["retries"] == 0
        sink.mode = "up"
        _recovery(tracer, sink)
        tracer.close(10)
        st, lost = _accounted(tracer)
        assert sink.span_count == st["exported"]
    warnings = [r for r in caplog.records if r.name == "fasttrace"]
    assert len(warnings) <= 2.0 / 0.05 + 10
    report(f"faults/http-{status}", spans=load.spans, exported=st["exported"],
           dropped=lost, warnings=len(warnings))


def test_memory_stays_bounded_while_the_backend_is_down():
    # the queue limit, not the backend, decides how much memory waiting spans take
    tracer = _tracer(OTLPExporter(f"http://127.0.0.1:{free_port()}/v1/traces", timeout=0.2),
                     capacity=16384, max_queue_size=QUEUE)
    n = int(300_000 * scale())
    big = "x" * 200
    for i in range(20_000):               # warm-up: reach the steady state
        tracer.start_span("warm", tags={"v": big}).finish()
    rss0 = read_rss_bytes()
    for i in range(n):
        tracer.start_span("op", tags={"v": big, "i": i}).finish()
    rss1 = read_rss_bytes()
    st = tracer.stats()
    assert st["reporter"]["queue_length"] <= QUEUE
    tracer.close(2)
    _accounted(tracer)
    if rss0 and rss1:
        growth = (rss1 - rss0) / 2**20
        # 300,000 spans of ~250 bytes each would be ~75 MB if they piled up
        assert growth < 30, growth
        report("faults/down-memory", spans=n, rss_growth_mb=growth)


def test_jaeger_agent_udp_unreachable_then_listening():
    port = free_port()
    tracer = _tracer(JaegerExporter(agent_host="127.0.0.1", agent_port=port))
    load = Load(tracer, "udp").run(0.5)
    load.check_bounds(8192)
    tracer.flush(5)
    tracer.close(5)
    _accounted(tracer)
    sink = UDPSink()
    try:
        tracer = _tracer(JaegerExporter(agent_host="127.0.0.1", agent_port=sink.port))
        for _ in range(500):
            tracer.start_span("udp-ok").finish()
        assert tracer.flush(5)
        tracer.close(5)
        st, lost = _accounted(tracer)
        assert sink.wait_for(1, timeout=5) and st["exported"] == 500 and lost == 0
    finally:
        sink.close()


# -- secrets --------------------------------------------------------------------------

def _secret_exporters(url):
    headers = {"x-api-key": SECRET, "Authorization": f"Bearer {SECRET}"}
    return [
        OTLPExporter(url, headers=headers, timeout=0.5),
        ZipkinExporter(url.replace("/v1/traces", "/api/v2/spans"), headers=headers,
                       timeout=0.5),
        JaegerExporter(collector_endpoint=url.replace("/v1/traces", "/api/traces"),
                       headers=headers, timeout=0.5),
    ]


@pytest.mark.parametrize("failure", ["down", "500", "401", "429", "hang", "reset"])
def test_exporter_secrets_never_logged(failure, caplog):
    caplog.set_level(logging.DEBUG)
    hole = None
    if failure == "down":
        url, sink = f"http://127.0.0.1:{free_port()}/v1/traces", None
    elif failure == "hang":
        hole, url = blackhole()
        sink = None
    else:
        sink = OTLPSink(mode=failure, retry_after=0)
        url = sink.url
    try:
        for exporter in _secret_exporters(url):
            tracer = fasttrace.Tracer("secretive", reporter=BatchReporter(
                exporter, flush_interval=0.05, exit_timeout=1))
            for _ in range(20):
                tracer.start_span("op").finish()
            tracer.flush(1.5)
            text = repr(exporter) + repr(tracer.stats()) + repr(tracer.reporter)
            tracer.close(1)
            assert SECRET not in text
            if sink is not None and failure != "reset":
                # the headers were really sent: the test would be vacuous otherwise
                assert any(SECRET in str(h) for h in sink.headers_seen)
    finally:
        if sink is not None:
            sink.close()
        if hole is not None:
            hole.close()
    logged = caplog.text + "".join(
        str(r.args) + str(r.exc_info) + str(getattr(r, "exc_text", ""))
        for r in caplog.records)
    assert SECRET not in logged
    assert any(r.name == "fasttrace" for r in caplog.records), "nothing was logged at all"


# -- one exporter call at a time: retries, timeouts, stuck and raising exporters ------

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

# SPDX-License-Identifier: Apache-2.0
"""8 threads x tens of thousands of nested spans through a BatchReporter: every sampled
span is exported or counted as dropped, span ids are unique, parents are right.

FASTTRACE_STRESS_SCALE multiplies the span counts (default 1)."""
import sys
import threading
import time

import pytest

import fasttrace
from fasttrace.exporters import OTLPExporter
from fasttrace.reporting import BatchReporter

from support.recording import RecordingExporter
from support.servers import OTLPSink, report, scale

THREADS = 8


@pytest.fixture(autouse=True)
def frequent_thread_switches():
    # switch threads every 10 microseconds (default 5 ms) so that threads really
    # interleave inside span start / finish / drain
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def _work(tracer, n_roots, depth, expected, errors, barrier):
    """Each root has `depth` nested children (active scopes); records expected parents."""
    local = {}
    try:
        barrier.wait()
        for i in range(n_roots):
            with tracer.start_active_span("root") as root_scope:
                parent = root_scope.span
                local[parent.span_id] = (0, "root")
                scopes = []
                for d in range(depth):
                    sc = tracer.start_active_span(f"child{d}")
                    if d % 2:
                        sc.span.set_tag("i", i)
                    assert sc.span.parent_id == parent.span_id
                    assert sc.span.trace_id == root_scope.span.trace_id
                    local[sc.span.span_id] = (parent.span_id, f"child{d}")
                    scopes.append(sc)
                    parent = sc.span
                for sc in reversed(scopes):
                    sc.close()
            assert tracer.active_span is None
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)
    expected.append(local)


def _hammer(tracer, roots_per_thread, depth):
    expected, errors = [], []
    barrier = threading.Barrier(THREADS)
    threads = [threading.Thread(target=_work, args=(tracer, roots_per_thread, depth,
                                                    expected, errors, barrier))
               for _ in range(THREADS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - t0
    assert not any(t.is_alive() for t in threads), "a recording thread hung"
    assert not errors, errors[:3]
    merged = {}
    for local in expected:
        assert not merged.keys() & local.keys(), "duplicate span id across threads"
        merged.update(local)
    return merged, elapsed


def _accounted(stats):
    """sampled spans == exported + every drop reason (after close, nothing in flight)."""
    dropped = stats["dropped"]
    lost = sum(v for k, v in dropped.items() if k != "arena_full")
    assert stats["arena_open"] == 0 and stats["arena_finished"] == 0, stats
    assert stats["reporter"]["queue_length"] == 0, stats
    assert stats["sampled"] == stats["exported"] + lost, stats
    assert stats["started"] == stats["sampled"] + stats["unsampled"] + dropped["arena_full"]
    return lost


def test_threads_counting_exporter_every_span_accounted_for():
    roots, depth = int(5000 * scale()), 4            # 8 x 25,000 spans
    exporter = RecordingExporter()
    tracer = fasttrace.Tracer("stress", reporter=BatchReporter(
        exporter, flush_interval=0.05, max_batch_size=512, max_queue_size=65536))
    expected, elapsed = _hammer(tracer, roots, depth)
    t0 = time.perf_counter()
    tracer.close(30)
    close_s = time.perf_counter() - t0
    stats = tracer.stats()
    lost = _accounted(stats)
    n = THREADS * roots * (depth + 1)
    assert stats["started"] == n == len(expected)
    rows = exporter.rows
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a span was exported twice"
    assert len(ids) == stats["exported"]
    assert lost == 0, stats["dropped"]            # a fast exporter keeps up
    for sid, parent, _, name in rows:
        assert expected[sid] == (parent, name)
    assert exporter.shutdowns
    report("threads/counting", threads=THREADS, spans=n, seconds=elapsed,
           spans_per_s=n / elapsed, exported=stats["exported"], dropped=lost,
           close_s=close_s)


def test_threads_small_queue_and_failing_exporter_drops_are_counted():
    # a queue far smaller than the burst, an arena that fills, an exporter failing every
    # third call: still every span is exported or counted, never both, never twice
    roots, depth = int(1000 * scale()), 4
    exporter = RecordingExporter(fail_every=3)
    tracer = fasttrace.Tracer("stress", capacity=4096, reporter=BatchReporter(
        exporter, flush_interval=0.05, max_batch_size=256, max_queue_size=1024))
    expected, elapsed = _hammer(tracer, roots, depth)
    tracer.close(30)
    stats = tracer.stats()
    lost = _accounted(stats)
    rows = exporter.rows
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == stats["exported"]
    assert stats["dropped"]["reporter_export_failed"] > 0
    for sid, parent, _, name in rows:
        assert expected[sid] == (parent, name)
    report("threads/failing-exporter", spans=stats["started"], exported=stats["exported"],
           dropped=lost, by_reason={k: v for k, v in stats["dropped"].items() if v})


@pytest.mark.slow
def test_threads_to_a_loopback_otlp_sink():
    roots, depth = int(2000 * scale()), 4             # 8 x 10,000 spans, protobuf over HTTP
    with OTLPSink() as sink:
        tracer = fasttrace.Tracer("stress-otlp", reporter=BatchReporter(
            OTLPExporter(sink.url, timeout=10), flush_interval=0.05, max_batch_size=512,
            # the whole burst fits: the in-process sink competes for the GIL, so the
            # exporter cannot keep up with 8 threads doing nothing but spans
            max_queue_size=max(65536, 2 * THREADS * roots * (depth + 1))))
        expected, elapsed = _hammer(tracer, roots, depth)
        t0 = time.perf_counter()
        assert tracer.flush(60), tracer.stats()["reporter"]
        flush_s = time.perf_counter() - t0
        tracer.close(10)
        stats = tracer.stats()
        lost = _accounted(stats)
        got = sink.snapshot()
    assert lost == 0, stats["dropped"]
    assert not sink.duplicates()
    assert len(got) == stats["exported"] == len(expected)
    for rec in got:
        assert expected[rec.span_id] == (rec.parent_id or 0, rec.name)
        assert rec.service == "stress-otlp"
    report("threads/otlp-sink", spans=len(got), record_s=elapsed,
           spans_per_s=len(got) / elapsed, flush_s=flush_s)

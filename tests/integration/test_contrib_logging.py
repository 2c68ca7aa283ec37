# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.logging.TraceContextFilter."""
import asyncio
import io
import logging
import threading

import opentracing
import pytest

import fasttrace
from fasttrace.contrib.logging import TraceContextFilter


@pytest.fixture
def tracer():
    return fasttrace.Tracer("svc", reporter=fasttrace.InMemoryReporter())


@pytest.fixture
def capture():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s trace=%(trace_id)s span=%(span_id)s"))
    logger = logging.getLogger("test_contrib_logging")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, handler, stream
    logger.removeHandler(handler)


def lines(stream):
    return stream.getvalue().splitlines()


def test_ids_of_the_active_span(tracer, capture):
    logger, handler, stream = capture
    handler.addFilter(TraceContextFilter(tracer))
    logger.info("outside")
    with tracer.start_active_span("work") as scope:
        logger.info("inside")
        with tracer.start_active_span("child") as child:
            logger.info("nested")
    span = scope.span
    assert lines(stream) == [
        "outside trace= span=",
        f"inside trace={span.trace_id:032x} span={span.span_id:016x}",
        f"nested trace={span.trace_id:032x} span={child.span.span_id:016x}",
    ]


def test_record_attributes_and_missing_value(tracer):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert TraceContextFilter(tracer, missing="0").filter(record) is True
    assert (record.trace_id, record.span_id, record.sampled) == ("0", "0", None)
    with tracer.start_active_span("work") as scope:
        TraceContextFilter(tracer).filter(record)
    assert len(record.trace_id) == 32 and len(record.span_id) == 16
    assert int(record.span_id, 16) == scope.span.span_id and record.sampled is True


def test_global_tracer_threads_and_tasks(tracer, capture):
    logger, handler, stream = capture
    handler.addFilter(TraceContextFilter())        # the global tracer, at each record
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    try:
        with tracer.start_active_span("main") as scope:
            thread = threading.Thread(target=logger.info, args=("thread",))
            thread.start()
            thread.join()

            async def task():
                await asyncio.sleep(0)
                logger.info("task")
            asyncio.run(task())
    finally:
        opentracing.set_global_tracer(previous)
    span = scope.span
    # a new thread has its own (empty) context; a task inherits the caller's
    assert lines(stream) == ["thread trace= span=",
                             f"task trace={span.trace_id:032x} span={span.span_id:016x}"]


def test_noop_tracer_and_broken_tracer_never_reject(capture):
    logger, handler, stream = capture

    class Broken(opentracing.Tracer):
        @property
        def active_span(self):
            raise RuntimeError("bug")

    handler.addFilter(TraceContextFilter(opentracing.Tracer()))
    handler.addFilter(TraceContextFilter(Broken()))
    logger.info("still logged")
    assert lines(stream) == ["still logged trace= span="]

# SPDX-License-Identifier: Apache-2.0
"""One OpenTracing error log, with the same field types, wherever an exception is recorded."""
import asyncio
import traceback

import opentracing
import pytest
from opentracing.ext import tags as ext_tags

import fasttrace
from fasttrace.errors import error_fields, exception_type, mark_error


class PaymentDeclined(Exception):
    pass


def _raise():
    raise PaymentDeclined("card 4242 declined")


def _error_log(span):
    assert span.tags[ext_tags.ERROR] is True
    (ts, fields), = span.logs
    return fields


def _check_shape(fields, exc):
    assert set(fields) == {"event", "error.kind", "error.object", "message", "stack"}
    assert fields["event"] == "error"
    assert fields["error.kind"] == "PaymentDeclined"
    assert fields["error.object"] is exc
    assert fields["message"] == "card 4242 declined"
    assert isinstance(fields["stack"], str)
    assert fields["stack"].startswith("Traceback (most recent call last):")
    assert fields["stack"].rstrip().endswith("PaymentDeclined: card 4242 declined")
    assert "_raise" in fields["stack"]


def _record_each_way(tracer):
    """Records the same exception through every path; returns {path: exception}."""
    raised = {}

    def capture(name, fn):
        try:
            fn()
        except PaymentDeclined as exc:
            raised[name] = exc

    def with_span():
        with tracer.start_span("with span"):
            _raise()

    def with_scope():
        with tracer.start_active_span("with scope"):
            _raise()

    @fasttrace.traced("traced", tracer=tracer)
    def decorated():
        _raise()

    @fasttrace.traced("traced async", tracer=tracer)
    async def decorated_async():
        _raise()

    def marked():
        span = tracer.start_span("mark_error")
        try:
            _raise()
        except PaymentDeclined as exc:
            mark_error(span, exc)
            span.finish()
            raise

    def patched_span():
        # a span whose methods a test replaced still records through them
        span = tracer.start_span("patched")
        original = span.log_kv
        span.log_kv = lambda kv, timestamp=None: original(kv, timestamp)
        with span:
            _raise()

    capture("with span", with_span)
    capture("with scope", with_scope)
    capture("traced", decorated)
    capture("traced async", lambda: asyncio.run(decorated_async()))
    capture("mark_error", marked)
    capture("patched", patched_span)
    return raised


def test_every_path_writes_the_same_error_log(tracer, reporter):
    raised = _record_each_way(tracer)
    spans = {s.operation_name: s for s in reporter.spans}
    assert set(spans) == set(raised)
    for name, exc in raised.items():
        _check_shape(_error_log(spans[name]), exc)


def test_the_log_reads_the_same_through_the_testing_tracer_and_mocktracer():
    # MockTracer records what opentracing.Span.__exit__ logs; ours differs only in
    # the two fields the OpenTracing conventions define as text
    from opentracing.mocktracer import MockTracer
    mock = MockTracer()
    with pytest.raises(PaymentDeclined):
        with mock.start_span("x"):
            _raise()
    theirs = mock.finished_spans()[0].logs[0].key_values
    fields = error_fields(PaymentDeclined, theirs["error.object"],
                          theirs["error.object"].__traceback__)
    assert set(fields) == set(theirs)
    assert fields["error.kind"] == theirs["error.kind"].__name__
    assert fields["stack"] == "".join(traceback.format_exception(
        PaymentDeclined, theirs["error.object"], theirs["stack"]))


def test_unprintable_exceptions_and_missing_tracebacks_never_raise():
    class Mute(Exception):
        def __str__(self):
            raise RuntimeError("no")

    fields = error_fields(None, Mute(), None)
    assert fields["error.kind"] == "Mute"
    assert fields["message"] == "<unprintable exception>"
    assert isinstance(fields["stack"], str)


def test_exception_type_is_module_qualified_except_builtins():
    assert exception_type(ValueError) == "ValueError"
    assert exception_type(PaymentDeclined) == f"{__name__}.PaymentDeclined"
    assert exception_type(opentracing.UnsupportedFormatException) == \
        "opentracing.propagation.UnsupportedFormatException"


def test_stack_is_truncated_like_any_log_value(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, max_value_length=64)
    with pytest.raises(PaymentDeclined):
        with tracer.start_span("long"):
            _raise()
    fields = _error_log(reporter.spans[0])
    assert len(fields["stack"]) == 64 and fields["stack"].startswith("Traceback")
    assert tracer.stats()["truncated"]["values"] >= 1


@pytest.mark.parametrize("manager", ["thread-local", "contextvars"])
def test_opentracings_scope_managers_write_the_same_log(reporter, manager):
    # their Scope.__exit__ calls opentracing.Span._on_error, which logs the exception
    # class and the traceback object; the span records the one log shape all the same
    from opentracing.scope_managers import ThreadLocalScopeManager
    from opentracing.scope_managers.contextvars import ContextVarsScopeManager
    cls = ThreadLocalScopeManager if manager == "thread-local" else ContextVarsScopeManager
    tracer = fasttrace.Tracer(reporter=reporter, scope_manager=cls())
    with pytest.raises(PaymentDeclined) as info:
        with tracer.start_active_span("theirs"):
            _raise()
    _check_shape(_error_log(reporter.spans[0]), info.value)


def test_a_traceback_logged_by_hand_becomes_text(tracer, reporter):
    try:
        _raise()
    except PaymentDeclined as exc:
        tb = exc.__traceback__
    span = tracer.start_span("manual")
    span.log_kv({"event": "debug", "where": tb})
    span.finish()
    (_, fields), = reporter.spans[0].logs
    assert fields["event"] == "debug"
    assert isinstance(fields["where"], str) and "_raise" in fields["where"]

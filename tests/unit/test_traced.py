# SPDX-License-Identifier: Apache-2.0
"""@fasttrace.traced (fasttrace.decorators.traced) for functions, coroutines, generators."""
import asyncio

import opentracing
import pytest

import fasttrace
from fasttrace.decorators import traced


@pytest.fixture
def tracer(reporter):
    return fasttrace.Tracer("svc", reporter=reporter)


def by_name(reporter):
    return {s.operation_name: s for s in reporter.spans}


def test_sync_function_names_tags_and_nesting(tracer, reporter):
    @traced(tracer=tracer, tags={"layer": "db"})
    def load(x):
        """Loads."""
        assert tracer.active_span.operation_name.endswith("load")
        return inner(x) + 1

    @traced("inner-op", tracer=tracer)
    def inner(x):
        return x * 2

    with tracer.start_active_span("request") as scope:
        assert load(3) == 7
    assert load.__name__ == "load" and load.__doc__ == "Loads."
    spans = by_name(reporter)
    outer = spans["test_sync_function_names_tags_and_nesting.<locals>.load"]
    assert outer.parent_id == scope.span.span_id and outer.tags == {"layer": "db"}
    assert spans["inner-op"].parent_id == outer.span_id
    assert tracer.active_span is None


def test_bare_decorator_uses_the_global_tracer(reporter):
    @traced
    def work():
        return "done"

    tracer = fasttrace.Tracer("late", reporter=reporter)
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    try:
        assert work() == "done"
    finally:
        opentracing.set_global_tracer(previous)
    [span] = reporter.spans
    assert span.service_name == "late" and span.operation_name.endswith("work")


def test_exception_is_marked_and_reraised_unchanged(tracer, reporter):
    error = KeyError("k")

    @traced("fails", tracer=tracer)
    def fails():
        raise error

    with pytest.raises(KeyError) as info:
        fails()
    assert info.value is error
    [span] = reporter.spans
    assert span.tags["error"] is True
    [(_, fields)] = span.logs
    assert fields["event"] == "error" and fields["error.kind"] == "KeyError"


def test_coroutine_active_across_await(tracer, reporter):
    @traced("fetch", tracer=tracer)
    async def fetch(n):
        before = tracer.active_span
        await asyncio.sleep(0.01)
        assert tracer.active_span is before
        with tracer.start_active_span("io"):
            await asyncio.sleep(0)
        return n

    async def main():
        with tracer.start_active_span("request") as scope:
            results = await asyncio.gather(fetch(1), fetch(2))
            assert tracer.active_span is scope.span
        return scope.span, results

    parent, results = asyncio.run(main())
    assert results == [1, 2]
    fetches = [s for s in reporter.spans if s.operation_name == "fetch"]
    ios = [s for s in reporter.spans if s.operation_name == "io"]
    assert {s.parent_id for s in fetches} == {parent.span_id}
    assert {s.parent_id for s in ios} == {s.span_id for s in fetches}


def test_coroutine_exception_and_cancellation(tracer, reporter):
    @traced("bad", tracer=tracer)
    async def bad():
        await asyncio.sleep(0)
        raise ValueError("no")

    @traced("slow", tracer=tracer)
    async def slow():
        await asyncio.sleep(10)

    async def main():
        with pytest.raises(ValueError):
            await bad()
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    spans = by_name(reporter)
    assert spans["bad"].tags["error"] is True
    assert "error" not in spans["slow"].tags        # cancelled, not failed; but finished


def test_generator_active_only_while_it_runs(tracer, reporter):
    seen = []

    @traced("numbers", tracer=tracer)
    def numbers(n):
        for i in range(n):
            seen.append(tracer.active_span.operation_name)
            received = yield i
            if received:
                seen.append(("sent", received))
        return "end"

    gen = numbers(3)
    assert reporter.spans == []                    # nothing until the first next()
    assert next(gen) == 0
    assert tracer.active_span is None              # not active in the consumer
    assert gen.send("hi") == 1
    assert list(gen) == [2]
    assert seen == ["numbers", ("sent", "hi"), "numbers", "numbers"]
    [span] = reporter.spans
    assert "error" not in span.tags

    def wrapper():
        return (yield from numbers(1))
    w = wrapper()
    next(w)
    with pytest.raises(StopIteration) as stop:
        next(w)
    assert stop.value.value == "end"


def test_generator_closed_early_and_failing(tracer, reporter):
    cleaned = []

    @traced("endless", tracer=tracer)
    def endless():
        try:
            while True:
                yield 1
        finally:
            cleaned.append(tracer.active_span.operation_name)

    @traced("broken", tracer=tracer)
    def broken():
        yield 1
        raise RuntimeError("midway")

    gen = endless()
    next(gen)
    gen.close()
    assert cleaned == ["endless"]
    with pytest.raises(RuntimeError):
        list(broken())

    @traced("catches", tracer=tracer)
    def catches():
        try:
            yield 1
        except ValueError:
            yield "caught"

    gen = catches()
    next(gen)
    assert gen.throw(ValueError("x")) == "caught"
    gen.close()
    spans = by_name(reporter)
    assert "error" not in spans["endless"].tags
    assert spans["broken"].tags["error"] is True
    assert "error" not in spans["catches"].tags


def test_async_generator(tracer, reporter):
    @traced("ticks", tracer=tracer)
    async def ticks(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield (i, tracer.active_span.operation_name)

    async def main():
        out = []
        async for item in ticks(2):
            out.append(item)
            assert tracer.active_span is None
        return out

    assert asyncio.run(main()) == [(0, "ticks"), (1, "ticks")]
    [span] = reporter.spans
    assert span.operation_name == "ticks"


def test_a_broken_tracer_never_breaks_the_function():
    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    @traced(tracer=Broken())
    def f():
        return 1

    @traced(tracer=Broken())
    async def g():
        return 2

    @traced(tracer=Broken())
    def h():
        yield 3

    assert f() == 1 and asyncio.run(g()) == 2 and list(h()) == [3]


def test_bad_arguments():
    with pytest.raises(TypeError):
        traced(42)

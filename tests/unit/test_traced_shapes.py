# SPDX-License-Identifier: Apache-2.0
"""@traced passes keyword arguments through whatever their names, for every shape."""
import asyncio

import fasttrace
from fasttrace.decorators import traced

NAMES = {"manager": 1, "span": 2, "call": 3, "args": 4, "kwargs": 5}


def test_keyword_arguments_named_like_the_wrappers_own_reach_the_function():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer("svc", reporter=reporter)

    @traced("f", tracer=tracer)
    def f(**kw):
        return kw

    @traced("g", tracer=tracer)
    def g(**kw):
        yield kw

    @traced("c", tracer=tracer)
    async def c(**kw):
        return kw

    @traced("ag", tracer=tracer)
    async def ag(**kw):
        yield kw

    async def collect():
        return [item async for item in ag(**NAMES)]

    assert f(**NAMES) == NAMES
    assert list(g(**NAMES)) == [NAMES]
    assert asyncio.run(c(**NAMES)) == NAMES
    assert asyncio.run(collect()) == [NAMES]
    assert sorted(s.operation_name for s in reporter.spans) == ["ag", "c", "f", "g"]

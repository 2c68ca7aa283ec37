# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures for the core tests (tracer, reporter, a tracer factory) and the
loopback servers of tests/support/servers.py (HTTP sinks, an echo backend)."""
import asyncio

import pytest
from opentracing.scope_managers.contextvars import _SCOPE

import fasttrace
from support.servers import HttpSink, echo


@pytest.fixture
def make_tracer():
    """Builds fasttrace.Tracer instances (always sampling, in-memory reporter by default)
    and closes them at the end of the test."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("service_name", "test-svc")
        kwargs.setdefault("sampler", fasttrace.ConstSampler(True))
        kwargs.setdefault("reporter", fasttrace.InMemoryReporter())
        tracer = fasttrace.Tracer(**kwargs)
        made.append(tracer)
        return tracer

    yield make
    for tracer in made:
        tracer.close()


@pytest.fixture
def reporter():
    return fasttrace.InMemoryReporter()


@pytest.fixture
def tracer(make_tracer, reporter):
    return make_tracer(reporter=reporter)


@pytest.fixture
def finished(reporter):
    """finished() -> the reporter's spans; finished(name) -> the one span with that name."""

    def get(name=None):
        spans = reporter.spans
        if name is None:
            return spans
        matching = [s for s in spans if s.operation_name == name]
        assert len(matching) == 1, (name, [s.operation_name for s in spans])
        return matching[0]

    return get


@pytest.fixture
def fresh_asyncio_policy():
    """For tests that call asyncio.run(): it leaves the main thread with "no current
    event loop" set explicitly, which breaks later tests whose libraries call
    asyncio.get_event_loop() (tornado in jaeger-client).  A fresh default policy
    restores the state from before."""
    yield
    if type(asyncio.get_event_loop_policy()) is asyncio.DefaultEventLoopPolicy:
        asyncio.set_event_loop_policy(None)


@pytest.fixture
def http_sink():
    """http_sink(*replies, path="") -> a new HttpSink (see support.servers); all are closed
    at the end of the test."""
    made = []

    def make(*replies, path=""):
        made.append(HttpSink(*replies, path=path))
        return made[-1]

    yield make
    for sink in made:
        sink.close()


@pytest.fixture(scope="module")
def echo_url():
    """The base URL of a loopback backend for HTTP client tests (``support.servers.echo``):
    ``/echo`` returns the request's headers as JSON, ``/status/<n>`` answers n,
    ``/redirect`` redirects to ``/echo``.  One per test module."""
    with HttpSink(echo) as sink:
        yield sink.url


@pytest.fixture(autouse=True)
def each_test_starts_with_no_active_scope():
    """Every contextvars scope manager (fasttrace's and opentracing's) keeps the active
    scope in one ContextVar, and opentracing's harness leaves a scope open on purpose
    (test_close_wrong_order): without this, the next test would start inside it."""
    token = _SCOPE.set(None)
    yield
    _SCOPE.reset(token)

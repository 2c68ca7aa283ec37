# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.httpx: real httpx calls (sync and async) to a real server on loopback."""
import asyncio
import json

import opentracing
import pytest

import fasttrace
import fasttrace.contrib
from fasttrace.contrib import httpx as ft_httpx
from fasttrace.contrib import urllib as ft_urllib

from support.servers import free_port

httpx = pytest.importorskip("httpx")

TIMEOUT = 10


@pytest.fixture(autouse=True)
def clean():
    originals = httpx.Client.send, httpx.AsyncClient.send
    yield
    ft_httpx.uninstrument()
    ft_urllib.uninstrument()
    assert (httpx.Client.send, httpx.AsyncClient.send) == originals


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def check_client_span(span, parent, url, echoed):
    assert span.operation_name == "HTTP GET"
    assert span.trace_id == parent.trace_id and span.parent_id == parent.span_id
    assert span.tags["span.kind"] == "client"
    assert span.tags["component"] == "httpx"
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.url"] == url
    assert span.tags["http.status_code"] == 200
    assert span.tags["peer.ipv4"] == "127.0.0.1"
    assert span.tags["peer.port"] == int(url.split(":")[2].split("/")[0])
    assert echoed["traceparent"] == f"00-{span.trace_id:032x}-{span.span_id:016x}-01"


def test_sync_client(echo_url, tracer, reporter):
    ft_httpx.instrument(tracer)
    with tracer.start_active_span("caller") as scope:
        with httpx.Client() as client:
            echoed = client.get(f"{echo_url}/echo?q=1", timeout=TIMEOUT).json()
    span = [s for s in reporter.spans if s.operation_name != "caller"][0]
    check_client_span(span, scope.span, f"{echo_url}/echo?q=1", echoed)


def test_module_level_functions(echo_url, tracer, reporter):
    ft_httpx.instrument(tracer)
    assert httpx.post(f"{echo_url}/echo", content=b"x", timeout=TIMEOUT).status_code == 200
    [span] = reporter.spans
    assert span.parent_id is None and span.tags["http.method"] == "POST"


def test_async_client_keeps_the_parent_across_await(echo_url, tracer, reporter):
    ft_httpx.instrument(tracer)

    async def main():
        with tracer.start_active_span("caller") as scope:
            async with httpx.AsyncClient() as client:
                first, second = await asyncio.gather(
                    client.get(f"{echo_url}/echo", timeout=TIMEOUT),
                    client.get(f"{echo_url}/echo", timeout=TIMEOUT))
            assert tracer.active_span is scope.span
            return scope.span, first.json(), second.json()

    parent, first, second = run(main())
    spans = [s for s in reporter.spans if s.operation_name != "caller"]
    assert len(spans) == 2
    by_id = {f"{s.span_id:016x}": s for s in spans}
    for echoed in (first, second):
        span = by_id[echoed["traceparent"].split("-")[2]]
        check_client_span(span, parent, f"{echo_url}/echo", echoed)


def test_errors_sync_and_async(echo_url, tracer, reporter):
    ft_httpx.instrument(tracer)
    assert httpx.get(f"{echo_url}/status/500", timeout=TIMEOUT).status_code == 500
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port()}/", timeout=TIMEOUT)

    async def main():
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{echo_url}/status/503")).status_code == 503
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{free_port()}/")
    run(main())
    s500, refused, s503, arefused = reporter.spans
    assert s500.tags["error"] is True and s500.tags["http.status_code"] == 500
    assert s503.tags["error"] is True and s503.tags["http.status_code"] == 503
    for span in (refused, arefused):
        assert span.tags["error"] is True and "http.status_code" not in span.tags
        assert [f["error.kind"] for _, f in span.logs] == ["ConnectError"]


def test_redirect_followed_is_one_span(echo_url, tracer, reporter):
    ft_httpx.instrument(tracer)
    response = httpx.get(f"{echo_url}/redirect", follow_redirects=True, timeout=TIMEOUT)
    [span] = reporter.spans
    assert span.tags["http.status_code"] == 200
    assert response.json()["traceparent"].split("-")[2] == f"{span.span_id:016x}"


def test_streaming_response(echo_url, tracer, reporter):
    ft_httpx.instrument(tracer)
    with httpx.stream("GET", f"{echo_url}/echo", timeout=TIMEOUT) as response:
        body = response.read()
    assert json.loads(body)["traceparent"]
    [span] = reporter.spans
    assert span.tags["http.status_code"] == 200


def test_instrument_twice_and_uninstrument(echo_url, tracer, reporter):
    originals = httpx.Client.send, httpx.AsyncClient.send
    ft_httpx.instrument(tracer)
    ft_httpx.instrument(tracer)
    httpx.get(f"{echo_url}/echo", timeout=TIMEOUT)

    async def one():
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{echo_url}/echo")).json()
    run(one())
    assert len(reporter.spans) == 2
    ft_httpx.uninstrument()
    assert (httpx.Client.send, httpx.AsyncClient.send) == originals
    assert "traceparent" not in httpx.get(f"{echo_url}/echo", timeout=TIMEOUT).json()
    assert "traceparent" not in run(one())
    assert len(reporter.spans) == 2


def test_global_tracer_and_no_double_span_with_urllib(echo_url, reporter):
    ft_urllib.instrument()
    ft_httpx.instrument()
    tracer = fasttrace.Tracer("late", reporter=reporter)
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    try:
        httpx.get(f"{echo_url}/echo", timeout=TIMEOUT)
    finally:
        opentracing.set_global_tracer(previous)
    [span] = reporter.spans
    assert span.service_name == "late" and span.tags["component"] == "httpx"


def test_a_broken_tracer_never_breaks_the_request(echo_url):
    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    fasttrace.contrib.reset_stats()
    ft_httpx.instrument(Broken())
    assert httpx.get(f"{echo_url}/echo", timeout=TIMEOUT).status_code == 200

    async def main():
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{echo_url}/echo")).status_code
    assert run(main()) == 200
    assert fasttrace.contrib.stats()["internal_errors"]["httpx"] == 2

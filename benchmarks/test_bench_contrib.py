# SPDX-License-Identifier: Apache-2.0
"""What the integrations cost per request/call, against the bare application.

Groups ``contrib: ...``; kinds: ``bare`` (no middleware / no decorator), ``noop``
(the integration over ``opentracing.Tracer()``: the cost of the integration's own
Python), ``fasttrace``, and the peers behind the same integration code (``otel-shim``,
``jaeger``) for scale.  Each timed call handles ``OPS`` requests (or calls) whose
incoming headers carry a W3C ``traceparent``, so extraction is part of the cost; the
application does nothing, so what is measured is the tracing around it.
"""
from __future__ import annotations

import asyncio

import pytest

from fasttrace.contrib.asgi import TracingMiddleware as ASGITracing
from fasttrace.contrib.wsgi import TracingMiddleware as WSGITracing
from fasttrace.decorators import traced

from _bench import REPS, bench_loop
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

kinds = pytest.mark.parametrize("kind", ("bare", "noop", "fasttrace", "otel-shim", "jaeger"))


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def environ():
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/users/42", "SCRIPT_NAME": "",
        "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234", "wsgi.url_scheme": "http",
        "HTTP_HOST": "127.0.0.1:8000", "HTTP_ACCEPT": "*/*", "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_TRACEPARENT": PARENT,
    }


@kinds
@pytest.mark.benchmark(group="contrib: WSGI request")
def test_wsgi_middleware(benchmark, make_tracer, kind):
    app = wsgi_app if kind == "bare" else WSGITracing(wsgi_app, tracer=make_tracer(
        "noop" if kind == "bare" else kind))
    env = environ()

    def start_response(status, headers, exc_info=None):
        pass

    def run():
        for _ in REPS:
            body = app(dict(env), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

    bench_loop(benchmark, run)


async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@kinds
@pytest.mark.benchmark(group="contrib: ASGI request")
def test_asgi_middleware(benchmark, make_tracer, kind):
    app = asgi_app if kind == "bare" else ASGITracing(asgi_app, tracer=make_tracer(kind))
    scope = {"type": "http", "method": "GET", "path": "/users/42", "root_path": "",
             "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 8000),
             "client": ("127.0.0.1", 51234),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*"),
                         (b"traceparent", PARENT.encode())]}

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        pass

    async def many():
        for _ in REPS:
            await app(dict(scope), receive, send)

    loop = asyncio.new_event_loop()
    try:
        bench_loop(benchmark, lambda: loop.run_until_complete(many()))
    finally:
        loop.close()


@kinds
@pytest.mark.benchmark(group="contrib: @traced call")
def test_traced_function(benchmark, make_tracer, kind):
    def work(x):
        return x

    fn = work if kind == "bare" else traced("work", tracer=make_tracer(kind))(work)

    def run():
        for i in REPS:
            fn(i)

    bench_loop(benchmark, run)

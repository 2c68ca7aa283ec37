# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.asgi: a Starlette app under a real uvicorn server."""
import asyncio
import threading
import time

import opentracing
import pytest
from opentracing import Format

import fasttrace
import fasttrace.contrib
from fasttrace.contrib.asgi import TracingMiddleware

from support.servers import free_port
from support.waits import wait_spans

starlette = pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402

TIMEOUT = 10


class Uvicorn:
    """An ASGI app under uvicorn on a free loopback port, in a thread."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical",
                                lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def close(self):
        self.server.should_exit = True
        self.thread.join(TIMEOUT)


@pytest.fixture
def tracer(reporter):
    return fasttrace.Tracer("gateway", reporter=reporter)


def make_app(tracer, seen):
    async def user(request):
        before = tracer.active_span
        await asyncio.sleep(0.01)
        after = tracer.active_span
        seen["active"] = (before, after)

        async def in_task():
            await asyncio.sleep(0)
            with tracer.start_active_span("task.work"):
                await asyncio.sleep(0)

        await asyncio.create_task(in_task())
        with tracer.start_active_span("db.load"):
            await asyncio.sleep(0)
        return JSONResponse({"id": request.path_params["user_id"]})

    async def boom(request):
        raise RuntimeError("kaboom")

    async def fail(request):
        return PlainTextResponse("nope", status_code=503)

    async def healthz(request):
        seen["health_active"] = tracer.active_span
        return PlainTextResponse("ok")

    async def stream(request):
        async def chunks():
            for i in range(3):
                span = tracer.active_span
                seen.setdefault("stream", []).append(span.span_id if span else None)
                await asyncio.sleep(0)
                yield f"{i}\n"
        return StreamingResponse(chunks(), media_type="text/plain")

    async def slow_background(request):
        async def later():
            await asyncio.sleep(0.3)
            seen["background_done"] = time.time()
        return PlainTextResponse("queued", background=BackgroundTask(later))

    async def item(request):
        return PlainTextResponse(request.path_params["item_id"])

    return Starlette(routes=[
        Route("/users/{user_id:int}", user),
        Route("/boom", boom),
        Route("/fail", fail),
        Route("/healthz", healthz),
        Route("/stream", stream),
        Route("/background", slow_background),
        Mount("/api", routes=[Route("/items/{item_id}", item)]),
    ])


@pytest.fixture
def server(tracer):
    seen = {}
    app = TracingMiddleware(make_app(tracer, seen), tracer=tracer, excluded_paths=("/healthz",))
    served = Uvicorn(app)
    served.seen = seen
    yield served
    served.close()


def test_server_span_continues_the_callers_trace(server, tracer, reporter):
    parent = tracer.start_span("client")
    headers = {}
    tracer.inject(parent.context, Format.HTTP_HEADERS, headers)
    response = httpx.get(f"{server.url}/users/42?x=1", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200 and response.json() == {"id": 42}
    spans = {s.operation_name: s for s in wait_spans(reporter, 3)}
    span = spans["GET /users/{user_id}"]
    assert span.trace_id == parent.trace_id and span.parent_id == parent.span_id
    assert span.tags["span.kind"] == "server"
    assert span.tags["component"] == "asgi"
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.url"] == f"{server.url}/users/42?x=1"
    assert span.tags["http.status_code"] == 200
    assert span.tags["peer.ipv4"] == "127.0.0.1" and span.tags["peer.port"] > 0
    assert "error" not in span.tags
    before, after = server.seen["active"]
    assert before.span_id == after.span_id == span.span_id      # active across await
    assert spans["task.work"].parent_id == span.span_id          # and in tasks it creates
    assert spans["db.load"].parent_id == span.span_id


def test_exception_and_5xx_are_errors(server, reporter):
    assert httpx.get(f"{server.url}/boom", timeout=TIMEOUT).status_code == 500
    assert httpx.get(f"{server.url}/fail", timeout=TIMEOUT).status_code == 503
    spans = {s.operation_name: s for s in wait_spans(reporter, 2)}
    boom = spans["GET /boom"]
    assert boom.tags["error"] is True and boom.tags["http.status_code"] == 500
    kinds = [fields.get("error.kind") for _, fields in boom.logs]
    assert "RuntimeError" in kinds                 # the exception itself, not just the 500
    fail = spans["GET /fail"]
    assert fail.tags["error"] is True and fail.tags["http.status_code"] == 503
    assert [fields["message"] for _, fields in fail.logs] == ["HTTP 503"]


def test_excluded_paths_are_not_traced(server, reporter):
    assert httpx.get(f"{server.url}/healthz", timeout=TIMEOUT).text == "ok"
    assert httpx.get(f"{server.url}/api/items/abc", timeout=TIMEOUT).text == "abc"
    [span] = wait_spans(reporter, 1)
    assert span.operation_name == "GET /api/items/{item_id}"     # mount prefix + route
    assert server.seen["health_active"] is None


def test_streamed_body_is_produced_under_the_span(server, reporter):
    assert httpx.get(f"{server.url}/stream", timeout=TIMEOUT).text == "0\n1\n2\n"
    [span] = wait_spans(reporter, 1)
    assert span.operation_name == "GET /stream"
    assert server.seen["stream"] == [span.span_id] * 3


def test_span_ends_with_the_body_not_the_background_task(server, reporter):
    started = time.time()
    assert httpx.get(f"{server.url}/background", timeout=TIMEOUT).text == "queued"
    [span] = wait_spans(reporter, 1)
    deadline = time.monotonic() + TIMEOUT
    while "background_done" not in server.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert span.end_ns / 1e9 < server.seen["background_done"]
    assert span.duration_ns < 0.25e9
    assert span.start_ns / 1e9 >= started - 1


def test_unknown_path_uses_the_path(server, reporter):
    assert httpx.get(f"{server.url}/nowhere", timeout=TIMEOUT).status_code == 404
    [span] = wait_spans(reporter, 1)
    assert span.operation_name == "GET /nowhere" and span.tags["http.status_code"] == 404
    assert "error" not in span.tags


def test_corrupted_context_starts_a_new_trace(reporter):
    tracer = fasttrace.Tracer("gateway", reporter=reporter, propagators=("jaeger",))
    fasttrace.contrib.reset_stats()
    served = Uvicorn(TracingMiddleware(make_app(tracer, {}), tracer=tracer))
    try:
        response = httpx.get(f"{served.url}/fail", headers={"uber-trace-id": "zz:zz"},
                             timeout=TIMEOUT)
    finally:
        served.close()
    assert response.status_code == 503
    [span] = wait_spans(reporter, 1)
    assert span.parent_id is None
    assert fasttrace.contrib.stats()["corrupted_context"]["asgi"] == 1


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def test_websocket_and_lifespan_pass_through_untraced(tracer, reporter):
    calls = []

    async def app(scope, receive, send):
        calls.append((scope["type"], tracer.active_span))

    middleware = TracingMiddleware(app, tracer=tracer)

    async def main():
        async def receive():
            return {}

        async def send(message):
            pass
        await middleware({"type": "lifespan"}, receive, send)
        await middleware({"type": "websocket", "path": "/ws", "headers": []}, receive, send)

    _run(main())
    assert calls == [("lifespan", None), ("websocket", None)]
    assert reporter.spans == []


def test_app_returning_without_a_response_and_global_tracer(reporter):
    async def app(scope, receive, send):
        return None

    middleware = TracingMiddleware(app)
    tracer = fasttrace.Tracer("late", reporter=reporter)
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    try:
        async def main():
            async def receive():
                return {"type": "http.request"}

            async def send(message):
                pass
            await middleware({"type": "http", "method": "PUT", "path": "/x", "headers": [],
                              "scheme": "http", "server": ("example.org", 8080)},
                             receive, send)
        _run(main())
    finally:
        opentracing.set_global_tracer(previous)
    [span] = reporter.spans
    assert span.service_name == "late" and span.operation_name == "PUT /x"
    assert span.tags["http.url"] == "http://example.org:8080/x"
    assert "http.status_code" not in span.tags


def test_exception_before_the_response_is_reraised(tracer, reporter):
    async def app(scope, receive, send):
        await asyncio.sleep(0)
        raise LookupError("nothing here")

    async def main():
        async def receive():
            return {"type": "http.request"}

        async def send(message):
            pass
        with pytest.raises(LookupError):
            await TracingMiddleware(app, tracer=tracer)(
                {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", b"h")]},
                receive, send)
        assert tracer.active_span is None
    _run(main())
    [span] = reporter.spans
    assert span.tags["error"] is True
    assert [f["error.kind"] for _, f in span.logs] == ["LookupError"]


def test_a_broken_tracer_never_breaks_the_request():
    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    async def main():
        async def receive():
            return {"type": "http.request"}

        async def send(message):
            sent.append(message)
        await TracingMiddleware(app, tracer=Broken())(
            {"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send)

    fasttrace.contrib.reset_stats()
    _run(main())
    assert sent[-1]["body"] == b"served"
    assert fasttrace.contrib.stats()["internal_errors"]["asgi"] == 1

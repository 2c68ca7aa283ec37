# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.django: a Django project configured here (this module is its URLconf),
through Django's test clients (sync and async) and behind real servers on loopback
(wsgiref with the WSGI handler, uvicorn with the ASGI handler) called by instrumented
requests / httpx clients.

Django's settings can be configured once per process: this module configures a minimal
project only if nobody has, and every test overrides what it needs (``MIDDLEWARE``,
``ROOT_URLCONF``, ``FASTTRACE_TRACER``, ``FASTTRACE_EXCLUDED_PATHS``) with
``override_settings``, which restores it (and clears the URL caches) afterwards."""
import asyncio
import re
import threading
import time
import wsgiref.simple_server

import opentracing
import pytest
from opentracing import Format

import fasttrace
import fasttrace.contrib

from support.servers import Serving, free_port
from support.waits import wait_spans

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="fasttrace-tests",
        INSTALLED_APPS=[],
        DATABASES={},
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()

from django.core.exceptions import PermissionDenied  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import (HttpResponse, HttpResponseServerError, JsonResponse,  # noqa: E402
                         StreamingHttpResponse)
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import include, path, re_path  # noqa: E402

from fasttrace.contrib.django import TracingMiddleware  # noqa: E402

TIMEOUT = 10
MIDDLEWARE = "fasttrace.contrib.django.TracingMiddleware"

# -- the project: views and URLconf ------------------------------------------------------

seen = {}
current = {}      # the test's tracer, for the views' own spans


def _active():
    span = current["tracer"].scope_manager.active
    return span.span if span is not None else None


def item_detail(request, pk):
    seen["item"] = _active()
    with current["tracer"].start_active_span("db.load"):
        pass
    return JsonResponse({"id": pk})


async def async_item(request, pk):
    seen["async_before"] = _active()
    await asyncio.sleep(0)
    seen["async_after"] = _active()
    with current["tracer"].start_active_span("db.load"):
        await asyncio.sleep(0)
    return JsonResponse({"id": pk})


def boom(request):
    raise RuntimeError("kaboom")


async def async_boom(request):
    raise RuntimeError("async kaboom")


def fail(request):
    return HttpResponseServerError("nope")


def forbidden(request):
    raise PermissionDenied("no")


def healthz(request):
    seen["health"] = _active()
    return HttpResponse("ok")


def stream(request):
    def chunks():
        for i in range(3):
            span = _active()
            seen.setdefault("stream", []).append(span.span_id if span else None)
            yield f"{i}\n"
    return StreamingHttpResponse(chunks(), content_type="text/plain")


def async_stream(request):
    async def chunks():
        for i in range(3):
            span = _active()
            seen.setdefault("stream", []).append(span.span_id if span else None)
            await asyncio.sleep(0)
            yield f"{i}\n"
    return StreamingHttpResponse(chunks(), content_type="text/plain")


def own_traceresponse(request):
    response = HttpResponse("ok")
    response["TraceResponse"] = "00-stale"
    return response


class ItemView:
    """A class-based view without django.views (the view tag is its dotted name)."""

    @classmethod
    def as_view(cls):
        def view(request, pk):
            return HttpResponse(str(pk))
        view.view_class = cls
        return view


urlpatterns = [
    path("items/<int:pk>", item_detail, name="item-detail"),
    path("async/items/<int:pk>", async_item),
    path("boom", boom),
    path("async/boom", async_boom),
    path("fail", fail),
    path("forbidden", forbidden),
    path("healthz", healthz),
    path("stream", stream),
    path("async/stream", async_stream),
    path("own", own_traceresponse),
    path("api/", include([path("cbv/<slug:pk>", ItemView.as_view())])),
    re_path(r"^legacy/(?P<pk>[0-9]+)$", item_detail),
]


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture
def project(make_tracer):
    """project(tracer=None, excluded=("/healthz",)) -> the tracer, with the settings
    overridden for the rest of the test."""
    overrides = []
    seen.clear()
    current.clear()

    def make(tracer=None, excluded=("/healthz", "/static/*")):
        tracer = tracer or make_tracer()
        current["tracer"] = tracer
        override = override_settings(MIDDLEWARE=[MIDDLEWARE], ROOT_URLCONF=__name__,
                                     FASTTRACE_TRACER=tracer,
                                     FASTTRACE_EXCLUDED_PATHS=list(excluded))
        override.enable()
        overrides.append(override)
        return tracer

    yield make
    for override in reversed(overrides):
        override.disable()
    current.clear()


def client():
    return Client(raise_request_exception=False)


def async_get(url, **kwargs):
    async def main():
        return await AsyncClient(raise_request_exception=False).get(url, **kwargs)
    return asyncio.run(main())


def spans_of(tracer):
    tracer.flush()
    return {s.operation_name: s for s in tracer.reporter.spans}


def server_span(tracer):
    tracer.flush()
    [span] = [s for s in tracer.reporter.spans if s.tags.get("span.kind") == "server"]
    return span


# -- the test clients -------------------------------------------------------------------

def test_span_named_by_the_route_with_the_view_and_active_in_it(project):
    tracer = project()
    parent = tracer.start_span("caller")
    headers = {}
    tracer.inject(parent.context, Format.HTTP_HEADERS, headers)
    response = client().get("/items/42?x=1", headers=headers)
    assert response.status_code == 200 and response.json() == {"id": 42}
    spans = spans_of(tracer)
    span = spans["GET /items/<int:pk>"]
    assert span.trace_id == parent.trace_id and span.parent_id == parent.span_id
    assert span.tags["span.kind"] == "server"
    assert span.tags["component"] == "django"
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.url"] == "http://testserver/items/42?x=1"
    assert span.tags["http.status_code"] == 200
    assert span.tags["peer.ipv4"] == "127.0.0.1"
    assert span.tags["django.view"] == f"{__name__}.item_detail"
    assert span.tags["django.url_name"] == "item-detail"
    assert "error" not in span.tags
    assert seen["item"].span_id == span.span_id
    assert spans["db.load"].parent_id == span.span_id


def test_async_view_under_the_async_client(project, fresh_asyncio_policy):
    tracer = project()
    response = async_get("/async/items/7")
    assert response.status_code == 200 and response.json() == {"id": 7}
    spans = spans_of(tracer)
    span = spans["GET /async/items/<int:pk>"]
    assert span.tags["django.view"] == f"{__name__}.async_item"
    assert span.tags["http.status_code"] == 200 and span.parent_id is None
    assert seen["async_before"].span_id == span.span_id
    assert seen["async_after"].span_id == span.span_id
    assert spans["db.load"].parent_id == span.span_id


def test_sync_view_under_the_async_client_and_async_view_under_the_sync_one(
        project, fresh_asyncio_policy):
    tracer = project()
    assert async_get("/items/3").status_code == 200
    assert client().get("/async/items/4").status_code == 200
    tracer.flush()
    spans = {s.operation_name: s for s in tracer.reporter.spans
             if s.tags.get("span.kind") == "server"}
    assert seen["item"].span_id == spans["GET /items/<int:pk>"].span_id
    assert seen["async_after"].span_id == spans["GET /async/items/<int:pk>"].span_id


def test_the_middleware_is_a_coroutine_under_an_async_chain():
    async def get_response(request):
        return HttpResponse("ok")

    assert asyncio.iscoroutinefunction(TracingMiddleware(get_response))
    assert not asyncio.iscoroutinefunction(TracingMiddleware(lambda request: None))


@pytest.mark.parametrize("url,name", [
    ("/api/cbv/abc", "GET /api/cbv/<slug:pk>"),
    ("/legacy/12", "GET /legacy/(?P<pk>[0-9]+)"),
])
def test_included_and_regex_routes(project, url, name):
    tracer = project()
    assert client().get(url).status_code == 200
    span = server_span(tracer)
    assert span.operation_name == name
    if "cbv" in url:
        assert span.tags["django.view"] == f"{__name__}.ItemView"


def test_a_404_is_unmatched_and_no_error(project):
    tracer = project()
    assert client().get("/nothing/here/123").status_code == 404
    span = server_span(tracer)
    assert span.operation_name == "GET <unmatched>"
    assert span.tags["http.status_code"] == 404 and "error" not in span.tags
    assert "django.view" not in span.tags


@pytest.mark.parametrize("url,async_client", [("/boom", False), ("/async/boom", True),
                                              ("/boom", True)])
def test_an_exception_is_an_error_with_its_log(project, url, async_client,
                                                fresh_asyncio_policy):
    tracer = project()
    response = async_get(url) if async_client else client().get(url)
    assert response.status_code == 500
    span = server_span(tracer)
    assert span.operation_name == f"GET {url}"
    assert span.tags["error"] is True and span.tags["http.status_code"] == 500
    [log] = [fields for _, fields in span.logs if fields.get("event") == "error"]
    assert log["error.kind"] == "RuntimeError"
    assert "kaboom" in log["message"] and "Traceback" in log["stack"]
    assert isinstance(log["error.object"], RuntimeError)


def test_a_5xx_is_an_error_and_a_4xx_exception_is_not(project):
    tracer = project()
    assert client().get("/fail").status_code == 500
    assert client().get("/forbidden").status_code == 403
    spans = spans_of(tracer)
    failed, forbidden = spans["GET /fail"], spans["GET /forbidden"]
    assert failed.tags["error"] is True
    assert [fields["message"] for _, fields in failed.logs] == ["HTTP 500"]
    assert "error" not in forbidden.tags and forbidden.tags["http.status_code"] == 403


def test_excluded_paths_are_not_traced(project):
    tracer = project(excluded=("/healthz", re.compile(r"/items/\d+")))
    assert client().get("/healthz").status_code == 200
    assert client().get("/items/5").status_code == 200
    tracer.flush()
    # only the view's own span (a root: no server span was active)
    assert [(s.operation_name, s.parent_id) for s in tracer.reporter.spans] == [
        ("db.load", None)]
    assert seen["health"] is None and seen["item"] is None


def test_a_streaming_response_ends_when_its_content_is_produced(project):
    tracer = project()
    response = client().get("/stream")
    assert response.streaming
    tracer.flush()
    assert tracer.reporter.spans == []                  # still producing
    assert b"".join(response.streaming_content) == b"0\n1\n2\n"
    span = server_span(tracer)
    assert span.operation_name == "GET /stream" and span.tags["http.status_code"] == 200
    assert seen["stream"] == [span.span_id] * 3


def test_a_streaming_response_closed_early_ends_its_span(project):
    tracer = project()
    response = client().get("/stream")
    response.close()
    span = server_span(tracer)
    assert span.operation_name == "GET /stream"


def test_an_async_streaming_response(project, fresh_asyncio_policy):
    tracer = project()

    async def main():
        response = await AsyncClient().get("/async/stream")
        return b"".join([chunk async for chunk in response.streaming_content])
    assert asyncio.run(main()) == b"0\n1\n2\n"
    span = server_span(tracer)
    assert span.operation_name == "GET /async/stream"
    assert seen["stream"] == [span.span_id] * 3


def test_the_tracer_setting_may_be_a_callable_or_a_dotted_path(project, make_tracer):
    tracer = make_tracer()
    project(tracer=tracer)
    with override_settings(FASTTRACE_TRACER=lambda: tracer):
        assert client().get("/items/1").status_code == 200
    global DOTTED_TRACER
    DOTTED_TRACER = tracer
    with override_settings(FASTTRACE_TRACER=f"{__name__}.DOTTED_TRACER"):
        assert client().get("/items/2").status_code == 200
    tracer.flush()
    assert [s.operation_name for s in tracer.reporter.spans
            if s.tags.get("span.kind") == "server"] == ["GET /items/<int:pk>"] * 2


DOTTED_TRACER = None


def test_without_the_setting_the_global_tracer(project, make_tracer, monkeypatch):
    tracer = make_tracer()
    project(tracer=tracer)
    monkeypatch.setattr(opentracing, "tracer", tracer)
    with override_settings():
        del settings.FASTTRACE_TRACER
        assert client().get("/items/1?x").status_code == 200
    span = server_span(tracer)
    assert span.operation_name == "GET /items/<int:pk>"
    assert span.tags["http.url"] == "http://testserver/items/1?x"


def test_a_broken_tracer_never_breaks_a_request(project):
    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    fasttrace.contrib.reset_stats()
    project(tracer=Broken(), excluded=())
    response = client().get("/healthz")
    assert response.status_code == 200 and response.content == b"ok"
    assert fasttrace.contrib.stats()["internal_errors"]["django"] == 1


# -- traceresponse ------------------------------------------------------------------------

def flags_of(value):
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", value), value
    return value[-2:]


@pytest.mark.parametrize("url,status,flags", [
    ("/items/1", 200, "00"), ("/nothing", 404, "00"), ("/forbidden", 403, "00"),
    ("/fail", 500, "01"), ("/boom", 500, "01"), ("/own", 200, "00"), ("/stream", 200, "00")])
def test_the_server_sends_traceresponse(project, tail_tracer, url, status, flags):
    tracer = project(tracer=tail_tracer())
    response = client().get(url)
    assert response.status_code == status
    value = response.headers["traceresponse"]           # the view's own is replaced
    assert flags_of(value) == flags
    if response.streaming:
        b"".join(response.streaming_content)
    span = server_span(tracer) if flags == "01" else None
    if span is not None:
        assert value == f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
        assert span.tags["sampling.decision"] == "error"


def test_no_traceresponse_without_tail_sampling(project):
    project()
    assert client().get("/own").headers["TraceResponse"] == "00-stale"


# -- real servers, instrumented clients ----------------------------------------------------

class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Uvicorn:
    """An ASGI app under uvicorn on a free loopback port, in a thread the test stops."""

    def __init__(self, app):
        uvicorn = pytest.importorskip("uvicorn")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]),
            log_level="critical", lifespan="off", access_log=False))
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


def test_wsgi_server_continues_the_requests_clients_trace(project):
    requests = pytest.importorskip("requests")
    from fasttrace.contrib import requests as ft_requests
    tracer = project()
    served = Serving(wsgiref.simple_server.make_server("127.0.0.1", 0, WSGIHandler(),
                                                       handler_class=_Quiet))
    ft_requests.instrument(tracer)
    try:
        with tracer.start_active_span("job"):
            ok = requests.get(f"{served.url}/items/9", timeout=TIMEOUT)
            failed = requests.get(f"{served.url}/boom", timeout=TIMEOUT)
            health = requests.get(f"{served.url}/healthz", timeout=TIMEOUT)
    finally:
        ft_requests.uninstrument()
        served.close()
    assert (ok.status_code, failed.status_code, health.status_code) == (200, 500, 200)
    spans = wait_spans(tracer.reporter, 7)
    clients = [s for s in spans if s.operation_name == "HTTP GET"]
    servers = {s.operation_name: s for s in spans if s.tags.get("span.kind") == "server"}
    assert len(clients) == 3 and sorted(servers) == ["GET /boom", "GET /items/<int:pk>"]
    by_id = {s.span_id: s for s in clients}
    for server in servers.values():
        client_span = by_id[server.parent_id]          # the server is the client's child
        assert server.trace_id == client_span.trace_id
        assert server.tags["http.url"].startswith(served.url)
        assert server.tags["peer.ipv4"] == "127.0.0.1"
    assert servers["GET /boom"].tags["error"] is True
    assert seen["item"].span_id == servers["GET /items/<int:pk>"].span_id
    assert seen["health"] is None


def test_asgi_server_continues_the_httpx_clients_trace(project, tail_tracer):
    httpx = pytest.importorskip("httpx")
    from fasttrace.contrib import httpx as ft_httpx
    gateway, service = tail_tracer(), tail_tracer()
    project(tracer=service)
    served = Uvicorn(ASGIHandler())
    ft_httpx.instrument(gateway)
    try:
        def call(path):                              # one trace per request
            with gateway.start_active_span("job"):
                return httpx.get(served.url + path, timeout=TIMEOUT)
        ok, failed, sync = call("/async/items/5"), call("/async/boom"), call("/items/6")
    finally:
        ft_httpx.uninstrument()
        served.close()
    assert (ok.status_code, failed.status_code, sync.status_code) == (200, 500, 200)
    assert flags_of(ok.headers["traceresponse"]) == "00"
    assert flags_of(failed.headers["traceresponse"]) == "01"
    # the service kept the failing request's trace and told the gateway, which keeps
    # its client span of it too
    gateway.flush()
    service.flush()
    [server] = [s for s in service.reporter.spans if s.tags.get("span.kind") == "server"]
    assert server.operation_name == "GET /async/boom"
    assert server.tags["error"] is True and server.tags["component"] == "django"
    kept = [s for s in gateway.reporter.spans if s.operation_name == "HTTP GET"]
    assert [s.span_id for s in kept] == [server.parent_id]
    assert kept[0].trace_id == server.trace_id
    assert seen["async_after"] is not None and seen["item"] is not None


def test_a_corrupted_header_starts_a_new_trace(project, make_tracer):
    tracer = project(tracer=make_tracer(propagators=("jaeger",)))
    fasttrace.contrib.reset_stats()
    response = client().get("/items/1", headers={"uber-trace-id": "not:a:valid"})
    assert response.status_code == 200
    assert server_span(tracer).parent_id is None
    assert fasttrace.contrib.stats()["corrupted_context"].get("django") == 1


def test_an_exception_django_propagates_still_ends_the_span(project):
    tracer = project()
    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True):
        with pytest.raises(RuntimeError, match="kaboom"):
            client().get("/boom")
    span = server_span(tracer)
    assert span.operation_name == "GET /boom" and span.tags["error"] is True
    assert [fields["error.kind"] for _, fields in span.logs] == ["RuntimeError"]

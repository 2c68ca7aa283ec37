# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.aiohttp: real aiohttp.web servers on loopback and real
ClientSessions: server and client spans, propagation both ways, errors, excluded paths,
instrument()/uninstrument(), and traceresponse with tail sampling across a hop."""
import asyncio
import contextlib
import json
import re

import pytest

import fasttrace
import fasttrace.contrib

from support.servers import free_port
from support.tail import decisions, malformed

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from fasttrace.contrib import aiohttp as ft_aiohttp  # noqa: E402

TIMEOUT = 10
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=TIMEOUT)
SEEN = web.AppKey("seen", list) if hasattr(web, "AppKey") else "seen"


@contextlib.asynccontextmanager
async def serve(app):
    """`app` served on 127.0.0.1 (a free port): yields its base URL; stopped on exit."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def run(fresh_asyncio_policy):
    """run(coroutine function): awaited in a fresh event loop, with a deadline."""
    def go(main):
        async def bounded():
            return await asyncio.wait_for(main(), 3 * TIMEOUT)
        return asyncio.run(bounded())
    return go


def app_for(tracer, hook="setup", **options):
    """An app whose handlers note the active span (``app[SEEN]``)."""
    app = web.Application()
    seen = app[SEEN] = []

    def note():
        span = tracer.active_span
        seen.append(getattr(span, "span_id", None))

    async def user(request):
        note()
        await asyncio.sleep(0)                    # still active after an await
        note()
        await asyncio.create_task(child())
        return web.json_response({"id": request.match_info["id"],
                                  "headers": dict(request.headers)})

    async def child():
        with tracer.start_active_span("child"):
            note()

    async def fail(request):
        note()
        raise ValueError("handler failed")

    async def status(request):
        code = int(request.match_info["code"])
        if request.query.get("raise"):
            raise _http_error(code)
        return web.Response(status=code, text="s", headers={"TraceResponse": "00-stale"})

    async def keep(request):
        tracer.keep_trace(tracer.active_span.context)
        return web.Response(text="kept")

    async def stream(request):
        response = web.StreamResponse()
        await response.prepare(request)
        note()
        await response.write(b"chunk")
        return response

    async def health(request):
        note()
        return web.Response(text="ok")

    app.router.add_get("/users/{id}", user)
    app.router.add_get("/fail", fail)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/keep", keep)
    app.router.add_get("/stream", stream)
    app.router.add_get("/healthz", health)
    app.router.add_get("/static/{name}", health)
    if hook == "setup":
        ft_aiohttp.setup(app, tracer=tracer, **options)
    else:
        app.middlewares.append(ft_aiohttp.middleware(tracer=tracer, **options))
    return app


def _http_error(code):
    for kind in (web.HTTPNotFound, web.HTTPServiceUnavailable, web.HTTPFound):
        if kind.status_code == code:
            return kind(location="/") if kind is web.HTTPFound else kind()
    raise AssertionError(code)


async def get(url, **session_options):
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT, **session_options) as session:
        async with session.get(url, allow_redirects=False) as response:
            return response.status, dict(response.headers), await response.read()


def the(tracer, name):
    tracer.flush()
    matching = [s for s in tracer.reporter.spans if s.operation_name == name]
    assert len(matching) == 1, (name, [s.operation_name for s in tracer.reporter.spans])
    return matching[0]


# -- server spans ----------------------------------------------------------------------

@pytest.mark.parametrize("hook", ["setup", "middleware"])
def test_server_span_is_named_by_the_route_and_active_in_the_handler(make_tracer, run, hook):
    tracer = make_tracer()
    app = app_for(tracer, hook)

    async def main():
        async with serve(app) as url:
            return url, await get(url + "/users/7?x=1")
    url, (status, _, _) = run(main)
    assert status == 200
    span = the(tracer, "GET /users/{id}")
    child = the(tracer, "child")
    assert span.parent_id is None and child.parent_id == span.span_id
    assert app[SEEN] == [span.span_id, span.span_id, child.span_id]
    tags = span.tags
    assert tags["span.kind"] == "server" and tags["component"] == "aiohttp"
    assert tags["http.method"] == "GET" and tags["http.url"] == url + "/users/7?x=1"
    assert tags["http.status_code"] == 200 and "error" not in tags
    assert tags["peer.ipv4"] == "127.0.0.1" and tags["peer.port"] > 0


def test_no_route_uses_the_path_and_a_4xx_is_no_error(make_tracer, run):
    tracer = make_tracer()

    async def main():
        async with serve(app_for(tracer)) as url:
            assert (await get(url + "/nope"))[0] == 404
            assert (await get(url + "/status/404?raise=1"))[0] == 404
            assert (await get(url + "/status/302?raise=1"))[0] == 302
    run(main)
    spans = {(s.operation_name, s.tags["http.status_code"]) for s in tracer.reporter.spans}
    assert spans == {("GET /nope", 404), ("GET /status/{code}", 404),
                     ("GET /status/{code}", 302)}
    assert not any("error" in s.tags for s in tracer.reporter.spans)


def test_errors_exceptions_and_5xx(make_tracer, run):
    tracer = make_tracer()

    async def main():
        async with serve(app_for(tracer)) as url:
            assert (await get(url + "/fail"))[0] == 500
            assert (await get(url + "/status/503"))[0] == 503
            assert (await get(url + "/status/503?raise=1"))[0] == 503
    run(main)
    tracer.flush()
    failed = the(tracer, "GET /fail")
    assert failed.tags["error"] is True and failed.tags["http.status_code"] == 500
    assert [f["error.kind"] for _, f in failed.logs] == ["ValueError"]
    returned, raised = [s for s in tracer.reporter.spans
                        if s.operation_name == "GET /status/{code}"]
    for span in (returned, raised):
        assert span.tags["error"] is True and span.tags["http.status_code"] == 503
    assert returned.logs[0][1]["message"] == "HTTP 503"
    assert raised.logs[0][1]["error.kind"] == "HTTPServiceUnavailable"


def test_excluded_paths_and_operation_name(make_tracer, run):
    tracer = make_tracer()
    app = app_for(tracer, excluded_paths=("/healthz", "/static/*", re.compile(r"/x+")),
                  operation_name=lambda request: f"op {request.method}")

    async def main():
        async with serve(app) as url:
            for path in ("/healthz", "/static/a.css", "/xxx", "/users/1"):
                await get(url + path)
    run(main)
    assert [s.operation_name for s in tracer.reporter.spans
            if s.operation_name != "child"] == ["op GET"]
    assert app[SEEN][:2] == [None, None]      # nothing active on the excluded paths


def test_corrupted_header_starts_a_new_trace(make_tracer, run):
    tracer = make_tracer(propagators=("jaeger",))
    fasttrace.contrib.reset_stats()

    async def main():
        async with serve(app_for(tracer)) as url:
            assert (await get(url + "/healthz", headers={"uber-trace-id": "zz:zz"}))[0] == 200
    run(main)
    assert the(tracer, "GET /healthz").parent_id is None
    assert fasttrace.contrib.stats()["corrupted_context"]["aiohttp"] == 1


# -- client spans and propagation ---------------------------------------------------------

def test_our_client_to_our_server_carries_the_trace(make_tracer, run):
    propagators = ("tracecontext", "jaeger", "baggage")
    client_tracer = make_tracer(service_name="gateway", propagators=propagators)
    server_tracer = make_tracer(service_name="service", propagators=propagators)

    async def main():
        async with serve(app_for(server_tracer)) as url:
            with client_tracer.start_active_span("job") as scope:
                scope.span.set_baggage_item("user", "zoë")
                status, _, body = await get(
                    url + "/users/3", trace_configs=[ft_aiohttp.trace_config(client_tracer)])
            return url, status, body, scope.span
    url, status, body, job = run(main)
    assert status == 200
    headers = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    client = the(client_tracer, "HTTP GET")
    server = the(server_tracer, "GET /users/{id}")
    assert client.parent_id == job.span_id
    assert server.parent_id == client.span_id and server.trace_id == client.trace_id
    assert headers["traceparent"] == f"00-{client.trace_id:032x}-{client.span_id:016x}-01"
    assert headers["uber-trace-id"].startswith(f"{client.trace_id:032x}:{client.span_id:016x}")
    assert "user=" in headers["baggage"]
    tags = client.tags
    assert tags["span.kind"] == "client" and tags["component"] == "aiohttp"
    assert tags["http.method"] == "GET" and tags["http.url"] == url + "/users/3"
    assert tags["http.status_code"] == 200 and "error" not in tags
    assert tags["peer.ipv4"] == "127.0.0.1" and tags["peer.port"] == int(url.rsplit(":", 1)[1])


def test_client_errors(make_tracer, run):
    tracer = make_tracer()
    config = ft_aiohttp.trace_config(tracer)
    closed = f"http://127.0.0.1:{free_port()}/"

    async def main():
        async with serve(app_for(make_tracer())) as url:
            assert (await get(url + "/status/503", trace_configs=[config]))[0] == 503
        with pytest.raises(aiohttp.ClientConnectionError):
            await get(closed, trace_configs=[config])
    run(main)
    tracer.flush()
    answered, refused = tracer.reporter.spans
    assert answered.tags["error"] is True and answered.tags["http.status_code"] == 503
    assert refused.tags["error"] is True and "http.status_code" not in refused.tags
    assert refused.logs[0][1]["error.kind"].startswith("ClientConnector")
    assert refused.tags["http.url"] == closed


def test_credentials_never_reach_the_url_tag(make_tracer, run):
    tracer = make_tracer()

    async def main():
        async with serve(app_for(make_tracer())) as url:
            secret = url.replace("http://", "http://user:secret@") + "/healthz"
            await get(secret, trace_configs=[ft_aiohttp.trace_config(tracer)])
            return url
    url = run(main)
    assert the(tracer, "HTTP GET").tags["http.url"] == url + "/healthz"


def test_instrument_and_uninstrument(make_tracer, run):
    tracer = make_tracer()
    original = aiohttp.ClientSession.__init__

    async def main():
        async with serve(app_for(make_tracer())) as url:
            ft_aiohttp.instrument(tracer)
            try:
                assert ft_aiohttp.is_instrumented()
                async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as made_while_on:
                    await get(url + "/healthz")                                 # 1 span
                    await get(url + "/healthz",                                 # not twice
                              trace_configs=[ft_aiohttp.trace_config(tracer)])
                    ft_aiohttp.instrument(tracer)                               # idempotent
                    await get(url + "/healthz")                                 # 1 span
                    ft_aiohttp.uninstrument()
                    await get(url + "/healthz")                                 # none
                    async with made_while_on.get(url + "/healthz") as response:  # off too
                        await response.read()
            finally:
                ft_aiohttp.uninstrument()
            assert not ft_aiohttp.is_instrumented()
    run(main)
    tracer.flush()
    assert [s.operation_name for s in tracer.reporter.spans] == ["HTTP GET"] * 3
    assert aiohttp.ClientSession.__init__ is original


# -- traceresponse with tail sampling ------------------------------------------------------

def flags_of(value):
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", value), value
    return value[-2:]


@pytest.mark.parametrize("path,status,flags", [
    ("/healthz", 200, "00"), ("/status/404", 404, "00"), ("/status/404?raise=1", 404, "00"),
    ("/status/503", 503, "01"), ("/status/503?raise=1", 503, "01"), ("/fail", 500, "01"),
    ("/keep", 200, "01"), ("/stream", 200, "00")])
def test_the_server_sends_traceresponse(tail_tracer, run, path, status, flags):
    tracer = tail_tracer()

    async def main():
        async with serve(app_for(tracer)) as url:
            return await get(url + path)
    got, headers, _ = run(main)
    assert got == status
    values = [v for k, v in headers.items() if k.lower() == "traceresponse"]
    assert len(values) == 1 and flags_of(values[0]) == flags    # the handler's is replaced
    if flags == "01":
        [server] = [s for s in tracer.reporter.spans if s.operation_name != "child"]
        assert values[0] == f"00-{server.trace_id:032x}-{server.span_id:016x}-01"


def test_the_middleware_alone_cannot_reach_what_aiohttp_sends_itself(tail_tracer, run):
    # without setup()'s prepare hook: aiohttp's own 500 and a response the handler
    # prepared itself go out before the middleware sees them
    tracer = tail_tracer()

    async def main():
        async with serve(app_for(tracer, hook="middleware")) as url:
            return [await get(url + p) for p in ("/healthz", "/fail", "/stream")]
    (_, ok, _), (_, failed, _), (_, streamed, _) = run(main)
    assert flags_of(ok["traceresponse"]) == "00"
    assert "traceresponse" not in failed and "traceresponse" not in streamed


def test_no_traceresponse_without_tail_sampling(make_tracer, run):
    tracer = make_tracer()

    async def main():
        async with serve(app_for(tracer)) as url:
            return await get(url + "/status/503")
    _, headers, _ = run(main)
    assert headers["TraceResponse"] == "00-stale"                  # the handler's own


def teller(value_for):
    """An app without fasttrace answering ``traceresponse: value_for(trace id hex)``."""
    async def answer(request):
        trace_hex = request.headers["traceparent"].split("-")[1]
        value = value_for(trace_hex)
        return web.Response(text="ok", headers={} if value is None else {
            "traceresponse": value})
    app = web.Application()
    app.router.add_get("/", answer)
    return app


SPAN_HEX = "00f067aa0ba902b7"
CASES = {
    "sampled": (lambda t: f"00-{t}-{SPAN_HEX}-01", {("job", "downstream"),
                                                   ("HTTP GET", "downstream")}, 0),
    "not-sampled": (lambda t: f"00-{t}-{SPAN_HEX}-00", set(), 0),
    "absent": (lambda t: None, set(), 0),
    "other-trace": (lambda t: f"00-{'1' * 32}-{SPAN_HEX}-01", set(), 0),
    "uppercase": (lambda t: f"00-{t.upper()}-{SPAN_HEX.upper()}-01", set(), 1),
    "garbage": (lambda t: "kept please", set(), 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_client_follows_traceresponse(tail_tracer, run, case):
    value_for, kept, bad = CASES[case]
    tracer = tail_tracer()
    before = malformed()

    async def main():
        async with serve(teller(value_for)) as url:
            with tracer.start_active_span("job"):
                await get(url + "/", trace_configs=[ft_aiohttp.trace_config(tracer)])
    run(main)
    assert decisions(tracer) == kept
    assert malformed() == before + bad


@pytest.mark.parametrize("path,service,gateway", [
    ("/keep", {("GET /keep", "downstream")},
     {("GET /hop", "downstream"), ("HTTP GET", "downstream")}),
    ("/fail", {("GET /fail", "error")}, {("GET /hop", "error"), ("HTTP GET", "error")}),
    ("/healthz", set(), set())])
def test_one_hop_across_services_with_tail_sampling(tail_tracer, run, path, service, gateway):
    """caller (no tracer) -> gateway (its own tracer: a server span, and an instrumented
    client) -> service: what the service keeps, the gateway keeps too."""
    gateway_tracer, service_tracer = tail_tracer(), tail_tracer()

    async def main():
        async with serve(app_for(service_tracer)) as service_url:
            async def hop(request):
                async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
                    async with session.get(service_url + path) as response:
                        await response.read()
                        return web.Response(text=str(response.status))
            gateway_app = web.Application()
            gateway_app.router.add_get("/hop", hop)
            ft_aiohttp.setup(gateway_app, tracer=gateway_tracer)
            # the caller's session is made before instrument(): it stays untraced
            async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as caller:
                ft_aiohttp.instrument(gateway_tracer)
                try:
                    async with serve(gateway_app) as gateway_url:
                        async with caller.get(gateway_url + "/hop") as response:
                            return response.status, dict(response.headers), \
                                await response.read()
                finally:
                    ft_aiohttp.uninstrument()
    status, headers, body = run(main)
    assert status == 200 and body == (b"500" if path == "/fail" else b"200")
    assert decisions(service_tracer) == service
    assert decisions(gateway_tracer) == gateway
    # the gateway tells its own caller too
    assert flags_of(headers["traceresponse"]) == ("01" if gateway else "00")
    if gateway:
        client = the(gateway_tracer, "HTTP GET")
        [server] = [s for s in service_tracer.reporter.spans if s.operation_name != "child"]
        assert server.parent_id == client.span_id and server.trace_id == client.trace_id


# -- failures and cancellation ----------------------------------------------------------

def test_a_broken_tracer_never_breaks_a_request(run):
    import opentracing

    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    fasttrace.contrib.reset_stats()
    broken = Broken()

    async def main():
        async with serve(app_for(broken)) as url:
            return await get(url + "/healthz", trace_configs=[ft_aiohttp.trace_config(broken)])
    status, _, body = run(main)
    assert status == 200 and body == b"ok"
    assert fasttrace.contrib.stats()["internal_errors"]["aiohttp"] == 2


@pytest.mark.skipif(tuple(map(int, aiohttp.__version__.split(".")[:2])) < (3, 9),
                    reason="handler_cancellation needs aiohttp >= 3.9")
def test_a_cancelled_handler_ends_its_span_without_an_error(make_tracer, run):
    tracer = make_tracer()

    async def main():
        entered, cancelled = asyncio.Event(), asyncio.Event()

        async def hang(request):
            entered.set()
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()
        app = web.Application()
        app.router.add_get("/hang", hang)
        ft_aiohttp.setup(app, tracer=tracer)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            host, port = runner.addresses[0][:2]
            request = asyncio.create_task(get(f"http://{host}:{port}/hang"))
            await asyncio.wait_for(entered.wait(), TIMEOUT)
            request.cancel()                     # the client goes away
            with pytest.raises(asyncio.CancelledError):
                await request
            await asyncio.wait_for(cancelled.wait(), TIMEOUT)
        finally:
            await runner.cleanup()
    run(main)
    span = the(tracer, "GET /hang")
    assert "error" not in span.tags and "http.status_code" not in span.tags

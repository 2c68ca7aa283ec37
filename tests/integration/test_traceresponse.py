# SPDX-License-Identifier: Apache-2.0
"""traceresponse, one integration at a time: what the servers send (WSGI, ASGI, the gRPC
trailer, next to the handler's own trailing metadata), what the clients do with what
they get back (requests, httpx, urllib, gRPC unary and streaming), the codec's strict
grammar, and the failures that must not reach the host."""
import asyncio
import threading
import wsgiref.util
from concurrent import futures

import pytest

import fasttrace
import fasttrace.contrib
from fasttrace._w3c import format_traceresponse, parse_traceresponse
from fasttrace.contrib import httpx as ft_httpx
from fasttrace.contrib import requests as ft_requests
from fasttrace.contrib import urllib as ft_urllib
from fasttrace.contrib.asgi import TracingMiddleware as ASGITracing
from fasttrace.contrib.wsgi import TracingMiddleware as WSGITracing

from support.tail import decisions, malformed
from support.waits import wait_for

grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")
from fasttrace.contrib.grpc import client_interceptor, server_interceptor  # noqa: E402

TIMEOUT = 10
TRACE = 0x0AF7651916CD43DD8448EB211C80319C
SPAN = 0xB7AD6B7169203331


# -- the codec ------------------------------------------------------------------------

def test_format_and_parse_round_trip():
    value = format_traceresponse(TRACE, SPAN, True)
    assert value == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert format_traceresponse(TRACE, SPAN, False)[-3:] == "-00"
    assert parse_traceresponse(value) == (TRACE, SPAN, 1)
    assert parse_traceresponse(" " + value + "\t") == (TRACE, SPAN, 1)     # HTTP OWS
    assert parse_traceresponse(None) is None
    with pytest.raises(ValueError):
        format_traceresponse(0, SPAN, True)


GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MALFORMED = [
    GOOD.upper(),                                    # uppercase hex
    "01" + GOOD[2:],                                 # another version
    "ff" + GOOD[2:],
    GOOD + "-00",                                    # extra field
    GOOD[:-1],                                       # short
    "00-" + "0" * 32 + GOOD[35:],                    # zero trace id
    GOOD[:36] + "0" * 16 + GOOD[52:],                # zero span id
    GOOD[:-2] + "0x",                                # flags not hex
    GOOD.replace("-", "_"),
    GOOD + ", " + GOOD,                              # the header twice, joined
    "",
    "café",
    b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ["a", "b"],
]


@pytest.mark.parametrize("value", MALFORMED, ids=range(len(MALFORMED)))
def test_parse_is_strict_and_counts_what_it_ignores(value):
    before = malformed()
    assert parse_traceresponse(value) is None
    assert malformed() == before + 1


# -- servers: WSGI and ASGI -----------------------------------------------------------

def wsgi_call(app, path="/"):
    environ = {"PATH_INFO": path}
    wsgiref.util.setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers

    body = app(environ, start_response)
    try:
        b"".join(body)
    finally:
        body.close()
    return seen["status"], dict(seen["headers"])


def wsgi_app(tracer, status="200 OK", keep=False, headers=()):
    """A WSGI app that notes its server span's context (and, with `keep`, marks the
    trace kept as a callee would)."""
    def app(environ, start_response):
        app.context = tracer.active_span.context
        if keep:
            tracer.keep_trace(app.context)
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return [b"x"]
    return app


def expected(context, flags):
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"


def test_wsgi_sends_traceresponse_only_with_tail_sampling(make_tracer, tail_tracer):
    plain = make_tracer()
    _, headers = wsgi_call(WSGITracing(wsgi_app(plain), tracer=plain))
    assert "traceresponse" not in {k.lower() for k in headers}
    tracer = tail_tracer()
    app = wsgi_app(tracer)
    _, headers = wsgi_call(WSGITracing(app, tracer=tracer))
    assert headers["traceresponse"] == expected(app.context, "00")


@pytest.mark.parametrize("status,keep,flags", [
    ("200 OK", False, "00"), ("404 Not Found", False, "00"),
    ("500 Internal Server Error", False, "01"), ("503 Unavailable", False, "01"),
    ("200 OK", True, "01"),                 # a callee kept it: downstream
])
def test_wsgi_flags(tail_tracer, status, keep, flags):
    tracer = tail_tracer()
    app = wsgi_app(tracer, status, keep)
    assert wsgi_call(WSGITracing(app, tracer=tracer))[1]["traceresponse"] == \
        expected(app.context, flags)


def test_wsgi_latency_verdict_is_taken_when_the_headers_go_out(tail_tracer, monkeypatch):
    # the server span started long ago (its start time set, not waited for): by the
    # time start_response is called it is over the threshold
    tracer = tail_tracer(latency_ms=10)
    original = tracer.start_span

    def start_span(*args, **kwargs):
        return original(*args, start_time=1_700_000_000.0, **kwargs)
    monkeypatch.setattr(tracer, "start_span", start_span)
    app = wsgi_app(tracer)
    _, headers = wsgi_call(WSGITracing(app, tracer=tracer))
    assert headers["traceresponse"] == expected(app.context, "01")
    assert decisions(tracer) == {("GET /", "latency")}


@pytest.mark.parametrize("drained,flags", [(False, "00"), (True, "01")])
def test_an_error_child_span_counts_for_the_verdict_only_once_drained(tail_tracer, drained,
                                                                     flags):
    # the documented limit: the verdict sees an error on a finished child span only if
    # the tracer has drained it when the headers go out (a 5xx always counts); the
    # trace is kept here as "error" either way when its local root finishes
    tracer = tail_tracer()

    def app(environ, start_response):
        app.context = tracer.active_span.context
        tracer.start_span("db", tags={"error": True}).finish()
        if drained:
            tracer.flush()
        start_response("200 OK", [])
        return [b""]
    _, headers = wsgi_call(WSGITracing(app, tracer=tracer))
    assert headers["traceresponse"] == expected(app.context, flags)
    assert decisions(tracer) == {("GET /", "error"), ("db", "error")}


def test_wsgi_verdict_uses_the_route_name_for_per_operation_latency(tail_tracer,
                                                                    monkeypatch):
    flask = pytest.importorskip("flask")
    tracer = tail_tracer(latency_ms_by_operation={"GET /users/{user_id}": 10})
    original = tracer.start_span

    def start_span(*args, **kwargs):
        return original(*args, start_time=1_700_000_000.0, **kwargs)
    monkeypatch.setattr(tracer, "start_span", start_span)
    app = flask.Flask("routes")

    @app.route("/users/<int:user_id>")
    def user(user_id):
        app.context = tracer.active_span.context
        return "x"
    app.wsgi_app = WSGITracing(app.wsgi_app, tracer=tracer)
    _, headers = wsgi_call(app, "/users/7")
    assert headers["traceresponse"] == expected(app.context, "01")
    assert decisions(tracer) == {("GET /users/{user_id}", "latency")}


def test_wsgi_replaces_a_traceresponse_the_app_set(tail_tracer):
    tracer = tail_tracer()
    app = wsgi_app(tracer, headers=[("TraceResponse", "00-stale")])
    _, headers = wsgi_call(WSGITracing(app, tracer=tracer))
    assert "TraceResponse" not in headers
    assert headers["traceresponse"] == expected(app.context, "00")


def test_a_failing_verdict_never_breaks_the_response(tail_tracer, monkeypatch):
    tracer = tail_tracer()
    fasttrace.contrib.reset_stats()

    def boom(span, error=False):
        raise RuntimeError("verdict broke")
    monkeypatch.setattr(tracer, "tail_verdict", boom)
    app = wsgi_app(tracer)
    status, headers = wsgi_call(WSGITracing(app, tracer=tracer))
    assert status == "200 OK" and "traceresponse" not in headers
    assert fasttrace.contrib.stats()["internal_errors"] == {"wsgi": 1}


def asgi_call(app, path="/"):
    scope = {"type": "http", "method": "GET", "path": path, "headers": [],
             "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 80)}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def asgi_app(tracer, status=200, keep=False):
    async def app(scope, receive, send):
        app.context = tracer.active_span.context
        if keep:
            tracer.keep_trace(app.context)
        app.start = {"type": "http.response.start", "status": status,
                     "headers": [(b"content-type", b"text/plain"),
                                 (b"traceresponse", b"00-stale")]}
        await send(app.start)
        await send({"type": "http.response.body", "body": b"x"})
    return app


@pytest.mark.usefixtures("fresh_asyncio_policy")
@pytest.mark.parametrize("status,keep,flags", [
    (200, False, "00"), (500, False, "01"), (200, True, "01")])
def test_asgi_flags(tail_tracer, status, keep, flags):
    tracer = tail_tracer()
    app = asgi_app(tracer, status, keep)
    start = asgi_call(ASGITracing(app, tracer=tracer))[0]
    assert start["headers"] == [(b"content-type", b"text/plain"),
                                (b"traceresponse", expected(app.context, flags).encode())]
    # the application's own message is left as it was
    assert app.start["headers"][1] == (b"traceresponse", b"00-stale")


@pytest.mark.usefixtures("fresh_asyncio_policy")
def test_asgi_sends_nothing_without_tail_sampling(make_tracer):
    tracer = make_tracer()
    app = asgi_app(tracer)
    start = asgi_call(ASGITracing(app, tracer=tracer))[0]
    assert start is app.start


# -- servers: gRPC trailing metadata ---------------------------------------------------

class Greeter:
    """A gRPC server whose handlers set trailing metadata of their own."""

    def __init__(self, tracer):
        self.tracer = tracer
        self.contexts = []
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             interceptors=[server_interceptor(tracer)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Greeter", {
            "Say": grpc.unary_unary_rpc_method_handler(self.say),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
        }),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.server = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def say(self, request, context):
        self.contexts.append(self.tracer.active_span.context)
        context.set_trailing_metadata((("own", "1"), ("own-bin", b"\x00\x01")))
        if request == b"raise":
            raise ValueError("handler failed")
        if request == b"abort":
            context.abort(grpc.StatusCode.NOT_FOUND, "nothing")
        if request == b"status":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        return b"hi"

    def count(self, request, context):
        self.contexts.append(self.tracer.active_span.context)
        context.set_trailing_metadata((("own", "2"),))
        for i in range(3):
            yield str(i).encode()
        if request == b"raise":
            raise RuntimeError("stream broke")

    def close(self):
        self.channel.close()
        self.server.stop(None).wait(TIMEOUT)


@pytest.fixture
def greeter(request):
    made = []

    def make(tracer):
        made.append(Greeter(tracer))
        return made[-1]
    yield make
    for g in made:
        g.close()


def trailers(call):
    return [(k, v) for k, v in call.trailing_metadata()]


@pytest.mark.parametrize("request_,flags", [
    (b"ok", "00"), (b"raise", "01"), (b"abort", "01"), (b"status", "01")])
def test_grpc_trailer_keeps_the_handlers_own_metadata(tail_tracer, greeter, request_, flags):
    g = greeter(tail_tracer())
    say = g.channel.unary_unary("/t.Greeter/Say")
    try:
        _, call = say.with_call(request_, timeout=TIMEOUT)
    except grpc.RpcError as exc:
        call = exc
    assert trailers(call) == [("own", "1"), ("own-bin", b"\x00\x01"),
                              ("traceresponse", expected(g.contexts[0], flags))]


@pytest.mark.parametrize("request_,flags", [(b"ok", "00"), (b"raise", "01")])
def test_grpc_trailer_on_a_response_stream(tail_tracer, greeter, request_, flags):
    g = greeter(tail_tracer())
    call = g.channel.unary_stream("/t.Greeter/Count")(request_, timeout=TIMEOUT)
    try:
        assert list(call) == [b"0", b"1", b"2"]
    except grpc.RpcError:
        pass
    assert trailers(call) == [("own", "2"), ("traceresponse", expected(g.contexts[0], flags))]


def test_grpc_sends_no_trailer_without_tail_sampling(make_tracer, greeter):
    g = greeter(make_tracer())
    _, call = g.channel.unary_unary("/t.Greeter/Say").with_call(b"ok", timeout=TIMEOUT)
    assert trailers(call) == [("own", "1"), ("own-bin", b"\x00\x01")]


# -- clients: HTTP ---------------------------------------------------------------------

def answering(value_for):
    """An HttpSink reply carrying ``traceresponse: value_for(trace id hex)`` (the trace id
    read from the request's traceparent); value_for returning None sends none."""
    def reply(handler):
        trace_hex = handler.headers["traceparent"].split("-")[1]
        value = value_for(trace_hex)
        return 200, ({} if value is None else {"traceresponse": value}), b"ok"
    return reply


def call_requests(url):
    requests.get(url, timeout=TIMEOUT)


def call_httpx(url):
    httpx.get(url, timeout=TIMEOUT)


def call_httpx_async(url):
    async def go():
        async with httpx.AsyncClient() as client:
            await client.get(url, timeout=TIMEOUT)
    asyncio.run(go())


def call_urllib(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        response.read()


CLIENTS = {"requests": (ft_requests, call_requests), "httpx": (ft_httpx, call_httpx),
           "httpx-async": (ft_httpx, call_httpx_async), "urllib": (ft_urllib, call_urllib)}


@pytest.fixture(params=sorted(CLIENTS))
def client(request, fresh_asyncio_policy):
    module, call = CLIENTS[request.param]
    instrumented = []

    def instrument(tracer):
        module.instrument(tracer)
        instrumented.append(module)
        return call
    yield instrument
    for m in instrumented:
        m.uninstrument()


SPAN_HEX = "00f067aa0ba902b7"
CASES = {
    "sampled": (lambda t: f"00-{t}-{SPAN_HEX}-01", {("job", "downstream"),
                                                   ("HTTP GET", "downstream")}, 0),
    "other-flags-bits": (lambda t: f"00-{t}-{SPAN_HEX}-03", {("job", "downstream"),
                                                            ("HTTP GET", "downstream")}, 0),
    "not-sampled": (lambda t: f"00-{t}-{SPAN_HEX}-00", set(), 0),
    "absent": (lambda t: None, set(), 0),
    "other-trace": (lambda t: f"00-{'1' * 32}-{SPAN_HEX}-01", set(), 0),
    "uppercase": (lambda t: f"00-{t.upper()}-{SPAN_HEX.upper()}-01", set(), 1),
    "version-01": (lambda t: f"01-{t}-{SPAN_HEX}-01", set(), 1),
    "zero-span": (lambda t: f"00-{t}-{'0' * 16}-01", set(), 1),
    "garbage": (lambda t: "kept please", set(), 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_http_clients_follow_a_valid_sampled_traceresponse_of_their_trace(
        tail_tracer, http_sink, client, case):
    value_for, kept, bad = CASES[case]
    tracer = tail_tracer()
    call = client(tracer)
    sink = http_sink(answering(value_for))
    before = malformed()
    with tracer.start_active_span("job"):
        call(sink.url + "/work")
    assert decisions(tracer) == kept
    assert malformed() == before + bad
    if not kept:
        assert tracer.stats()["tail_sampling"]["traces_discarded"] == 1


def test_http_client_ignores_traceresponse_without_tail_sampling(make_tracer, http_sink):
    tracer = make_tracer()
    ft_requests.instrument(tracer)
    try:
        before = malformed()
        with tracer.start_active_span("job"):
            call_requests(http_sink(answering(lambda t: "garbage")).url)
    finally:
        ft_requests.uninstrument()
    assert malformed() == before                     # not even parsed
    assert len(tracer.reporter.spans) == 2


def test_a_response_after_the_trace_was_discarded_is_counted_too_late(tail_tracer, http_sink):
    tracer = tail_tracer()
    release = threading.Event()
    respond = answering(lambda t: f"00-{t}-{SPAN_HEX}-01")

    def late(handler):
        assert release.wait(TIMEOUT)
        return respond(handler)
    sink = http_sink(late)
    root = tracer.start_span("job")
    done = threading.Event()

    def client_thread():
        with tracer.scope_manager.activate(root, False):
            call_requests(sink.url)
        done.set()
    ft_requests.instrument(tracer)
    try:
        thread = threading.Thread(target=client_thread, daemon=True)
        thread.start()
        assert wait_for(lambda: sink.requests, TIMEOUT)   # the request is out, unanswered
        root.finish()
        tracer.flush()                                    # the trace is discarded here
        assert tracer.stats()["tail_sampling"]["traces_discarded"] == 1
        release.set()
        assert done.wait(TIMEOUT)
        thread.join(TIMEOUT)
    finally:
        ft_requests.uninstrument()
    # the root is gone; what the mark still reaches (the client span, drained after it)
    # is kept, and the trace is counted once, as kept
    assert {decision for _, decision in decisions(tracer)} == {"downstream"}
    tail = tracer.stats()["tail_sampling"]
    assert tail["downstream_too_late"] == 1 and tail["late_spans"] == 1
    assert tail["traces_discarded"] == 0 and tail["kept"]["downstream"] == 1


# -- clients: gRPC ---------------------------------------------------------------------

class Teller:
    """A gRPC server without fasttrace that answers with the traceresponse trailer a
    test asks for (built from the call's traceparent)."""

    def __init__(self, value_for):
        def trailer(context):
            carrier = dict(context.invocation_metadata())
            value = value_for(carrier["traceparent"].split("-")[1])
            if value is not None:
                context.set_trailing_metadata((("other", "x"), ("traceresponse", value)))

        def say(request, context):
            trailer(context)
            if request == b"fail":
                context.abort(grpc.StatusCode.INTERNAL, "failed")
            return b"hi"

        def count(request, context):
            yield b"1"
            yield b"2"
            trailer(context)

        def total(requests_, context):
            trailer(context)
            return b"+".join(requests_)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Teller", {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Total": grpc.stream_unary_rpc_method_handler(total),
            "Chat": grpc.stream_stream_rpc_method_handler(
                lambda requests_, context: count(None, context)),
        }),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def close(self):
        self.channel.close()
        self.server.stop(None).wait(TIMEOUT)


def grpc_shapes(channel):
    return {
        "unary": lambda: channel.unary_unary("/t.Teller/Say")(b"x", timeout=TIMEOUT),
        "unary-future": lambda: channel.unary_unary("/t.Teller/Say").future(
            b"x", timeout=TIMEOUT).result(),
        "unary-failed": lambda: channel.unary_unary("/t.Teller/Say")(b"fail", timeout=TIMEOUT),
        "unary-stream": lambda: list(channel.unary_stream("/t.Teller/Count")(
            b"x", timeout=TIMEOUT)),
        "stream-unary": lambda: channel.stream_unary("/t.Teller/Total")(
            iter([b"a", b"b"]), timeout=TIMEOUT),
        "stream-stream": lambda: list(channel.stream_stream("/t.Teller/Chat")(
            iter([b"a"]), timeout=TIMEOUT)),
    }


@pytest.mark.parametrize("shape", ["unary", "unary-future", "unary-failed", "unary-stream",
                                   "stream-unary", "stream-stream"])
@pytest.mark.parametrize("case", ["sampled", "not-sampled", "other-trace", "uppercase"])
def test_grpc_client_follows_the_traceresponse_trailer(tail_tracer, shape, case):
    value_for, kept, bad = CASES[case]
    tracer = tail_tracer()
    teller = Teller(value_for)
    try:
        channel = grpc.intercept_channel(teller.channel, client_interceptor(tracer))
        before = malformed()
        with tracer.start_active_span("job"):
            try:
                grpc_shapes(channel)[shape]()
            except grpc.RpcError:
                assert shape == "unary-failed"
            # the client span ends in grpc's done callback, which (for a future or a
            # stream) may run just after the caller has its result: wait for it
            assert wait_for(lambda: tracer.stats()["finished"] == 1, TIMEOUT)
    finally:
        teller.close()
    name = {"unary": "Say", "unary-future": "Say", "unary-failed": "Say",
            "unary-stream": "Count", "stream-unary": "Total", "stream-stream": "Chat"}[shape]
    if kept:
        expected_decision = "error" if shape == "unary-failed" else "downstream"
        assert decisions(tracer) == {("job", expected_decision),
                                     (f"t.Teller/{name}", expected_decision)}
    else:
        assert decisions(tracer) == (
            {("job", "error"), (f"t.Teller/{name}", "error")} if shape == "unary-failed"
            else set())
    assert malformed() == before + bad


def test_grpc_client_counts_a_trailer_sent_twice():
    from fasttrace.contrib.grpc import _trailer

    class Call:
        def trailing_metadata(self):
            return (("traceresponse", GOOD), ("other", "x"), ("TraceResponse", GOOD))
    before = malformed()
    assert _trailer(Call()) == [GOOD, GOOD]
    assert parse_traceresponse(_trailer(Call())) is None
    assert malformed() == before + 1

# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.wsgi: a Flask app and plain WSGI apps behind real WSGI servers."""
import time
import wsgiref.simple_server
import wsgiref.util

import opentracing
import pytest
from opentracing import Format

import fasttrace
import fasttrace.contrib
from fasttrace.contrib.wsgi import TracingMiddleware

from support.servers import Serving
from support.waits import wait_spans

flask = pytest.importorskip("flask")
requests = pytest.importorskip("requests")
from werkzeug.serving import make_server  # noqa: E402

TIMEOUT = 10


def serve(app, server="werkzeug"):
    """A WSGI app on a free loopback port (werkzeug's threaded server, or wsgiref's), served
    from a thread until the test closes it."""
    if server == "werkzeug":
        return Serving(make_server("127.0.0.1", 0, app, threaded=True))

    class Quiet(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, *args):
            pass
    return Serving(wsgiref.simple_server.make_server("127.0.0.1", 0, app,
                                                     handler_class=Quiet))


@pytest.fixture
def tracer(reporter):
    return fasttrace.Tracer("gateway", reporter=reporter)


def make_flask_app(tracer, seen):
    app = flask.Flask("wsgi_test")

    @app.route("/users/<int:user_id>")
    def user(user_id):
        seen["active"] = tracer.active_span
        with tracer.start_active_span("db.load"):
            pass
        return {"id": user_id}

    @app.route("/boom")
    def boom():
        raise RuntimeError("kaboom")

    @app.route("/fail")
    def fail():
        return "nope", 503

    @app.route("/healthz")
    def healthz():
        seen["health_active"] = tracer.active_span
        return "ok"

    @app.route("/stream")
    def stream():
        def chunks():
            for i in range(3):
                span = tracer.active_span
                seen.setdefault("stream", []).append(span.span_id if span else None)
                yield f"{i}\n"
        return flask.Response(chunks(), mimetype="text/plain")

    return app


@pytest.fixture
def flask_server(tracer):
    seen = {}
    app = make_flask_app(tracer, seen)
    app.wsgi_app = TracingMiddleware(app.wsgi_app, tracer=tracer,
                                     excluded_paths=("/healthz", "/static/*"))
    served = serve(app)
    served.seen = seen
    yield served
    served.close()


def test_server_span_continues_the_callers_trace(flask_server, tracer, reporter):
    parent = tracer.start_span("client")
    headers = {}
    tracer.inject(parent.context, Format.HTTP_HEADERS, headers)
    response = requests.get(f"{flask_server.url}/users/42?x=1", headers=headers,
                            timeout=TIMEOUT)
    assert response.status_code == 200 and response.json() == {"id": 42}
    spans = {s.operation_name: s for s in wait_spans(reporter, 2)}
    server = spans["GET /users/{user_id}"]
    assert server.trace_id == parent.trace_id
    assert server.parent_id == parent.span_id
    assert server.tags["span.kind"] == "server"
    assert server.tags["component"] == "wsgi"
    assert server.tags["http.method"] == "GET"
    assert server.tags["http.url"] == f"{flask_server.url}/users/42?x=1"
    assert server.tags["http.status_code"] == 200
    assert server.tags["peer.ipv4"] == "127.0.0.1"
    assert isinstance(server.tags["peer.port"], int) and server.tags["peer.port"] > 0
    assert "error" not in server.tags
    # the span was active in the handler: the handler's own span is its child
    assert flask_server.seen["active"].span_id == server.span_id
    db = spans["db.load"]
    assert db.parent_id == server.span_id and db.trace_id == server.trace_id


def test_request_without_context_starts_a_trace(flask_server, reporter):
    assert requests.get(f"{flask_server.url}/users/7", timeout=TIMEOUT).status_code == 200
    server = [s for s in wait_spans(reporter, 2) if s.operation_name.startswith("GET")][0]
    assert server.parent_id is None


def test_corrupted_context_starts_a_new_trace_and_is_counted(reporter):
    tracer = fasttrace.Tracer("gateway", reporter=reporter, propagators=("jaeger",))
    fasttrace.contrib.reset_stats()
    app = flask.Flask("corrupt")
    app.route("/")(lambda: "fine")
    app.wsgi_app = TracingMiddleware(app.wsgi_app, tracer=tracer)
    served = serve(app)
    try:
        response = requests.get(served.url + "/", headers={"uber-trace-id": "not:a:valid"},
                                timeout=TIMEOUT)
    finally:
        served.close()
    assert response.status_code == 200 and response.text == "fine"
    [span] = wait_spans(reporter, 1)
    assert span.parent_id is None and span.operation_name == "GET /"
    assert fasttrace.contrib.stats()["corrupted_context"]["wsgi"] == 1


def test_flask_exception_and_5xx_are_errors(flask_server, reporter):
    assert requests.get(f"{flask_server.url}/boom", timeout=TIMEOUT).status_code == 500
    assert requests.get(f"{flask_server.url}/fail", timeout=TIMEOUT).status_code == 503
    spans = {s.operation_name: s for s in wait_spans(reporter, 2)}
    for name, code in (("GET /boom", 500), ("GET /fail", 503)):
        span = spans[name]
        assert span.tags["error"] is True
        assert span.tags["http.status_code"] == code
        assert any(fields.get("event") == "error" for _, fields in span.logs)


def test_exception_from_the_app_is_logged_and_reraised(tracer, reporter):
    def app(environ, start_response):
        raise KeyError("missing")

    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    middleware = TracingMiddleware(app, tracer=tracer)
    with pytest.raises(KeyError, match="missing"):
        middleware(environ, lambda *a: None)
    [span] = reporter.spans
    assert span.tags["error"] is True
    [(_, fields)] = span.logs
    assert fields["event"] == "error" and fields["error.kind"] == "KeyError"
    assert "missing" in fields["message"]


def test_exception_while_producing_the_body(tracer, reporter):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"first"
            raise ValueError("half way")
        return body()

    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    body = TracingMiddleware(app, tracer=tracer)(environ, lambda *a: None)
    chunks = []
    with pytest.raises(ValueError):
        for chunk in body:
            chunks.append(chunk)
    body.close()
    assert chunks == [b"first"]
    [span] = reporter.spans
    assert span.tags["error"] is True and span.tags["http.status_code"] == 200


def test_span_finishes_when_the_body_is_closed(tracer, reporter):
    closed = []

    class Body:
        def __iter__(self):
            yield tracer.active_span.operation_name.encode()

        def close(self):
            closed.append(tracer.active_span is not None)

    def app(environ, start_response):
        start_response("201 Created", [])
        return Body()

    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["PATH_INFO"] = "/things"
    environ["REQUEST_METHOD"] = "POST"
    body = TracingMiddleware(app, tracer=tracer)(environ, lambda *a: None)
    assert tracer.active_span is None          # not left active in the server's context
    assert list(body) == [b"POST /things"]     # active while the body is produced
    assert reporter.spans == []                # exhausted but not closed yet
    body.close()
    assert closed == [True]                    # the app's close() runs under the span
    [span] = reporter.spans
    assert span.operation_name == "POST /things" and span.tags["http.status_code"] == 201


def test_streamed_response_is_produced_under_the_span(flask_server, reporter):
    response = requests.get(f"{flask_server.url}/stream", timeout=TIMEOUT)
    assert response.text == "0\n1\n2\n"
    [span] = wait_spans(reporter, 1)
    assert span.operation_name == "GET /stream"
    assert flask_server.seen["stream"] == [span.span_id] * 3


def test_excluded_paths_are_not_traced(flask_server, reporter):
    for _ in range(2):
        assert requests.get(f"{flask_server.url}/healthz", timeout=TIMEOUT).text == "ok"
    assert requests.get(f"{flask_server.url}/static/app.js", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{flask_server.url}/users/1", timeout=TIMEOUT).status_code == 200
    wait_spans(reporter, 2)
    time.sleep(0.1)
    spans = reporter.spans
    assert sorted(s.operation_name for s in spans) == ["GET /users/{user_id}", "db.load"]
    # and no span leaked into the excluded handler's context
    assert flask_server.seen["health_active"] is None


def test_regex_exclusion_and_operation_name(tracer, reporter):
    import re

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"x"]

    middleware = TracingMiddleware(app, tracer=tracer, excluded_paths=[re.compile(r"/metrics/\d+")],
                                   operation_name=lambda env: "custom " + env["PATH_INFO"])
    for path in ("/metrics/1", "/metrics/x"):
        environ = {}
        wsgiref.util.setup_testing_defaults(environ)
        environ["PATH_INFO"] = path
        body = middleware(environ, lambda *a: None)
        list(body)
        if hasattr(body, "close"):
            body.close()
    assert [s.operation_name for s in reporter.spans] == ["custom /metrics/x"]


def test_plain_wsgi_app_under_wsgiref(tracer, reporter):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    served = serve(TracingMiddleware(app, tracer=tracer), server="wsgiref")
    try:
        response = requests.get(served.url + "/hello/world", timeout=TIMEOUT)
    finally:
        served.close()
    assert response.text == "hello"
    [span] = wait_spans(reporter, 1)
    assert span.operation_name == "GET /hello/world"
    assert span.tags["http.url"] == f"{served.url}/hello/world"
    assert span.tags["peer.ipv4"] == "127.0.0.1"


def test_global_tracer_is_looked_up_at_request_time(reporter):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"x"]

    middleware = TracingMiddleware(app)        # created before the tracer exists
    tracer = fasttrace.Tracer("late", reporter=reporter)
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    try:
        environ = {}
        wsgiref.util.setup_testing_defaults(environ)
        body = middleware(environ, lambda *a: None)
        list(body)
        body.close()
    finally:
        opentracing.set_global_tracer(previous)
    [span] = reporter.spans
    assert span.service_name == "late"


def test_a_broken_tracer_never_breaks_the_request():
    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"served"]

    fasttrace.contrib.reset_stats()
    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    body = TracingMiddleware(app, tracer=Broken())(environ, lambda *a: None)
    assert list(body) == [b"served"]
    assert fasttrace.contrib.stats()["internal_errors"]["wsgi"] == 1

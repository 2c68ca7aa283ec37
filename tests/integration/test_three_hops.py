# SPDX-License-Identifier: Apache-2.0
"""One trace across three hops, every hop a real server on loopback:

    client (requests)  ->  gateway (Flask, WSGI middleware, werkzeug server)
                              -> service (gRPC server, interceptors)
                              -> service (Starlette, ASGI middleware, uvicorn), @traced inside

Each hop has its own tracer (service name), as separate processes would.
"""
import asyncio
import logging
import threading
import time
from concurrent import futures

import pytest

import fasttrace
from fasttrace.contrib import httpx as ft_httpx
from fasttrace.contrib import requests as ft_requests
from fasttrace.contrib.asgi import TracingMiddleware as ASGITracing
from fasttrace.contrib.grpc import client_interceptor, server_interceptor
from fasttrace.contrib.logging import TraceContextFilter
from fasttrace.contrib.wsgi import TracingMiddleware as WSGITracing
from fasttrace.decorators import traced

from support.servers import Serving, free_port

flask = pytest.importorskip("flask")
grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")
uvicorn = pytest.importorskip("uvicorn")
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

TIMEOUT = 10


class Hop:
    def __init__(self, name):
        self.reporter = fasttrace.InMemoryReporter()
        self.tracer = fasttrace.Tracer(name, reporter=self.reporter)


class Deployment:
    def __init__(self):
        self.client = Hop("client")
        self.gateway = Hop("gateway")
        self.service = Hop("service")
        self.logs = []
        self._closers = []
        try:
            self._start_grpc()
            self._start_asgi()
            self._start_gateway()
        except BaseException:
            self.close()
            raise

    # service, gRPC: Say fails for "0"
    def _start_grpc(self):
        def say(request, context):
            if request == b"0":
                raise LookupError("no order 0")
            return b"order " + request

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             interceptors=[server_interceptor(self.service.tracer)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "shop.Orders", {"Get": grpc.unary_unary_rpc_method_handler(say)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._closers.append(lambda: server.stop(None).wait(TIMEOUT))
        self.grpc_target = f"127.0.0.1:{port}"

    # service, HTTP (Starlette under uvicorn)
    def _start_asgi(self):
        tracer = self.service.tracer

        @traced("inventory.lookup", tracer=tracer)
        async def lookup(item_id):
            await asyncio.sleep(0)
            return item_id * 10

        async def inventory(request):
            return JSONResponse({"stock": await lookup(request.path_params["item_id"])})

        app = ASGITracing(Starlette(routes=[Route("/inventory/{item_id:int}", inventory)]),
                          tracer=tracer)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="critical", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

        def stop():
            server.should_exit = True
            thread.join(TIMEOUT)
        self._closers.append(stop)
        self.asgi_url = f"http://127.0.0.1:{port}"

    # gateway: Flask, calls both services
    def _start_gateway(self):
        tracer = self.gateway.tracer
        channel = grpc.insecure_channel(self.grpc_target)
        self._closers.append(channel.close)
        orders = grpc.intercept_channel(
            channel, client_interceptor(tracer, target=self.grpc_target)
        ).unary_unary("/shop.Orders/Get")
        logger = logging.getLogger("three_hops.gateway")
        logger.propagate = False
        logger.setLevel(logging.INFO)

        class Collect(logging.Handler):
            def emit(handler, record):
                self.logs.append((record.getMessage(), record.trace_id, record.span_id))
        handler = Collect()
        handler.addFilter(TraceContextFilter(tracer))
        logger.addHandler(handler)
        self._closers.append(lambda: logger.removeHandler(handler))

        app = flask.Flask("gateway")

        @app.route("/orders/<int:order_id>")
        def order(order_id):
            logger.info("order %s", order_id)
            try:
                summary = orders(str(order_id).encode(), timeout=TIMEOUT).decode()
            except grpc.RpcError as exc:
                return {"error": exc.code().name}, 502
            stock = httpx.get(f"{self.asgi_url}/inventory/{order_id}", timeout=TIMEOUT).json()
            return {"summary": summary, "stock": stock["stock"]}

        app.wsgi_app = WSGITracing(app.wsgi_app, tracer=tracer, excluded_paths=("/healthz",))
        serving = Serving(make_server("127.0.0.1", 0, app, threaded=True))
        self._closers.append(serving.close)
        self.gateway_url = serving.url

    def close(self):
        for close in reversed(self._closers):
            close()

    def spans(self, expected):
        """All hops' spans once `expected` have finished (servers finish after replying)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            spans = (self.client.reporter.spans + self.gateway.reporter.spans
                     + self.service.reporter.spans)
            if len(spans) >= expected or time.monotonic() > deadline:
                return spans
            time.sleep(0.01)


@pytest.fixture(scope="module")
def deployment():
    d = Deployment()
    yield d
    d.close()


@pytest.fixture(autouse=True)
def instrumented(deployment):
    for hop in (deployment.client, deployment.gateway, deployment.service):
        hop.reporter.clear()
    deployment.logs.clear()
    ft_requests.instrument(deployment.client.tracer)    # the client process
    ft_httpx.instrument(deployment.gateway.tracer)      # the gateway process
    yield
    ft_requests.uninstrument()
    ft_httpx.uninstrument()


def one(spans, service, kind, name=None):
    found = [s for s in spans if s.service_name == service and s.tags.get("span.kind") == kind
             and (name is None or s.operation_name == name)]
    assert len(found) == 1, (service, kind, name, spans)
    return found[0]


def test_one_trace_across_three_hops(deployment):
    client_tracer = deployment.client.tracer
    with client_tracer.start_active_span("checkout") as scope:
        response = requests.get(f"{deployment.gateway_url}/orders/7", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"summary": "order 7", "stock": 70}
    spans = deployment.spans(8)
    assert len(spans) == 8
    assert {s.trace_id for s in spans} == {scope.span.trace_id}

    root = [s for s in spans if s.operation_name == "checkout"][0]
    http_client = one(spans, "client", "client", "HTTP GET")
    gateway = one(spans, "gateway", "server", "GET /orders/{order_id}")
    grpc_client = one(spans, "gateway", "client", "shop.Orders/Get")
    grpc_server = one(spans, "service", "server", "shop.Orders/Get")
    httpx_client = one(spans, "gateway", "client", "HTTP GET")
    asgi_server = one(spans, "service", "server", "GET /inventory/{item_id}")
    lookup = [s for s in spans if s.operation_name == "inventory.lookup"][0]

    assert root.parent_id is None
    assert http_client.parent_id == root.span_id
    assert gateway.parent_id == http_client.span_id
    assert grpc_client.parent_id == gateway.span_id
    assert grpc_server.parent_id == grpc_client.span_id
    assert httpx_client.parent_id == gateway.span_id
    assert asgi_server.parent_id == httpx_client.span_id
    assert lookup.parent_id == asgi_server.span_id and lookup.service_name == "service"

    assert http_client.tags["component"] == "requests"
    assert gateway.tags["component"] == "wsgi"
    assert grpc_client.tags["component"] == grpc_server.tags["component"] == "grpc"
    assert httpx_client.tags["component"] == "httpx"
    assert asgi_server.tags["component"] == "asgi"
    for span in (http_client, gateway, httpx_client, asgi_server):
        assert span.tags["http.status_code"] == 200 and span.tags["http.method"] == "GET"
    assert grpc_client.tags["rpc.grpc.status_code"] == grpc_server.tags["rpc.grpc.status_code"] == 0
    assert http_client.tags["http.url"] == f"{deployment.gateway_url}/orders/7"
    assert asgi_server.tags["http.url"] == f"{deployment.asgi_url}/inventory/7"
    assert not any(s.tags.get("error") for s in spans)

    # nesting in time: every child starts within its parent; a child ends before its
    # parent too, except a server span, which ends after writing the response its
    # client span (in the other process) may already have finished on
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span.parent_id is not None:
            parent = by_id[span.parent_id]
            assert parent.start_ns <= span.start_ns + 1_000_000    # clocks of one host
            assert span.start_ns <= parent.end_ns
            if span.tags.get("span.kind") != "server":
                assert span.end_ns <= parent.end_ns + 1_000_000

    # the gateway's log line carries the gateway span's ids
    [(message, trace_id, span_id)] = deployment.logs
    assert message == "order 7"
    assert (trace_id, span_id) == (f"{gateway.trace_id:032x}", f"{gateway.span_id:016x}")


def test_errors_are_marked_along_the_path(deployment):
    response = requests.get(f"{deployment.gateway_url}/orders/0", timeout=TIMEOUT)
    assert response.status_code == 502 and response.json() == {"error": "UNKNOWN"}
    spans = deployment.spans(4)
    assert len(spans) == 4 and len({s.trace_id for s in spans}) == 1

    http_client = one(spans, "client", "client")
    gateway = one(spans, "gateway", "server")
    grpc_client = one(spans, "gateway", "client")
    grpc_server = one(spans, "service", "server")
    assert http_client.parent_id is None                  # no active span at the client
    assert gateway.parent_id == http_client.span_id
    assert grpc_server.parent_id == grpc_client.span_id

    for span in spans:
        assert span.tags["error"] is True, span
        assert any(fields.get("event") == "error" for _, fields in span.logs)
    assert http_client.tags["http.status_code"] == gateway.tags["http.status_code"] == 502
    assert grpc_server.tags["rpc.grpc.status_code"] == grpc.StatusCode.UNKNOWN.value[0]
    assert [f["error.kind"] for _, f in grpc_server.logs] == ["LookupError"]


def test_unsampled_trace_still_propagates_and_records_nothing_downstream(deployment):
    client_tracer = fasttrace.Tracer("client", sampler=fasttrace.ConstSampler(False),
                                     reporter=fasttrace.InMemoryReporter())
    ft_requests.instrument(client_tracer)
    response = requests.get(f"{deployment.gateway_url}/orders/3", timeout=TIMEOUT)
    assert response.status_code == 200
    time.sleep(0.3)             # let the servers finish their (unrecorded) spans
    # the sampling decision travels: the downstream hops do not record either
    assert deployment.gateway.reporter.spans == []
    assert deployment.service.reporter.spans == []

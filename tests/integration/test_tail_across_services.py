# SPDX-License-Identifier: Apache-2.0
"""Tail sampling across services, no Collector: three services on loopback, each with its
own tracer that records nothing by head sampling (``ConstSampler(False)``, baseline 0):

    test (plain urllib)  ->  A (WSGI, werkzeug)  --requests-->  B (ASGI, Starlette/uvicorn)
                         --httpx--> C (WSGI, werkzeug)           [c_transport="http"]
                         --gRPC-->  C (grpc.server)              [c_transport="grpc"]

C decides (an error, or a latency over its threshold); it tells B in ``traceresponse``
(an HTTP header, or gRPC trailing metadata), B keeps its part and tells A, A keeps its
part.  A trace where nothing happens leaves nothing in any service.

No timing assumption: the test waits (with a deadline) for each service to decide the
trace, and the slow case waits inside C until C's span has run past the threshold.
"""
import threading
import time
import urllib.request
from concurrent import futures

import pytest

import fasttrace
from fasttrace import ConstSampler, InMemoryReporter, TailSampling
from fasttrace.contrib import httpx as ft_httpx
from fasttrace.contrib import requests as ft_requests
from fasttrace.contrib.asgi import TracingMiddleware as ASGITracing
from fasttrace.contrib.grpc import client_interceptor, server_interceptor
from fasttrace.contrib.wsgi import TracingMiddleware as WSGITracing

from support.servers import Serving, free_port
from support.waits import wait_for

grpc = pytest.importorskip("grpc")
httpx = pytest.importorskip("httpx")
requests = pytest.importorskip("requests")
uvicorn = pytest.importorskip("uvicorn")
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

TIMEOUT = 20
SLOW_MS = 30          # C's latency threshold, for its slow operation only


def run_past(span, ms):
    """Returns once `span` has been running for more than `ms`, by the clock
    ``Tracer.tail_verdict`` reads (a wait for a condition, not a guess)."""
    pause = threading.Event()
    until = round(span.start_time * 1e9) + int(ms * 1e6) + 5_000_000
    while True:
        left = until - time.time_ns()
        if left <= 0:
            return
        pause.wait(left / 1e9)


class Service:
    def __init__(self, name, **policy):
        self.name = name
        self.reporter = InMemoryReporter()
        self.tracer = fasttrace.Tracer(
            name, sampler=ConstSampler(False), reporter=self.reporter,
            tail_sampling=TailSampling(baseline_ratio=0, **policy))

    def decided(self):
        """Traces this service has decided so far (kept or discarded)."""
        _ = self.reporter.spans          # drains the tracer through its tail stage
        tail = self.tracer.stats()["tail_sampling"]
        return sum(tail["kept"].values()) + tail["traces_discarded"]


class Deployment:
    def __init__(self, c_transport):
        self.c_transport = c_transport
        self.a = Service("A")
        self.b = Service("B")
        # only C's slow operation has a latency threshold: ok and failing requests are
        # never kept for latency, however busy the machine is
        self.c = Service("C", latency_ms_by_operation={
            "GET /c/slow" if c_transport == "http" else "deep.C/Slow": SLOW_MS})
        self.services = (self.a, self.b, self.c)
        self._closers = []
        try:
            if c_transport == "http":
                self._start_c_http()
            else:
                self._start_c_grpc()
            self._start_b()
            self._start_a()
        except BaseException:
            self.close()
            raise

    # C: does the work; "fail" answers 500 / raises, "slow" runs past its threshold
    def _work(self, mode):
        tracer = self.c.tracer
        if mode == "slow":
            run_past(tracer.active_span, SLOW_MS)
        with tracer.start_active_span("c.query") as scope:
            scope.span.set_tag("mode", mode)
        return mode != "fail"

    def _start_c_http(self):
        def app(environ, start_response):
            ok = self._work(environ["PATH_INFO"].rsplit("/", 1)[1])
            start_response("200 OK" if ok else "500 Internal Server Error",
                           [("Content-Type", "text/plain")])
            return [b"done" if ok else b"failed"]

        serving = Serving(make_server("127.0.0.1", 0, WSGITracing(app, tracer=self.c.tracer),
                                      threaded=True))
        self._closers.append(serving.close)
        self.c_url = serving.url

    def _start_c_grpc(self):
        def work(request, context):
            context.set_trailing_metadata((("c-own", "kept"),))   # the handler's own
            if not self._work(request.decode()):
                raise RuntimeError("C failed")
            return b"done"

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             interceptors=[server_interceptor(self.c.tracer)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "deep.C", {"Work": grpc.unary_unary_rpc_method_handler(work),
                       "Slow": grpc.unary_unary_rpc_method_handler(work)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._closers.append(lambda: server.stop(None).wait(TIMEOUT))
        target = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(target)
        self._closers.append(channel.close)
        traced = grpc.intercept_channel(channel, client_interceptor(self.b.tracer, target))
        self.c_work = traced.unary_unary("/deep.C/Work")
        self.c_slow = traced.unary_unary("/deep.C/Slow")

    # B: calls C and degrades gracefully (200 whatever C says)
    def _start_b(self):
        async def endpoint(request):
            mode = request.path_params["mode"]
            if self.c_transport == "http":
                async with httpx.AsyncClient() as client:
                    answer = await client.get(f"{self.c_url}/c/{mode}", timeout=TIMEOUT)
                return JSONResponse({"c": answer.status_code})
            stub = self.c_slow if mode == "slow" else self.c_work
            try:
                _, call = stub.with_call(mode.encode(), timeout=TIMEOUT)
            except grpc.RpcError as exc:
                call = exc
            return JSONResponse({"c": call.code().name,
                                 "trailers": sorted(k for k, _ in call.trailing_metadata())})

        app = ASGITracing(Starlette(routes=[Route("/b/{mode}", endpoint)]),
                          tracer=self.b.tracer)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="critical", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        assert wait_for(lambda: server.started or not thread.is_alive(), TIMEOUT)
        assert server.started, "uvicorn did not start"

        def stop():
            server.should_exit = True
            thread.join(TIMEOUT)
        self._closers.append(stop)
        self.b_url = f"http://127.0.0.1:{port}"

    # A: the edge, calls B
    def _start_a(self):
        def app(environ, start_response):
            mode = environ["PATH_INFO"].rsplit("/", 1)[1]
            answer = requests.get(f"{self.b_url}/b/{mode}", timeout=TIMEOUT)
            start_response("200 OK", [("Content-Type", "application/json")])
            return [answer.content]

        serving = Serving(make_server("127.0.0.1", 0, WSGITracing(app, tracer=self.a.tracer),
                                      threaded=True))
        self._closers.append(serving.close)
        self.a_url = serving.url

    def close(self):
        for close in reversed(self._closers):
            close()
        for service in self.services:
            service.tracer.close()

    def request(self, mode):
        """Calls A (outside any tracer: this is the user); waits until every service has
        decided the trace.  Returns (A's response headers, body, {service: spans})."""
        before = {s.name: s.decided() for s in self.services}
        with urllib.request.urlopen(f"{self.a_url}/a/{mode}", timeout=TIMEOUT) as response:
            headers, body = response.headers, response.read()
        for service in self.services:
            assert wait_for(lambda s=service: s.decided() > before[s.name], TIMEOUT), \
                f"{service.name} did not decide the trace"
        return headers, body, {s.name: s.reporter.spans for s in self.services}


@pytest.fixture(scope="module", params=["http", "grpc"])
def deployment(request):
    d = Deployment(request.param)
    yield d
    d.close()


@pytest.fixture(autouse=True)
def instrumented(deployment):
    for service in deployment.services:
        service.reporter.clear()
    ft_requests.instrument(deployment.a.tracer)     # A's process calls with requests
    ft_httpx.instrument(deployment.b.tracer)        # B's with httpx
    yield
    ft_requests.uninstrument()
    ft_httpx.uninstrument()


def decisions(spans):
    return {s.tags.get("sampling.decision") for s in spans}


def kinds(spans):
    return sorted(s.tags.get("span.kind") or s.operation_name for s in spans)


def check_path(spans):
    """One trace, one unbroken parent chain A server > A client > B server > B client >
    C server > c.query."""
    everything = spans["A"] + spans["B"] + spans["C"]
    assert len({s.trace_id for s in everything}) == 1
    by_kind = {}
    for service in ("A", "B", "C"):
        for span in spans[service]:
            by_kind[(service, span.tags.get("span.kind"))] = span
    chain = [by_kind[("A", "server")], by_kind[("A", "client")], by_kind[("B", "server")],
             by_kind[("B", "client")], by_kind[("C", "server")], by_kind[("C", None)]]
    for parent, child in zip(chain, chain[1:]):
        assert child.parent_id == parent.span_id, (parent, child)
    assert chain[0].parent_id is None
    return chain


def test_an_error_deep_in_the_call_graph_keeps_the_whole_path(deployment):
    headers, body, spans = deployment.request("fail")
    assert kinds(spans["A"]) == ["client", "server"]
    assert kinds(spans["B"]) == ["client", "server"]
    assert kinds(spans["C"]) == ["c.query", "server"]
    chain = check_path(spans)
    c_server = chain[4]
    assert c_server.tags["error"] is True
    assert decisions(spans["C"]) == {"error"}
    # B's own client span saw C's failure (a 500 / a non-OK status is error=true on the
    # client span), and the error policy comes before downstream; A saw nothing wrong
    assert chain[3].tags["error"] is True and decisions(spans["B"]) == {"error"}
    assert not any(s.tags.get("error") for s in spans["A"])
    assert decisions(spans["A"]) == {"downstream"}
    # what A told its caller: kept, with A's server span as the child id
    a_server = chain[0]
    assert headers["traceresponse"] == f"00-{a_server.trace_id:032x}-{a_server.span_id:016x}-01"
    if deployment.c_transport == "grpc":
        # the handler's own trailing metadata arrived next to traceresponse
        assert b'"trailers":["c-own","traceresponse"]' in body
    for service in deployment.services:
        assert service.tracer.stats()["tail_sampling"]["kept"]["error" if service.name != "A"
                                                               else "downstream"] >= 1


def test_a_slow_callee_keeps_the_whole_path_as_downstream(deployment):
    headers, _, spans = deployment.request("slow")
    chain = check_path(spans)
    assert decisions(spans["C"]) == {"latency"}
    assert decisions(spans["B"]) == {"downstream"}
    assert decisions(spans["A"]) == {"downstream"}
    assert not any(s.tags.get("error") for s in chain)
    c_server = chain[4]
    assert c_server.end_ns - c_server.start_ns >= SLOW_MS * 1_000_000
    a_server = chain[0]
    assert headers["traceresponse"] == f"00-{a_server.trace_id:032x}-{a_server.span_id:016x}-01"


def test_a_request_that_succeeds_leaves_nothing_in_any_service(deployment):
    before = {s.name: dict(s.tracer.stats()["tail_sampling"]) for s in deployment.services}
    headers, body, spans = deployment.request("ok")
    assert spans == {"A": [], "B": [], "C": []}
    for service in deployment.services:
        tail, was = service.tracer.stats()["tail_sampling"], before[service.name]
        assert tail["traces_discarded"] == was["traces_discarded"] + 1
        assert tail["spans_discarded"] == was["spans_discarded"] + 2    # server + one more
        assert tail["kept"] == was["kept"]
    value = headers["traceresponse"]
    assert value.startswith("00-") and value.endswith("-00") and len(value) == 55
    if deployment.c_transport == "grpc":
        assert b'"trailers":["c-own","traceresponse"]' in body

# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.grpc: a real grpcio server and client on loopback, all four shapes."""
import json
import time
from concurrent import futures

import opentracing
import pytest

import fasttrace
import fasttrace.contrib

from support.waits import wait_spans

grpc = pytest.importorskip("grpc")
from fasttrace.contrib.grpc import (_carrier_metadata, _metadata_carrier,  # noqa: E402
                                    client_interceptor, server_interceptor)

TIMEOUT = 10
SERVICE = "demo.Echo"


class Handlers:
    """demo.Echo with raw bytes messages; records the active span in each handler."""

    def __init__(self, tracer):
        self.tracer = tracer
        self.seen = []

    def note(self):
        span = self.tracer.active_span
        self.seen.append(span.span_id if span else None)

    def say(self, request, context):
        self.note()
        if request == b"boom":
            raise ValueError("bad request")
        if request == b"abort":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request == b"baggage":
            return (self.tracer.active_span.get_baggage_item("user") or "").encode()
        if request == b"metadata":
            return json.dumps(sorted(
                [k, v if isinstance(v, str) else v.hex()]
                for k, v in context.invocation_metadata())).encode()
        return b"hello " + request

    def count(self, request, context):
        self.note()
        for i in range(int(request.split(b":")[0])):
            self.note()
            if request.endswith(b":fail") and i == 1:
                raise RuntimeError("stream broke")
            if request.endswith(b":slow"):
                time.sleep(0.05)
            yield str(i).encode()

    def total(self, request_iterator, context):
        self.note()
        return b"+".join(request_iterator)

    def chat(self, request_iterator, context):
        self.note()
        for message in request_iterator:
            self.note()
            yield message.upper()

    def generic_handler(self):
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Say": grpc.unary_unary_rpc_method_handler(self.say),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
            "Total": grpc.stream_unary_rpc_method_handler(self.total),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        })


class Env:
    def __init__(self, propagators=("tracecontext", "baggage"), client_tracer=None,
                 server_tracer=None):
        self.client_reporter = fasttrace.InMemoryReporter()
        self.server_reporter = fasttrace.InMemoryReporter()
        self.client_tracer = fasttrace.Tracer("gateway", reporter=self.client_reporter,
                                              propagators=propagators)
        self.server_tracer = fasttrace.Tracer("service", reporter=self.server_reporter,
                                              propagators=propagators)
        self.handlers = Handlers(self.server_tracer)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[server_interceptor(server_tracer or self.server_tracer)])
        self.server.add_generic_rpc_handlers((self.handlers.generic_handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.target = f"127.0.0.1:{self.port}"
        self.raw_channel = grpc.insecure_channel(self.target)
        self.channel = grpc.intercept_channel(
            self.raw_channel,
            client_interceptor(client_tracer or self.client_tracer, target=self.target))

    def stub(self, method, shape):
        return getattr(self.channel, shape)(f"/{SERVICE}/{method}")

    def close(self):
        self.raw_channel.close()
        self.server.stop(None).wait(TIMEOUT)

    def pair(self, count=1):
        """(client spans, server spans), waiting for `count` of each."""
        return (wait_spans(self.client_reporter, count), wait_spans(self.server_reporter, count))


@pytest.fixture
def env():
    e = Env()
    yield e
    e.close()


def check_pair(client, server, method, status=0):
    assert client.operation_name == server.operation_name == f"{SERVICE}/{method}"
    assert server.trace_id == client.trace_id and server.parent_id == client.span_id
    assert client.tags["span.kind"] == "client" and server.tags["span.kind"] == "server"
    for span in (client, server):
        assert span.tags["component"] == "grpc"
        assert span.tags["rpc.system"] == "grpc"
        assert span.tags["rpc.service"] == SERVICE and span.tags["rpc.method"] == method
        assert span.tags["rpc.grpc.status_code"] == status
        if status:
            assert span.tags["error"] is True
        else:
            assert "error" not in span.tags
    assert server.tags["peer.ipv4"] == "127.0.0.1" and server.tags["peer.port"] > 0
    assert client.tags["peer.ipv4"] == "127.0.0.1"


def test_unary_call_continues_the_trace(env):
    with env.client_tracer.start_active_span("request") as scope:
        assert env.stub("Say", "unary_unary")(b"world", timeout=TIMEOUT) == b"hello world"
    spans = wait_spans(env.client_reporter, 2)
    [server] = wait_spans(env.server_reporter, 1)
    client = [s for s in spans if s.operation_name != "request"][0]
    assert client.parent_id == scope.span.span_id
    check_pair(client, server, "Say")
    assert env.handlers.seen == [server.span_id]          # active in the handler


def test_future_and_with_call(env):
    stub = env.stub("Say", "unary_unary")
    assert stub.future(b"a", timeout=TIMEOUT).result() == b"hello a"
    response, call = stub.with_call(b"b", timeout=TIMEOUT)
    assert response == b"hello b" and call.code() == grpc.StatusCode.OK
    clients, servers = env.pair(2)
    assert len(clients) == len(servers) == 2
    for server in servers:
        client = [c for c in clients if c.span_id == server.parent_id][0]
        check_pair(client, server, "Say")


def test_handler_exception_is_an_error_on_both_sides(env):
    with pytest.raises(grpc.RpcError) as info:
        env.stub("Say", "unary_unary")(b"boom", timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    [client], [server] = env.pair()
    check_pair(client, server, "Say", status=grpc.StatusCode.UNKNOWN.value[0])
    assert [f["error.kind"] for _, f in server.logs] == ["ValueError"]
    assert "UNKNOWN" in client.logs[0][1]["message"]


def test_abort_status_is_recorded(env):
    with pytest.raises(grpc.RpcError) as info:
        env.stub("Say", "unary_unary")(b"abort", timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    [client], [server] = env.pair()
    check_pair(client, server, "Say", status=grpc.StatusCode.NOT_FOUND.value[0])
    assert server.logs[0][1]["message"] == "NOT_FOUND: no such thing"
    assert client.logs[0][1]["message"] == "NOT_FOUND: no such thing"


def test_unary_stream(env):
    assert list(env.stub("Count", "unary_stream")(b"3", timeout=TIMEOUT)) == [b"0", b"1", b"2"]
    [client], [server] = env.pair()
    check_pair(client, server, "Count")
    assert env.handlers.seen == [server.span_id] * 4      # active for each message


def test_unary_stream_span_ends_with_the_stream(env):
    responses = env.stub("Count", "unary_stream")(b"3:slow", timeout=TIMEOUT)
    assert next(responses) == b"0"
    assert env.client_reporter.spans == []                 # stream still open
    assert list(responses) == [b"1", b"2"]
    [client], [server] = env.pair()
    assert client.duration_ns >= 0.1e9 and server.duration_ns >= 0.1e9


def test_unary_stream_failing_midway(env):
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for message in env.stub("Count", "unary_stream")(b"3:fail", timeout=TIMEOUT):
            received.append(message)
    assert received == [b"0"] and info.value.code() == grpc.StatusCode.UNKNOWN
    [client], [server] = env.pair()
    check_pair(client, server, "Count", status=grpc.StatusCode.UNKNOWN.value[0])
    assert [f["error.kind"] for _, f in server.logs] == ["RuntimeError"]


def test_client_cancelling_a_stream(env):
    responses = env.stub("Count", "unary_stream")(b"100:slow", timeout=TIMEOUT)
    assert next(responses) == b"0"
    responses.cancel()
    [client], [server] = env.pair()
    cancelled = grpc.StatusCode.CANCELLED.value[0]
    assert client.tags["rpc.grpc.status_code"] == cancelled and client.tags["error"] is True
    assert server.tags["rpc.grpc.status_code"] == cancelled
    assert server.parent_id == client.span_id


def test_stream_unary(env):
    assert env.stub("Total", "stream_unary")(iter([b"a", b"b", b"c"]),
                                            timeout=TIMEOUT) == b"a+b+c"
    [client], [server] = env.pair()
    check_pair(client, server, "Total")


def test_stream_stream(env):
    replies = env.stub("Chat", "stream_stream")(iter([b"x", b"y"]), timeout=TIMEOUT)
    assert list(replies) == [b"X", b"Y"]
    [client], [server] = env.pair()
    check_pair(client, server, "Chat")
    assert env.handlers.seen == [server.span_id] * 3


def test_baggage_crosses_and_user_metadata_is_kept(env):
    with env.client_tracer.start_active_span("request") as scope:
        scope.span.set_baggage_item("user", "zoë")
        assert env.stub("Say", "unary_unary")(b"baggage", timeout=TIMEOUT) == "zoë".encode()
        raw = env.stub("Say", "unary_unary")(
            b"metadata", timeout=TIMEOUT, metadata=(("x-mine", "1"), ("traceparent", "stale")))
    metadata = dict(json.loads(raw))
    assert metadata["x-mine"] == "1"
    client = [s for s in env.client_reporter.spans if s.operation_name.endswith("Say")][-1]
    assert metadata["traceparent"] == f"00-{client.trace_id:032x}-{client.span_id:016x}-01"
    assert all(k == k.lower() for k in metadata)


def test_metadata_is_binary_safe():
    metadata = _carrier_metadata({"traceparent": "00-ab-cd-01", "X-Upper": "ok",
                                  "uberctx-user": "zoë", "bad key!": "v", "grpc-x": "v"})
    assert ("traceparent", "00-ab-cd-01") in metadata
    assert ("x-upper", "ok") in metadata
    assert ("uberctx-user-bin", "zoë".encode()) in metadata
    assert len(metadata) == 3
    assert fasttrace.contrib.stats()["dropped"]["grpc"] >= 2
    carrier = _metadata_carrier(metadata + [("traceparent-bin", b"ignored"),
                                            ("junk-bin", b"\xff\xfe"), (b"x", "y")])
    assert carrier == {"traceparent": "00-ab-cd-01", "x-upper": "ok", "uberctx-user": "zoë"}


def test_jaeger_baggage_with_unicode_over_grpc():
    env = Env(propagators=("jaeger",))
    try:
        with env.client_tracer.start_active_span("request") as scope:
            scope.span.set_baggage_item("user", "zoë")
            assert env.stub("Say", "unary_unary")(b"baggage", timeout=TIMEOUT) == "zoë".encode()
        [server] = wait_spans(env.server_reporter, 1)
        assert server.trace_id == scope.span.trace_id
    finally:
        env.close()


def test_corrupted_metadata_starts_a_new_trace():
    env = Env(propagators=("jaeger",))
    fasttrace.contrib.reset_stats()
    try:
        plain = grpc.insecure_channel(env.target)
        try:
            say = plain.unary_unary(f"/{SERVICE}/Say")
            assert say(b"x", timeout=TIMEOUT, metadata=(("uber-trace-id", "zz:zz"),)) == b"hello x"
        finally:
            plain.close()
        [server] = wait_spans(env.server_reporter, 1)
        assert server.parent_id is None
        assert fasttrace.contrib.stats()["corrupted_context"]["grpc"] == 1
    finally:
        env.close()


def test_global_tracer_on_both_sides():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer("both", reporter=reporter)
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    env = Env(client_tracer=None, server_tracer=None)
    env.channel = grpc.intercept_channel(env.raw_channel, client_interceptor())
    env.server.stop(None).wait(TIMEOUT)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[server_interceptor()])
    server.add_generic_rpc_handlers((env.handlers.generic_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"),
                                     client_interceptor())
    try:
        assert channel.unary_unary(f"/{SERVICE}/Say")(b"g", timeout=TIMEOUT) == b"hello g"
        spans = wait_spans(reporter, 2)
    finally:
        opentracing.set_global_tracer(previous)
        channel.close()
        server.stop(None).wait(TIMEOUT)
        env.raw_channel.close()
    client = [s for s in spans if s.tags["span.kind"] == "client"][0]
    server_span = [s for s in spans if s.tags["span.kind"] == "server"][0]
    assert server_span.parent_id == client.span_id


def test_a_broken_tracer_never_breaks_the_call():
    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    fasttrace.contrib.reset_stats()
    env = Env(client_tracer=Broken(), server_tracer=Broken())
    try:
        assert env.stub("Say", "unary_unary")(b"ok", timeout=TIMEOUT) == b"hello ok"
        assert list(env.stub("Count", "unary_stream")(b"2", timeout=TIMEOUT)) == [b"0", b"1"]
    finally:
        env.close()
    errors = fasttrace.contrib.stats()["internal_errors"]
    assert errors["grpc"] == 4

# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.grpc_aio: a real grpc.aio server and channel on loopback, all four
shapes, errors, cancellation, the hop, and the traceresponse trailer with tail sampling."""
import asyncio
import time

import pytest

import fasttrace
import fasttrace.contrib

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc.aio")

from fasttrace.contrib.grpc_aio import client_interceptors, server_interceptor  # noqa: E402
from support.tail import decisions, malformed  # noqa: E402

TIMEOUT = 10
SERVICE = "demo.Echo"


async def until(predicate, timeout=TIMEOUT):
    """True as soon as ``predicate()`` is (polled on the loop, with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def spans_of(reporter, count):
    await until(lambda: len(reporter.spans) >= count)
    return reporter.spans


class Handlers:
    """demo.Echo with raw bytes messages; notes the active span at each step."""

    def __init__(self, tracer):
        self.tracer = tracer
        self.seen = []
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    def note(self):
        span = self.tracer.active_span
        self.seen.append(getattr(span, "span_id", None))

    async def say(self, request, context):
        self.note()
        context.set_trailing_metadata((("own", "1"), ("own-bin", b"\x00\x01")))
        await asyncio.sleep(0)                   # the span stays active across awaits
        self.note()
        if request == b"boom":
            raise ValueError("bad request")
        if request == b"abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request == b"status":
            context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
            context.set_details("not now")
            return b""
        if request == b"keep":
            self.tracer.keep_trace(self.tracer.active_span.context)
        if request == b"wait":
            self.entered.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.set()
        if request == b"task":
            await asyncio.create_task(self.child())
        return b"hello " + request

    async def child(self):
        with self.tracer.start_active_span("child"):
            self.note()

    async def count(self, request, context):
        self.note()
        context.set_trailing_metadata((("own", "2"),))
        n, _, mode = request.partition(b":")
        for i in range(int(n)):
            self.note()
            if mode == b"fail" and i == 1:
                raise RuntimeError("stream broke")
            if mode == b"abort" and i == 1:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "enough")
            if mode == b"wait" and i == 1:
                self.entered.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    self.cancelled.set()
            yield str(i).encode()

    async def write(self, request, context):
        """unary-stream by context.write() from a coroutine"""
        self.note()
        for i in range(int(request)):
            await context.write(str(i).encode())
            self.note()

    async def total(self, request_iterator, context):
        self.note()
        parts = [message async for message in request_iterator]
        return b"+".join(parts)

    async def chat(self, request_iterator, context):
        self.note()
        async for message in request_iterator:
            self.note()
            yield message.upper()

    def generic_handler(self):
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Say": grpc.unary_unary_rpc_method_handler(self.say),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
            "Write": grpc.unary_stream_rpc_method_handler(self.write),
            "Total": grpc.stream_unary_rpc_method_handler(self.total),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        })


class Env:
    """A grpc.aio server (fasttrace's interceptor, `server_tracer`) and a channel
    (fasttrace's interceptor, `client_tracer`), started and closed on the test's loop."""

    def __init__(self, client_tracer, server_tracer):
        self.client_tracer = client_tracer
        self.server_tracer = server_tracer
        self.handlers = Handlers(server_tracer)

    async def __aenter__(self):
        self.server = grpc.aio.server(interceptors=[server_interceptor(self.server_tracer)])
        self.server.add_generic_rpc_handlers((self.handlers.generic_handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.target = f"127.0.0.1:{self.port}"
        self.channel = grpc.aio.insecure_channel(
            self.target, interceptors=client_interceptors(self.client_tracer, self.target))
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.server.stop(None)

    def stub(self, method, shape):
        return getattr(self.channel, shape)(f"/{SERVICE}/{method}")

    async def pair(self, count=1):
        """(client spans, server spans) of the RPCs, waiting for `count` of each."""
        servers = await spans_of(self.server_tracer.reporter, count)
        await until(lambda: len(self.rpc_clients()) >= count)
        return self.rpc_clients(), servers

    def rpc_clients(self):
        return [s for s in self.client_tracer.reporter.spans
                if s.tags.get("span.kind") == "client"]


@pytest.fixture
def run(make_tracer, fresh_asyncio_policy):
    """run(scenario, client_tracer=None, server_tracer=None): ``await scenario(env)``
    in a fresh event loop with a server and channel that are closed afterwards."""
    def go(scenario, client_tracer=None, server_tracer=None):
        client_tracer = client_tracer or make_tracer(service_name="gateway")
        server_tracer = server_tracer or make_tracer(service_name="service")

        async def main():
            async with Env(client_tracer, server_tracer) as env:
                return await asyncio.wait_for(scenario(env), 3 * TIMEOUT)
        return asyncio.run(main())
    return go


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
    assert client.tags["peer.ipv4"] == "127.0.0.1" and client.tags["peer.port"] > 0


# -- the four shapes ---------------------------------------------------------------------

def test_unary_continues_the_trace_and_the_server_span_is_active(run):
    async def scenario(env):
        with env.client_tracer.start_active_span("request") as scope:
            assert await env.stub("Say", "unary_unary")(b"world", timeout=TIMEOUT) \
                == b"hello world"
        [client], [server] = await env.pair()
        assert client.parent_id == scope.span.span_id
        check_pair(client, server, "Say")
        assert env.handlers.seen == [server.span_id] * 2      # before and after an await
    run(scenario)


def test_a_task_created_by_the_handler_sees_the_server_span(run):
    async def scenario(env):
        await env.stub("Say", "unary_unary")(b"task", timeout=TIMEOUT)
        [client], servers = await env.pair(2)
        server = [s for s in servers if s.operation_name != "child"][0]
        child = [s for s in servers if s.operation_name == "child"][0]
        assert child.parent_id == server.span_id and server.parent_id == client.span_id
    run(scenario)


def test_unary_stream_async_generator(run):
    async def scenario(env):
        call = env.stub("Count", "unary_stream")(b"3", timeout=TIMEOUT)
        assert [m async for m in call] == [b"0", b"1", b"2"]
        [client], [server] = await env.pair()
        check_pair(client, server, "Count")
        assert env.handlers.seen == [server.span_id] * 4      # active for each message
    run(scenario)


def test_unary_stream_by_context_write(run):
    async def scenario(env):
        call = env.stub("Write", "unary_stream")(b"2", timeout=TIMEOUT)
        assert [m async for m in call] == [b"0", b"1"]
        [client], [server] = await env.pair()
        check_pair(client, server, "Write")
        assert env.handlers.seen == [server.span_id] * 3
    run(scenario)


def test_stream_unary(run):
    async def scenario(env):
        async def requests():
            for m in (b"a", b"b", b"c"):
                yield m
        assert await env.stub("Total", "stream_unary")(requests(), timeout=TIMEOUT) \
            == b"a+b+c"
        [client], [server] = await env.pair()
        check_pair(client, server, "Total")
    run(scenario)


def test_stream_stream(run):
    async def scenario(env):
        call = env.stub("Chat", "stream_stream")(iter([b"x", b"y"]), timeout=TIMEOUT)
        assert [m async for m in call] == [b"X", b"Y"]
        [client], [server] = await env.pair()
        check_pair(client, server, "Chat")
        assert env.handlers.seen == [server.span_id] * 3
    run(scenario)


def test_stream_stream_by_read_and_write(run):
    async def scenario(env):
        call = env.stub("Chat", "stream_stream")()
        await call.write(b"q")
        assert await call.read() == b"Q"
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        [client], [server] = await env.pair()
        check_pair(client, server, "Chat")
    run(scenario)


# -- errors ----------------------------------------------------------------------------

def test_handler_exception_is_an_error_on_both_sides(run):
    async def scenario(env):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.stub("Say", "unary_unary")(b"boom", timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        [client], [server] = await env.pair()
        check_pair(client, server, "Say", status=grpc.StatusCode.UNKNOWN.value[0])
        assert [f["error.kind"] for _, f in server.logs] == ["ValueError"]
        assert "UNKNOWN" in client.logs[0][1]["message"]
    run(scenario)


def test_abort_status_is_recorded(run):
    async def scenario(env):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.stub("Say", "unary_unary")(b"abort", timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # the handler's own trailing metadata still goes out with the abort
        assert ("own", "1") in tuple(info.value.trailing_metadata())
        [client], [server] = await env.pair()
        check_pair(client, server, "Say", status=grpc.StatusCode.NOT_FOUND.value[0])
        assert server.logs[0][1]["message"] == "NOT_FOUND: no such thing"
        assert client.logs[0][1]["message"] == "NOT_FOUND: no such thing"
    run(scenario)


def test_a_status_set_by_the_handler_is_an_error(run):
    async def scenario(env):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.stub("Say", "unary_unary")(b"status", timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        [client], [server] = await env.pair()
        check_pair(client, server, "Say", status=grpc.StatusCode.FAILED_PRECONDITION.value[0])
        assert server.logs[0][1]["message"] == "FAILED_PRECONDITION: not now"
    run(scenario)


@pytest.mark.parametrize("mode,code,kind", [
    (b"fail", grpc.StatusCode.UNKNOWN, "RuntimeError"),
    (b"abort", grpc.StatusCode.RESOURCE_EXHAUSTED, None)])
def test_a_response_stream_failing_midway(run, mode, code, kind):
    async def scenario(env):
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for message in env.stub("Count", "unary_stream")(b"3:" + mode,
                                                                   timeout=TIMEOUT):
                received.append(message)
        assert received == [b"0"] and info.value.code() == code
        [client], [server] = await env.pair()
        check_pair(client, server, "Count", status=code.value[0])
        if kind:
            assert [f["error.kind"] for _, f in server.logs] == [kind]
        else:
            assert server.logs[0][1]["message"] == "RESOURCE_EXHAUSTED: enough"
    run(scenario)


# -- cancellation ------------------------------------------------------------------------

def test_client_cancelling_a_unary_call(run):
    async def scenario(env):
        call = env.stub("Say", "unary_unary")(b"wait", timeout=TIMEOUT)
        await asyncio.wait_for(env.handlers.entered.wait(), TIMEOUT)
        assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(env.handlers.cancelled.wait(), TIMEOUT)
        [client], [server] = await env.pair()
        cancelled = grpc.StatusCode.CANCELLED.value[0]
        assert client.tags["rpc.grpc.status_code"] == cancelled and client.tags["error"] is True
        assert server.tags["rpc.grpc.status_code"] == cancelled and server.tags["error"] is True
        assert server.parent_id == client.span_id
    run(scenario)


def test_client_cancelling_a_response_stream(run):
    async def scenario(env):
        call = env.stub("Count", "unary_stream")(b"100:wait", timeout=TIMEOUT)
        assert await call.read() == b"0"
        await asyncio.wait_for(env.handlers.entered.wait(), TIMEOUT)
        assert call.cancel()
        await asyncio.wait_for(env.handlers.cancelled.wait(), TIMEOUT)
        [client], [server] = await env.pair()
        cancelled = grpc.StatusCode.CANCELLED.value[0]
        assert client.tags["rpc.grpc.status_code"] == cancelled
        assert server.tags["rpc.grpc.status_code"] == cancelled
        assert server.parent_id == client.span_id
    run(scenario)


# -- propagation -------------------------------------------------------------------------

@pytest.mark.parametrize("propagators", [("tracecontext", "baggage"), ("jaeger",)])
def test_baggage_and_user_metadata_cross(run, make_tracer, propagators):
    async def scenario(env):
        seen = {}

        async def peek(request, context):
            seen.update((k, v) for k, v in context.invocation_metadata())
            seen["baggage"] = env.server_tracer.active_span.get_baggage_item("user")
            return b""
        env.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "demo.Peek", {"Peek": grpc.unary_unary_rpc_method_handler(peek)}),))
        with env.client_tracer.start_active_span("request") as scope:
            scope.span.set_baggage_item("user", "zoë")
            await env.channel.unary_unary("/demo.Peek/Peek")(
                b"", timeout=TIMEOUT, metadata=(("x-mine", "1"), ("traceparent", "stale")))
        [client], [server] = await env.pair()
        assert server.parent_id == client.span_id and server.trace_id == scope.span.trace_id
        assert seen["baggage"] == "zoë" and seen["x-mine"] == "1"
        if "jaeger" in propagators:
            assert "uber-trace-id" in seen and seen["traceparent"] == "stale"
        else:
            assert seen["traceparent"] == \
                f"00-{client.trace_id:032x}-{client.span_id:016x}-01"
    run(scenario, client_tracer=make_tracer(propagators=propagators),
        server_tracer=make_tracer(propagators=propagators))


def test_corrupted_metadata_starts_a_new_trace(run, make_tracer):
    fasttrace.contrib.reset_stats()

    async def scenario(env):
        async with grpc.aio.insecure_channel(env.target) as plain:
            say = plain.unary_unary(f"/{SERVICE}/Say")
            assert await say(b"x", timeout=TIMEOUT,
                             metadata=(("uber-trace-id", "zz:zz"),)) == b"hello x"
        [server] = await spans_of(env.server_tracer.reporter, 1)
        assert server.parent_id is None
        assert fasttrace.contrib.stats()["corrupted_context"]["grpc"] == 1
    run(scenario, server_tracer=make_tracer(propagators=("jaeger",)))


def test_a_broken_tracer_never_breaks_the_call(run):
    import opentracing

    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    fasttrace.contrib.reset_stats()

    async def scenario(env):
        assert await env.stub("Say", "unary_unary")(b"ok", timeout=TIMEOUT) == b"hello ok"
        call = env.stub("Count", "unary_stream")(b"2", timeout=TIMEOUT)
        assert [m async for m in call] == [b"0", b"1"]
    run(scenario, client_tracer=Broken(), server_tracer=Broken())
    assert fasttrace.contrib.stats()["internal_errors"]["grpc"] == 4


# -- traceresponse with tail sampling ------------------------------------------------------

def expected(span, flags):
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{flags}"


@pytest.mark.parametrize("request_,flags", [
    (b"ok", "00"), (b"boom", "01"), (b"abort", "01"), (b"status", "01"), (b"keep", "01")])
def test_trailer_keeps_the_handlers_own_metadata(run, tail_tracer, request_, flags):
    async def scenario(env):
        call = env.stub("Say", "unary_unary")(request_, timeout=TIMEOUT)
        try:
            await call
        except grpc.aio.AioRpcError:
            assert request_ != b"ok"
        assert await until(lambda: env.rpc_clients())
        [client] = env.rpc_clients()
        assert list(await call.trailing_metadata()) == [
            ("own", "1"), ("own-bin", b"\x00\x01"),
            ("traceresponse",
             f"00-{client.trace_id:032x}-{env.handlers.seen[0]:016x}-{flags}")]
    run(scenario, server_tracer=tail_tracer())


@pytest.mark.parametrize("request_,flags", [(b"3", "00"), (b"3:fail", "01"),
                                            (b"3:abort", "01")])
def test_trailer_on_a_response_stream(run, make_tracer, tail_tracer, request_, flags):
    async def scenario(env):
        call = env.stub("Count", "unary_stream")(request_, timeout=TIMEOUT)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError:
            assert request_ != b"3"
        return list(await call.trailing_metadata())
    server_tracer = tail_tracer()
    trailing = run(scenario, client_tracer=make_tracer(), server_tracer=server_tracer)
    assert trailing[0] == ("own", "2") and len(trailing) == 2
    assert trailing[1][0] == "traceresponse" and trailing[1][1].endswith("-" + flags)


def test_no_trailer_without_tail_sampling(run):
    async def scenario(env):
        call = env.stub("Say", "unary_unary")(b"ok", timeout=TIMEOUT)
        await call
        return list(await call.trailing_metadata())
    assert run(scenario) == [("own", "1"), ("own-bin", b"\x00\x01")]


class Teller:
    """A grpc.aio server without fasttrace answering with the traceresponse trailer a
    test asks for (built from the call's traceparent)."""

    def __init__(self, value_for):
        self.value_for = value_for

    def trailer(self, context):
        carrier = dict(context.invocation_metadata())
        value = self.value_for(carrier["traceparent"].split("-")[1])
        if value is not None:
            context.set_trailing_metadata((("other", "x"), ("traceresponse", value)))

    async def __aenter__(self):
        async def say(request, context):
            self.trailer(context)
            if request == b"fail":
                await context.abort(grpc.StatusCode.INTERNAL, "failed")
            return b"hi"

        async def count(request, context):
            yield b"1"
            self.trailer(context)
            yield b"2"

        async def total(requests, context):
            self.trailer(context)
            return b"+".join([r async for r in requests])

        async def chat(requests, context):
            async for r in requests:
                yield r
            self.trailer(context)

        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Teller", {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Total": grpc.stream_unary_rpc_method_handler(total),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        }),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def __aexit__(self, *exc):
        await self.server.stop(None)


SPAN_HEX = "00f067aa0ba902b7"
CASES = {
    "sampled": (lambda t: f"00-{t}-{SPAN_HEX}-01", True, 0),
    "not-sampled": (lambda t: f"00-{t}-{SPAN_HEX}-00", False, 0),
    "absent": (lambda t: None, False, 0),
    "other-trace": (lambda t: f"00-{'1' * 32}-{SPAN_HEX}-01", False, 0),
    "uppercase": (lambda t: f"00-{t.upper()}-{SPAN_HEX.upper()}-01", False, 1),
}


async def call_shape(channel, shape):
    if shape in ("unary", "unary-failed"):
        return await channel.unary_unary("/t.Teller/Say")(
            b"fail" if shape == "unary-failed" else b"x", timeout=TIMEOUT)
    if shape == "unary-stream":
        return [m async for m in channel.unary_stream("/t.Teller/Count")(b"x",
                                                                         timeout=TIMEOUT)]
    if shape == "stream-unary":
        return await channel.stream_unary("/t.Teller/Total")(iter([b"a", b"b"]),
                                                             timeout=TIMEOUT)
    return [m async for m in channel.stream_stream("/t.Teller/Chat")(iter([b"a"]),
                                                                     timeout=TIMEOUT)]


@pytest.mark.usefixtures("fresh_asyncio_policy")
@pytest.mark.parametrize("shape", ["unary", "unary-failed", "unary-stream", "stream-unary",
                                   "stream-stream"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_client_follows_the_traceresponse_trailer(tail_tracer, shape, case):
    value_for, kept, bad = CASES[case]
    tracer = tail_tracer()
    before = malformed()

    async def main():
        async with Teller(value_for) as teller:
            async with grpc.aio.insecure_channel(
                    f"127.0.0.1:{teller.port}",
                    interceptors=client_interceptors(tracer)) as channel:
                with tracer.start_active_span("job"):
                    try:
                        await call_shape(channel, shape)
                    except grpc.aio.AioRpcError:
                        assert shape == "unary-failed"
                    # the client span ends from the call's done callback: wait for it
                    assert await until(lambda: tracer.stats()["finished"] == 1)
    asyncio.run(main())
    name = {"unary": "Say", "unary-failed": "Say", "unary-stream": "Count",
            "stream-unary": "Total", "stream-stream": "Chat"}[shape]
    if shape == "unary-failed":
        assert decisions(tracer) == {("job", "error"), (f"t.Teller/{name}", "error")}
    elif kept:
        assert decisions(tracer) == {("job", "downstream"), (f"t.Teller/{name}", "downstream")}
    else:
        assert decisions(tracer) == set()
    assert malformed() == before + bad


@pytest.mark.parametrize("request_,decision", [(b"keep", "downstream"), (b"boom", "error"),
                                               (b"ok", None)])
def test_one_hop_with_tail_sampling_on_both_sides(run, tail_tracer, request_, decision):
    client_tracer, server_tracer = tail_tracer(), tail_tracer()

    async def scenario(env):
        with client_tracer.start_active_span("job"):
            try:
                await env.stub("Say", "unary_unary")(request_, timeout=TIMEOUT)
            except grpc.aio.AioRpcError:
                assert request_ == b"boom"
            assert await until(lambda: client_tracer.stats()["finished"] == 1)
    run(scenario, client_tracer=client_tracer, server_tracer=server_tracer)
    if decision is None:
        assert decisions(client_tracer) == decisions(server_tracer) == set()
        return
    assert decisions(client_tracer) == {("job", decision), (f"{SERVICE}/Say", decision)}
    server_decision = "downstream" if request_ == b"keep" else "error"
    assert decisions(server_tracer) == {(f"{SERVICE}/Say", server_decision)}
    client = [s for s in client_tracer.reporter.spans if s.operation_name != "job"][0]
    [server] = server_tracer.reporter.spans
    assert server.parent_id == client.span_id and server.trace_id == client.trace_id


@pytest.mark.usefixtures("fresh_asyncio_policy")
def test_a_plain_function_handler_in_the_migration_thread_pool(make_tracer):
    from concurrent import futures
    tracer = make_tracer()
    seen = []

    def say(request, context):
        seen.append(tracer.active_span.span_id)
        return b"sync " + request

    async def main():
        with futures.ThreadPoolExecutor(max_workers=2) as pool:
            server = grpc.aio.server(migration_thread_pool=pool,
                                     interceptors=[server_interceptor(tracer)])
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                SERVICE, {"Say": grpc.unary_unary_rpc_method_handler(say)}),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            try:
                async with grpc.aio.insecure_channel(
                        f"127.0.0.1:{port}", interceptors=client_interceptors(tracer)) as channel:
                    assert await channel.unary_unary(f"/{SERVICE}/Say")(
                        b"x", timeout=TIMEOUT) == b"sync x"
                    assert await until(lambda: len(tracer.reporter.spans) == 2)
            finally:
                await server.stop(None)
    asyncio.run(main())
    server = [s for s in tracer.reporter.spans if s.tags["span.kind"] == "server"][0]
    client = [s for s in tracer.reporter.spans if s.tags["span.kind"] == "client"][0]
    assert seen == [server.span_id] and server.parent_id == client.span_id
    assert server.tags["rpc.grpc.status_code"] == 0 and "error" not in server.tags

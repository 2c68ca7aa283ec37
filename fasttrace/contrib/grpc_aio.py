# SPDX-License-Identifier: Apache-2.0
"""gRPC asyncio (``grpc.aio``) server and client interceptors.

    import grpc
    from fasttrace.contrib.grpc_aio import client_interceptors, server_interceptor

    server = grpc.aio.server(interceptors=[server_interceptor()])
    channel = grpc.aio.insecure_channel(target, interceptors=client_interceptors())

The same spans as ``fasttrace.contrib.grpc`` (whose helpers these interceptors share:
the span names, the tags, the status -> error mapping, the metadata carrier and the
``traceresponse`` trailer are defined there once), for all four RPC shapes:

Server: a ``span.kind=server`` span per call, child of the context in the metadata,
active (contextvars) while the handler coroutine runs -- across its ``await``\\ s and in
tasks it creates -- and while each message of a response stream is produced (an async
generator handler, or ``context.write()`` from a coroutine); it ends when the handler
returns, its response stream ends, it raises, it aborts, or the RPC is cancelled
(``rpc.grpc.status_code`` CANCELLED).  Handlers that are plain functions (run in the
server's ``migration_thread_pool``) are traced as by the sync interceptor.

``context.abort()`` sends the status at once, so the handler gets a context whose
``abort`` / ``abort_with_status`` first adds the ``traceresponse`` trailer (with tail
sampling; flags 01: an abort is an error) to the trailing metadata it sends; the
context is a ``grpc.aio.ServicerContext`` delegating everything else to grpc's own.

Client: a ``span.kind=client`` span per call, child of the active span, its context in
the call's metadata; it ends when the call is done (its done callback, then a task, as
an asyncio call's status is read by awaiting), and reads the ``traceresponse`` trailer
before that with tail sampling.  ``client_interceptors()`` is a list of four, one per
call shape: a ``grpc.aio`` channel files an interceptor under one shape only.
"""
import asyncio
import inspect

try:
    import grpc
    import grpc.aio
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fasttrace.contrib.grpc_aio needs grpcio: pip install 'fasttrace[grpc]'") \
        from exc

from fasttrace._failures import internal_error
from fasttrace.contrib._safe import get_tracer
from fasttrace.contrib.grpc import (
    _COMPONENT,
    _OK,
    _client_end,
    _finish,
    _ServerInterceptor,
    _ServerWrapping,
    _start_client,
    _target_peer,
)
from fasttrace.errors import mark_error

__all__ = ["server_interceptor", "client_interceptors"]

_CANCELLED = grpc.StatusCode.CANCELLED


# -- server -------------------------------------------------------------------------------

def _text(details):
    return details.decode("utf-8", "replace") if isinstance(details, bytes) else details


class _Context(grpc.aio.ServicerContext):
    """grpc's servicer context, with ``abort`` adding the traceresponse trailer first
    (and noting the status for the span); every other call goes to grpc's context."""

    def __init__(self, context, rpc):
        self._context = context
        self._rpc = rpc
        self._aborted = None

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_context", "_rpc", "_aborted"):
            raise AttributeError(name)
        return getattr(self._context, name)

    async def abort(self, code, details="", trailing_metadata=()):
        try:
            self._aborted = (code, _text(details))
            own = trailing_metadata or self._context.trailing_metadata()
            self._rpc.told = True
            merged = self._rpc.trailer(own, True)
            if merged is not None:
                trailing_metadata = merged
        except Exception:
            internal_error(_COMPONENT, "adding traceresponse")
        await self._context.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status):
        await self.abort(status.code, status.details, status.trailing_metadata)


def _delegate(name):
    def method(self, *args, **kwargs):
        return getattr(self._context, name)(*args, **kwargs)
    method.__name__ = name
    return method


for _name in grpc.aio.ServicerContext.__abstractmethods__:
    if _name not in _Context.__dict__:
        setattr(_Context, _name, _delegate(_name))
_Context.__abstractmethods__ = frozenset()
del _name


def _failed(rpc, context, proxy, exc):
    if proxy._aborted is not None and isinstance(proxy._aborted[0], grpc.StatusCode):
        code, details = proxy._aborted
        rpc.end(code, details)
    else:
        rpc.failed(context, exc)


class _AioServerInterceptor(_ServerWrapping, grpc.aio.ServerInterceptor):

    async def intercept_service(self, continuation, handler_call_details):
        return self._wrapped(await continuation(handler_call_details), handler_call_details)

    def _traced(self, behavior, method, metadata, streaming):
        if inspect.isasyncgenfunction(behavior):
            return self._traced_stream(behavior, method, metadata)
        if inspect.iscoroutinefunction(behavior):
            return self._traced_coroutine(behavior, method, metadata)
        # a plain function, run in the migration thread pool: the sync wrapper
        return _ServerInterceptor._traced(self, behavior, method, metadata, streaming)

    def _traced_coroutine(self, behavior, method, metadata):
        async def handler(request, context):
            rpc = self._start(method, metadata, context)
            if rpc is None:
                return await behavior(request, context)
            proxy = _Context(context, rpc)
            scope = rpc.tracer.scope_manager.activate(rpc.span, False)
            try:
                result = await behavior(request, proxy)
            except Exception as exc:
                scope.close()
                _failed(rpc, context, proxy, exc)
                raise
            except BaseException:
                # asyncio.CancelledError: the RPC was cancelled (or the server stopped)
                scope.close()
                rpc.end(_CANCELLED)
                raise
            scope.close()
            rpc.succeeded(context)
            return result

        return handler

    def _traced_stream(self, behavior, method, metadata):
        async def handler(request, context):
            rpc = self._start(method, metadata, context)
            if rpc is None:
                async for item in behavior(request, context):
                    yield item
                return
            proxy = _Context(context, rpc)
            manager = rpc.tracer.scope_manager
            responses = behavior(request, proxy)
            try:
                while True:
                    scope = manager.activate(rpc.span, False)
                    try:
                        item = await responses.__anext__()
                    except StopAsyncIteration:
                        scope.close()
                        rpc.succeeded(context)
                        return
                    except Exception as exc:
                        scope.close()
                        _failed(rpc, context, proxy, exc)
                        raise
                    scope.close()
                    yield item
            finally:
                if not rpc.done:
                    # cancelled (CancelledError at the await, or closed at a yield)
                    try:
                        await responses.aclose()
                    except BaseException:
                        pass
                    rpc.end(_CANCELLED)

        return handler


def server_interceptor(tracer=None):
    """A ``grpc.aio.ServerInterceptor`` tracing every call (``tracer=None``: the global
    tracer at call time)."""
    return _AioServerInterceptor(tracer)


# -- client -------------------------------------------------------------------------------

_pending = set()      # the tasks finishing client spans (a task needs a strong reference)


async def _client_done(tracer, span, call):
    trailing = None
    if getattr(tracer, "tail_sampling", None) is not None:
        try:
            trailing = await call.trailing_metadata()
        except BaseException:
            pass
    try:
        code = await call.code()
        details = await call.details() if code is not _OK else None
    except BaseException:
        code, details = grpc.StatusCode.UNKNOWN, None
    _client_end(tracer, span, trailing, code, details)


def _on_done(tracer, span, call):
    """The call's done callback (on its event loop): the status and trailer are read
    by a task, as the asyncio call only answers awaiting."""
    try:
        task = asyncio.get_running_loop().create_task(_client_done(tracer, span, call))
        _pending.add(task)
        task.add_done_callback(_pending.discard)
    except Exception:
        internal_error(_COMPONENT, "finishing a span")
        _finish(span, None)


class _AioClientInterceptor:
    """The client span of a call; one subclass per call shape (below)."""

    def __init__(self, tracer, target):
        self._tracer = tracer
        self._peer = _target_peer(target)

    def _start(self, details):
        tracer = get_tracer(self._tracer)
        span, metadata = _start_client(tracer, self._peer, details)
        if metadata is not None:
            details = grpc.aio.ClientCallDetails(
                details.method, details.timeout, grpc.aio.Metadata(*metadata),
                details.credentials, details.wait_for_ready)
        return tracer, span, details

    async def _intercept(self, continuation, details, request):
        try:
            tracer, span, details = self._start(details)
        except Exception:
            internal_error(_COMPONENT, "starting a client span")
            return await continuation(details, request)
        try:
            call = await continuation(details, request)
        except BaseException as exc:
            if isinstance(exc, Exception):
                mark_error(span, exc)
            _finish(span, grpc.StatusCode.UNKNOWN if isinstance(exc, Exception) else _CANCELLED)
            raise
        try:
            call.add_done_callback(lambda done: _on_done(tracer, span, done))
        except Exception:
            internal_error(_COMPONENT, "watching a call")
            _finish(span, None)
        return call


class _UnaryUnary(_AioClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._intercept(continuation, client_call_details, request)


class _UnaryStream(_AioClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._intercept(continuation, client_call_details, request)


class _StreamUnary(_AioClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details,
                                     request_iterator):
        return await self._intercept(continuation, client_call_details, request_iterator)


class _StreamStream(_AioClientInterceptor, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details,
                                      request_iterator):
        return await self._intercept(continuation, client_call_details, request_iterator)


def client_interceptors(tracer=None, target=None):
    """The client interceptors of the four call shapes, for a ``grpc.aio`` channel:
    ``grpc.aio.insecure_channel(target, interceptors=client_interceptors())``.

    A list of four, one per shape: a ``grpc.aio`` channel files each interceptor under
    the first shape it implements only, so one object for all four would trace
    unary-unary calls alone.

    Args:
        tracer: an OpenTracing tracer; None means the global tracer at call time.
        target: the channel's ``"host:port"``, for the ``peer.*`` tags (optional).
    """
    return [kind(tracer, target) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary,
                                              _StreamStream)]

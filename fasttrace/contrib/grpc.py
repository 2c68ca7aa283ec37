# SPDX-License-Identifier: Apache-2.0
"""gRPC (grpcio) server and client interceptors: the trace crosses RPCs in metadata.

    import grpc
    from fasttrace.contrib.grpc import client_interceptor, server_interceptor

    server = grpc.server(pool, interceptors=[server_interceptor()])
    channel = grpc.intercept_channel(grpc.insecure_channel(target), client_interceptor())

All four RPC shapes (unary-unary, unary-stream, stream-unary, stream-stream) of the
synchronous API (``grpc.server`` / ``grpc.intercept_channel``); ``grpc.aio`` is
``fasttrace.contrib.grpc_aio``, built on this module's helpers.

Client: a ``span.kind=client`` span per call, child of the active span, its context
injected into the call's metadata (the propagators' ``HTTP_HEADERS`` form, keys
lowercase; a value that is not printable ASCII goes in a ``<key>-bin`` entry as UTF-8
bytes, as gRPC requires; keys gRPC does not accept are dropped and counted).  It ends when
the RPC completes -- for streamed responses when the stream has ended -- however the call
is made (blocking, ``with_call``, ``future``, iterating a stream).

Server: a ``span.kind=server`` span per call, child of the context in the metadata (a
corrupted one starts a new trace), active while the handler runs and while each message
of a response stream is produced, ended when the handler returns or its response stream
ends (or the RPC is cancelled).

Spans are named ``"<package.Service>/<Method>"`` and tagged ``component="grpc"``,
``rpc.system="grpc"``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code`` (the
numeric status) and, on the server, ``peer.ipv4``/``peer.ipv6``/``peer.port`` (on the
client when ``target="host:port"`` is given).  Any status other than OK sets
``error=true`` with an error log (the handler's exception, or the status and details).

Tail sampling across services (tracers with ``tail_sampling``): the server adds a
``traceresponse`` entry (W3C Trace Context Level 2: the server span's ids, flags 01 when
``tracer.tail_verdict`` keeps the trace as the handler ends -- a status other than OK or
an exception counts as an error -- else 00) to the trailing metadata, after whatever the
handler set there itself.  The client reads it from the call's trailing metadata when
the call completes, before its span ends: a valid, sampled one of the same trace keeps
the trace here too (``tracer.keep_trace``).
"""
import re
import threading

try:
    import grpc
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fasttrace.contrib.grpc needs grpcio: pip install 'fasttrace[grpc]'") \
        from exc
from opentracing import Format
from opentracing.ext import tags as ext_tags

from fasttrace._failures import count_dropped, internal_error
from fasttrace.contrib._http import peer_tags
from fasttrace.contrib._safe import (
    TRACERESPONSE,
    extract,
    follow_traceresponse,
    get_tracer,
    traceresponse,
)
from fasttrace.errors import mark_error

__all__ = ["server_interceptor", "client_interceptor"]

_COMPONENT = "grpc"
_STATUS_TAG = "rpc.grpc.status_code"
_VALID_KEY = re.compile(r"[0-9a-z_.\-]+\Z")
_OK = grpc.StatusCode.OK


# -- metadata <-> carrier ---------------------------------------------------------------

def _metadata_carrier(metadata):
    """A {lowercase name: str} carrier from gRPC metadata; ``-bin`` entries are UTF-8
    decoded under their name without the suffix (a plain entry of that name wins)."""
    carrier = {}
    binary = None
    for item in metadata or ():
        try:
            key, value = item[0], item[1]
        except Exception:
            continue
        if type(key) is not str:
            continue
        key = key.lower()
        if key.endswith("-bin"):
            if isinstance(value, (bytes, bytearray)):
                try:
                    text = bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if binary is None:
                    binary = {}
                binary[key[:-4]] = text
        elif type(value) is str:
            carrier[key] = value
    if binary:
        for key, value in binary.items():
            carrier.setdefault(key, value)
    return carrier


def _carrier_metadata(carrier):
    """[(key, value)] for gRPC from an injected {name: str} carrier."""
    out = []
    for key, value in carrier.items():
        key = key.lower()
        if not _VALID_KEY.match(key) or key.startswith("grpc-"):
            count_dropped(_COMPONENT, f"metadata key {key!r} is not valid in gRPC")
            continue
        if value.isascii() and value.isprintable():
            out.append((key, value))
        else:
            out.append((key + "-bin", value.encode("utf-8")))
    return out


# -- helpers ------------------------------------------------------------------------------

def _method_tags(method, kind):
    name = method[1:] if method.startswith("/") else method
    service, _, rpc = name.rpartition("/")
    tags = {
        ext_tags.SPAN_KIND: kind,
        ext_tags.COMPONENT: _COMPONENT,
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": rpc,
    }
    return name, tags


def _peer(peer, tags):
    """Adds peer.* from grpc's peer string: ipv4:1.2.3.4:5, ipv6:[::1]:5."""
    if not peer:
        return
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return
    host, _, port = address.rpartition(":")
    peer_tags(host.strip("[]"), port, tags)


def _finish(span, code, details=None, exc=None):
    try:
        if code is None:
            code = _OK
        span.set_tag(_STATUS_TAG, code.value[0])
        if code is not _OK:
            if exc is not None:
                mark_error(span, exc)
            else:
                text = f"{code.name}: {details}" if details else code.name
                mark_error(span, message=text)
        span.finish()
    except Exception:
        internal_error(_COMPONENT, "finishing a span")


# -- server -------------------------------------------------------------------------------

def _context_code(context):
    try:
        return context.code(), context.details()
    except Exception:
        return None, None


class _ServerRPC:
    """One server span and whether it has been finished."""

    __slots__ = ("tracer", "span", "done", "told", "lock")

    def __init__(self, tracer, span):
        self.tracer = tracer
        self.span = span
        self.done = False
        self.told = False
        self.lock = threading.Lock()

    def end(self, code, details=None, exc=None):
        with self.lock:
            if self.done:
                return
            self.done = True
        _finish(self.span, code, details, exc)

    def tell(self, context, error):
        """Adds ``traceresponse`` to the call's trailing metadata, after the handler's own
        (an earlier traceresponse entry is replaced), when the tracer samples by its
        tail.  Called before the span ends, once; never raises."""
        if self.told:
            return
        self.told = True
        try:
            own = context.trailing_metadata() or ()
        except Exception:
            internal_error(_COMPONENT, "adding traceresponse")   # never drop the handler's
            return
        merged = self.trailer(own, error)
        if merged is None:
            return
        try:
            context.set_trailing_metadata(merged)
        except Exception:
            internal_error(_COMPONENT, "adding traceresponse")

    def trailer(self, own, error):
        """`own` trailing metadata with ``traceresponse`` last (replacing an earlier
        entry), or None without tail sampling: the one place of the gRPC trailer (the
        asyncio interceptor's ``abort`` calls it too).  Never raises."""
        if getattr(self.tracer, "tail_sampling", None) is None:
            return None
        value = traceresponse(self.tracer, self.span, error, _COMPONENT)
        if value is None:
            return None
        try:
            merged = [item for item in own or () if str(item[0]).lower() != TRACERESPONSE]
            merged.append((TRACERESPONSE, value))
            return tuple(merged)
        except Exception:
            internal_error(_COMPONENT, "adding traceresponse")
            return None

    def failed(self, context, exc):
        self.tell(context, True)
        code, details = _context_code(context)
        if code is not None and code is not _OK:
            # context.abort(): the status says more than its bare Exception()
            self.end(code, details.decode("utf-8", "replace")
                     if isinstance(details, bytes) else details)
        else:
            self.end(grpc.StatusCode.UNKNOWN, exc=exc)

    def run(self, behavior, request, context):
        """``behavior(request, context)`` with the span active; if it raises, the RPC
        has failed (an exception) or was cancelled (anything else)."""
        scope = self.tracer.scope_manager.activate(self.span, False)
        try:
            result = behavior(request, context)
        except Exception as exc:
            scope.close()
            self.failed(context, exc)
            raise
        except BaseException:
            scope.close()
            self.end(grpc.StatusCode.CANCELLED)
            raise
        scope.close()
        return result

    def succeeded(self, context):
        code, details = _context_code(context)
        self.tell(context, code is not None and code is not _OK)
        self.end(code or _OK, details.decode("utf-8", "replace")
                 if isinstance(details, bytes) else details)


class _ServerWrapping:
    """What the sync and the asyncio server interceptors share: the handler of each RPC
    shape rebuilt around ``self._traced(behavior, method, metadata, streaming)``, and
    the server span of a call."""

    def __init__(self, tracer):
        self._tracer = tracer

    def _wrapped(self, handler, handler_call_details):
        if handler is None:
            return None
        try:
            return self._wrap(handler, handler_call_details)
        except Exception:
            internal_error(_COMPONENT, "wrapping a handler")
            return handler

    def _wrap(self, handler, details):
        method = details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        metadata = details.invocation_metadata
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._traced(handler.stream_stream, method, metadata, True), **kwargs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._traced(handler.stream_unary, method, metadata, False), **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._traced(handler.unary_stream, method, metadata, True), **kwargs)
        return grpc.unary_unary_rpc_method_handler(
            self._traced(handler.unary_unary, method, metadata, False), **kwargs)

    def _start(self, method, metadata, context):
        try:
            tracer = get_tracer(self._tracer)
            name, tags = _method_tags(method, ext_tags.SPAN_KIND_RPC_SERVER)
            try:
                _peer(context.peer(), tags)
            except Exception:
                pass
            parent = extract(tracer, Format.HTTP_HEADERS, _metadata_carrier(metadata),
                             _COMPONENT)
            span = tracer.start_span(name, child_of=parent, tags=tags,
                                     ignore_active_span=True)
            return _ServerRPC(tracer, span)
        except Exception:
            internal_error(_COMPONENT, "starting a server span")
            return None


class _ServerInterceptor(_ServerWrapping, grpc.ServerInterceptor):

    def intercept_service(self, continuation, handler_call_details):
        return self._wrapped(continuation(handler_call_details), handler_call_details)

    def _traced(self, behavior, method, metadata, streaming):
        def handler(request, context):
            rpc = self._start(method, metadata, context)
            if rpc is None:
                return behavior(request, context)
            if not streaming:
                response = rpc.run(behavior, request, context)
                rpc.succeeded(context)
                return response
            try:
                # the RPC may end without the stream being closed (cancelled)
                context.add_callback(lambda: rpc.end(grpc.StatusCode.CANCELLED))
            except Exception:
                pass
            responses = rpc.run(lambda r, c: iter(behavior(r, c)), request, context)
            return _traced_stream(responses, rpc, rpc.tracer.scope_manager, context)

        return handler


def _traced_stream(responses, rpc, manager, context):
    try:
        while True:
            scope = manager.activate(rpc.span, False)
            try:
                item = next(responses)
            except StopIteration:
                scope.close()
                rpc.succeeded(context)
                return
            except Exception as exc:
                scope.close()
                rpc.failed(context, exc)
                raise
            scope.close()
            yield item
    finally:
        if not rpc.done:
            close = getattr(responses, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            rpc.end(grpc.StatusCode.CANCELLED)


def server_interceptor(tracer=None):
    """A ``grpc.ServerInterceptor`` tracing every call (``tracer=None``: the global
    tracer at call time)."""
    return _ServerInterceptor(tracer)


# -- client -------------------------------------------------------------------------------

class _CallDetails(grpc.ClientCallDetails):
    __slots__ = ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                 "compression")

    def __init__(self, details, metadata):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def _trailer_value(trailing):
    """The ``traceresponse`` entry of trailing metadata: its value, None when absent, a
    list when sent more than once (malformed)."""
    values = [item[1] for item in trailing or () if str(item[0]).lower() == TRACERESPONSE]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _trailer(call):
    return _trailer_value(call.trailing_metadata())


def _client_end(tracer, span, trailing, code, details):
    """The end of a client call (sync or asyncio): its ``traceresponse`` trailer followed
    (with tail sampling), then the status tagged and the span finished.  `trailing` is
    the call's trailing metadata, None when it has none."""
    if getattr(tracer, "tail_sampling", None) is not None:
        try:
            value = _trailer_value(trailing)
        except Exception:
            value = None
        follow_traceresponse(tracer, span, value, _COMPONENT)
    _finish(span, code, details)


def _client_done(tracer, span, call):
    trailing = None
    if getattr(tracer, "tail_sampling", None) is not None:
        try:
            trailing = call.trailing_metadata()
        except Exception:
            pass       # no trailing metadata (a call that failed before sending)
    try:
        code = call.code()
        details = call.details() if code is not _OK else None
    except Exception:
        code, details = grpc.StatusCode.UNKNOWN, None
    _client_end(tracer, span, trailing, code, details)


def _target_peer(target):
    """peer.* tags from a channel target ``"host:port"`` (empty when it is not one)."""
    out = {}
    if target:
        host, _, port = str(target).rpartition(":")
        if host and port.isdigit():
            peer_tags(host.strip("[]"), port, out)
    return out


def _start_client(tracer, peer, details):
    """The client span of a call (child of the active span) and the call's metadata
    with the span's context in it: (span, [(key, value)]), or (span, None) when nothing
    was injected.  A user entry of an injected name (or its ``-bin`` form) is replaced."""
    method = details.method
    if isinstance(method, bytes):
        method = method.decode("utf-8", "replace")
    name, tags = _method_tags(method, ext_tags.SPAN_KIND_RPC_CLIENT)
    if peer:
        tags.update(peer)
    span = tracer.start_span(name, tags=tags)
    carrier = {}
    try:
        tracer.inject(span.context, Format.HTTP_HEADERS, carrier)
    except Exception:
        internal_error(_COMPONENT, "inject")
    injected = _carrier_metadata(carrier)
    if not injected:
        return span, None
    names = {key for key, _ in injected}
    names.update(key[:-4] for key in list(names) if key.endswith("-bin"))
    metadata = [item for item in (details.metadata or ())
                if item[0].lower() not in names
                and not (item[0].lower().endswith("-bin") and item[0].lower()[:-4] in names)]
    metadata.extend(injected)
    return span, metadata


class _ClientInterceptor(grpc.UnaryUnaryClientInterceptor,
                         grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor,
                         grpc.StreamStreamClientInterceptor):

    def __init__(self, tracer, target):
        self._tracer = tracer
        self._peer = _target_peer(target)

    def _start(self, details):
        tracer = get_tracer(self._tracer)
        span, metadata = _start_client(tracer, self._peer, details)
        return tracer, span, details if metadata is None else _CallDetails(details, metadata)

    def _intercept(self, continuation, details, request):
        try:
            tracer, span, details = self._start(details)
        except Exception:
            internal_error(_COMPONENT, "starting a client span")
            return continuation(details, request)
        try:
            call = continuation(details, request)
        except BaseException as exc:
            if isinstance(exc, Exception):
                mark_error(span, exc)
            _finish(span, grpc.StatusCode.UNKNOWN)
            raise
        try:
            call.add_done_callback(lambda done: _client_done(tracer, span, done))
        except Exception:
            internal_error(_COMPONENT, "watching a call")
            _finish(span, None)
        return call

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._intercept(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return self._intercept(continuation, client_call_details, request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return self._intercept(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return self._intercept(continuation, client_call_details, request_iterator)


def client_interceptor(tracer=None, target=None):
    """A client interceptor (all four call shapes) for ``grpc.intercept_channel``.

    Args:
        tracer: an OpenTracing tracer; None means the global tracer at call time.
        target: the channel's ``"host:port"``, for the ``peer.*`` tags (optional).
    """
    return _ClientInterceptor(tracer, target)

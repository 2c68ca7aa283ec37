# SPDX-License-Identifier: Apache-2.0
"""aiohttp: server spans (``aiohttp.web``) and client spans (``aiohttp.ClientSession``).

    from fasttrace.contrib import aiohttp as ft_aiohttp

    app = web.Application()
    ft_aiohttp.setup(app, excluded_paths=("/healthz",))     # the middleware + traceresponse
    # or: web.Application(middlewares=[ft_aiohttp.middleware()])

    ft_aiohttp.instrument()            # every ClientSession made from now on
    session = aiohttp.ClientSession(trace_configs=[ft_aiohttp.trace_config()])  # or one

Server: one ``span.kind=server`` span per request, child of the context in the request
headers (a corrupted header starts a new trace), active (contextvars) while the handler
runs, across its ``await``\\ s and in tasks it creates, finished when the handler returns
or raises.  Operation name: ``"<METHOD> <route>"`` with the matched resource's canonical
form (``/users/{id}``; aiohttp resolves the route before the middlewares run), else
``"<METHOD> <path>"`` (no route matched: 404, 405); ``operation_name`` (a str, or a
callable taking the request) overrides it.  Tags: ``component="aiohttp"``,
``http.method``, ``http.url``, ``http.status_code`` (an ``HTTPException`` raised by the
handler is the response it stands for; any other exception is aiohttp's 500),
``peer.*``.  An exception other than an ``HTTPException`` below 500, or a 5xx status,
sets ``error=true`` with an error log; cancellation just ends the span.

With a tracer that samples by its tail, the response gets a ``traceresponse`` header
(W3C Trace Context Level 2; flags 01 when ``tracer.tail_verdict`` keeps the trace as the
headers go out, a 5xx or an exception counting as an error), in place of one the handler
set.  ``middleware()`` alone adds it to the responses a handler returns or raises;
``setup(app)`` adds it through ``app.on_response_prepare`` as well, so that also the
500 aiohttp sends for an unhandled exception and the responses a handler prepares
itself (``StreamResponse``, websockets) carry it.

Client: one ``span.kind=client`` span per request, named ``"HTTP <METHOD>"``, child of
the active span, its context injected into the request headers, ended when the response
headers have arrived (or the request failed).  Tags: ``component="aiohttp"``,
``http.method``, ``http.url`` (without credentials), ``http.status_code``, ``peer.*``;
an exception or a 5xx sets ``error=true``.  With tail sampling, a sampled
``traceresponse`` of the same trace keeps the trace here too (``tracer.keep_trace``).
``trace_config(tracer=None)`` is an ``aiohttp.TraceConfig`` for one session;
``instrument()`` adds one to every ``ClientSession`` made afterwards (not twice to a
session given one already), ``uninstrument()`` restores ``ClientSession.__init__`` and
turns the added configs off.
"""
from typing import Optional

try:
    import aiohttp
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fasttrace.contrib.aiohttp needs aiohttp: "
                      "pip install 'fasttrace[aiohttp]'") from exc
import opentracing
from opentracing.ext import tags as ext_tags

from fasttrace._failures import internal_error
from fasttrace.contrib._http import (
    ServerRequest,
    client_span_tags,
    finish_http_client_span,
    follow_response_header,
    normalize_excluded,
    path_excluded,
    start_server_span,
)
from fasttrace.contrib._patching import Patches
from fasttrace.contrib._safe import TRACERESPONSE, get_tracer, inject
from fasttrace.errors import mark_error

__all__ = ["middleware", "setup", "trace_config", "instrument", "uninstrument",
           "is_instrumented"]

_COMPONENT = "aiohttp"
# the request's _Request, in the request's own mapping (aiohttp >= 3.14 has typed keys)
_KEY = web.RequestKey("fasttrace.request") if hasattr(web, "RequestKey") \
    else "fasttrace.request"


# -- server -------------------------------------------------------------------------------

def _headers(request):
    """The carrier extract() reads: a dict of lowercase names (a header received
    several times: a list of its values)."""
    out = {}
    for name, value in request.headers.items():
        key = name.lower()
        previous = out.get(key)
        if previous is None:
            out[key] = value
        elif type(previous) is list:
            previous.append(value)
        else:
            out[key] = [previous, value]
    return out


def _route(request):
    try:
        resource = request.match_info.route.resource
    except Exception:
        return None
    canonical = getattr(resource, "canonical", None) if resource is not None else None
    return canonical if isinstance(canonical, str) and canonical else None


def _peer(request):
    try:
        peer = request.transport.get_extra_info("peername")
        if isinstance(peer, (tuple, list)) and len(peer) >= 2:
            return peer[0], peer[1]
    except Exception:
        pass
    return request.remote, None


class _Request(ServerRequest):
    __slots__ = ("told",)
    component = _COMPONENT

    def __init__(self, tracer, span, named):
        super().__init__(tracer, span, named)
        self.told = None

    def status_code(self):
        if self.status is not None:
            self.span.set_tag(ext_tags.HTTP_STATUS_CODE, self.status)
        return self.status

    def header(self, code):
        """The ``traceresponse`` value of this request's response (status `code`),
        computed once -- the first time the response is known -- or None."""
        if self.told is None:
            self.told = self.traceresponse(code) or ""
        return self.told or None

    def tell(self, response, preparing=False):
        """Sets ``traceresponse`` on `response` unless its headers are out (`preparing`:
        called from ``on_response_prepare``, where they are about to go out, though
        aiohttp already counts the response as prepared); never raises."""
        if getattr(self.tracer, "tail_sampling", None) is None:
            return
        try:
            if response.prepared and not preparing:
                return
            value = self.header(response.status)
            if value is not None:
                response.headers[TRACERESPONSE] = value
        except Exception:
            internal_error(_COMPONENT, "adding traceresponse")


def _start(tracer, request, operation_name):
    path = request.path
    name = operation_name
    if name is None:
        route = _route(request)
        if route is not None:
            name = f"{request.method} {route}"
    host, port = _peer(request)
    span, named = start_server_span(tracer, _COMPONENT, name, request, request.method, path,
                                    str(request.url), host, port, _headers(request))
    return _Request(tracer, span, named)


def middleware(tracer=None, excluded_paths=(), operation_name=None):
    """An ``aiohttp.web`` middleware tracing each request as a server span (see the
    module doc; ``setup(app)`` adds it with the ``on_response_prepare`` hook).

    Args:
        tracer: an OpenTracing tracer; None means ``opentracing.global_tracer()`` at
            request time.
        excluded_paths: paths not traced (exact, ``prefix*`` or compiled regexes),
            matched against ``request.path``.
        operation_name: a fixed name, or a callable ``request -> str``.
    """
    excluded = normalize_excluded(excluded_paths)

    @web.middleware
    async def fasttrace_middleware(request, handler):
        if excluded and path_excluded(request.path, excluded):
            return await handler(request)
        try:
            traced = get_tracer(tracer)
            state = _start(traced, request, operation_name)
            request[_KEY] = state
            active = traced.scope_manager.activate(state.span, False)
        except Exception:
            internal_error(_COMPONENT, "starting a span")
            return await handler(request)
        try:
            response = await handler(request)
            try:
                state.status = response.status
            except Exception:
                pass
            state.tell(response)
            return response
        except web.HTTPException as exc:
            # raised responses (HTTPNotFound, HTTPFound, ...): the status they stand for
            state.status = exc.status
            if exc.status >= 500:
                state.fail(exc)
            state.tell(exc)
            raise
        except Exception as exc:
            state.status = 500              # what aiohttp answers
            state.fail(exc)
            state.header(500)               # sent by setup()'s prepare hook
            raise
        finally:
            # cancellation is not an error of the request; the span just ends
            active.close()
            state.finish()

    return fasttrace_middleware


async def _on_response_prepare(request, response):
    state = request.get(_KEY)
    if state is not None:
        state.tell(response, preparing=True)


def setup(app, tracer=None, excluded_paths=(), operation_name=None):
    """Traces `app`: adds ``middleware(...)`` first in its middlewares and the
    ``on_response_prepare`` hook that puts ``traceresponse`` on every response (with
    tail sampling).  Before the application starts."""
    app.middlewares.insert(0, middleware(tracer, excluded_paths, operation_name))
    app.on_response_prepare.append(_on_response_prepare)
    return app


# -- client -------------------------------------------------------------------------------

class _On:
    """The switch of a trace config: always on, or on while a generation is."""

    __slots__ = ("generation", "tracer")

    def __init__(self, tracer, generation=None):
        self.tracer = tracer
        self.generation = generation

    @property
    def on(self):
        return self.generation is None or self.generation.on

    def get(self):
        return get_tracer(self.generation.tracer if self.generation is not None
                          else self.tracer)


def _hooks(switch):
    async def on_request_start(session, context, params):
        context.fasttrace = None
        if not switch.on:
            return
        try:
            tracer = switch.get()
            method = params.method.upper()
            url = params.url
            span = tracer.start_span(f"HTTP {method}", tags=client_span_tags(
                _COMPONENT, method, str(url), url.host, url.port))
            inject(tracer, span, params.headers, _COMPONENT)
            context.fasttrace = (tracer, span)
        except Exception:
            internal_error(_COMPONENT, "starting a span")

    async def on_request_end(session, context, params):
        started = getattr(context, "fasttrace", None)
        if started is None:
            return
        context.fasttrace = None
        tracer, span = started
        response = params.response
        follow_response_header(tracer, span, response, _COMPONENT)
        finish_http_client_span(span, getattr(response, "status", None), _COMPONENT)

    async def on_request_exception(session, context, params):
        started = getattr(context, "fasttrace", None)
        if started is None:
            return
        context.fasttrace = None
        _, span = started
        if isinstance(params.exception, Exception):
            mark_error(span, params.exception)
        finish_http_client_span(span, None, _COMPONENT)

    return on_request_start, on_request_end, on_request_exception


def _make_config(switch):
    config = aiohttp.TraceConfig()
    start, end, failed = _hooks(switch)
    config.on_request_start.append(start)
    config.on_request_end.append(end)
    config.on_request_exception.append(failed)
    config._fasttrace = True
    return config


def trace_config(tracer: Optional[opentracing.Tracer] = None):
    """An ``aiohttp.TraceConfig`` tracing the requests of the sessions given it
    (``tracer=None``: the global tracer at request time)."""
    return _make_config(_On(tracer))


_patches = Patches()


def _make_init(original, generation):
    config = _make_config(_On(None, generation))

    def __init__(self, *args, trace_configs=None, **kwargs):
        if generation.on and not any(getattr(c, "_fasttrace", False)
                                     for c in trace_configs or ()):
            trace_configs = [*(trace_configs or ()), config]
        original(self, *args, trace_configs=trace_configs, **kwargs)

    return __init__


def instrument(tracer: Optional[opentracing.Tracer] = None) -> None:
    """Traces the requests of every ``aiohttp.ClientSession`` made from now on
    (``tracer=None``: the global tracer at request time).  Idempotent."""
    _patches.instrument(tracer, [(aiohttp.ClientSession, "__init__", _make_init)])


def uninstrument() -> None:
    """Restores ``aiohttp.ClientSession.__init__``; sessions made while instrumented stop
    tracing."""
    _patches.uninstrument()


def is_instrumented() -> bool:
    return _patches.instrumented

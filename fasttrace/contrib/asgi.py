# SPDX-License-Identifier: Apache-2.0
"""ASGI server spans (HTTP); websocket and lifespan scopes pass through untraced.

    from fasttrace.contrib.asgi import TracingMiddleware
    app = TracingMiddleware(app, excluded_paths=("/healthz",))
    # Starlette: Starlette(routes=..., middleware=[Middleware(TracingMiddleware)])

One ``span.kind=server`` span per HTTP request, child of the context in the request
headers (a corrupted header starts a new trace), active while the application runs --
across ``await`` and in tasks it creates -- and finished as soon as the last chunk of the
response body has been sent (``more_body`` false), or when the application raises or
returns without completing the response.

Operation name: ``"<METHOD> <route>"`` where the framework records the matched route in
the scope (Starlette and FastAPI: ``scope["route"].path_format``, e.g. ``/users/{id}``;
a plain string in ``scope["route"]`` is used as it is), else ``"<METHOD> <path>"``;
``operation_name`` (a str, or a callable taking the scope) overrides it.

Tags as for WSGI: ``span.kind``, ``component="asgi"``, ``http.method``, ``http.url``,
``http.status_code`` (from ``http.response.start``), ``peer.*`` from ``scope["client"]``.
An exception or a 5xx status sets ``error=true`` with an error log; for a 5xx the span
stays open until the application returns, so the exception that caused it (Starlette
sends the 500 before re-raising) is logged too, with the span's end time still the end
of the response.

With a tracer that samples by its tail (``Tracer(tail_sampling=...)``), the
``http.response.start`` message gets a ``traceresponse`` header (W3C Trace Context Level
2: the server span's ids, flags 01 when ``tracer.tail_verdict`` keeps the trace at that
moment -- a 5xx status or an exception so far counts as an error -- else 00), in place
of one the application set.
"""
import time

from opentracing.ext import tags as ext_tags

from fasttrace._failures import internal_error
from fasttrace.contrib._http import (
    ServerMiddleware,
    ServerRequest,
    path_excluded,
    start_server_span,
)
from fasttrace.contrib._safe import TRACERESPONSE, get_tracer

__all__ = ["TracingMiddleware"]

_COMPONENT = "asgi"
_TRACERESPONSE = TRACERESPONSE.encode("ascii")


def _headers(raw):
    """The carrier extract() reads: ASGI's [(bytes, bytes)] headers as an exact dict of
    lowercase str names (a header received several times: a list of its values)."""
    out = {}
    for item in raw:
        try:
            name, value = item
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
        except Exception:
            continue
        previous = out.get(key)
        if previous is None:
            out[key] = text
        elif type(previous) is list:
            previous.append(text)
        else:
            out[key] = [previous, text]
    return out


def _host(scope):
    for name, value in scope.get("headers") or ():
        if name == b"host":
            try:
                return value.decode("latin-1")
            except Exception:
                return None
    server = scope.get("server")
    if server and server[0]:
        host, port = server[0], server[1]
        default = 443 if scope.get("scheme") in ("https", "wss") else 80
        return host if port in (None, default) else f"{host}:{port}"
    return None


def _url(scope, path):
    query = scope.get("query_string") or b""
    url = f"{scope.get('scheme', 'http')}://{_host(scope) or 'localhost'}{path}"
    if query:
        try:
            return f"{url}?{query.decode('latin-1')}"
        except Exception:
            return url
    return url


def _route(scope, root_path):
    route = scope.get("route")
    if route is None:
        return None
    if isinstance(route, str):
        template = route
    else:
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(template, str):
            return None
    # Starlette mounts add to root_path; the part they added prefixes the route
    inner_root = scope.get("root_path", "") or ""
    if inner_root != root_path and inner_root.startswith(root_path):
        template = inner_root[len(root_path):] + template
    return template


class _Request(ServerRequest):
    __slots__ = ("scope", "root_path")
    component = _COMPONENT

    def __init__(self, tracer, span, scope, named):
        super().__init__(tracer, span, named)
        self.scope = scope
        self.root_path = scope.get("root_path", "") or ""

    def response_started(self, status):
        try:
            self.status = code = int(status)
            span = self.span
            span.set_tag(ext_tags.HTTP_STATUS_CODE, code)
            if not self.named:
                route = _route(self.scope, self.root_path)
                if route is not None:
                    span.set_operation_name(f"{self.scope.get('method', 'GET')} {route}")
        except Exception:
            internal_error(_COMPONENT, "reading the response status")

    def with_traceresponse(self, message):
        """The ``http.response.start`` message with ``traceresponse`` added (replacing
        one the application set) when the tracer samples by its tail; `message` itself
        otherwise, or if anything fails.  The application's message is not changed."""
        if getattr(self.tracer, "tail_sampling", None) is None:
            return message
        try:
            value = self.traceresponse(self.status)
            if value is None:
                return message
            headers = [item for item in message.get("headers") or ()
                       if bytes(item[0]).lower() != _TRACERESPONSE]
            headers.append((_TRACERESPONSE, value.encode("ascii")))
            out = dict(message)
            out["headers"] = headers
            return out
        except Exception:
            internal_error(_COMPONENT, "adding traceresponse")
            return message

    def response_done(self):
        """The last body chunk is out: finish now, or (5xx) when the app returns."""
        if self.status is not None and self.status >= 500:
            self.end_time = time.time()
        else:
            self.finish()

    def status_code(self):
        return self.status


class TracingMiddleware(ServerMiddleware):
    """ASGI middleware tracing each HTTP request as a server span (see the module doc).

    Args:
        app: the ASGI application.
        tracer: an OpenTracing tracer; None means ``opentracing.global_tracer()`` at
            request time.
        excluded_paths: paths not traced (exact, ``prefix*`` or compiled regexes),
            matched against ``scope["path"]``.
        operation_name: a fixed name, or a callable ``scope -> str``.
    """

    def _start(self, scope, tracer):
        path = scope.get("path", "") or ""
        client = scope.get("client") or (None, None)
        span, named = start_server_span(
            tracer, _COMPONENT, self.operation_name, scope, scope.get("method", "GET"), path,
            _url(scope, path), client[0], client[1], _headers(scope.get("headers") or ()))
        return _Request(tracer, span, scope, named)

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or (
                self.excluded_paths and path_excluded(scope.get("path", ""), self.excluded_paths)):
            return await self.app(scope, receive, send)
        try:
            tracer = get_tracer(self.tracer)
            request = self._start(scope, tracer)
            active = tracer.scope_manager.activate(request.span, False)
        except Exception:
            internal_error(_COMPONENT, "starting a span")
            return await self.app(scope, receive, send)

        async def traced_send(message):
            kind = message.get("type") if type(message) is dict else None
            if kind == "http.response.start":
                request.response_started(message.get("status"))
                message = request.with_traceresponse(message)
            elif (kind == "http.response.body" or kind == "http.response.zerocopysend") \
                    and not message.get("more_body", False) or kind == "http.response.pathsend":
                await send(message)
                request.response_done()
                return
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        except Exception as exc:
            request.fail(exc)
            raise
        finally:
            # cancellation is not an error of the request; the span just ends
            active.close()
            request.finish()

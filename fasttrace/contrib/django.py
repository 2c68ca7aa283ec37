# SPDX-License-Identifier: Apache-2.0
"""Django server spans: a middleware for ``settings.MIDDLEWARE`` (sync and async).

    MIDDLEWARE = [
        "fasttrace.contrib.django.TracingMiddleware",     # first: it sees the whole request
        ...
    ]
    FASTTRACE_TRACER = my_tracer            # optional: a tracer, a callable returning one,
                                            # or the dotted path of either
    FASTTRACE_EXCLUDED_PATHS = ["/healthz", "/static/*"]    # optional

One ``span.kind=server`` span per request, child of the context found in the request
headers (a corrupted header starts a new trace), active (the contextvars scope manager)
while the rest of the middleware chain and the view run, in sync and async views alike,
finished when the response comes back to the middleware -- for a streaming response, when
its content has been produced or the response is closed, whichever comes first (the span
is active while each chunk is produced).  The settings are read at each request, so
``django.test.override_settings`` works; without ``FASTTRACE_TRACER`` the tracer is
``opentracing.global_tracer()`` at request time.

Operation name: ``"<METHOD> <route>"`` with the route Django resolved
(``request.resolver_match.route``, under the script prefix): ``GET /items/<int:pk>``,
never the path with its ids; ``"<METHOD> <unmatched>"`` for a 404 no URL pattern
matched, ``"<METHOD>"`` when the request got no route otherwise (a middleware answered
first).  The span is named as soon as the URL is resolved (``process_view``).

Tags: ``span.kind``, ``component="django"``, ``http.method``, ``http.url`` (with the query
string, without credentials), ``http.status_code``, ``peer.ipv4``/``peer.ipv6`` and
``peer.port`` (``REMOTE_ADDR``/``REMOTE_PORT``), ``django.view`` (the view's dotted name,
``myapp.views.item_detail``) and ``django.url_name`` when the pattern has a name.  An
exception from the view (``process_exception``) sets ``error=true`` with the error log,
except those Django answers with a 4xx (``Http404``, ``PermissionDenied``,
``BadRequest``, ``SuspiciousOperation``); any 5xx status is an error too.

``FASTTRACE_EXCLUDED_PATHS``: exact paths, prefixes ending in ``*`` or compiled regexes,
matched against ``request.path`` (script prefix included); such requests are not traced.

With a tracer that samples by its tail (``Tracer(tail_sampling=...)``), the response gets
a ``traceresponse`` header (W3C Trace Context Level 2: the server span's ids, flags 01
when ``tracer.tail_verdict`` keeps the trace as the response comes back to the
middleware -- a 5xx or an exception counting as an error -- else 00), in place of one the
view set.

The middleware never breaks a request: a failure of the tracer is counted in
``fasttrace.contrib.stats()`` and the request goes on untraced.
"""
try:
    from django.conf import settings
    from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
    from django.http import Http404
    from django.utils.module_loading import import_string
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fasttrace.contrib.django needs Django: "
                      "pip install 'fasttrace[django]'") from exc
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from opentracing import Tracer as _OpenTracingTracer
from opentracing.ext import tags as ext_tags

from fasttrace._failures import internal_error
from fasttrace.contrib._http import (
    ServerRequest,
    normalize_excluded,
    path_excluded,
    start_server_span,
    strip_userinfo,
)
from fasttrace.contrib._safe import TRACERESPONSE, get_tracer
from fasttrace.contrib.wsgi import _headers as _meta_headers

__all__ = ["TracingMiddleware"]

_COMPONENT = "django"
_ATTR = "_fasttrace"
# exceptions Django turns into a 4xx response: not errors of the server
_CLIENT_ERRORS = (Http404, PermissionDenied, BadRequest, SuspiciousOperation)

# the last settings value seen and what it means, so a request does not re-parse them
_excluded_cache = [None, ()]
_tracer_cache = [None, None]


def _excluded():
    value = getattr(settings, "FASTTRACE_EXCLUDED_PATHS", None)
    if value is None:
        return ()
    cached = _excluded_cache
    if cached[0] is not value:
        cached[1] = normalize_excluded(value)
        cached[0] = value
    return cached[1]


def _tracer():
    """The tracer of ``FASTTRACE_TRACER`` (a tracer, a callable returning one, or the
    dotted path of either), else the global tracer."""
    value = getattr(settings, "FASTTRACE_TRACER", None)
    if isinstance(value, str):
        cached = _tracer_cache
        if cached[0] != value:
            cached[1] = import_string(value)
            cached[0] = value
        value = cached[1]
    if value is not None and not isinstance(value, _OpenTracingTracer) and callable(value):
        value = value()
    return get_tracer(value)


def _url(request):
    meta = request.META
    try:
        scheme = request.scheme
    except Exception:
        scheme = "http"
    host = meta.get("HTTP_HOST")
    if not host:
        host = meta.get("SERVER_NAME", "")
        port = str(meta.get("SERVER_PORT", ""))
        if port and not ((scheme == "http" and port == "80")
                         or (scheme == "https" and port == "443")):
            host = f"{host}:{port}"
    url = f"{scheme}://{host}{request.path}"
    query = meta.get("QUERY_STRING")
    return strip_userinfo(f"{url}?{query}" if query else url)


def _view_name(match):
    name = getattr(match, "_func_path", None)
    if isinstance(name, str):
        return name
    func = getattr(match, "func", None)
    func = getattr(func, "view_class", func)
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{qualname}" if module else qualname


class _Request(ServerRequest):
    """The span of one Django request and what is known about its response."""

    __slots__ = ("request", "method", "routed")
    component = _COMPONENT

    def __init__(self, tracer, span, request, method):
        super().__init__(tracer, span, True)
        self.request = request
        self.method = method
        self.routed = False

    def route(self):
        """Names the span by the resolved route and tags the view, once the URL is
        resolved (process_view, or when the response comes back)."""
        if self.routed:
            return
        match = getattr(self.request, "resolver_match", None)
        if match is None:
            return
        self.routed = True
        span = self.span
        route = getattr(match, "route", None)
        if isinstance(route, str):
            if route.startswith("^"):                      # re_path patterns
                route = route[1:]
            if route.endswith("$") and not route.endswith("\\$"):
                route = route[:-1]
            prefix = (self.request.META.get("SCRIPT_NAME") or "").rstrip("/")
            span.set_operation_name(f"{self.method} {prefix}/{route}")
        span.set_tag("django.view", _view_name(match))
        url_name = getattr(match, "url_name", None)
        if isinstance(url_name, str) and url_name:
            span.set_tag("django.url_name", url_name)

    def respond(self, response):
        """The response is back: its status, the route, traceresponse; then the span is
        finished now, or (streaming) when the content is produced or the response closed.
        Returns the response; never raises."""
        try:
            self.route()
            code = response.status_code
            self.status = code = int(code) if code is not None else None
            if not self.routed and code == 404:
                self.span.set_operation_name(f"{self.method} <unmatched>")
            if getattr(self.tracer, "tail_sampling", None) is not None:
                value = self.traceresponse(code)
                if value is not None:
                    response[TRACERESPONSE] = value
            if getattr(response, "streaming", False) and self._follow_stream(response):
                return response
        except Exception:
            internal_error(_COMPONENT, "reading the response")
        self.finish()
        return response

    def _follow_stream(self, response):
        closers = getattr(response, "_resource_closers", None)
        if isinstance(closers, list):
            closers.append(self.finish)          # response.close(): always called by Django
        if getattr(response, "file_to_stream", None) is None:
            # FileResponse with a file: left as it is (wsgi.file_wrapper), finished on close
            if getattr(response, "is_async", False):
                response.streaming_content = self._achunks(response.streaming_content)
            else:
                response.streaming_content = self._chunks(response.streaming_content)
        elif not isinstance(closers, list):
            return False
        return True

    def _chunks(self, content):
        manager = self.tracer.scope_manager
        try:
            iterator = iter(content)
            while True:
                scope = manager.activate(self.span, False)
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        self.fail(exc)
                    raise
                finally:
                    scope.close()
                yield chunk
        finally:
            self.finish()

    async def _achunks(self, content):
        manager = self.tracer.scope_manager
        try:
            iterator = content.__aiter__()
            while True:
                scope = manager.activate(self.span, False)
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except BaseException as exc:
                    if isinstance(exc, Exception):
                        self.fail(exc)
                    raise
                finally:
                    scope.close()
                yield chunk
        finally:
            self.finish()

    def status_code(self):
        if self.status is not None:
            self.span.set_tag(ext_tags.HTTP_STATUS_CODE, self.status)
        return self.status


class TracingMiddleware:
    """Django middleware tracing each request as a server span (see the module doc).

    Sync and async capable: Django hands it an async ``get_response`` under ASGI (when
    the middleware below it are async capable too), and it then runs as a coroutine."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
            # Django adapts process_view to the handler's mode: a coroutine needs no thread
            self.process_view = self._process_view_async

    def _start(self, request):
        """The request's _Request, or None (an excluded path, or the tracer failed)."""
        try:
            path = request.path
            excluded = _excluded()
            if excluded and path_excluded(path, excluded):
                return None
            tracer = _tracer()
            method = request.method or "GET"
            meta = request.META
            span, _ = start_server_span(
                tracer, _COMPONENT, method, request, method, path, _url(request),
                meta.get("REMOTE_ADDR"), meta.get("REMOTE_PORT"), _meta_headers(meta))
            state = _Request(tracer, span, request, method)
            setattr(request, _ATTR, state)
            return state
        except Exception:
            internal_error(_COMPONENT, "starting a span")
            return None

    def _activate(self, state):
        try:
            return state.tracer.scope_manager.activate(state.span, False)
        except Exception:
            internal_error(_COMPONENT, "activating a span")
            return None

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        state = self._start(request)
        if state is None:
            return self.get_response(request)
        scope = self._activate(state)
        try:
            response = self.get_response(request)
        except BaseException as exc:   # DEBUG_PROPAGATE_EXCEPTIONS: Django re-raises
            _close(scope)
            if isinstance(exc, Exception):
                state.fail(exc)
            state.finish()
            raise
        _close(scope)
        return state.respond(response)

    async def __acall__(self, request):
        state = self._start(request)
        if state is None:
            return await self.get_response(request)
        scope = self._activate(state)
        try:
            response = await self.get_response(request)
        except BaseException as exc:   # cancellation just ends the span
            _close(scope)
            if isinstance(exc, Exception):
                state.fail(exc)
            state.finish()
            raise
        _close(scope)
        return state.respond(response)

    def process_view(self, request, view_func, view_args, view_kwargs):
        state = getattr(request, _ATTR, None)
        if state is not None:
            try:
                state.route()
            except Exception:
                internal_error(_COMPONENT, "reading the route")
        return None

    async def _process_view_async(self, request, view_func, view_args, view_kwargs):
        return TracingMiddleware.process_view(self, request, view_func, view_args, view_kwargs)

    def process_exception(self, request, exception):
        state = getattr(request, _ATTR, None)
        if state is not None and not isinstance(exception, _CLIENT_ERRORS):
            state.fail(exception)
        return None


def _close(scope):
    if scope is not None:
        try:
            scope.close()
        except Exception:
            internal_error(_COMPONENT, "closing a scope")

# SPDX-License-Identifier: Apache-2.0
"""WSGI server spans.

    from fasttrace.contrib.wsgi import TracingMiddleware
    app.wsgi_app = TracingMiddleware(app.wsgi_app, excluded_paths=("/healthz",))   # Flask
    application = TracingMiddleware(application)                                  # any WSGI app

One ``span.kind=server`` span per request, child of the context found in the request
headers (a corrupted header starts a new trace), active while the application runs and
while each chunk of the response body is produced, finished when the server closes the
response iterable (PEP 3333 requires servers to call ``close()``).

Operation name: ``operation_name`` if given (a str, or a callable taking the environ);
else ``"<METHOD> <route>"`` where the framework exposes the route template -- Flask /
Werkzeug (``/users/<int:id>`` is reported as ``/users/{id}``), or any framework that sets
``environ["fasttrace.route"]`` -- else ``"<METHOD> <path>"``.

Tags: ``span.kind``, ``component="wsgi"``, ``http.method``, ``http.url`` (with the query
string), ``http.status_code``, ``peer.ipv4``/``peer.ipv6`` and ``peer.port`` (from
``REMOTE_ADDR``/``REMOTE_PORT``).  An exception from the application, or from producing
the body, and any 5xx status set ``error=true`` with an error log.

``excluded_paths``: exact paths, prefixes ending in ``*`` (``"/static/*"``) or compiled
regexes, matched against ``SCRIPT_NAME + PATH_INFO``; such requests are not traced.

With a tracer that samples by its tail (``Tracer(tail_sampling=...)``), ``start_response``
gets a ``traceresponse`` header too (W3C Trace Context Level 2: the server span's ids,
flags 01 when ``tracer.tail_verdict`` keeps the trace at that moment -- a 5xx status or
an exception so far counts as an error -- else 00), in place of one the application set.
"""
import re
from urllib.parse import quote

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

_COMPONENT = "wsgi"
_WERKZEUG_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def _headers(environ):
    """The request headers of a WSGI environ as the carrier extract() reads
    (HTTP_X_FOO -> x-foo): an exact dict with lowercase names, which the codecs look
    names up in directly."""
    return {key[5:].replace("_", "-").lower(): value
            for key, value in environ.items() if key[:5] == "HTTP_"}


# characters that need no percent-encoding in a path (RFC 3986 pchar and "/")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~!$&'()*+,;=:@-]*\Z")


_templates = {}


def _route_template(environ):
    """The route template of the request, if the framework has told.  Read while the
    request is being handled: Flask forgets it (environ["werkzeug.request"] = None)
    when the request context ends, before the server reads the body."""
    route = environ.get("fasttrace.route")
    if isinstance(route, str) and route:
        return route
    request = environ.get("werkzeug.request")
    if request is not None:
        rule = getattr(request, "url_rule", None)
        if rule is not None:
            text = getattr(rule, "rule", None)
            if isinstance(text, str):
                template = _templates.get(text)
                if template is None:
                    template = _WERKZEUG_PARAM.sub(r"{\1}", text)
                    if len(_templates) < 4096:
                        _templates[text] = template
                return environ.get("SCRIPT_NAME", "") + template
    return None


def _url(environ, path):
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "")
        port = environ.get("SERVER_PORT", "")
        scheme = environ.get("wsgi.url_scheme", "http")
        if port and not ((scheme == "http" and port == "80")
                         or (scheme == "https" and port == "443")):
            host = f"{host}:{port}"
    if _PLAIN_PATH.match(path) is None:
        path = quote(path, safe="/;=,", encoding="latin1")
    url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}{path}"
    query = environ.get("QUERY_STRING")
    return f"{url}?{query}" if query else url


class _Request(ServerRequest):
    """The span of one request and what is known about its response."""

    __slots__ = ("environ", "route")
    component = _COMPONENT

    def __init__(self, tracer, span, environ, named):
        super().__init__(tracer, span, named)
        self.environ = environ
        self.route = None

    def response_started(self, status):
        self.status = status
        if not self.named:
            try:
                route = _route_template(self.environ)
                if route is not None:
                    self.route = route
            except Exception:
                internal_error(_COMPONENT, "reading the route")

    def headers_with_traceresponse(self, status, headers):
        """`headers` plus ``traceresponse`` (replacing one the application set) when the
        tracer samples by its tail; `headers` itself otherwise, or if anything fails."""
        if getattr(self.tracer, "tail_sampling", None) is None:
            return headers
        try:
            if not self.named and self.route is not None:
                # named by its route now, not only at finish: latency_ms_by_operation
                # must match the same name in the verdict as in the decision
                self.span.set_operation_name(
                    f"{self.environ.get('REQUEST_METHOD', 'GET')} {self.route}")
            try:
                code = int(status[:3])
            except (TypeError, ValueError):
                code = None
            value = self.traceresponse(code)
            if value is None:
                return headers
            out = [item for item in headers if item[0].lower() != TRACERESPONSE]
            out.append((TRACERESPONSE, value))
            return out
        except Exception:
            internal_error(_COMPONENT, "adding traceresponse")
            return headers

    def status_code(self):
        span = self.span
        if not self.named:
            route = self.route or _route_template(self.environ)
            if route is not None:
                span.set_operation_name(f"{self.environ.get('REQUEST_METHOD', 'GET')} {route}")
        if self.status is None:
            return None
        try:
            code = int(self.status[:3])
        except (TypeError, ValueError):
            return None
        span.set_tag(ext_tags.HTTP_STATUS_CODE, code)
        return code


class _TracedBody:
    """The response iterable, with the span active while each chunk is produced and
    finished on close()."""

    __slots__ = ("_body", "_request", "__weakref__")

    def __init__(self, body, request):
        self._body = body
        self._request = request

    def __iter__(self):
        request = self._request
        manager = request.tracer.scope_manager
        scope = manager.activate(request.span, False)
        try:
            iterator = iter(self._body)
        except BaseException as exc:
            request.fail(exc)
            raise
        finally:
            scope.close()
        while True:
            scope = manager.activate(request.span, False)
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except BaseException as exc:
                request.fail(exc)
                raise
            finally:
                scope.close()
            yield chunk

    def close(self):
        request = self._request
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                scope = request.tracer.scope_manager.activate(request.span, False)
                try:
                    close()
                except BaseException as exc:
                    request.fail(exc)
                    raise
                finally:
                    scope.close()
        finally:
            request.finish()

    def __del__(self):
        # a server that never calls close() must not keep the span open forever
        request = self._request
        if not request.finished:
            request.finish()


class TracingMiddleware(ServerMiddleware):
    """WSGI middleware tracing each request as a server span (see the module doc).

    Args:
        app: the WSGI application.
        tracer: an OpenTracing tracer; None means ``opentracing.global_tracer()`` at
            request time.
        excluded_paths: paths not traced (exact, ``prefix*`` or compiled regexes).
        operation_name: a fixed operation name, or a callable ``environ -> str``;
            None names spans ``"<METHOD> <route or path>"``.
    """

    def _start(self, environ, path):
        tracer = get_tracer(self.tracer)
        span, named = start_server_span(
            tracer, _COMPONENT, self.operation_name, environ,
            environ.get("REQUEST_METHOD", "GET"), path, _url(environ, path),
            environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"), _headers(environ))
        return _Request(tracer, span, environ, named)

    def __call__(self, environ, start_response):
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if self.excluded_paths and path_excluded(path, self.excluded_paths):
            return self.app(environ, start_response)
        try:
            request = self._start(environ, path)
            scope = request.tracer.scope_manager.activate(request.span, False)
        except Exception:
            internal_error(_COMPONENT, "starting a span")
            return self.app(environ, start_response)

        def traced_start_response(status, headers, exc_info=None):
            request.response_started(status)
            headers = request.headers_with_traceresponse(status, headers)
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, traced_start_response)
        except BaseException as exc:
            scope.close()
            request.fail(exc)
            request.finish()
            raise
        scope.close()
        return _TracedBody(body, request)

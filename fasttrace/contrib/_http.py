# SPDX-License-Identifier: Apache-2.0
"""HTTP spans: the server side of the WSGI and ASGI middlewares, the client side of
requests, httpx and urllib, and the ``peer.*`` tags (which gRPC uses too)."""
import contextvars

from opentracing import Format
from opentracing.ext import tags as ext_tags

from fasttrace._failures import internal_error
from fasttrace.contrib._safe import (
    TRACERESPONSE,
    extract,
    follow_traceresponse,
    get_tracer,
    inject,
    traceresponse,
)
from fasttrace.errors import mark_error

__all__ = ["ServerMiddleware", "ServerRequest", "client_send_wrappers", "client_span_active",
           "client_span_tags", "finish_http_client_span", "follow_response_header",
           "normalize_excluded", "path_excluded", "peer_tags", "start_server_span",
           "strip_userinfo"]

# True while requests or httpx is inside its own client span, so that the http.client
# layer (contrib.urllib) does not add a second span for the same request.
client_span_active = contextvars.ContextVar("fasttrace_http_client_span", default=False)


def peer_tags(host, port, out=None):
    """peer.ipv4 / peer.ipv6 / peer.hostname and peer.port for (host, port)."""
    if out is None:
        out = {}
    if host:
        if ":" in host:
            out[ext_tags.PEER_HOST_IPV6] = host.strip("[]")
        elif host.replace(".", "").isdigit() and host.count(".") == 3:
            out[ext_tags.PEER_HOST_IPV4] = host
        else:
            out[ext_tags.PEER_HOSTNAME] = host
    if port:
        try:
            out[ext_tags.PEER_PORT] = int(port)
        except (TypeError, ValueError):
            pass
    return out


# -- server spans ----------------------------------------------------------------------

def path_excluded(path, excluded):
    """True when `path` matches one of `excluded`: an exact string, a string ending in
    ``*`` (prefix), or a compiled regular expression (``.fullmatch``)."""
    for rule in excluded:
        if isinstance(rule, str):
            if rule.endswith("*"):
                if path.startswith(rule[:-1]):
                    return True
            elif path == rule:
                return True
        elif rule.fullmatch(path) is not None:
            return True
    return False


def normalize_excluded(excluded_paths):
    if not excluded_paths:
        return ()
    if isinstance(excluded_paths, str):
        excluded_paths = (excluded_paths,)
    rules = tuple(excluded_paths)
    for rule in rules:
        if not isinstance(rule, str) and not hasattr(rule, "fullmatch"):
            raise TypeError(f"excluded_paths entries are str or compiled regexes, not {rule!r}")
    return rules


def start_server_span(tracer, component, operation_name, request, method, path, url,
                      peer_host, peer_port, headers):
    """The server span of one HTTP request (the WSGI and ASGI middlewares).

    Args:
        operation_name: the middleware's option: None names the span "<METHOD> <path>";
            a callable gets `request` (the WSGI environ or ASGI scope); else a fixed name.
        headers: the request headers as a mapping, to extract the parent from.

    Returns:
        (span, named): named is False when the route may rename the span later.
    """
    named = operation_name is not None
    if not named:
        name = f"{method} {path}"
    elif callable(operation_name):
        name = str(operation_name(request))
    else:
        name = str(operation_name)
    tags = {
        ext_tags.SPAN_KIND: ext_tags.SPAN_KIND_RPC_SERVER,
        ext_tags.COMPONENT: component,
        ext_tags.HTTP_METHOD: method,
        ext_tags.HTTP_URL: url,
    }
    peer_tags(peer_host, peer_port, tags)
    parent = extract(tracer, Format.HTTP_HEADERS, headers, component)
    span = tracer.start_span(name, child_of=parent, tags=tags, ignore_active_span=True)
    return span, named


class ServerMiddleware:
    """The options the WSGI and ASGI middlewares share (see their docs)."""

    def __init__(self, app, tracer=None, excluded_paths=(), operation_name=None):
        self.app = app
        self.tracer = tracer
        self.excluded_paths = normalize_excluded(excluded_paths)
        self.operation_name = operation_name


class ServerRequest:
    """The server span of one request and what is known about its response.

    A subclass sets ``component`` and implements ``status_code()``: called once when the
    span is finished, it sets what the response tells (name, tags) and returns the
    numeric status, or None."""

    __slots__ = ("tracer", "span", "named", "status", "failed", "finished", "end_time")
    component = None

    def __init__(self, tracer, span, named):
        self.tracer = tracer
        self.span = span
        self.named = named
        self.status = None
        self.failed = False
        self.finished = False
        self.end_time = None

    def fail(self, exc):
        if not self.failed:
            self.failed = True
            mark_error(self.span, exc)

    def status_code(self):
        raise NotImplementedError

    def traceresponse(self, code):
        """The ``traceresponse`` header value for a response with status `code` (an int,
        or None), computed now -- as the headers go out, before the span finishes -- or
        None without tail sampling.  A 5xx, or an exception so far, is an error."""
        error = self.failed or (code is not None and code >= 500)
        return traceresponse(self.tracer, self.span, error, self.component)

    def finish(self):
        """Finishes the span (once); a 5xx status is an error.  Never raises."""
        if self.finished:
            return
        self.finished = True
        try:
            code = self.status_code()
            if code is not None and code >= 500 and not self.failed:
                mark_error(self.span, message=f"HTTP {code}")
            self.span.finish(self.end_time)
        except Exception:
            internal_error(self.component, "finishing a span")


# -- client spans ------------------------------------------------------------------------

def strip_userinfo(url):
    """`url` without ``user:password@`` (credentials never go into a tag)."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    start = scheme_end + 3
    end = len(url)
    for sep in "/?#":
        i = url.find(sep, start)
        if 0 <= i < end:
            end = i
    at = url.rfind("@", start, end)
    if at < 0:
        return url
    return url[:start] + url[at + 1:]


def client_span_tags(component, method, url, host, port):
    tags = {
        ext_tags.SPAN_KIND: ext_tags.SPAN_KIND_RPC_CLIENT,
        ext_tags.COMPONENT: component,
        ext_tags.HTTP_METHOD: method,
        ext_tags.HTTP_URL: strip_userinfo(url),
    }
    return peer_tags(host, port, tags)


def finish_http_client_span(span, status, integration):
    """Sets http.status_code (a 5xx is an error) and finishes the span; never raises."""
    try:
        if status is not None:
            code = int(status)
            span.set_tag(ext_tags.HTTP_STATUS_CODE, code)
            if code >= 500:
                mark_error(span, message=f"HTTP {code}")
        span.finish()
    except Exception:
        internal_error(integration, "finishing a span")


class _ClientCall:
    """One request's client span, active (with `client_span_active` set) inside the
    ``with`` block around the library's send."""

    __slots__ = ("tracer", "span", "scope", "component", "token")

    def __init__(self, tracer, span, scope, component):
        self.tracer = tracer
        self.span = span
        self.scope = scope
        self.component = component

    def __enter__(self):
        self.token = client_span_active.set(True)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None:
            if isinstance(exc, Exception):
                mark_error(self.span, exc)
            finish_http_client_span(self.span, None, self.component)
        client_span_active.reset(self.token)
        self.scope.close()
        return False

    def done(self, response):
        follow_response_header(self.tracer, self.span, response, self.component)
        finish_http_client_span(self.span, getattr(response, "status_code", None),
                                self.component)
        return response


def follow_response_header(tracer, span, response, integration):
    """The client side of tail sampling across services: the ``traceresponse`` header of
    `response` (anything with ``headers.get``, or ``getheader`` as http.client's) read
    by `follow_traceresponse`, before the client span finishes.  Never raises."""
    if getattr(tracer, "tail_sampling", None) is None:
        return
    try:
        headers = getattr(response, "headers", None)
        getter = getattr(headers, "get", None)
        if getter is not None:
            value = getter(TRACERESPONSE)
        else:
            value = response.getheader(TRACERESPONSE)
    except Exception:
        internal_error(integration, "reading traceresponse")
        return
    follow_traceresponse(tracer, span, value, integration)


def _start_client_call(generation, request, component, describe):
    """The client span of `request` (named "HTTP <METHOD>", its context injected into
    ``request.headers``), or None when starting it failed (counted)."""
    try:
        tracer = get_tracer(generation.tracer)
        method, url, host, port = describe(request)
        span = tracer.start_span(
            f"HTTP {method}", tags=client_span_tags(component, method, url, host, port))
        inject(tracer, span, request.headers, component)
        scope = tracer.scope_manager.activate(span, False)
    except Exception:
        internal_error(component, "starting a span")
        return None
    return _ClientCall(tracer, span, scope, component)


def client_send_wrappers(component, describe):
    """``make_wrapper`` functions (for `Patches`) of a client library's ``send(self,
    request, ...)``, sync and async: a client span around each call.

    Args:
        describe: ``request -> (METHOD, url, host, port)``.
    """
    def make_send(original, generation):
        def send(self, request, *args, **kwargs):
            call = _start_client_call(generation, request, component, describe) \
                if generation.on else None
            if call is None:
                return original(self, request, *args, **kwargs)
            with call:
                response = original(self, request, *args, **kwargs)
            return call.done(response)

        return send

    def make_async_send(original, generation):
        async def send(self, request, *args, **kwargs):
            call = _start_client_call(generation, request, component, describe) \
                if generation.on else None
            if call is None:
                return await original(self, request, *args, **kwargs)
            with call:
                response = await original(self, request, *args, **kwargs)
            return call.done(response)

        return send

    return make_send, make_async_send

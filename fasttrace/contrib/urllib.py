# SPDX-License-Identifier: Apache-2.0
"""Client spans for the standard library: ``urllib.request`` and ``http.client``.

    from fasttrace.contrib import urllib as ft_urllib
    ft_urllib.instrument()
    ft_urllib.uninstrument()

Patches ``http.client.HTTPConnection.request`` and ``.getresponse`` (``HTTPSConnection``
inherits them): ``urllib.request.urlopen`` sends through exactly these, so one layer
catches both ``urlopen`` and direct ``http.client`` use, one span per request.  The span
starts in ``request()`` (its context injected into the headers sent), and ends when
``getresponse()`` returns (status known) or fails.  Requests sent with the low-level
``putrequest()``/``putheader()``/``endheaders()`` calls are not traced.

Spans are named ``"HTTP <METHOD>"``, ``span.kind=client``, ``component="urllib"``, with
``http.method``, ``http.url``, ``http.status_code``, ``peer.*``; a connection error or a
5xx status sets ``error=true``.  A request made by ``requests`` or ``httpx`` while their
own integration is on is not traced a second time here.

With a tracer that samples by its tail, a sampled ``traceresponse`` header of the same
trace in the response keeps the trace here too (``tracer.keep_trace``), as for requests
and httpx (see ``fasttrace.contrib._safe.follow_traceresponse``).
"""
import http.client
from typing import Optional
from urllib.parse import urlsplit

import opentracing

from fasttrace._failures import internal_error
from fasttrace.contrib._http import (
    client_span_active,
    client_span_tags,
    finish_http_client_span,
    follow_response_header,
)
from fasttrace.contrib._patching import Patches
from fasttrace.contrib._safe import get_tracer, inject
from fasttrace.errors import mark_error

__all__ = ["instrument", "uninstrument", "is_instrumented"]

_COMPONENT = "urllib"
_ATTR = "_fasttrace_span"
_patches = Patches()


def _url(conn, selector):
    if selector.startswith(("http://", "https://")):
        parts = urlsplit(selector)      # absolute form: through a proxy
        return selector, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    host = getattr(conn, "_tunnel_host", None) or conn.host
    port = getattr(conn, "_tunnel_port", None) if getattr(conn, "_tunnel_host", None) \
        else conn.port
    https = isinstance(conn, getattr(http.client, "HTTPSConnection", ()))
    scheme = "https" if https else "http"
    default = 443 if https else 80
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{scheme}://{netloc}{selector}", host.strip("[]"), port or default


def _finish_pending(conn, status=None, exc=None, response=None):
    pending = conn.__dict__.pop(_ATTR, None)
    if pending is not None:
        span, tracer = pending
        if exc is not None:
            mark_error(span, exc)
        if response is not None:
            follow_response_header(tracer, span, response, _COMPONENT)
        finish_http_client_span(span, status, _COMPONENT)


def _make_request(original, generation):
    def request(self, method, url, body=None, headers=None, **kwargs):
        if not generation.on or client_span_active.get():
            if headers is None:
                return original(self, method, url, body, **kwargs)
            return original(self, method, url, body, headers, **kwargs)
        try:
            _finish_pending(self)           # a previous request never read its response
            tracer = get_tracer(generation.tracer)
            verb = str(method).upper()
            full, host, port = _url(self, str(url))
            span = tracer.start_span(
                f"HTTP {verb}", tags=client_span_tags(_COMPONENT, verb, full, host, port))
            injected = {}
            inject(tracer, span, injected, _COMPONENT)
            if injected:
                merged = {}
                if headers:
                    names = {name.lower() for name in injected}
                    for key, value in headers.items():
                        if str(key).lower() not in names:
                            merged[key] = value
                merged.update(injected)
                headers = merged
            self.__dict__[_ATTR] = (span, tracer)
        except Exception:
            internal_error(_COMPONENT, "starting a span")
        try:
            if headers is None:
                return original(self, method, url, body, **kwargs)
            return original(self, method, url, body, headers, **kwargs)
        except BaseException as exc:
            _finish_pending(self, exc=exc if isinstance(exc, Exception) else None)
            raise

    return request


def _make_getresponse(original, generation):
    def getresponse(self, *args, **kwargs):
        if _ATTR not in self.__dict__:
            return original(self, *args, **kwargs)
        try:
            response = original(self, *args, **kwargs)
        except BaseException as exc:
            _finish_pending(self, exc=exc if isinstance(exc, Exception) else None)
            raise
        _finish_pending(self, status=getattr(response, "status", None), response=response)
        return response

    return getresponse


def instrument(tracer: Optional[opentracing.Tracer] = None) -> None:
    """Traces ``urllib.request`` and ``http.client`` requests from now on
    (``tracer=None``: the global tracer at call time).  Idempotent."""
    _patches.instrument(tracer, [
        (http.client.HTTPConnection, "request", _make_request),
        (http.client.HTTPConnection, "getresponse", _make_getresponse),
    ])


def uninstrument() -> None:
    """Restores ``http.client.HTTPConnection.request`` and ``.getresponse``."""
    _patches.uninstrument()


def is_instrumented() -> bool:
    return _patches.instrumented

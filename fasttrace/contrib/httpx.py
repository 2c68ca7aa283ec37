# SPDX-License-Identifier: Apache-2.0
"""Client spans for `httpx`, sync and async.

    from fasttrace.contrib import httpx as ft_httpx
    ft_httpx.instrument()             # httpx.Client, httpx.AsyncClient, httpx.get & co.
    ft_httpx.uninstrument()

Patches ``httpx.Client.send`` and ``httpx.AsyncClient.send`` (every request goes through
them, whatever the transport): one ``span.kind=client`` span per request, named
``"HTTP <METHOD>"``, child of the active span, its context injected into the outgoing
headers (redirects followed by httpx carry the same context).  Tags:
``component="httpx"``, ``http.method``, ``http.url`` (without credentials),
``http.status_code``, ``peer.*``.  An exception or a 5xx status sets ``error=true`` with
an error log; the exception is re-raised unchanged.  With ``stream=True`` (and
``client.stream(...)``) the span ends when the response headers have arrived.

``instrument()`` twice patches once (the second call only changes the tracer).
"""
from typing import Optional

import opentracing

from fasttrace.contrib import (Patches, _http_client_span_active, client_span_tags,
                               finish_http_client_span, get_tracer, inject, internal_error,
                               mark_error)

__all__ = ["instrument", "uninstrument", "is_instrumented"]

_COMPONENT = "httpx"
_patches = Patches()


def _start(generation, request):
    tracer = get_tracer(generation.tracer)
    method = request.method.upper()
    url = request.url
    port = url.port or (443 if url.scheme == "https" else 80)
    span = tracer.start_span(
        f"HTTP {method}",
        tags=client_span_tags(_COMPONENT, method, str(url), url.host, port))
    inject(tracer, span, request.headers, _COMPONENT)
    return tracer, span


def _make_send(original, generation):
    def send(self, request, *args, **kwargs):
        if not generation.on:
            return original(self, request, *args, **kwargs)
        try:
            tracer, span = _start(generation, request)
            scope = tracer.scope_manager.activate(span, False)
        except Exception:
            internal_error(_COMPONENT, "starting a span")
            return original(self, request, *args, **kwargs)
        token = _http_client_span_active.set(True)
        try:
            response = original(self, request, *args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, Exception):
                mark_error(span, exc)
            finish_http_client_span(span, None, _COMPONENT)
            raise
        finally:
            _http_client_span_active.reset(token)
            scope.close()
        finish_http_client_span(span, getattr(response, "status_code", None), _COMPONENT)
        return response

    return send


def _make_async_send(original, generation):
    async def send(self, request, *args, **kwargs):
        if not generation.on:
            return await original(self, request, *args, **kwargs)
        try:
            tracer, span = _start(generation, request)
            scope = tracer.scope_manager.activate(span, False)
        except Exception:
            internal_error(_COMPONENT, "starting a span")
            return await original(self, request, *args, **kwargs)
        token = _http_client_span_active.set(True)
        try:
            response = await original(self, request, *args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, Exception):
                mark_error(span, exc)
            finish_http_client_span(span, None, _COMPONENT)
            raise
        finally:
            _http_client_span_active.reset(token)
            scope.close()
        finish_http_client_span(span, getattr(response, "status_code", None), _COMPONENT)
        return response

    return send


def instrument(tracer: Optional[opentracing.Tracer] = None) -> None:
    """Traces every ``httpx`` request (sync and async) from now on (``tracer=None``: the
    global tracer at call time).  Idempotent."""
    import httpx
    _patches.instrument(tracer, [(httpx.Client, "send", _make_send),
                                 (httpx.AsyncClient, "send", _make_async_send)])


def uninstrument() -> None:
    """Restores ``httpx.Client.send`` and ``httpx.AsyncClient.send``."""
    _patches.uninstrument()


def is_instrumented() -> bool:
    return _patches.instrumented

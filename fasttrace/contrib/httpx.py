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

With a tracer that samples by its tail, a sampled ``traceresponse`` header of the same
trace in the response keeps the trace here too (``tracer.keep_trace``); see
``fasttrace.contrib._safe.follow_traceresponse``.

``instrument()`` twice patches once (the second call only changes the tracer).
"""
from typing import Optional

import opentracing

from fasttrace.contrib._http import client_send_wrappers
from fasttrace.contrib._patching import Patches

__all__ = ["instrument", "uninstrument", "is_instrumented"]

_COMPONENT = "httpx"
_patches = Patches()


def _describe(request):
    url = request.url
    return (request.method.upper(), str(url), url.host,
            url.port or (443 if url.scheme == "https" else 80))


_make_send, _make_async_send = client_send_wrappers(_COMPONENT, _describe)


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

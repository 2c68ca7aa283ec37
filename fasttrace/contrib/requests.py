# SPDX-License-Identifier: Apache-2.0
"""Client spans for `requests`.

    from fasttrace.contrib import requests as ft_requests
    ft_requests.instrument()          # every requests.Session (and requests.get & co.)
    ...
    ft_requests.uninstrument()        # the original Session.send again

Patches ``requests.Session.send``: one ``span.kind=client`` span per request, named
``"HTTP <METHOD>"``, child of the active span, its context injected into the outgoing
headers.  The span is active while requests runs, so the requests of a followed redirect
are its children.  Tags: ``component="requests"``, ``http.method``, ``http.url`` (without
credentials), ``http.status_code``, ``peer.hostname``/``peer.ipv4``/``peer.ipv6``,
``peer.port``.  An exception (connection refused, timeout) or a 5xx status sets
``error=true`` with an error log; the exception is re-raised unchanged.  With
``stream=True`` the span ends when the response headers have arrived.

With a tracer that samples by its tail, a sampled ``traceresponse`` header of the same
trace in the response keeps the trace here too (``tracer.keep_trace``); see
``fasttrace.contrib._safe.follow_traceresponse``.

``instrument()`` twice patches once (the second call only changes the tracer).
"""
from typing import Optional
from urllib.parse import urlsplit

import opentracing

from fasttrace.contrib._http import client_send_wrappers
from fasttrace.contrib._patching import Patches

__all__ = ["instrument", "uninstrument", "is_instrumented"]

_COMPONENT = "requests"
_patches = Patches()


def _describe(request):
    method = (request.method or "GET").upper()
    url = request.url or ""
    parts = urlsplit(url)
    return method, url, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


_make_send, _ = client_send_wrappers(_COMPONENT, _describe)


def instrument(tracer: Optional[opentracing.Tracer] = None) -> None:
    """Traces every ``requests`` call from now on (``tracer=None``: the global tracer
    at call time).  Idempotent."""
    import requests
    _patches.instrument(tracer, [(requests.Session, "send", _make_send)])


def uninstrument() -> None:
    """Restores ``requests.Session.send``."""
    _patches.uninstrument()


def is_instrumented() -> bool:
    return _patches.instrumented

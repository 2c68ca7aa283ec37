# SPDX-License-Identifier: Apache-2.0
"""Integrations: server spans for WSGI/ASGI/aiohttp/Django/gRPC (sync and ``grpc.aio``), client
spans for requests/httpx/urllib/aiohttp/gRPC.

Every integration takes ``tracer=None``, meaning ``opentracing.global_tracer()`` looked up
at call time (so ``fasttrace.init_tracer()`` may run after the app is wired), and uses
only the OpenTracing API, so any OpenTracing tracer works.

Each one is importable on its own (``from fasttrace.contrib import wsgi``); importing this
package imports no framework.

Failure policy: an integration never breaks the host application.  Its own failures
(a bug, a carrier it cannot write) are caught, counted and logged once per integration
(later ones at DEBUG); a corrupted trace context in a request starts a new trace and is
counted.  The application's exceptions pass through unchanged (after being recorded on
the span).  ``fasttrace.contrib.stats()`` returns the counters.

Where things are: `fasttrace._failures` (the failure policy and its counters, shared with
``@traced``), `fasttrace.errors` (the error log), ``contrib._safe`` (tracer calls that
never raise), ``contrib._http`` (HTTP server and client spans, ``peer.*`` tags),
``contrib._patching`` (instrument/uninstrument of the client integrations).
"""
from fasttrace._failures import reset_stats, stats

# the integrations' helpers, importable from here too
from fasttrace._failures import count_dropped, internal_error, log  # noqa: F401
from fasttrace.contrib._http import (client_span_tags, finish_http_client_span,  # noqa: F401
                                     normalize_excluded, path_excluded, peer_tags,
                                     start_server_span, strip_userinfo)
from fasttrace.contrib._patching import Patches  # noqa: F401
from fasttrace.contrib._safe import extract, get_tracer, inject  # noqa: F401
from fasttrace.errors import mark_error  # noqa: F401

__all__ = ["stats", "reset_stats"]

# SPDX-License-Identifier: Apache-2.0
"""Integrations: server spans for WSGI/ASGI/gRPC, client spans for requests/httpx/urllib/gRPC.

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
"""
import contextvars
import logging
import threading

import opentracing
from opentracing import Format, SpanContextCorruptedException
from opentracing.ext import tags as ext_tags

from fasttrace.errors import mark_error  # noqa: F401  (the integrations' error log)

log = logging.getLogger("fasttrace.contrib")

__all__ = ["stats", "reset_stats"]

_lock = threading.Lock()
_internal_errors = {}
_corrupted_contexts = {}
_dropped = {}

# Set while an HTTP client integration (requests, httpx) is inside its own span, so the
# http.client layer (contrib.urllib) does not add a second span for the same request.
_http_client_span_active = contextvars.ContextVar("fasttrace_http_client_span", default=False)


def stats():
    """Counters of the integrations: ``{"internal_errors": {integration: n},
    "corrupted_context": {integration: n}, "dropped": {integration: n}}`` (dropped:
    propagation fields a transport cannot carry, e.g. a baggage key gRPC rejects)."""
    with _lock:
        return {"internal_errors": dict(_internal_errors),
                "corrupted_context": dict(_corrupted_contexts),
                "dropped": dict(_dropped)}


def reset_stats():
    with _lock:
        _internal_errors.clear()
        _corrupted_contexts.clear()
        _dropped.clear()


def count_dropped(integration, what):
    """Counts (and logs once per integration) a propagation field that was left out."""
    with _lock:
        n = _dropped.get(integration, 0) + 1
        _dropped[integration] = n
    if n == 1:
        log.warning("fasttrace.contrib.%s: %s; left out (counted in fasttrace.contrib.stats())",
                    integration, what)


def internal_error(integration, what):
    """Records a failure of the integration itself (call from an ``except`` block)."""
    with _lock:
        n = _internal_errors.get(integration, 0) + 1
        _internal_errors[integration] = n
    if n == 1:
        log.warning("fasttrace.contrib.%s: %s failed; tracing continues without it "
                    "(further failures are logged at DEBUG)", integration, what,
                    exc_info=True)
    else:
        log.debug("fasttrace.contrib.%s: %s failed (%d times)", integration, what, n,
                  exc_info=True)


def get_tracer(tracer):
    return tracer if tracer is not None else opentracing.global_tracer()


def extract(tracer, fmt, carrier, integration):
    """The parent SpanContext in `carrier`, or None; never raises.

    A corrupted context is counted (and logged once) and reads as no context: the
    request starts a new trace."""
    try:
        return tracer.extract(fmt, carrier)
    except SpanContextCorruptedException:
        with _lock:
            n = _corrupted_contexts.get(integration, 0) + 1
            _corrupted_contexts[integration] = n
        if n == 1:
            log.warning("fasttrace.contrib.%s: corrupted trace context in a request; "
                        "starting a new trace (counted in fasttrace.contrib.stats())",
                        integration)
        return None
    except Exception:
        internal_error(integration, "extract")
        return None


def inject(tracer, span, carrier, integration, fmt=Format.HTTP_HEADERS):
    """Injects span's context into carrier; never raises."""
    try:
        tracer.inject(span.context, fmt, carrier)
    except Exception:
        internal_error(integration, "inject")


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


# -- monkey patching ----------------------------------------------------------------------

class _Generation:
    """One instrument() .. uninstrument() period; wrappers made in it check ``on``."""

    __slots__ = ("on", "tracer")

    def __init__(self, tracer):
        self.on = True
        self.tracer = tracer


class Patches:
    """The methods an integration replaced, so uninstrument() can put them back.

    ``make_wrapper(original, generation)`` builds each wrapper; a wrapper must act only
    while ``generation.on``.  If someone else wrapped the method after us,
    uninstrument() cannot take ours out of their chain: it switches its generation off,
    which makes it a pass-through (and a later instrument() starts a new generation, so
    spans are never doubled)."""

    def __init__(self):
        self.generation = None
        self._applied = []
        self._lock = threading.Lock()

    @property
    def instrumented(self):
        return self.generation is not None

    def instrument(self, tracer, targets):
        """targets: [(owner, name, make_wrapper)].  Returns False if already done (then
        only the tracer is updated)."""
        with self._lock:
            if self.generation is not None:
                self.generation.tracer = tracer
                return False
            generation = _Generation(tracer)
            for owner, name, make_wrapper in targets:
                had_own = name in owner.__dict__
                original = getattr(owner, name)
                wrapper = make_wrapper(original, generation)
                try:
                    wrapper.__wrapped__ = original
                except AttributeError:
                    pass
                setattr(owner, name, wrapper)
                self._applied.append((owner, name, original, wrapper, had_own))
            self.generation = generation
            return True

    def uninstrument(self):
        with self._lock:
            if self.generation is None:
                return False
            self.generation.on = False
            self.generation = None
            for owner, name, original, wrapper, had_own in reversed(self._applied):
                if owner.__dict__.get(name) is wrapper:
                    if had_own:
                        setattr(owner, name, original)
                    else:
                        delattr(owner, name)
                else:
                    log.warning("fasttrace.contrib: %s.%s was wrapped again after fasttrace "
                                "instrumented it; fasttrace's wrapper stays in that chain as a "
                                "pass-through", owner.__qualname__, name)
            self._applied = []
            return True

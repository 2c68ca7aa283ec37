# SPDX-License-Identifier: Apache-2.0
"""The failure policy of the instrumentation: ``@traced``, the integrations and the
error log never break the host application.

A failure of fasttrace's own code there (a bug, a carrier it cannot write) is caught by
the caller and recorded here: counted per place, logged at WARNING the first time (with
the traceback) and at DEBUG after that.  A corrupted trace context in a request, and a
propagation field a transport cannot carry, are counted and logged the first time.
``fasttrace.contrib.stats()`` returns the counters.

This module imports nothing of ``fasttrace.contrib``, so the core and ``@traced`` can
use it without loading the integrations.
"""
import threading

from fasttrace._lazy import logging

log = logging.getLogger("fasttrace.contrib")

__all__ = ["count_corrupted", "count_dropped", "internal_error", "reset_stats", "stats"]

_lock = threading.Lock()
_internal_errors = {}
_corrupted_contexts = {}
_dropped = {}


def _count(table, where):
    with _lock:
        n = table.get(where, 0) + 1
        table[where] = n
    return n


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
    if _count(_dropped, integration) == 1:
        log.warning("fasttrace.contrib.%s: %s; left out (counted in fasttrace.contrib.stats())",
                    integration, what)


def count_corrupted(integration):
    """Counts (and logs once per integration) a corrupted trace context in a request."""
    if _count(_corrupted_contexts, integration) == 1:
        log.warning("fasttrace.contrib.%s: corrupted trace context in a request; "
                    "starting a new trace (counted in fasttrace.contrib.stats())",
                    integration)


def internal_error(integration, what):
    """Records a failure of the integration itself (call from an ``except`` block)."""
    n = _count(_internal_errors, integration)
    if n == 1:
        log.warning("fasttrace.contrib.%s: %s failed; tracing continues without it "
                    "(further failures are logged at DEBUG)", integration, what,
                    exc_info=True)
    else:
        log.debug("fasttrace.contrib.%s: %s failed (%d times)", integration, what, n,
                  exc_info=True)

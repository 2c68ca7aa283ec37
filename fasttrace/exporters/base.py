# SPDX-License-Identifier: Apache-2.0
"""BaseExporter: what the built-in exporters share -- their counters, a lock, the closed
flag, and the one fork hook that gives a forked child its own of each."""
import logging
import threading

from fasttrace._ratelimit import RateLimitedLog
from fasttrace.reporting import Exporter

__all__ = ["BaseExporter"]

log = logging.getLogger("fasttrace")


class BaseExporter(Exporter):
    """An Exporter with `_stats` (counters named by `STATS`, all 0), `_lock`, `_closed`,
    `_http` (an `HttpSender`, or None) and `_log` (for failures that repeat).

    In a forked child (fasttrace/_fork.py) the counters start again at zero, the lock is
    a new one and the HTTP connection is dropped: they are the parent's.  A subclass with
    more per-process state resets it in `_reset_after_fork`.
    """

    STATS = ()
    _http = None

    def __init__(self):
        self._lock = threading.Lock()
        self._closed = False
        self._stats = dict.fromkeys(self.STATS, 0)
        self._log = RateLimitedLog()

    def _lost(self, batch, counter=None):
        """Counts a batch that is not sent (spans_failed, and `counter`); False."""
        if counter is not None:
            self._stats[counter] += 1
        self._stats["spans_failed"] += len(batch)
        return False

    def _encoding_failed(self, batch, backend):
        """Counts and logs a batch the encoder failed on (called in an except block)."""
        log.exception("fasttrace: %s encoding failed; %d spans lost", backend, len(batch))
        return self._lost(batch, "encode_errors")

    def _after_fork_in_child(self):
        self._lock = threading.Lock()
        if self._http is not None:
            self._http.after_fork_in_child()
        self._stats = dict.fromkeys(self._stats, 0)
        self._reset_after_fork()

    def _reset_after_fork(self):
        """The subclass's own per-process state, reset in a forked child."""

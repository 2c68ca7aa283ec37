# SPDX-License-Identifier: Apache-2.0
"""Reporters receive drained SpanBatches; exporters speak a backend's protocol.

    Reporter.report(batch)          called by the tracer; must not block or raise
    Reporter.flush(timeout) -> bool True when everything reported so far got out
    Reporter.close(timeout)         flush and release resources; idempotent

    Exporter.export(batch) -> bool  send one batch (called from a reporter's thread)
    Exporter.shutdown()
"""
import logging
import threading
import weakref

log = logging.getLogger("fasttrace")

__all__ = ["Exporter", "InMemoryReporter", "Reporter"]


class Reporter:
    """Base class of reporters: the tracer hands them batches of finished spans."""

    def report(self, batch):
        """Takes a SpanBatch.  Must not block the caller for long, and must not raise."""
        raise NotImplementedError

    def flush(self, timeout=None):
        """Returns True when everything reported so far has been delivered."""
        return True

    def close(self, timeout=None):
        """Flushes and releases resources.  Calling it again does nothing."""
        self.flush(timeout)

    def _attach(self, tracer):
        """Called by each Tracer that reports here, so pull-style reporters can drain it."""

    def _after_fork_in_child(self):
        """Called in a forked child, before it records anything."""


class Exporter:
    """Base class of exporters: send a batch to a backend."""

    def export(self, batch):
        """Sends the batch; returns True on success.  Must not raise."""
        raise NotImplementedError

    def shutdown(self):
        """Releases connections and threads."""


class InMemoryReporter(Reporter):
    """Keeps finished spans in memory, for tests and interactive use.

    Args:
        max_spans: keep at most this many spans (None: no limit); spans beyond it are
            counted in `dropped` and in the tracer's stats, not kept.
    """

    def __init__(self, max_spans=None):
        self._spans = []
        self._batches = []
        self._kept = 0
        self._lock = threading.Lock()
        self._tracers = weakref.WeakSet()
        self.max_spans = max_spans
        self.dropped = 0

    def _attach(self, tracer):
        self._tracers.add(tracer)

    def report(self, batch):
        # keep the columnar batch; FinishedSpan records are built when someone reads them
        with self._lock:
            if self.max_spans is not None:
                room = max(0, self.max_spans - self._kept)
                if room < len(batch):
                    self.dropped += len(batch) - room
                    if room == 0:
                        return
                    batch = list(batch)[:room]
            self._batches.append(batch)
            self._kept += len(batch)

    @property
    def spans(self):
        """The finished spans reported so far (draining the tracers' arenas first)."""
        for tracer in list(self._tracers):
            tracer._drain_to_reporter()
        with self._lock:
            if self._batches:
                for batch in self._batches:
                    self._spans.extend(batch)
                self._batches.clear()
            return list(self._spans)

    def _after_fork_in_child(self):
        # the parent reports what it had; this process starts empty
        self._lock = threading.Lock()
        self._spans = []
        self._batches = []
        self._kept = 0
        self.dropped = 0

    def clear(self):
        with self._lock:
            self._spans.clear()
            self._batches.clear()
            self._kept = 0

    def stats(self):
        return {"kept": self._kept, "dropped": self.dropped}

# SPDX-License-Identifier: Apache-2.0
"""Reporters receive drained SpanBatches; exporters speak a backend's protocol.

A reporter is any object with these three methods (subclassing Reporter is optional):

    report(batch)                   called by the tracer; must not block or raise
    flush(timeout) -> bool          True when everything reported so far got out
    close(timeout)                  flush and release resources; idempotent

and, if it wants them, these optional hooks: the one protocol between the tracer and
a reporter that drains on its own thread.  The tracer looks each up once and calls it
guarded (a hook that raises is logged once and the tracer carries on):

    attach(tracer)                  each tracer reporting here calls it at construction
    drain_threshold                 (an attribute) finished spans per batch_ready notice
    batch_ready(tracer)             `drain_threshold` more spans wait in the arena (one
                                    notice per batch, from the finishing thread): the
                                    reporter takes them itself, from its own thread,
                                    with `tracer.drain(max_spans)` -> SpanBatch or None.
                                    Without this hook the tracer drains inline, into
                                    report()
    room() -> int                   spans the reporter takes now; when the arena is full
                                    the finishing thread drains that many into report()
                                    (0: the new span is dropped and counted)
    after_fork()                    in a forked child, before it records anything: the
                                    parent's spans are the parent's to report

Spans go one way: span -> arena -> (tracer.drain) -> reporter -> exporter.

    Exporter.export(batch) -> bool  send one batch (called from a reporter's thread)
    Exporter.shutdown()
"""
import collections
import weakref

from fasttrace._lazy import logging
from fasttrace._reentry import GuardedLock

log = logging.getLogger("fasttrace")

__all__ = ["BatchReporter", "Exporter", "InMemoryReporter", "Reporter"]


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

    def attach(self, tracer):
        """Called by each Tracer that reports here, so pull-style reporters can drain it."""

    def after_fork(self):
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

    report() only appends to a deque: tracer code may call it from a finalizer or a
    signal handler in the middle of anything, reading `spans` included, and must never
    wait there.  The batches are counted against `max_spans` and turned into records
    by whichever thread gets to them first (see fasttrace/_reentry.py).

    Args:
        max_spans: keep at most this many spans (None: no limit); spans beyond it are
            counted in `dropped` and in the tracer's stats, not kept.
    """

    def __init__(self, max_spans=None):
        self.max_spans = max_spans
        self._tracers = weakref.WeakSet()
        self._init_state()

    def _init_state(self):
        self._inbox = collections.deque()   # batches report() handed over
        self._batches = []                  # counted against max_spans, not yet records
        self._spans = []                    # FinishedSpan records, in finish order
        self._kept = 0
        self._dropped = 0
        self._lock = GuardedLock()

    @property
    def dropped(self):
        return self._dropped

    def attach(self, tracer):
        self._tracers.add(tracer)

    def report(self, batch):
        self._inbox.append(batch)
        if self._lock.enter(blocking=False):
            try:
                self._absorb()
            finally:
                self._lock.exit()

    def _absorb(self):
        """Moves the inbox into the kept batches, counting max_spans (lock held)."""
        inbox = self._inbox
        while inbox:
            batch = inbox.popleft()
            if self.max_spans is not None:
                room = max(0, self.max_spans - self._kept)
                if room < len(batch):
                    self._dropped += len(batch) - room
                    if room == 0:
                        continue
                    batch = (batch.slice(0, room) if hasattr(batch, "slice")
                             else list(batch)[:room])
            self._batches.append(batch)
            self._kept += len(batch)

    @property
    def spans(self):
        """The finished spans reported so far, in the order they finished (draining the
        tracers' arenas first).  With several tracers, each one's spans are in order."""
        for tracer in list(self._tracers):
            tracer._drain_to_reporter()
        if self._lock.enter():
            try:
                self._absorb()
                while self._batches:
                    batches, self._batches = self._batches, []
                    _restore_finish_order(batches)
                    for batch in batches:
                        self._spans.extend(batch)
                    self._absorb()      # what finalizers reported meanwhile
            finally:
                self._lock.exit()
        # (a finalizer or signal handler reading this while the same thread was
        # building records gets the records built so far)
        return list(self._spans)

    def after_fork(self):
        # the parent reports what it had; this process starts empty
        self._init_state()

    def clear(self):
        mine = self._lock.enter()
        try:
            self._inbox.clear()
            self._spans = []
            self._batches = []
            self._kept = 0
        finally:
            if mine:
                self._lock.exit()

    def stats(self):
        return {"kept": self._kept, "dropped": self._dropped}


def _restore_finish_order(batches):
    """Puts each tracer's batches back in the order their spans finished, in place.

    Threads that drain one tracer at the same time may report their batches out of
    order (a drain frees its slots at once and reports after); a batch knows where its
    first span is in its tracer's finish order.  Batches of different tracers keep
    the order they were reported in."""
    groups = {}
    for position, batch in enumerate(batches):
        groups.setdefault(getattr(batch, "source", None), []).append(position)
    for positions in groups.values():
        if len(positions) > 1:
            ordered = sorted((batches[p] for p in positions),
                             key=lambda b: getattr(b, "first_seq", 0))
            for p, batch in zip(positions, ordered):
                batches[p] = batch


# BatchReporter lives in its own module (its thread and the pipeline that thread owns);
# it is imported here last because it builds on Reporter above.
from fasttrace.batching import BatchReporter  # noqa: E402

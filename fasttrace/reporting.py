# SPDX-License-Identifier: Apache-2.0
"""Reporters receive drained SpanBatches; exporters speak a backend's protocol.

A reporter is any object with these three methods (subclassing Reporter is optional):

    report(batch)                   called by the tracer; must not block or raise
    flush(timeout) -> bool          True when everything reported so far got out
    close(timeout)                  flush and release resources; idempotent

and, if it wants them, these optional hooks, which the tracer looks up once and calls
guarded (a hook that raises is logged once and the tracer carries on):

    attach(tracer)                  each tracer reporting here calls it at construction
    drain_threshold                 (an attribute) finished spans that wake the reporter
    batch_ready(tracer)             `drain_threshold` spans have finished: the reporter
                                    drains them itself (on its own thread) with
                                    tracer._drain_to_reporter(); without this hook the
                                    tracer drains inline, into report()
    after_fork()                    in a forked child, before it records anything: the
                                    parent's spans are the parent's to report

    Exporter.export(batch) -> bool  send one batch (called from a reporter's thread)
    Exporter.shutdown()
"""
import atexit
import collections
import logging
import multiprocessing.util
import os
import threading
import time
import weakref

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

    def attach(self, tracer):
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
        with self._lock:
            if self._batches:
                _restore_finish_order(self._batches)
                for batch in self._batches:
                    self._spans.extend(batch)
                self._batches.clear()
            return list(self._spans)

    def after_fork(self):
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


class BatchReporter(Reporter):
    """Exports finished spans from a background thread, in batches.

    The thread wakes every `flush_interval` seconds, and as soon as a tracer has
    `max_batch_size` finished spans waiting (the tracer calls `batch_ready`), then drains
    the tracers' arenas itself -- so the application thread never pays for draining or
    encoding -- and hands the spans to the exporter in chunks of at most `max_batch_size`.

    Memory is bounded: at most `max_queue_size` spans wait for export; beyond that the
    newest spans are dropped and counted (`stats()["dropped"]["queue_full"]`).  Nothing
    raises into the application: export errors are counted and logged at most once per
    `flush_interval`.

    Args:
        exporter: an `Exporter`; `export(batch) -> bool` is only ever called from this
            reporter's thread.
        flush_interval: seconds between scheduled exports (OTEL_BSP_SCHEDULE_DELAY).
        max_batch_size: spans per `export()` call, and the number of finished spans that
            wakes the thread early (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
        max_queue_size: spans waiting for export at most (OTEL_BSP_MAX_QUEUE_SIZE).
        exit_timeout: seconds the `atexit` hook waits for the last export, so a normal
            interpreter exit loses nothing and never hangs.

    Raises:
        ValueError: a size or interval that is not positive.
    """

    def __init__(self, exporter, flush_interval=1.0, max_batch_size=512,
                 max_queue_size=65536, exit_timeout=5.0):
        if not flush_interval > 0:
            raise ValueError(f"flush_interval must be > 0, not {flush_interval!r}")
        if int(max_batch_size) < 1 or int(max_queue_size) < 1:
            raise ValueError("max_batch_size and max_queue_size must be >= 1")
        self.exporter = exporter
        self.flush_interval = float(flush_interval)
        self.max_queue_size = int(max_queue_size)
        self.max_batch_size = min(int(max_batch_size), self.max_queue_size)
        self.exit_timeout = exit_timeout
        # read by the Tracer: it calls batch_ready() once this many spans have finished
        self.drain_threshold = self.max_batch_size
        self._tracers = weakref.WeakSet()
        self._closed = False
        self._init_state()
        self._exit_hook = _make_exit_hook(self)
        atexit.register(self._exit_hook)
        # A multiprocessing child ends with os._exit(), which skips atexit, and clears
        # the finalizers it inherited; its after-fork callbacks run after that, so the
        # child registers its own finalizer from one and its spans get out too.
        multiprocessing.util.register_after_fork(self, _finalize_in_multiprocessing_child)

    def _init_state(self):
        """Everything a forked child must not share with its parent."""
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._queue = collections.deque()
        self._queued = 0            # spans in _queue
        self._wake = False          # set by batch_ready: drain now
        self._stopping = False
        self._flush_requested = 0   # flush() tickets handed out ...
        self._flush_done = 0        # ... and completed by the worker
        self._exported = 0
        self._export_calls = 0
        self._export_failures = 0
        self._dropped = {"queue_full": 0, "export_failed": 0, "shutdown": 0, "closed": 0}
        self._last_log = -1e18
        self._lost_mark = 0         # _lost() when the last flush returned
        self._suppressed_logs = 0
        self._thread = threading.Thread(target=self._run, name="fasttrace-reporter",
                                        daemon=True)
        self._thread.start()

    def __repr__(self):
        return f"<BatchReporter exporter={self.exporter!r}>"

    # -- called by tracers ----------------------------------------------------------

    def attach(self, tracer):
        self._tracers.add(tracer)

    def batch_ready(self, tracer):
        """A tracer has max_batch_size finished spans: wake the thread to drain them."""
        # Checked without the lock first: while the thread is busy exporting, every
        # finishing span lands here, and must stay cheap.
        if self._wake or self._closed:
            return
        if self._pid != os.getpid():
            self.after_fork()
        with self._cond:
            self._wake = True
            self._cond.notify()

    def report(self, batch):
        """Queues a SpanBatch for export (normally called from the reporter thread)."""
        n = len(batch)
        if not n:
            return
        with self._cond:
            if self._closed:
                self._dropped["closed"] += n
                return
            room = self.max_queue_size - self._queued
            if n > room:
                # memory stays bounded: the newest spans are the ones dropped
                self._dropped["queue_full"] += n - max(room, 0)
                if room <= 0:
                    return
                batch = batch.slice(0, room)
                n = room
            self._queue.append(batch)
            self._queued += n
            if (self._queued >= self.max_batch_size
                    and threading.current_thread() is not self._thread):
                self._cond.notify()

    def flush(self, timeout=None):
        """Drains the tracers and exports everything queued.

        Returns:
            True when everything reported before the call was exported within
            `timeout` seconds (None: wait as long as the exporter takes) and no span
            was lost (dropped or failed) since the previous flush.
        """
        if self._pid != os.getpid():
            self.after_fork()
        if not self._thread.is_alive():
            return self._queued == 0
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._flush_requested += 1
            ticket = self._flush_requested
            self._cond.notify()
            while self._flush_done < ticket:
                if not self._thread.is_alive():
                    return False
                if deadline is None:
                    self._cond.wait(1.0)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            lost = self._lost()
            ok = lost == self._lost_mark
            self._lost_mark = lost
            return ok

    def close(self, timeout=None):
        """Flushes within `timeout` seconds, stops the thread and shuts the exporter
        down.  Spans still queued after that are dropped and counted.  Idempotent."""
        with self._cond:
            if self._closed:
                return
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._stopping = True
                self._cond.notify_all()
            try:
                atexit.unregister(self._exit_hook)
            except Exception:  # pragma: no cover - interpreter shutting down
                pass
            self._join(deadline)
            if self._thread.is_alive():
                # stuck in an export: shutting the exporter down aborts its retries
                self._shutdown_exporter()
                self._join(None if deadline is None else time.monotonic() + 0.5)
            else:
                self._shutdown_exporter()
            with self._cond:
                self._dropped["shutdown"] += self._queued
                self._queue.clear()
                self._queued = 0

    def _join(self, deadline):
        if self._thread is threading.current_thread():
            return
        if deadline is None:
            self._thread.join()
        else:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _shutdown_exporter(self):
        try:
            self.exporter.shutdown()
        except Exception:
            log.exception("fasttrace: exporter %r failed to shut down", self.exporter)

    def after_fork(self):
        """In a forked child: a fresh thread and an empty queue.  The parent's queued
        spans are the parent's to export, so they are forgotten here, not counted."""
        if self._pid == os.getpid():
            return
        hook = getattr(self.exporter, "_after_fork_in_child", None)
        if hook is not None:
            try:
                hook()
            except Exception:
                log.exception("fasttrace: resetting exporter %r after fork failed",
                              self.exporter)
        if self._closed:
            self._pid = os.getpid()
            self._queue = collections.deque()
            self._queued = 0
            self._cond = threading.Condition(threading.Lock())
            return
        self._init_state()

    def stats(self):
        """Counters: exported (spans), export_calls, export_failures (calls), dropped
        (spans, by reason), queue_length (spans waiting), and the exporter's own stats."""
        with self._cond:
            out = {
                "exported": self._exported,
                "export_calls": self._export_calls,
                "export_failures": self._export_failures,
                "dropped": dict(self._dropped),
                "queue_length": self._queued,
            }
        exporter_stats = getattr(self.exporter, "stats", None)
        if callable(exporter_stats):
            try:
                out["exporter"] = exporter_stats()
            except Exception:
                pass
        return out

    # -- the reporter thread ----------------------------------------------------------

    def _lost(self):
        d = self._dropped
        return d["queue_full"] + d["export_failed"] + d["shutdown"] + d["closed"]

    def _run(self):
        next_cycle = time.monotonic() + self.flush_interval
        cond = self._cond
        while True:
            with cond:
                while not (self._wake or self._stopping
                           or self._flush_requested > self._flush_done
                           or self._queued >= self.max_batch_size):
                    remaining = next_cycle - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                self._wake = False
                ticket = self._flush_requested
                stopping = self._stopping
            next_cycle = time.monotonic() + self.flush_interval
            try:
                self._drain_tracers()
                # only what is queued now: under sustained load new spans keep arriving,
                # and a flush must not wait for a queue that never empties
                with cond:
                    target = self._queued
                self._export_queued(target)
            except Exception:  # pragma: no cover - defensive: the thread must not die
                self._log_failure("fasttrace: reporter thread error", exc_info=True)
            with cond:
                if ticket > self._flush_done:
                    self._flush_done = ticket
                cond.notify_all()
            if stopping:
                return

    def _drain_tracers(self):
        for tracer in list(self._tracers):
            # no more than the queue has room for: the rest waits in the tracer's
            # preallocated arena, which is a burst buffer too, instead of being dropped
            room = self.max_queue_size - self._queued
            if room <= 0:
                return
            try:
                tracer._drain_to_reporter(room)
            except Exception:
                self._log_failure("fasttrace: draining %r failed", tracer, exc_info=True)

    def _export_queued(self, limit):
        """Exports queued spans until `limit` of them went out or the queue is empty."""
        while limit > 0:
            with self._cond:
                if not self._queue:
                    return
                batch = self._queue.popleft()
                if len(batch) > self.max_batch_size:
                    rest = batch.slice(self.max_batch_size, len(batch))
                    batch = batch.slice(0, self.max_batch_size)
                    self._queue.appendleft(rest)
                self._queued -= len(batch)
                limit -= len(batch)
                drain_again = self._wake
                self._wake = False
            self._export(batch)
            if drain_again:
                # a tracer filled a batch while we were exporting: keep its arena free
                self._drain_tracers()

    def _export(self, batch):
        n = len(batch)
        try:
            ok = bool(self.exporter.export(batch))
        except Exception:
            ok = False
            self._log_failure("fasttrace: exporter %r raised; %d spans lost", self.exporter,
                              n, exc_info=True)
        else:
            if not ok:
                self._log_failure("fasttrace: exporter %r failed; %d spans lost",
                                  self.exporter, n)
        with self._cond:
            self._export_calls += 1
            if ok:
                self._exported += n
            else:
                self._export_failures += 1
                self._dropped["export_failed"] += n

    def _log_failure(self, msg, *args, exc_info=False):
        # at most one message per flush_interval: a dead backend must not flood the logs
        now = time.monotonic()
        if now - self._last_log < self.flush_interval:
            self._suppressed_logs += 1
            return
        self._last_log = now
        if self._suppressed_logs:
            msg += " (%d similar messages suppressed)"
            args += (self._suppressed_logs,)
            self._suppressed_logs = 0
        log.warning(msg, *args, exc_info=exc_info)


def _finalize_in_multiprocessing_child(reporter):
    multiprocessing.util.Finalize(None, reporter._exit_hook, exitpriority=100)


def _make_exit_hook(reporter):
    ref = weakref.ref(reporter)

    def close_at_exit():
        r = ref()
        if r is not None:
            r.close(r.exit_timeout)
    return close_at_exit

# SPDX-License-Identifier: Apache-2.0
"""BatchReporter: exports finished spans from a thread of its own, in batches.

The thread owns a pipeline (_Pipeline): it drains the tracers' arenas (Tracer.drain) as
far as its queue has room, and hands the queue to the exporter batch by batch.  Nothing
the application or tracer code calls on it (report, batch_ready, room, stats, flush)
waits on a lock that such code could hold: see fasttrace/_reentry.py.
"""
import atexit
import collections
import os
import sys
import threading
import time
import weakref

from fasttrace import _fork
from fasttrace._lazy import logging
from fasttrace._ratelimit import RateLimitedLog
from fasttrace._reentry import Signal
from fasttrace.reporting import Reporter

log = logging.getLogger("fasttrace")

__all__ = ["BatchReporter"]

# Spans the worker takes out of an arena per drain: large drains spread a drain's fixed
# cost thin (export_queued hands them to the exporter from a cursor), and this many
# hold the GIL, which the application waits for, for a few milliseconds at most.
DRAIN_MAX = 8192


class _FlushTicket:
    """One flush() call: done when every span finished before it left the process."""

    __slots__ = ("targets", "deadline", "done", "mark", "ok")

    def __init__(self, targets, deadline):
        self.targets = targets      # [(weakref to tracer, its spans_finished at the call)]
        self.deadline = deadline    # monotonic seconds, or None
        self.done = Signal()
        self.mark = None            # queue position to reach, once the arenas are drained
        self.ok = False


class _Pipeline:
    """A BatchReporter's state, owned by its worker thread.

    Only the worker touches the queue and the counters; other threads append to
    `inbox` (report), to `tickets` (flush) and `late_drops` (report after close), and
    wake the worker with `wake` -- operations that are single C calls, so tracer code
    running in a finalizer or a signal handler on any thread, at any moment, can never
    wait on them.  The worker keeps only a weak reference to the reporter: a reporter
    dropped without close() still gets its queue exported, and its thread ends.
    """

    def __init__(self, exporter, flush_interval, max_batch_size, max_queue_size):
        self.exporter = exporter
        self.flush_interval = flush_interval
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.tracers = weakref.WeakSet()
        self.inbox = collections.deque()
        self.tickets = collections.deque()
        self.late_drops = collections.deque()       # spans report() got after close
        self.intake_drops = collections.deque()     # ... or had no room for
        self.wake = Signal()
        self.queue = collections.deque()
        self.head_done = 0          # spans of queue[0] already handed to the exporter
        self.queued = 0
        self.queue_in = 0           # spans that ever entered the queue
        self.queue_out = 0          # ... and that left it: exported, failed or dropped
        self.exported = 0
        self.export_calls = 0
        self.export_failures = 0
        self.dropped = {"queue_full": 0, "export_failed": 0, "shutdown": 0}
        self.closed = False         # report() drops from now on
        self.stopping = False       # the worker finishes up and exits
        self.stop_deadline = None   # ... exporting until then
        self.abandoned = False      # close() gave up waiting; the worker counts nothing more
        # at most one message per flush_interval: a dead backend must not flood the logs
        self.failure_log = RateLimitedLog(flush_interval)
        self.pending = []

    # -- any thread ---------------------------------------------------------------------

    def inbox_spans(self):
        # a copy is one C call: iterating the deque itself could meet an append
        return sum(len(batch) for batch in self.inbox.copy())

    def room(self):
        """Spans the queue can still take, counting what waits in the inbox."""
        return max(0, self.max_queue_size - self.queued - self.inbox_spans())

    def dropped_counts(self):
        dropped = dict(self.dropped)
        dropped["queue_full"] += sum(self.intake_drops.copy())
        dropped["closed"] = sum(self.late_drops.copy())
        return dropped

    def lost(self):
        return sum(self.dropped_counts().values())

    # -- the worker -------------------------------------------------------------------------

    def run(self, reporter_ref):
        next_cycle = time.monotonic() + self.flush_interval
        while True:
            try:
                if not (self.pending or self.tickets or self.stopping):
                    remaining = next_cycle - time.monotonic()
                    if remaining > 0:
                        self.wake.wait(remaining)
                if reporter_ref() is None and not self.stopping:
                    self.stopping = True        # dropped without close(): export what's left
                next_cycle = time.monotonic() + self.flush_interval
                self.cycle()
                if self.stopping and self.finish_stopping():
                    return
            except BaseException:   # the thread must outlive anything an exporter raises
                self.failure_log.warning("fasttrace: reporter thread error", exc_info=True)

    def cycle(self):
        while self.tickets:
            self.pending.append(self.tickets.popleft())
        self.absorb_inbox()
        self.drain_tracers()
        self.export_queued(self.queued)
        self.settle_tickets()

    def absorb_inbox(self):
        inbox = self.inbox
        while inbox:
            batch = inbox.popleft()
            n = len(batch)
            room = self.max_queue_size - self.queued
            if n > room:
                # memory stays bounded: the newest spans are the ones dropped
                self.dropped["queue_full"] += n - max(room, 0)
                self.queue_in += n - max(room, 0)
                self.queue_out += n - max(room, 0)
                if room <= 0:
                    continue
                batch = batch.slice(0, room)
                n = room
            self.enqueue(batch, n)

    def enqueue(self, batch, n):
        self.queue.append(batch)
        self.queued += n
        self.queue_in += n

    def drain_tracers(self):
        for tracer in list(self.tracers):
            # no more than the queue has room for: the rest waits in the tracer's
            # preallocated arena, which is a burst buffer too, instead of being dropped
            while True:
                room = self.room()
                if room <= 0:
                    return
                try:
                    batch = tracer.drain(min(room, max(DRAIN_MAX, self.max_batch_size)))
                except Exception:
                    self.failure_log.warning("fasttrace: draining %r failed", tracer, exc_info=True)
                    break
                if batch is None:
                    break
                self.enqueue(batch, len(batch))

    def export_queued(self, limit):
        """Exports queued spans until `limit` of them went out or the queue is empty."""
        queue = self.queue
        size = self.max_batch_size
        while limit > 0 and queue:
            # a queued batch longer than max_batch_size goes out piece by piece from a
            # cursor, one slice per export call: slicing off the rest instead would copy
            # the rest's list columns again at every export
            batch = queue[0]
            start = self.head_done
            end = len(batch)
            if end - start > size:
                self.head_done = start + size
                batch = batch.slice(start, start + size)
            else:
                queue.popleft()
                self.head_done = 0
                if start:
                    batch = batch.slice(start, end)
            n = len(batch)
            self.queued -= n
            limit -= n
            self.export(batch)
            self.queue_out += n
            if self.wake.take():
                # a tracer filled a batch meanwhile: keep its arena free
                self.absorb_inbox()
                self.drain_tracers()

    def past_stop_deadline(self):
        return (self.stopping and self.stop_deadline is not None
                and time.monotonic() >= self.stop_deadline)

    def export(self, batch):
        n = len(batch)
        if self.past_stop_deadline():
            self.dropped["shutdown"] += n
            return
        try:
            ok = bool(self.exporter.export(batch))
        except BaseException:
            ok = False
            self.failure_log.warning("fasttrace: exporter %r raised; %d spans lost", self.exporter,
                             n, exc_info=True)
        else:
            if not ok and not self.past_stop_deadline():
                self.failure_log.warning("fasttrace: exporter %r failed; %d spans lost",
                                 self.exporter, n)
        self.export_calls += 1
        if ok:
            self.exported += n
        elif self.past_stop_deadline():
            # close() ran out of time and shut the exporter down under this request
            self.dropped["shutdown"] += n
        else:
            self.export_failures += 1
            self.dropped["export_failed"] += n

    def settle_tickets(self):
        now = time.monotonic()
        still = []
        for ticket in self.pending:
            if ticket.mark is None and all(
                    (tracer := ref()) is None or tracer.spans_drained >= target
                    for ref, target in ticket.targets):
                ticket.mark = self.queue_in
            if ticket.mark is not None and self.queue_out >= ticket.mark:
                ticket.ok = True
                ticket.done.set()
            elif ticket.deadline is not None and now >= ticket.deadline:
                ticket.done.set()
            else:
                still.append(ticket)
        self.pending = still

    def nothing_left(self):
        return not (self.queue or self.inbox or any(t.backlog for t in list(self.tracers)))

    def finish_stopping(self):
        """True when the worker is done: everything exported, or the deadline passed."""
        if not (self.nothing_left() or self.past_stop_deadline()):
            return False
        if not self.abandoned:
            left = self.queued + sum(len(b) for b in self.inbox)
            # and what never left the arenas: finished before close, never sent
            for tracer in list(self.tracers):
                try:
                    while (batch := tracer.drain(-1)) is not None:
                        left += len(batch)
                except Exception:
                    pass
            self.dropped["shutdown"] += left
        self.queue.clear()
        self.head_done = 0
        self.inbox.clear()
        self.queued = 0
        for ticket in self.pending:
            ticket.done.set()
        self.pending = []
        return True

class BatchReporter(Reporter):
    """Exports finished spans from a background thread, in batches.

    The thread wakes every `flush_interval` seconds, and as soon as a tracer has
    `max_batch_size` finished spans waiting (the tracer calls `batch_ready`), then drains
    the tracers' arenas itself -- so the application thread never pays for draining or
    encoding -- and hands the spans to the exporter in chunks of at most `max_batch_size`.

    Memory is bounded: at most `max_queue_size` spans wait for export; what does not fit
    waits in the tracer's arena, and only when the arena is full too are new spans
    dropped (counted as the tracer's `arena_full`).  `flush()` and `close()` move spans
    from the arena at the exporter's pace until they are out or the timeout ends.
    Nothing raises into the application, and nothing tracer code calls (report,
    batch_ready, stats) ever waits on a lock: export errors are counted and logged at
    most once per `flush_interval`.

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
        self._closed = False
        self._tracers = weakref.WeakSet()
        self._init_state()
        self._exit_hook = _make_exit_hook(self)
        atexit.register(self._exit_hook)
        # A multiprocessing child ends with os._exit(), which skips atexit, and clears
        # the finalizers it inherited; its after-fork callbacks run after that, so the
        # child registers its own finalizer from one and its spans get out too.
        _register_after_multiprocessing_fork(self)

    def _init_state(self):
        """Everything a forked child must not share with its parent."""
        self._pid = os.getpid()
        self._lost_mark = 0         # lost spans when the last flush returned
        self._pipe = _Pipeline(self.exporter, self.flush_interval, self.max_batch_size,
                               self.max_queue_size)
        for tracer in list(self._tracers):
            self._pipe.tracers.add(tracer)
        if self._closed:
            self._pipe.closed = True
        # the worker holds the reporter only weakly, and wakes when it is gone
        reporter_ref = weakref.ref(self, _wake_on_collect(self._pipe.wake))
        self._thread = threading.Thread(target=self._pipe.run, args=(reporter_ref,),
                                        name="fasttrace-reporter", daemon=True)
        if not self._closed:
            self._thread.start()

    def __repr__(self):
        return f"<BatchReporter exporter={self.exporter!r}>"

    # -- called by tracers ----------------------------------------------------------

    def attach(self, tracer):
        self._tracers.add(tracer)
        self._pipe.tracers.add(tracer)

    def batch_ready(self, tracer):
        """A tracer has max_batch_size finished spans: wake the thread to drain them."""
        _fork.check()
        self._pipe.wake.set()

    def room(self):
        """Spans the queue can take now: what the tracer may drain inline when its arena
        is full (the rest waits there)."""
        return self._pipe.room()

    def report(self, batch):
        """Queues a SpanBatch for export (from a tracer's inline drain)."""
        n = len(batch)
        if not n:
            return
        pipe = self._pipe
        if pipe.closed:
            pipe.late_drops.append(n)
            return
        room = pipe.room()
        if n > room:
            # memory stays bounded: the newest spans are the ones dropped
            pipe.intake_drops.append(n - room)
            if room == 0:
                return
            batch = batch.slice(0, room)
        pipe.inbox.append(batch)
        # a full batch is worth waking the thread for; fewer wait for the interval
        if pipe.queued + pipe.inbox_spans() >= self.max_batch_size:
            pipe.wake.set()

    # -- called by the application ------------------------------------------------------------

    def flush(self, timeout=None):
        """Exports every span finished before the call, draining the tracers' arenas as
        the queue makes room.

        Returns:
            True when they were all exported within `timeout` seconds (None: as long as
            the exporter takes) and no span was lost (dropped or failed) since the
            previous flush.
        """
        _fork.check()
        pipe = self._pipe
        if not self._thread.is_alive():
            lost = pipe.lost()
            ok = lost == self._lost_mark and not pipe.queue and not pipe.inbox
            self._lost_mark = lost
            return ok
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        ticket = _FlushTicket([(weakref.ref(t), t.spans_finished) for t in list(pipe.tracers)],
                              deadline)
        pipe.tickets.append(ticket)
        pipe.wake.set()
        while not ticket.done.wait(1.0 if deadline is None
                                   else max(0.0, deadline - time.monotonic())):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not self._thread.is_alive():
                break
        lost = pipe.lost()
        ok = ticket.ok and lost == self._lost_mark
        self._lost_mark = lost
        return ok

    def close(self, timeout=None):
        """Exports what finished before the call, within `timeout` seconds, then stops
        the thread and shuts the exporter down.  Spans never sent are counted as
        `shutdown`.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        pipe = self._pipe
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            atexit.unregister(self._exit_hook)
        except Exception:  # pragma: no cover - interpreter shutting down
            pass
        if self._thread.is_alive():
            self.flush(timeout)
        pipe.stop_deadline = time.monotonic()     # nothing is exported from here on
        pipe.stopping = True
        pipe.wake.set()
        self._join(deadline)
        if self._thread.is_alive():
            # stuck in an export: shutting the exporter down aborts its retries
            self._shutdown_exporter()
            self._join(time.monotonic() + 0.5)
        else:
            self._shutdown_exporter()
        pipe.closed = True
        if self._thread.is_alive():
            # still stuck: count what it holds now, and let it count nothing more
            pipe.abandoned = True
            pipe.dropped["shutdown"] += pipe.queued + sum(len(b) for b in list(pipe.inbox))

    def _join(self, deadline):
        if self._thread is threading.current_thread() or not self._thread.is_alive():
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
        self._init_state()

    def stats(self):
        """Counters: exported (spans), export_calls, export_failures (calls), dropped
        (spans, by reason), queue_length (spans waiting), and the exporter's own stats."""
        pipe = self._pipe
        dropped = pipe.dropped_counts()
        out = {
            "exported": pipe.exported,
            "export_calls": pipe.export_calls,
            "export_failures": pipe.export_failures,
            "dropped": dropped,
            "queue_length": pipe.queued + pipe.inbox_spans(),
        }
        exporter_stats = getattr(self.exporter, "stats", None)
        if callable(exporter_stats):
            try:
                out["exporter"] = exporter_stats()
            except Exception:
                pass
        return out


def _wake_on_collect(wake):
    def collected(_ref):
        wake.set()
    return collected


def _finalize_in_multiprocessing_child(reporter):
    import multiprocessing.util
    multiprocessing.util.Finalize(None, reporter._exit_hook, exitpriority=100)


# Reporters made before multiprocessing was imported.  Importing it here would cost
# `import fasttrace` more than everything else together, and a process that never imports
# it never starts a multiprocessing child; one that does has imported multiprocessing.util
# before its first fork, and the before-fork hook registers these then, in time for the
# child to inherit them.
_awaiting_multiprocessing = weakref.WeakSet()


def _register_after_multiprocessing_fork(reporter):
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        _awaiting_multiprocessing.add(reporter)
    else:
        util.register_after_fork(reporter, _finalize_in_multiprocessing_child)


def _before_fork():
    if _awaiting_multiprocessing and "multiprocessing.util" in sys.modules:
        while True:
            try:
                reporter = _awaiting_multiprocessing.pop()
            except KeyError:
                break
            _register_after_multiprocessing_fork(reporter)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork)


def _make_exit_hook(reporter):
    ref = weakref.ref(reporter)

    def close_at_exit():
        r = ref()
        if r is not None:
            r.close(r.exit_timeout)
    return close_at_exit

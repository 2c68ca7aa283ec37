# SPDX-License-Identifier: Apache-2.0
"""fasttrace.Tracer: an opentracing.Tracer recording into a preallocated arena."""
import os
import time
import weakref

import opentracing

from fasttrace import _fork
from fasttrace._arena import Arena
from fasttrace._context import SpanContext
from fasttrace._lazy import logging
from fasttrace._ratelimit import RateLimitedLog
from fasttrace._sampling import ConstSampler, Sampler
from fasttrace._tracer import TracerCore
from fasttrace.batch import SpanBatch
from fasttrace.propagation import KNOWN_PROPAGATORS, make_propagation, parse_propagator_names
from fasttrace.reporting import InMemoryReporter
from fasttrace.scope import ContextVarsScopeManager
from fasttrace.tail import TailStage

log = logging.getLogger("fasttrace")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fasttrace._closed import Closed

__all__ = ["Closed", "Tracer"]

# Spans handed to the reporter per SpanBatch when the tracer drains on its own.
DRAIN_CHUNK = 4096
# Finished spans that make the tracer drain to a reporter that has no thread of its own:
# enough to spread each batch's fixed cost thin, few enough to stay in cache (measured).
DRAIN_THRESHOLD = 2048
# With tail sampling, spans one drain() may take out of the arena looking for kept ones
# before it returns None (the reporter asks again at the next notice).
_TAIL_DRAIN_LIMIT = 8 * DRAIN_CHUNK
_LOW_64 = (1 << 64) - 1



def _propagator_names(propagators):
    """The known names among `propagators` (a sequence or "a,b" string); unknown ones
    are skipped with a warning, so a typo in configuration never stops the service."""
    return parse_propagator_names(propagators, _warn_unknown_propagator)


def _warn_unknown_propagator(name, key):
    log.warning("fasttrace: unknown propagator %r ignored (known: %s)",
                name, ", ".join(KNOWN_PROPAGATORS))


def _weak_method(method):
    ref = weakref.WeakMethod(method)

    def call(*args):
        bound = ref()
        return None if bound is None else bound(*args)
    return call


def __getattr__(name):
    # Closed subclasses concurrent.futures.Future, which `import fasttrace` does not load:
    # it is made by the first close()
    if name == "Closed":
        from fasttrace._closed import Closed
        return Closed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _DuckSampler(Sampler):
    """Wraps a jaeger-client-style sampler (anything with is_sampled)."""

    def __init__(self, sampler):
        self._inner = sampler

    def is_sampled(self, trace_id, operation_name=None):
        return self._inner.is_sampled(trace_id, operation_name)


class Tracer(TracerCore, opentracing.Tracer):
    """An OpenTracing tracer whose spans record into a preallocated Cython arena.

    Args:
        service_name: the service these spans belong to.
        sampler: decides at each root span whether the trace is recorded
            (default: ConstSampler(True)).
        reporter: receives finished spans in batches (default: an InMemoryReporter
            keeping at most 100,000 spans).
        propagators: names of the formats inject() writes and extract() reads for
            TEXT_MAP and HTTP_HEADERS, in order: tracecontext, baggage, jaeger, b3, b3multi.
        scope_manager: default ContextVarsScopeManager (threads and asyncio).
        tags: process (resource) tags, reported with every batch.
        capacity: arena slots, i.e. spans open or finished-but-not-yet-drained.  When
            every slot holds an open span, new spans are not recorded (counted in
            stats()["dropped"]["arena_full"]); they still propagate their context.
        max_tags, max_logs: per-span limits; extra ones are counted, not kept.
        max_value_length: longer string values are truncated (and counted).
        trace_id_bits: 128 (W3C, OpenTelemetry) or 64 (jaeger-client's default, for
            backends or log pipelines that expect 16-hex-digit trace ids).  Ids from
            peers are kept as they come either way.
        tail_sampling: a fasttrace.TailSampling: every span is recorded and each trace is
            decided when its local root finishes (see fasttrace.tail).  The head
            sampler's decision stays on the context (and on traceparent).

    Raises:
        ValueError: trace_id_bits other than 64 or 128.
        TypeError: tail_sampling that is not a TailSampling.
    """

    def __init__(self, service_name="unknown_service", sampler=None, reporter=None,
                 propagators=("tracecontext", "baggage"), scope_manager=None, tags=None,
                 capacity=65536, max_tags=128, max_logs=128, max_value_length=4096,
                 trace_id_bits=128, tail_sampling=None):
        if trace_id_bits not in (64, 128):
            raise ValueError(f"trace_id_bits must be 64 or 128, not {trace_id_bits!r}")
        tail = None if tail_sampling is None else TailStage(tail_sampling)
        if sampler is None:
            sampler = ConstSampler(True)
        elif not isinstance(sampler, Sampler):
            sampler = _DuckSampler(sampler)
        if reporter is None:
            reporter = InMemoryReporter(max_spans=100_000)
        if scope_manager is None:
            scope_manager = ContextVarsScopeManager()
        self.service_name = str(service_name)
        self.tags = dict(tags or {})
        self.sampler = sampler
        self.reporter = reporter
        self._propagator_names = _propagator_names(propagators)
        self._setup(
            Arena(capacity, max_tags=max_tags, max_logs=max_logs,
                  max_value_length=max_value_length),
            sampler, scope_manager,
            make_propagation(self._propagator_names),
            make_propagation(self._propagator_names, text_map=True),
            self.service_name, self._drain_threshold(reporter, capacity),
            trace_id_bits == 64)
        self.tail_sampling = tail_sampling
        self._tail = tail
        self._record_all = tail is not None
        self._arena.reserve_decision_tag = tail is not None
        self._tail_closing = False
        self._reported = 0
        self._report_failures = 0
        self._lost_in_reporter = 0
        self._failure_log = RateLimitedLog()
        self._closed = None
        self._draining_inline = False
        self._hook_failures_logged = set()
        self._batch_ready_hook = getattr(reporter, "batch_ready", None)
        self._room_hook = getattr(reporter, "room", None)
        # where the arena sends finished spans (weakly: the arena must not keep the
        # tracer alive)
        arena = self._arena
        arena.batch_ready = _weak_method(self._batch_ready)
        arena.room = _weak_method(self._reporter_room)
        arena.deliver = _weak_method(self._report_drained)
        _fork.register(self)
        self._call_reporter_hook("attach", self)

    def _call_reporter_hook(self, name, *args):
        """Calls the reporter's optional hook `name` (see fasttrace.reporting); one that
        is missing is skipped, one that raises is logged once."""
        hook = getattr(self.reporter, name, None)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            if name not in self._hook_failures_logged:
                self._hook_failures_logged.add(name)
                log.exception("fasttrace: %r.%s() failed", self.reporter, name)

    # -- reporting ------------------------------------------------------------------

    @staticmethod
    def _drain_threshold(reporter, capacity):
        # Draining small batches often keeps the arena's working set in cache and keeps
        # each inline drain short; reporters with a thread of their own say what they want.
        try:
            wanted = int(getattr(reporter, "drain_threshold", None) or DRAIN_THRESHOLD)
        except (TypeError, ValueError):
            log.warning("fasttrace: %r.drain_threshold is not an int; using %d",
                        reporter, DRAIN_THRESHOLD)
            wanted = DRAIN_THRESHOLD
        return max(1, min(wanted, capacity // 2 or 1))

    def _batch_ready(self):
        """Called from Span.finish when drain_threshold finished spans are waiting."""
        notify = self._batch_ready_hook
        if notify is not None:
            try:
                notify(self)
            except Exception:
                # a broken hook is not called again: the tracer drains inline instead
                self._batch_ready_hook = None
                log.exception("fasttrace: %r.batch_ready() failed; draining inline from now "
                              "on", self.reporter)
        elif not self._draining_inline:
            self._draining_inline = True
            try:
                self._drain_to_reporter()
            finally:
                self._draining_inline = False

    def _reporter_room(self):
        """How many spans the reporter takes now, when the arena is full (its optional
        room() hook; -1 when it has none: any number)."""
        room = self._room_hook
        if room is None:
            return -1
        try:
            return max(0, int(room()))
        except Exception:
            return -1

    # -- what a reporter with a thread of its own calls --------------------------------

    def drain(self, max_spans=-1):
        """Takes up to `max_spans` finished spans (all when < 0) out of the arena, as one
        SpanBatch; None when none had finished.  For reporters that drain on their own
        thread (see the batch_ready hook in fasttrace.reporting)."""
        _fork.check()
        taken = 0
        while True:
            columns = self._arena.drain(max_spans)
            if columns is None:
                batch = self._pending_at_close()
            elif columns["pid"] != os.getpid():
                return None
            else:
                taken += len(columns["span_id"])
                batch = self._kept(columns)
                # when the tail stage keeps nothing of this batch (yet), drain on, so
                # "None" still means "none finished"
                if batch is None and taken < _TAIL_DRAIN_LIMIT:
                    continue
            if batch is not None:
                self._reported += len(batch)
            return batch

    @property
    def spans_finished(self):
        """Spans finished into the arena so far in this process (monotonic)."""
        return self._arena.n_finished

    @property
    def spans_drained(self):
        """Spans that left the arena so far in this process (monotonic)."""
        return self._arena.n_drained

    @property
    def backlog(self):
        """Finished spans waiting in the arena."""
        return self._arena.finished_count

    def _drain_to_reporter(self, max_spans=-1):
        """Moves finished spans out of the arena to the reporter; returns how many."""
        _fork.check()
        moved = 0
        while max_spans < 0 or moved < max_spans:
            chunk = DRAIN_CHUNK if max_spans < 0 else min(DRAIN_CHUNK, max_spans - moved)
            columns = self._arena.drain(chunk)
            if columns is None:
                break
            moved += self._report_drained(columns)
        batch = self._pending_at_close()
        if batch is not None:
            self._report_batch(batch)
        return moved

    def _report_drained(self, columns):
        """Hands drained columns to the reporter as a SpanBatch; returns how many spans."""
        if columns["pid"] != os.getpid():
            # drained before a fork (by this thread: a finalizer forked in between): the
            # parent reports these spans, the child must not report them again
            return 0
        batch = self._kept(columns)
        if batch is not None:
            self._report_batch(batch)
        return len(columns["span_id"])

    def _kept(self, columns):
        """Drained columns as the SpanBatch the reporter gets: all of them, or with tail
        sampling what the tail stage keeps (None: nothing yet)."""
        batch = SpanBatch(columns, self.service_name, self.tags)
        return batch if self._tail is None else self._tail.process(batch)

    def _pending_at_close(self):
        """While closing with tail sampling, the traces still waiting for their local
        root, decided now (their kept spans as a SpanBatch); else None."""
        if self._tail is None or not self._tail_closing:
            return None
        return self._tail.decide_pending()

    def _report_batch(self, batch):
        try:
            self.reporter.report(batch)
            self._reported += len(batch)
        except Exception:
            self._report_failures += 1
            self._lost_in_reporter += len(batch)
            self._failure_log.exception("fasttrace: reporter %r failed; %d spans lost so far",
                                        self.reporter, self._lost_in_reporter)

    def flush(self, timeout=None):
        """Drains every finished span to the reporter and waits for it to deliver them.

        A reporter that drains on its own thread (batch_ready) takes them from the arena
        itself, at its exporter's pace: what its queue cannot hold yet waits there.

        Returns:
            True when the reporter confirmed delivery within `timeout` seconds.
        """
        if self._batch_ready_hook is None:
            self._drain_to_reporter()
        try:
            return bool(self.reporter.flush(timeout))
        except Exception:
            log.exception("fasttrace: reporter flush failed")
            return False

    def close(self, timeout=None):
        """Flushes within `timeout` seconds, then closes the reporter.

        Returns:
            A completed `Closed` future whose result is what `flush` returned (True:
            every span was delivered).  It can be read as a bool, awaited, or yielded
            from a tornado coroutine as jaeger-client's close() is.  Calling close()
            again returns the same one.
        """
        if self._closed is not None:
            return self._closed
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        self._tail_closing = True     # pending tail-sampled traces are decided in this flush
        delivered = self.flush(timeout)
        try:
            self.reporter.close(None if deadline is None
                                else max(0.0, deadline - time.monotonic()))
        except Exception:
            delivered = False
            log.exception("fasttrace: reporter close failed")
        from fasttrace._closed import Closed
        self._closed = Closed(delivered)
        try:
            self.sampler.close()      # a RemoteSampler's poller stops (jaeger-client does too)
        except Exception:
            log.exception("fasttrace: sampler close failed")
        # the reporter's thread is gone: spans finished from now on are handed to its
        # report() inline, which counts them as dropped (closed)
        self._batch_ready_hook = None
        self._room_hook = None
        return self._closed

    # -- tail sampling across services -------------------------------------------------

    def keep_trace(self, span_context):
        """Marks the trace of `span_context` kept here because a service it called kept it
        (its spans get ``sampling.decision=downstream`` unless a policy before that keeps
        them).  The client integrations call it on a sampled ``traceresponse``.

        Returns False without tail sampling, for something that is not a fasttrace
        SpanContext, or when this process already discarded the trace (counted in
        ``stats()["tail_sampling"]["downstream_too_late"]``)."""
        tail = self._tail
        if tail is None or not isinstance(span_context, SpanContext):
            return False
        trace_id = span_context.trace_id
        return tail.mark_kept(trace_id >> 64, trace_id & _LOW_64)

    def tail_verdict(self, span, error=False):
        """Why tail sampling would keep `span`'s trace if `span` (its local root, still
        running) finished now: "error" (`error`, or an error=True span of the trace already
        drained), "latency", "downstream" (a callee kept it), or "" for none of these yet
        ("" as well without tail sampling).  The server integrations send it upstream in
        ``traceresponse`` before they finish the span."""
        tail = self._tail
        if tail is None:
            return ""
        try:
            trace_id = span.trace_id
            took_ns = time.time_ns() - round(span.start_time * 1e9)
            name = span.operation_name
        except (AttributeError, TypeError, ValueError):
            return ""
        return tail.verdict(trace_id >> 64, trace_id & _LOW_64, bool(error), took_ns, name)

    def stats(self):
        """Counters: started, finished, sampled, unsampled, dropped (by reason),
        truncated (by kind), reported, and the arena's occupancy."""
        counters = self._arena.counters()
        counters["reported"] = self._reported
        counters["report_failures"] = self._report_failures
        counters["dropped"]["reporter_error"] = self._lost_in_reporter
        counters["unsampled_by_priority"] = counters["dropped"].pop("sampling_priority")
        counters["extract_errors"] = self._extract_errors
        counters["foreign_parents"] = {"adopted": self._foreign_parents_adopted,
                                       "unusable": self._foreign_parents_unusable}
        counters["sampler_errors"] = getattr(self.sampler, "errors", 0)
        sampler_stats = getattr(self.sampler, "stats", None)
        if callable(sampler_stats):     # RemoteSampler: polls, updates, the strategy
            try:
                counters["sampler"] = sampler_stats()
            except Exception:
                log.debug("fasttrace: sampler.stats() failed", exc_info=True)
        counters["exported"] = counters["export_failures"] = 0
        if self._tail is not None:
            counters["tail_sampling"] = self._tail.stats()
        reporter_stats = getattr(self.reporter, "stats", None)
        if callable(reporter_stats):
            try:
                reported = counters["reporter"] = reporter_stats()
            except Exception:
                log.debug("fasttrace: reporter.stats() failed", exc_info=True)
            else:
                # what left the process, also at the top level of the counters
                counters["exported"] = reported.get("exported", 0)
                counters["export_failures"] = reported.get("export_failures", 0)
                dropped = reported.get("dropped") or {}
                if isinstance(dropped, int):
                    counters["dropped"]["reporter_dropped"] = dropped
                else:
                    for reason, count in dropped.items():
                        counters["dropped"][f"reporter_{reason}"] = count
        return counters

    def _after_fork_in_child(self):
        """Called by the fork registry (fasttrace/_fork.py) in a forked child."""
        self._draining_inline = False   # the fork may have come from inside a drain
        self._arena.reset_if_forked()
        if self._tail is not None:
            self._tail.reset_after_fork()
        self._reported = self._report_failures = self._lost_in_reporter = 0
        self._call_reporter_hook("after_fork")

    def __del__(self):
        # a tracer dropped without close(): what finished goes to the reporter, which
        # (a BatchReporter going too) still exports what it was given
        try:
            if self._closed is None and self._arena.finished_count:
                self._drain_to_reporter()
        except Exception:
            pass

    def __repr__(self):
        return f"<fasttrace.Tracer {self.service_name!r} sampler={self.sampler!r}>"

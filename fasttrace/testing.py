# SPDX-License-Identifier: Apache-2.0
"""``fasttrace.testing.MockTracer``: tests written against OpenTracing's MockTracer, run
through fasttrace.

    # before
    from opentracing.mocktracer import MockTracer
    # after
    from fasttrace.testing import MockTracer

    tracer = MockTracer()                      # or MockTracer(SomeScopeManager())
    with tracer.start_active_span("parent"):
        with tracer.start_active_span("child"):
            pass
    child, parent = tracer.finished_spans()    # in the order they finished
    assert child.parent_id == parent.context.span_id
    tracer.reset()

``MockTracer`` is a real ``fasttrace.Tracer``: spans are fasttrace's compiled spans,
recorded into its arena, drained as ``SpanBatch``\\ es into an ``InMemoryReporter`` and
read back from the ``FinishedSpan`` records it keeps.  Nothing of the recording path is
reimplemented here, so a test that passes against it passes against what production
runs.  Every ``fasttrace.Tracer`` keyword works (``MockTracer(sampler=..., tags=...)``).

``finished_spans()`` returns ``SpanRecord``\\ s, which read like opentracing's
``MockSpan``: ``operation_name``, ``tags`` (dict), ``logs`` (``LogData`` with
``key_values`` and ``timestamp`` in float seconds), ``start_time`` and ``finish_time``
(float seconds since the epoch), ``parent_id`` (int or None), ``context`` (with
``trace_id``, ``span_id``, ``baggage``), ``finished`` (True), ``tracer``, and
``get_baggage_item(key)``.  They also have ``references`` (``opentracing.Reference``\\ s;
MockSpan has no such attribute) and ``finished_span`` (fasttrace's ``FinishedSpan``:
service name, sampling flags, nanosecond times).  A record compares equal to the live
span it was recorded from (same trace and span id), so ``assert
tracer.finished_spans() == [child, parent]`` keeps working.  The ``context`` is a real
``fasttrace.SpanContext``: ``start_span(child_of=record)``, ``child_of=record.context``
and ``inject(record.context, ...)`` work.

Differences from ``opentracing.mocktracer.MockTracer``, all of them fasttrace's own
behaviour:

- **Ids** are random: 128-bit trace ids and 64-bit span ids, not 1, 2, 3...; a test must
  not derive the order of spans from their ids.
- **Records are snapshots** taken when ``finished_spans()`` reads them: they are not the
  span objects themselves (so ``is`` fails where ``==`` works), and writing to them does
  nothing to the span.  A record's baggage is the span's baggage at that read.
- **Tag values** are kept as they are when they are ``str``, ``bool``, ``int`` or
  ``float``; anything else is stored as ``str(value)``.  Strings longer than
  ``max_value_length`` (4096) are truncated, and beyond ``max_tags`` / ``max_logs`` (128)
  per span, tags and logs are counted in ``stats()``, not kept.  ``sampling.priority``
  is acted on: 0 or less drops the span (it never appears in ``finished_spans()``).
- **Log fields** are a copy of the dict given to ``log_kv``, not the dict itself.
- **Writes after** ``finish()`` (tags, logs, a new operation name) are ignored, where a
  MockSpan still takes them; a second ``finish()`` is ignored too.
- **Propagation**: ``TEXT_MAP`` and ``HTTP_HEADERS`` speak fasttrace's configured
  propagators (W3C ``traceparent`` / ``baggage`` by default; ``propagators=`` picks others),
  not MockTracer's ``ot-tracer-*`` fields; ``BINARY`` is fasttrace's layout in a
  ``bytearray``.  ``extract()`` of a carrier without a context returns None where
  MockTracer raises ``SpanContextCorruptedException``.  ``register_propagator(format,
  propagator)`` works as in MockTracer; a registered ``extract`` returns a
  ``fasttrace.SpanContext`` or any context with integer ``trace_id`` and ``span_id``
  (adopted as the parent, as every foreign parent is).
- **Times** come from fasttrace's span clock (nanoseconds); ``finish_time`` is never
  earlier than ``start_time``.
"""
import threading

from opentracing import Reference
from opentracing.scope_managers import ThreadLocalScopeManager

from fasttrace._context import SpanContext
from fasttrace._span import Span
from fasttrace.reporting import InMemoryReporter
from fasttrace.tracer import Tracer

__all__ = ["LogData", "MockTracer", "SpanRecord"]


def _seconds(ns):
    """Integer nanoseconds as float seconds, rounded once (``ns / 1e9`` rounds twice: a
    time of 1700000003.75 s would come back as 1700000003.7500002)."""
    whole, rest = divmod(ns, 1_000_000_000)
    return whole + rest / 1e9


class LogData:
    """One log of a finished span, as opentracing's mocktracer ``LogData``."""

    __slots__ = ("key_values", "timestamp")

    def __init__(self, key_values, timestamp):
        self.key_values = key_values
        self.timestamp = timestamp

    def __eq__(self, other):
        if not isinstance(other, LogData):
            return NotImplemented
        return self.key_values == other.key_values and self.timestamp == other.timestamp

    __hash__ = None

    def __repr__(self):
        return f"LogData({self.key_values!r}, timestamp={self.timestamp!r})"


class SpanRecord:
    """A finished span as ``MockTracer.finished_spans()`` returns it (reads like
    opentracing's ``MockSpan``; built from fasttrace's ``FinishedSpan``)."""

    __slots__ = ("operation_name", "tags", "logs", "start_time", "finish_time",
                 "parent_id", "context", "references", "tracer", "finished_span")

    #: a record only exists for a finished span
    finished = True

    def __init__(self, finished_span, context, tracer):
        fs = finished_span
        self.finished_span = fs
        self.tracer = tracer
        self.context = context
        self.operation_name = fs.operation_name
        self.tags = fs.tags
        self.logs = [LogData(fields, _seconds(ts)) for ts, fields in fs.logs]
        self.start_time = _seconds(fs.start_ns)
        self.finish_time = _seconds(fs.end_ns)
        self.parent_id = fs.parent_id
        self.references = [Reference(kind, SpanContext(trace_id, span_id))
                           for kind, trace_id, span_id in fs.references]

    def get_baggage_item(self, key):
        return self.context.baggage.get(key)

    def __eq__(self, other):
        # the live span it was recorded from, or a record of the same span
        if isinstance(other, (SpanRecord, Span)):
            return (self.context.trace_id == other.context.trace_id
                    and self.context.span_id == other.context.span_id)
        return NotImplemented

    def __hash__(self):
        return hash((self.context.trace_id, self.context.span_id))

    def __repr__(self):
        parent = "root" if self.parent_id is None else f"parent={self.parent_id:016x}"
        return (f"<SpanRecord {self.operation_name!r} trace={self.context.trace_id:032x} "
                f"span={self.context.span_id:016x} {parent} tags={self.tags!r}>")


class MockTracer(Tracer):
    """A ``fasttrace.Tracer`` that keeps its finished spans for tests, with the API of
    ``opentracing.mocktracer.MockTracer`` (see the module docstring).

    Args:
        scope_manager: as for MockTracer (None: opentracing's ThreadLocalScopeManager,
            as MockTracer's default, so each tracer has its own active span; pass
            fasttrace's ContextVarsScopeManager for asyncio code).
        **tracer_kwargs: any other ``fasttrace.Tracer`` argument; ``reporter``, when
            given, must be an ``InMemoryReporter`` (default: one without a size limit).
    """

    def __init__(self, scope_manager=None, **tracer_kwargs):
        reporter = tracer_kwargs.pop("reporter", None)
        if reporter is None:
            reporter = InMemoryReporter(max_spans=None)
        elif not isinstance(reporter, InMemoryReporter):
            raise TypeError("MockTracer reads its spans back from an InMemoryReporter, "
                            f"not {type(reporter).__name__}")
        tracer_kwargs.setdefault("service_name", "mocktracer")
        # One drain at a time, so batches reach the reporter in the order they left the
        # arena (finish order) when several threads drain.
        self._drain_lock = threading.RLock()
        self._read_lock = threading.RLock()
        # Live spans by span id, until their record is read: the arena keeps no baggage,
        # so a record's context comes from its span.
        self._live = {}
        self._live_lock = threading.Lock()
        self._records = []
        self._propagators = {}
        if scope_manager is None:
            scope_manager = ThreadLocalScopeManager()
        super().__init__(reporter=reporter, scope_manager=scope_manager, **tracer_kwargs)

    # -- spans ------------------------------------------------------------------------

    def start_span(self, operation_name=None, child_of=None, references=None, tags=None,
                   start_time=None, ignore_active_span=False):
        span = super().start_span(operation_name, child_of, references, tags, start_time,
                                  ignore_active_span)
        with self._live_lock:
            self._live[span.span_id] = span
        return span

    def start_active_span(self, operation_name, child_of=None, references=None, tags=None,
                          start_time=None, ignore_active_span=False, finish_on_close=True):
        scope = super().start_active_span(operation_name, child_of, references, tags,
                                          start_time, ignore_active_span, finish_on_close)
        span = scope.span
        with self._live_lock:
            self._live[span.span_id] = span
        return scope

    def _drain_to_reporter(self, max_spans=-1):
        with self._drain_lock:
            return super()._drain_to_reporter(max_spans)

    def finished_spans(self):
        """The spans finished since construction or the last ``reset()``, in the order
        ``finish()`` was called, as ``SpanRecord``\\ s (a new list at each call).

        The order is exact unless the arena fills up (about ``capacity`` spans, 65,536
        by default, open at once): a span start then drains it outside the tracer's
        drain lock, and with several threads two batches can swap places."""
        with self._read_lock:
            with self._live_lock:
                # not recording now: finished (so drained below) or never recorded
                done = [sid for sid, span in self._live.items() if not span.is_recording]
            self.flush()
            spans = self.reporter.spans
            with self._live_lock:
                for fs in spans[len(self._records):]:
                    span = self._live.pop(fs.span_id, None)
                    if span is not None and span.trace_id == fs.trace_id:
                        context = span.context
                    else:
                        context = SpanContext(fs.trace_id, fs.span_id, sampled=fs.sampled,
                                              debug=fs.debug)
                    self._records.append(SpanRecord(fs, context, self))
                for sid in done:
                    self._live.pop(sid, None)
            return list(self._records)

    def reset(self):
        """Forgets the finished spans.  Spans still open are not affected: they appear
        in ``finished_spans()`` when they finish."""
        with self._read_lock:
            with self._live_lock:
                done = [sid for sid, span in self._live.items() if not span.is_recording]
            self._drain_to_reporter()
            self.reporter.clear()
            with self._live_lock:
                for sid in done:
                    self._live.pop(sid, None)
            self._records = []

    # -- propagation --------------------------------------------------------------------

    def register_propagator(self, format, propagator):
        """Handles ``format`` with ``propagator`` (``inject(span_context, carrier)``,
        ``extract(carrier)``), before fasttrace's own formats, as MockTracer does."""
        self._propagators[format] = propagator

    def inject(self, span_context, format, carrier):
        propagator = self._propagators.get(format)
        if propagator is None:
            return super().inject(span_context, format, carrier)
        if isinstance(span_context, Span):
            span_context = span_context.context
        return propagator.inject(span_context, carrier)

    def extract(self, format, carrier):
        propagator = self._propagators.get(format)
        if propagator is None:
            return super().extract(format, carrier)
        return propagator.extract(carrier)

    def __repr__(self):
        return f"<fasttrace.testing.MockTracer {self.service_name!r}>"


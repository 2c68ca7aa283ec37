# SPDX-License-Identifier: Apache-2.0
"""Tail-based sampling in the process: the stage between the arena and the reporter.

With ``Tracer(tail_sampling=TailSampling(...))`` every span is recorded (the head
sampler's decision stays on the context, and on ``traceparent``), and each drained
SpanBatch passes through `TailStage.process` before the reporter sees it.  The stage
keeps a trace's spans pending until its local root (a span with no parent, or whose
parent came as a context: remote, extracted) has finished, then decides: the trace's
spans go on, tagged ``sampling.decision``, if a policy keeps it, else they are dropped
and counted.  Spans that finish after the decision follow it (a bounded table of recent
decisions) unless they bring a reason of their own to keep a discarded trace; past the
budget, the oldest pending traces are decided early by the policies that need no local
root.  The stage itself is fasttrace/_tail.pyx; this module is the policy.
"""
# the stage itself (its work per batch is in C) and the decisions' names
from fasttrace._tail import DECISIONS, TOLD_UPSTREAM, TailStage, pending_span_bytes

__all__ = ["DECISIONS", "DECISION_TAG", "TOLD_UPSTREAM", "TailSampling", "TailStage",
           "pending_span_bytes"]

DECISION_TAG = "sampling.decision"
_TRACE_ID_LIMIT = (1 << 64) - 1


def _check_bool(name, value):
    if type(value) is not bool:
        raise TypeError(f"TailSampling: {name} must be True or False, not {value!r}")
    return value


def _check_ms(name, value):
    import numbers  # here: only a TailSampling needs it, not `import fasttrace`
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"TailSampling: {name} must be a number of milliseconds, not {value!r}")
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"TailSampling: {name} must be a finite number >= 0, not {value!r}")
    return value


def _check_count(name, value):
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"TailSampling: {name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"TailSampling: {name} must be >= 1, not {value!r}")
    return int(value)


def ratio_bound(ratio):
    """The bound below which a trace id's lower 64 bits are kept at `ratio`: OpenTelemetry's
    TraceIdRatioBased rule, ``round(ratio * 2**64)``."""
    return round(ratio * (_TRACE_ID_LIMIT + 1))


class TailSampling:
    """What a tail-sampled trace is kept for (each keyword names what it keeps).

    Args:
        errors: keep a trace any of whose local spans has the tag ``error=True``.
        latency_ms: keep a trace whose local root took at least this long (None: off).
        latency_ms_by_operation: {operation name: ms}, overriding `latency_ms` for local
            roots of that name.
        tags: (key, value) pairs: keep a trace any of whose spans has that tag value.
        baseline_ratio: keep this fraction of traces, by trace id, as OpenTelemetry's
            ``traceidratio`` does (the same traces in every service using the same ratio).
        keep_head_sampled: keep a trace the head sampler sampled.
        max_pending_spans, max_pending_traces, max_pending_bytes: the budget; past any
            of them the oldest pending traces are decided early (error, downstream, tag,
            baseline, then the head decision).
            A pending span's bytes are estimated from its columns (`pending_span_bytes`:
            64 per span, 32 per tag, 160 per log; str values, which the arena caps at
            max_value_length, are not counted).
        decision_cache_size: recent decisions kept for spans finishing after their root.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range.
    """

    __slots__ = ("errors", "latency_ms", "latency_ms_by_operation", "tags", "baseline_ratio",
                 "keep_head_sampled", "max_pending_spans", "max_pending_traces",
                 "max_pending_bytes",
                 "decision_cache_size", "_bound")

    def __init__(self, *, errors=True, latency_ms=None, latency_ms_by_operation=None,
                 tags=None, baseline_ratio=0.0, keep_head_sampled=True,
                 max_pending_spans=100_000, max_pending_traces=10_000,
                 max_pending_bytes=64 << 20, decision_cache_size=10_000):
        self.errors = _check_bool("errors", errors)
        self.keep_head_sampled = _check_bool("keep_head_sampled", keep_head_sampled)
        self.latency_ms = None if latency_ms is None else _check_ms("latency_ms", latency_ms)
        by_op = {}
        if latency_ms_by_operation is not None:
            if not hasattr(latency_ms_by_operation, "items"):
                raise TypeError("TailSampling: latency_ms_by_operation must be a dict of "
                                f"operation name -> ms, not {latency_ms_by_operation!r}")
            for name, ms in latency_ms_by_operation.items():
                if type(name) is not str:
                    raise TypeError("TailSampling: latency_ms_by_operation keys must be "
                                    f"operation names (str), not {name!r}")
                by_op[name] = _check_ms(f"latency_ms_by_operation[{name!r}]", ms)
        self.latency_ms_by_operation = by_op
        pairs = []
        if tags is not None:
            if isinstance(tags, (str, bytes)) or not hasattr(tags, "__iter__"):
                raise TypeError(f"TailSampling: tags must be (key, value) pairs, not {tags!r}")
            for pair in (tags.items() if hasattr(tags, "items") else tags):
                if not isinstance(pair, tuple) or len(pair) != 2 or type(pair[0]) is not str:
                    raise TypeError("TailSampling: each of tags must be a (str key, value) "
                                    f"pair, not {pair!r}")
                pairs.append(pair)
        self.tags = tuple(pairs)
        import numbers
        if isinstance(baseline_ratio, bool) or not isinstance(baseline_ratio, numbers.Real):
            raise TypeError(f"TailSampling: baseline_ratio must be a number, not {baseline_ratio!r}")
        if not 0.0 <= baseline_ratio <= 1.0:
            raise ValueError("TailSampling: baseline_ratio must be in [0, 1], not "
                             f"{baseline_ratio!r}")
        self.baseline_ratio = float(baseline_ratio)
        self._bound = ratio_bound(self.baseline_ratio)
        self.max_pending_spans = _check_count("max_pending_spans", max_pending_spans)
        self.max_pending_traces = _check_count("max_pending_traces", max_pending_traces)
        self.max_pending_bytes = _check_count("max_pending_bytes", max_pending_bytes)
        self.decision_cache_size = _check_count("decision_cache_size", decision_cache_size)

    def baseline_keeps(self, trace_id_lo):
        """True when the baseline ratio keeps a trace whose lower 64 bits are these."""
        return (trace_id_lo & _TRACE_ID_LIMIT) < self._bound

    def __repr__(self):
        return (f"TailSampling(errors={self.errors}, latency_ms={self.latency_ms}, "
                f"latency_ms_by_operation={self.latency_ms_by_operation}, tags={self.tags}, "
                f"baseline_ratio={self.baseline_ratio}, "
                f"keep_head_sampled={self.keep_head_sampled}, "
                f"max_pending_spans={self.max_pending_spans}, "
                f"max_pending_traces={self.max_pending_traces}, "
                f"max_pending_bytes={self.max_pending_bytes}, "
                f"decision_cache_size={self.decision_cache_size})")

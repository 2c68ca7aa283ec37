# SPDX-License-Identifier: Apache-2.0
"""Tail-based sampling in the process: the stage between the arena and the reporter.

With ``Tracer(tail_sampling=TailSampling(...))`` every span is recorded (the head
sampler's decision stays on the context, and on ``traceparent``), and each drained
SpanBatch passes through `TailStage.process` before the reporter sees it.  The stage
keeps a trace's spans pending until its local root (a span with no parent, or whose
parent came as a context: remote, extracted) has finished, then decides: the trace's
spans go on, tagged ``sampling.decision``, if a policy keeps it, else they are dropped
and counted.  Spans that finish after the decision follow it (a bounded table of recent
decisions); past the budget, the oldest pending traces are decided by their head decision.
"""
import itertools
import numbers
from collections import OrderedDict, deque

import numpy as np

from fasttrace._layout import FLAG_CONTEXT_PARENT, FLAG_SAMPLED, UNINTERNED
from fasttrace._reentry import GuardedLock

__all__ = ["DECISIONS", "TOLD_UPSTREAM", "TailSampling", "TailStage"]

# the values of the sampling.decision tag, in the order the policies are tried
DECISIONS = ("error", "latency", "downstream", "tag", "baseline", "head", "early")
# the decisions a service tells its caller about (traceresponse): the caller keeps its
# part of the trace for them, as "downstream"; baseline and head it decides for itself
TOLD_UPSTREAM = frozenset(("error", "latency", "downstream"))
DECISION_TAG = "sampling.decision"
_TRACE_ID_LIMIT = (1 << 64) - 1
_MISSING = object()
_CODE = {name: code for code, name in enumerate(DECISIONS, 1)}
_NAMES = np.array(("",) + DECISIONS, dtype=object)     # a decision code's tag value


def _check_bool(name, value):
    if type(value) is not bool:
        raise TypeError(f"TailSampling: {name} must be True or False, not {value!r}")
    return value


def _check_ms(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"TailSampling: {name} must be a number of milliseconds, not {value!r}")
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"TailSampling: {name} must be a finite number >= 0, not {value!r}")
    return value


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"TailSampling: {name} must be an int, not {value!r}")
    if value < 1:
        raise ValueError(f"TailSampling: {name} must be >= 1, not {value!r}")
    return int(value)


def ratio_bound(ratio):
    """The bound below which a trace id's lower 64 bits are kept at `ratio`: OpenTelemetry's
    TraceIdRatioBased rule, ``round(ratio * 2**64)``."""
    return round(ratio * (_TRACE_ID_LIMIT + 1))


def _same_value(a, b):
    return (type(a) is bool) == (type(b) is bool) and a == b


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
        max_pending_spans, max_pending_traces: the budget; past it the oldest pending
            traces are decided early, by their head decision.
        decision_cache_size: recent decisions kept for spans finishing after their root.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range.
    """

    __slots__ = ("errors", "latency_ms", "latency_ms_by_operation", "tags", "baseline_ratio",
                 "keep_head_sampled", "max_pending_spans", "max_pending_traces",
                 "decision_cache_size", "_bound")

    def __init__(self, *, errors=True, latency_ms=None, latency_ms_by_operation=None,
                 tags=None, baseline_ratio=0.0, keep_head_sampled=True,
                 max_pending_spans=100_000, max_pending_traces=10_000,
                 decision_cache_size=10_000):
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
        if isinstance(baseline_ratio, bool) or not isinstance(baseline_ratio, numbers.Real):
            raise TypeError(f"TailSampling: baseline_ratio must be a number, not {baseline_ratio!r}")
        if not 0.0 <= baseline_ratio <= 1.0:
            raise ValueError("TailSampling: baseline_ratio must be in [0, 1], not "
                             f"{baseline_ratio!r}")
        self.baseline_ratio = float(baseline_ratio)
        self._bound = ratio_bound(self.baseline_ratio)
        self.max_pending_spans = _check_count("max_pending_spans", max_pending_spans)
        self.max_pending_traces = _check_count("max_pending_traces", max_pending_traces)
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
                f"decision_cache_size={self.decision_cache_size})")


class _Pending:
    """One trace's spans waiting for their local root: (batch, row) pairs and what they hold."""

    __slots__ = ("spans", "head", "error", "tag")

    def __init__(self):
        self.spans = []
        self.head = self.error = self.tag = False


class TailStage:
    """A tracer's pending table and decisions (see the module docstring).

    `process(batch)` takes each drained SpanBatch and returns the kept spans as one
    SpanBatch (or None).  It never waits for another thread: a batch handed in while
    another thread (or a finalizer on this one) is processing is queued, and the thread
    in the stage processes it before it leaves.
    """

    def __init__(self, policy):
        if not isinstance(policy, TailSampling):
            raise TypeError(f"tail_sampling must be a fasttrace.TailSampling, not {policy!r}")
        self.policy = policy
        self._lock = GuardedLock()
        self._inbox = deque()
        self._reset()

    def _reset(self):
        self._pending = OrderedDict()    # (hi, lo) -> _Pending, oldest first
        self._pending_spans = 0
        self._decided = {}               # (hi, lo) -> decision, or "" for discarded
        self._marks = OrderedDict()      # (hi, lo) of undecided traces a callee kept
        self._inbox.clear()
        self._key_ids = {}
        self._keys_table = None
        self.kept = dict.fromkeys(DECISIONS, 0)
        self.traces_discarded = 0
        self.spans_discarded = 0
        self.decided_early = 0
        self.late_spans = 0
        self.marks_too_late = 0

    def reset_after_fork(self):
        """A forked child's table starts empty: the pending spans are the parent's."""
        self._lock = GuardedLock()
        self._inbox = deque()
        self._reset()

    def stats(self):
        return {"kept": dict(self.kept), "traces_discarded": self.traces_discarded,
                "spans_discarded": self.spans_discarded,
                "traces_decided_early": self.decided_early, "late_spans": self.late_spans,
                "downstream_too_late": self.marks_too_late,
                "pending_spans": self._pending_spans, "pending_traces": len(self._pending)}

    # -- what the integrations ask, on the application's threads ----------------------

    def mark_kept(self, hi, lo):
        """A service this process called kept the trace (hi, lo): its local trace is kept
        too, as "downstream", unless a policy before it keeps it.  False when the trace
        was already discarded here (counted); never waits for the stage."""
        key = (hi, lo)
        decision = self._decided.get(key, _MISSING)
        if decision is not _MISSING:
            if not decision:
                self.marks_too_late += 1
            return bool(decision)
        marks = self._marks
        marks[key] = None
        while len(marks) > self.policy.decision_cache_size:
            try:
                marks.popitem(last=False)
            except KeyError:       # emptied by the stage meanwhile
                break
        return True

    def verdict(self, hi, lo, error, took_ns, operation_name):
        """What the stage would keep the trace (hi, lo) for if its local root, running
        `took_ns` so far, finished now: one of TOLD_UPSTREAM, or "" when none of them
        applies yet.  `error`: the caller knows the root failed (an error status)."""
        decision = self._decided.get((hi, lo))
        if decision in TOLD_UPSTREAM:
            return decision
        policy = self.policy
        if policy.errors:
            trace = self._pending.get((hi, lo))
            if error or (trace is not None and trace.error):
                return "error"
        threshold = policy.latency_ms_by_operation.get(operation_name, policy.latency_ms)
        if threshold is not None and took_ns >= threshold * 1e6:
            return "latency"
        if (hi, lo) in self._marks:
            return "downstream"
        return ""

    # -- the stage ----------------------------------------------------------------------

    def process(self, batch):
        """The kept spans of `batch` (and of pending traces it decides) as a SpanBatch."""
        self._inbox.append(batch)
        out = []
        while self._inbox:
            lock = self._lock
            if not lock.enter(blocking=False):
                break       # the thread inside takes it from the inbox
            try:
                while self._inbox:
                    self._process_one(self._inbox.popleft(), out)
            finally:
                lock.exit()
        return _assemble(out)

    def decide_pending(self):
        """Decides every pending trace now, by its head decision (counted as early), and
        returns the kept spans as a SpanBatch or None: for close(), so no pending span
        is lost uncounted.  None, deciding nothing, while another thread is inside."""
        lock = self._lock
        if not lock.enter(blocking=False):
            return None
        out = []
        try:
            while self._inbox:
                self._process_one(self._inbox.popleft(), out)
            self._enforce_budget(out, everything=True)
        finally:
            lock.exit()
        return _assemble(out)

    def _process_one(self, batch, out):
        n = len(batch)
        if n == 0:
            return
        policy = self.policy
        flags = batch.flags
        roots = ((batch.parent_id == 0) | ((flags & FLAG_CONTEXT_PARENT) != 0)).tolist()
        heads = ((flags & FLAG_SAMPLED) != 0).tolist()
        his = batch.trace_id_hi.tolist()
        los = batch.trace_id_lo.tolist()
        errors, tagged = self._candidates(batch)
        pending = self._pending
        decided = self._decided
        keys = list(zip(his, los))
        if (all(roots) and not policy.latency_ms_by_operation
                and not any(map(decided.__contains__, keys))
                and not (pending and any(map(pending.__contains__, keys)))
                and not (self._marks and any(map(self._marks.__contains__, keys)))
                and len(set(keys)) == n):
            self._decide_lone_roots(batch, keys, los, errors, tagged, out)
            return
        here_rows, here_reasons = [], []
        for i in range(n):
            key = keys[i]
            decision = decided.get(key, _MISSING)
            if decision is not _MISSING:
                self.late_spans += 1
                if decision:
                    here_rows.append(i)
                    here_reasons.append(decision)
                else:
                    self.spans_discarded += 1
                continue
            trace = pending.get(key)
            if not roots[i]:
                if trace is None:
                    trace = pending[key] = _Pending()
                trace.spans.append((batch, i))
                trace.head = trace.head or heads[i]
                if i in errors:
                    trace.error = True
                if i in tagged:
                    trace.tag = True
                self._pending_spans += 1
                continue
            # the local root finished: decide
            if trace is not None:
                del pending[key]
                self._pending_spans -= len(trace.spans)
            decision = self._decide(batch, i, trace, i in errors, i in tagged, heads[i], los[i],
                                    self._marks.pop(key, _MISSING) is None)
            if decision:
                self.kept[decision] += 1
                here_rows.append(i)
                here_reasons.append(decision)
                if trace is not None:
                    _extend(out, trace.spans, decision)
            else:
                self.traces_discarded += 1
                self.spans_discarded += 1 + (0 if trace is None else len(trace.spans))
            decided[key] = decision
        out.append((batch, here_rows, here_reasons))
        self._trim_decided()
        self._enforce_budget(out)

    def _trim_decided(self):
        # amortized: past a quarter over its size, the table keeps its newest entries
        decided = self._decided
        size = self.policy.decision_cache_size
        if len(decided) > size + size // 4:
            self._decided = dict(itertools.islice(decided.items(), len(decided) - size, None))

    def _decide_lone_roots(self, batch, keys, los, errors, tagged, out):
        """`_decide` for a batch of local roots alone in their traces, in columns: each
        policy, lowest first, overwrites the decision code of the rows it keeps."""
        policy = self.policy
        codes = np.zeros(len(keys), dtype=np.uint8)     # 0: discard, else DECISIONS[c - 1]
        if policy.keep_head_sampled:
            codes[(batch.flags & FLAG_SAMPLED) != 0] = _CODE["head"]
        if policy._bound >= 1 << 64:
            codes[:] = _CODE["baseline"]
        elif policy._bound > 0:
            codes[batch.trace_id_lo < np.uint64(policy._bound)] = _CODE["baseline"]
        if tagged:
            codes[list(tagged)] = _CODE["tag"]
        if policy.latency_ms is not None:
            took = batch.end_ns - batch.start_ns
            codes[took >= policy.latency_ms * 1e6] = _CODE["latency"]
        if policy.errors and errors:
            codes[list(errors)] = _CODE["error"]
        counts = np.bincount(codes, minlength=len(_NAMES)).tolist()
        for code, name in enumerate(DECISIONS, 1):
            self.kept[name] += counts[code]
        self.traces_discarded += counts[0]
        self.spans_discarded += counts[0]
        names = _NAMES[codes].tolist()
        self._decided.update(zip(keys, names))
        self._trim_decided()
        rows = np.flatnonzero(codes)
        if len(rows):
            out.append((batch, rows, _NAMES[codes[rows]].tolist()))

    def _decide(self, batch, i, trace, error, tagged, head, lo, marked):
        policy = self.policy
        if policy.errors and (error or (trace is not None and trace.error)):
            return "error"
        threshold = policy.latency_ms
        if policy.latency_ms_by_operation:
            threshold = policy.latency_ms_by_operation.get(batch.operation_name(i), threshold)
        if threshold is not None and \
                int(batch.end_ns[i]) - int(batch.start_ns[i]) >= threshold * 1e6:
            return "latency"
        if marked:
            return "downstream"
        if policy.tags and (tagged or (trace is not None and trace.tag)):
            return "tag"
        if policy.baseline_keeps(lo):
            return "baseline"
        if policy.keep_head_sampled and (head or (trace is not None and trace.head)):
            return "head"
        return ""

    def _enforce_budget(self, out, everything=False):
        policy = self.policy
        pending = self._pending
        decided = self._decided
        while pending and (everything or self._pending_spans > policy.max_pending_spans
                           or len(pending) > policy.max_pending_traces):
            key, trace = pending.popitem(last=False)
            self._pending_spans -= len(trace.spans)
            self.decided_early += 1
            decision = ("downstream" if self._marks.pop(key, _MISSING) is None
                        else "early" if trace.head else "")
            if decision:
                self.kept[decision] += 1
                _extend(out, trace.spans, decision)
                decided[key] = decision
            else:
                self.traces_discarded += 1
                self.spans_discarded += len(trace.spans)
                decided[key] = ""
        self._trim_decided()

    def _candidates(self, batch):
        """The rows of `batch` that may hold an error=True tag, and those that may hold a
        policy tag (a superset, found in the columns; each is checked on its tags dict)."""
        policy = self.policy
        keys = []
        if policy.errors:
            keys.append("error")
        keys.extend(k for k, _ in policy.tags)
        if not keys or len(batch.tag_key) == 0:
            return (), ()
        table = batch.tag_keys
        if table is not self._keys_table:
            self._keys_table = table
            self._key_ids = {}
        ids = [UNINTERNED]
        for key in keys:
            key_id = self._key_ids.get(key)
            if key_id is None:
                try:
                    key_id = self._key_ids[key] = table.index(key)
                except ValueError:
                    continue
            ids.append(key_id)
        offsets = batch.tag_offsets
        first, last = int(offsets[0]), int(offsets[-1])
        hits = np.flatnonzero(np.isin(batch.tag_key[first:last], ids))
        if len(hits) == 0:
            return (), ()
        rows = np.unique(np.searchsorted(offsets, hits + first, side="right") - 1).tolist()
        errors, tagged = set(), set()
        for i in rows:
            tags = batch.tags(i)
            if policy.errors and tags.get("error") is True:
                errors.add(i)
            for key, value in policy.tags:
                if _same_value(tags.get(key, _MISSING), value):
                    tagged.add(i)
                    break
        return errors, tagged


def _extend(out, spans, decision):
    """Adds a decided trace's pending (batch, row) pairs to `out`'s chunks."""
    for b, j in spans:
        out.append((b, [j], [decision]))


def _assemble(out):
    """Chunks [(batch, rows, decisions)] as one SpanBatch, rows in order, or None."""
    out = [chunk for chunk in out if len(chunk[1])]
    if not out:
        return None
    if len(out) == 1:
        batch, rows, reasons = out[0]
        parts = [batch.select(rows, DECISION_TAG, reasons)]
    else:
        parts = []
        batch, rows, reasons = out[0][0], [], []
        for b, r, d in out:
            if b is not batch:
                parts.append(batch.select(rows, DECISION_TAG, reasons))
                batch, rows, reasons = b, [], []
            rows.extend(r)
            reasons.extend(d)
        parts.append(batch.select(rows, DECISION_TAG, reasons))
    kept = parts[0] if len(parts) == 1 else parts[0].concat(parts)
    # what goes out was sampled (by the tail); traceparent carried the head decision
    kept.flags |= np.uint8(FLAG_SAMPLED)
    return kept

# SPDX-License-Identifier: Apache-2.0
"""A hypothesis state machine over the public API, checked against a model: every
finished sampled span comes out exactly once, with its operation name, parent,
references, tags and logs, or is counted in `tracer.stats()`; nothing is counted twice,
no counter goes negative or wraps, and the open spans are the ones the model has open.

The arena is small (4-8 slots) and the per-span limits low, so full arenas, full tag
and log pools, truncation, `sampling.priority` on dropped spans and finalizers that
finish spans in the middle of a slot release or a drain all come up within a few steps.

The model predicts the arena from what the public API says about it: a sampled span
is recorded when fewer than `capacity` recording spans are open (an InMemoryReporter
takes every finished span, so finished ones always make room), and a finished span
keeps its tags and logs in the pools while `tracer.backlog` still counts it (the arena
drains in finish order).  Nothing here depends on timing.
"""
import gc
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from opentracing import Format, follows_from

import fasttrace
from fasttrace.scope import ThreadLocalScopeManager

PRIORITY = "sampling.priority"
COUNTER_MAX = 2 ** 62

TAG_KEYS = ("a", "b", "c", "d", "e", "longkey_A", "longkey_B")
NAMES = ("op", "GET /x", "a-much-longer-operation-name", "")
TEXT = st.text(alphabet="abcxyz é", max_size=12)
TAG_VALUES = st.one_of(
    st.booleans(),
    st.integers(-2 ** 63, 2 ** 63 - 1),
    st.integers(2 ** 63, 2 ** 80) | st.integers(-2 ** 80, -2 ** 63 - 1),   # beyond 64 bits
    st.floats(allow_nan=False),
    TEXT,
)
LOG_FIELDS = st.dictionaries(st.sampled_from(("event", "n", "msg")),
                             st.one_of(st.integers(), TEXT, st.booleans()),
                             min_size=1, max_size=3)
BAGGAGE_KEYS = ("user", "tenant", "region")
BAGGAGE_VALUES = st.text(alphabet="abc123", min_size=1, max_size=6)


def same(a, b):
    """Equal, and of the same type (True is not 1, 1.0 is not 1)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


class Model:
    """What the model knows of one span."""

    def __init__(self, span, name, parent, references, sampled, debug, baggage):
        self.span = span                # the handle; None once abandoned
        self.trace_id = span.trace_id
        self.span_id = span.span_id
        self.parent_id = None if parent is None else parent.span_id
        self.name = name
        self.references = references
        self.sampled = sampled
        self.debug = debug
        self.baggage = dict(baggage)
        self.recording = False
        self.finished = False
        self.abandoned = False
        self.tags = {}
        self.logs = []
        self.end_ns = None              # expected, when finished with an explicit time


class Finalizer:
    """Finishes a span when it is collected, wherever the collection happens."""

    def __init__(self, machine, model, start_child):
        self.machine = machine
        self.model = model
        self.start_child = start_child
        self.cycle = self               # only a collection frees it

    def __del__(self):
        self.machine.in_finalizer(self.model, self.start_child)


class Collects:
    """A tag value whose str() runs a garbage collection (inside set_tag)."""

    def __str__(self):
        gc.collect()
        return "collected"


class CollectsOnFree:
    """A log value whose release runs a garbage collection (inside the arena's slot
    release, or a reporter dropping the batch it is in)."""

    def __del__(self):
        gc.collect()

    def __eq__(self, other):
        return isinstance(other, CollectsOnFree)

    __hash__ = object.__hash__


class FinishesOnFree:
    """A log value whose release finishes the very span it was logged on (and may start
    a child of it): released by that span's own slot release."""

    def __init__(self, machine, model, start_child):
        self.machine = machine
        self.model = model
        self.start_child = start_child

    def __del__(self):
        self.machine.in_finalizer(self.model, self.start_child)

    def __eq__(self, other):
        return isinstance(other, FinishesOnFree)

    __hash__ = object.__hash__


class TracerMachine(RuleBasedStateMachine):

    @initialize(capacity=st.integers(4, 8), max_tags=st.integers(1, 4),
                max_logs=st.integers(2, 4), max_value_length=st.integers(4, 8),
                max_spans=st.one_of(st.none(), st.integers(5, 40)))
    def setup(self, capacity, max_tags, max_logs, max_value_length, max_spans):
        self.capacity = capacity
        self.max_tags = max_tags
        self.max_logs = max_logs
        self.max_value_length = max_value_length
        self.max_spans = max_spans
        self.reporter = fasttrace.InMemoryReporter(max_spans=max_spans)
        self.tracer = fasttrace.Tracer(
            service_name="machine", reporter=self.reporter,
            scope_manager=ThreadLocalScopeManager(), capacity=capacity,
            max_tags=max_tags, max_logs=max_logs, max_value_length=max_value_length)
        self.spans = []             # every Model, in start order
        self.finish_order = []      # recorded spans, in the order they finished
        self.scopes = []            # (scope, Model), innermost last
        self.pending = []           # what finalizers did, applied after each step
        self.expected = dict.fromkeys(
            ("started", "sampled", "unsampled", "finished", "arena_full", "abandoned",
             "by_priority", "tags", "values", "keys", "timestamps", "logs",
             "tag_pool_full", "log_pool_full"), 0)
        # collections only where the machine makes them, so the model knows the order
        # in which finalizers ran; and over this example's objects only (frozen: the
        # rest of the process, which in a whole-suite run makes each collection slow)
        gc.disable()
        gc.freeze()

    # -- the model's arena --------------------------------------------------------

    def recording_open(self):
        return [m for m in self.spans if m.recording and not m.finished]

    def in_pools(self):
        """Spans whose tags and logs are in the arena's pools now."""
        backlog = self.tracer.backlog
        waiting = self.finish_order[len(self.finish_order) - backlog:] if backlog else []
        return self.recording_open() + waiting

    def open_slot(self, m):
        """The arena's decision for a sampled span that wants a slot."""
        if len(self.recording_open()) < self.capacity:
            m.recording = True
            m.tags, m.logs = {}, []
            self.expected["sampled"] += 1
        else:
            self.expected["arena_full"] += 1
        assert m.span.is_recording == m.recording

    def start(self, name, parent=None, references=(), parent_ctx=None, span=None):
        """Models a span just started (`span`) from `parent` (a Model or None)."""
        e = self.expected
        e["started"] += 1
        if parent is None:
            sampled, debug, baggage = True, False, {}
        elif parent_ctx is not None:        # through inject + extract: W3C has no debug
            sampled, debug, baggage = parent.sampled, False, parent.baggage
        else:
            sampled, debug, baggage = parent.sampled, parent.debug, parent.baggage
        if parent is not None and not references:
            references = [("child_of", parent.trace_id, parent.span_id)]
        m = Model(span, name, parent, list(references), sampled, debug, baggage)
        self.spans.append(m)
        if parent is not None:
            assert span.trace_id == parent.trace_id
            assert span.parent_id == parent.span_id
        else:
            assert span.parent_id is None
        if sampled:
            self.open_slot(m)
        else:
            e["unsampled"] += 1
        return m

    def set_tag(self, m, key, value):
        """What span.set_tag(key, value) does, in the model."""
        if m.finished:
            return
        if key == PRIORITY and not self.set_priority(m, value):
            return
        if not m.recording:
            return
        e = self.expected
        if len(key) > self.max_value_length:
            e["keys"] += 1
            key = key[:self.max_value_length]
        if type(value) is str and len(value) > self.max_value_length:
            e["values"] += 1
            value = value[:self.max_value_length]
        elif isinstance(value, Collects):
            value = "collected"[:self.max_value_length]
            if len("collected") > self.max_value_length:
                e["values"] += 1
        if key in m.tags:
            m.tags[key] = value
        elif len(m.tags) >= self.max_tags:
            e["tags"] += 1
        elif sum(len(s.tags) for s in self.in_pools()) >= 4 * self.capacity:
            e["tag_pool_full"] += 1
        else:
            m.tags[key] = value

    def set_priority(self, m, value):
        """sampling.priority as jaeger-client reads it; True when the tag is kept."""
        e = self.expected
        if value <= 0:
            if m.recording:
                m.recording = False
                e["by_priority"] += 1
                e["unsampled"] += 1
                e["sampled"] -= 1
            elif m.sampled:
                # dropped for a full arena: now an unsampled span, no longer a lost one
                e["arena_full"] -= 1
                e["unsampled"] += 1
            m.sampled = m.debug = False
            return False
        if m.debug:
            return False
        was_sampled = m.sampled
        m.sampled = m.debug = True
        if m.recording:
            return True
        if was_sampled:
            e["arena_full"] -= 1
        else:
            e["unsampled"] -= 1
        self.open_slot(m)
        return m.recording

    def finish(self, m, end_ns=None):
        if m.finished:
            return
        m.finished = True
        if m.recording:
            m.end_ns = end_ns
            self.finish_order.append(m)
            self.expected["finished"] += 1

    # -- finalizers -----------------------------------------------------------------

    def in_finalizer(self, m, start_child):
        """Runs inside a finalizer, at whatever moment the collection came."""
        m.span.finish()
        child = None
        if start_child:
            child = self.tracer.start_span("in-finalizer", child_of=m.span)
            recording = child.is_recording
            child.set_tag("a", 1)
            child.finish()
        self.pending.append((m, child, recording if start_child else None))

    def apply_pending(self):
        """What finalizers did, into the model (in the order they did it)."""
        while self.pending:
            m, child, recording = self.pending.pop(0)
            self.finish(m)
            if child is not None:
                e = self.expected
                e["started"] += 1
                c = Model(child, "in-finalizer", m, [("child_of", m.trace_id, m.span_id)],
                          m.sampled, m.debug, m.baggage)
                self.spans.append(c)
                if c.sampled and recording:
                    c.recording = True
                    c.tags = {"a": 1} if self.max_tags else {}
                    e["sampled"] += 1
                elif c.sampled:
                    e["arena_full"] += 1
                else:
                    e["unsampled"] += 1
                self.finish(c)

    def target(self, i):
        """A span to write to: an unfinished one three times in four (writes to a
        finished span are ignored, which is checked too, but less often)."""
        return self.live(i, unfinished=self.has_unfinished() and i % 4 != 0)

    def live(self, i, unfinished=False):
        pool = [m for m in self.spans if m.span is not None
                and not (unfinished and m.finished)]
        return pool[i % len(pool)] if pool else None

    def has_live(self):
        return any(m.span is not None for m in self.spans)

    def has_unfinished(self):
        return any(m.span is not None and not m.finished for m in self.spans)

    def teardown(self):
        while getattr(self, "scopes", None):
            self.scopes.pop()[0].close()
        gc.unfreeze()
        gc.enable()

    # -- starting spans -------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES))
    def start_root(self, name):
        span = self.tracer.start_span(name, ignore_active_span=True)
        self.start(name, span=span)

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), name=st.sampled_from(NAMES))
    def start_child(self, i, name):
        parent = self.live(i)
        span = self.tracer.start_span(name, child_of=parent.span)
        self.start(name, parent, span=span)

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), name=st.sampled_from(NAMES))
    def start_follows_from(self, i, name):
        parent = self.live(i)
        span = self.tracer.start_span(name, references=[follows_from(parent.span.context)],
                                      ignore_active_span=True)
        self.start(name, parent, [("follows_from", parent.trace_id, parent.span_id)],
                   span=span)

    @precondition(lambda self: sum(m.span is not None for m in self.spans) >= 2)
    @rule(i=st.integers(0, 1000), j=st.integers(0, 1000))
    def start_child_of_and_follows_from(self, i, j):
        parent, other = self.live(i), self.live(j)
        span = self.tracer.start_span("both", child_of=parent.span,
                                      references=[follows_from(other.span.context)])
        self.start("both", parent, [("child_of", parent.trace_id, parent.span_id),
                                    ("follows_from", other.trace_id, other.span_id)],
                   span=span)

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), fmt=st.sampled_from((Format.HTTP_HEADERS, Format.TEXT_MAP)))
    def start_from_extracted(self, i, fmt):
        parent = self.live(i)
        carrier = {}
        self.tracer.inject(parent.span.context, fmt, carrier)
        ctx = self.tracer.extract(fmt, carrier)
        assert ctx.trace_id == parent.trace_id and ctx.span_id == parent.span_id
        assert dict(ctx.baggage) == parent.baggage
        span = self.tracer.start_span("server", child_of=ctx)
        self.start("server", parent, parent_ctx=ctx, span=span)

    @rule(name=st.sampled_from(NAMES))
    def start_active(self, name):
        parent = self.scopes[-1][1] if self.scopes else None
        scope = self.tracer.start_active_span(name)
        m = self.start(name, parent, span=scope.span)
        self.scopes.append((scope, m))

    @precondition(lambda self: self.scopes)
    @rule(name=st.sampled_from(NAMES))
    def start_under_active(self, name):
        span = self.tracer.start_span(name)
        self.start(name, self.scopes[-1][1], span=span)

    @precondition(lambda self: self.scopes)
    @rule()
    def close_scope(self):
        scope, m = self.scopes.pop()
        assert self.tracer.active_span is m.span
        scope.close()
        self.finish(m)

    # -- writing to spans -----------------------------------------------------------

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), key=st.sampled_from(TAG_KEYS), value=TAG_VALUES)
    def set_tag_rule(self, i, key, value):
        m = self.target(i)
        m.span.set_tag(key, value)
        self.set_tag(m, key, value)

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), priority=st.sampled_from((0, 1)))
    def set_priority_rule(self, i, priority):
        m = self.target(i)
        m.span.set_tag(PRIORITY, priority)
        self.set_tag(m, PRIORITY, priority)

    @precondition(lambda self: any(m.span is not None and not m.finished
                                   and not m.recording for m in self.spans))
    @rule(i=st.integers(0, 1000), priority=st.sampled_from((0, 1)))
    def set_priority_not_recording(self, i, priority):
        """sampling.priority on a span that has no slot: unsampled, dropped for a full
        arena, or discarded by an earlier priority 0."""
        pool = [m for m in self.spans
                if m.span is not None and not m.finished and not m.recording]
        m = pool[i % len(pool)]
        m.span.set_tag(PRIORITY, priority)
        self.set_tag(m, PRIORITY, priority)

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), fields=LOG_FIELDS, times=st.integers(1, 5))
    def log_kv(self, i, fields, times):
        m = self.target(i)
        for _ in range(times):
            m.span.log_kv(fields)
            self.add_log(m, fields)

    def add_log(self, m, fields):
        if m.finished or not m.recording:
            return
        e = self.expected
        kept = {}
        for k, v in fields.items():
            if type(v) is str and len(v) > self.max_value_length:
                e["values"] += 1
                v = v[:self.max_value_length]
            kept[k] = v
        if len(m.logs) >= self.max_logs:
            e["logs"] += 1
        elif sum(len(s.logs) for s in self.in_pools()) >= self.capacity:
            e["log_pool_full"] += 1
        else:
            m.logs.append(kept)

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), key=st.sampled_from(BAGGAGE_KEYS), value=BAGGAGE_VALUES)
    def set_baggage(self, i, key, value):
        m = self.live(i)
        m.span.set_baggage_item(key, value)
        m.baggage[key] = value
        assert m.span.get_baggage_item(key) == value

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), name=st.one_of(st.sampled_from(NAMES), st.integers(0, 9)))
    def set_operation_name(self, i, name):
        m = self.live(i)
        m.span.set_operation_name(name)
        if not m.finished:
            m.name = str(name)

    # -- finishing ------------------------------------------------------------------

    @precondition(has_live)
    @rule(i=st.integers(0, 1000), how=st.sampled_from(("now", "explicit", "bad")),
          seconds=st.integers(1, 10 ** 6))
    def finish_rule(self, i, how, seconds):
        """Finishes a span (a finished one too: a second finish must change nothing)."""
        m = self.live(i)
        end_ns = None
        if how == "now":
            m.span.finish()
        elif how == "explicit":
            finish_time = int(m.span.start_time) + seconds
            m.span.finish(finish_time=finish_time)
            end_ns = finish_time * 10 ** 9
        else:
            m.span.finish(finish_time=float("nan"))
            self.expected["timestamps"] += 1
        assert m.span.finished
        self.finish(m, end_ns)

    @precondition(has_unfinished)
    @rule(i=st.integers(0, 1000))
    def abandon(self, i):
        """The last reference to an unfinished span goes: its slot comes back."""
        m = self.live(i, unfinished=True)
        if any(sm is m for _, sm in self.scopes):
            return
        if m.recording:
            self.expected["abandoned"] += 1
            m.recording = False
        m.abandoned = True
        m.span = None
        gc.collect()

    @precondition(has_unfinished)
    @rule(i=st.integers(0, 1000), start_child=st.booleans(),
          trigger=st.sampled_from(("set_tag", "discard", "abandon", "flush")))
    def finish_in_finalizer(self, i, start_child, trigger):
        """A finalizer finishes a span (and may start one) while the arena is busy:
        in set_tag (a value's str() collects), or in a slot release (a log value's
        release collects: priority 0, an abandoned span, a drain)."""
        m = self.live(i, unfinished=True)
        Finalizer(self, m, start_child)      # garbage until a collection
        host = self.tracer.start_span("host", ignore_active_span=True)
        hm = self.start("host", span=host)
        if trigger == "set_tag":
            host.set_tag("c", Collects())
            self.apply_pending()
            self.set_tag(hm, "c", Collects())
            host.finish()
            self.finish(hm)
            gc.collect()        # the finalizer, if the host was not recording
            self.apply_pending()
            return
        # the model first: a log the pool turns away frees its value at once, and the
        # collection that runs may finish spans and drain them (pools as they were);
        # what that collection's finalizer did came before the rest of this step
        self.add_log(hm, {"msg": None})
        host.log_kv({"msg": CollectsOnFree()})
        self.apply_pending()
        if trigger == "discard":
            host.set_tag(PRIORITY, 0)
            self.set_tag(hm, PRIORITY, 0)
        elif trigger == "abandon":
            if hm.recording:
                self.expected["abandoned"] += 1
                hm.recording = False
            hm.abandoned = True
            hm.span = host = None
        else:
            host.finish()
            self.finish(hm)
            if hm.logs:
                hm.logs[-1] = {"msg": CollectsOnFree()}
            self.tracer.flush()
        gc.collect()
        self.apply_pending()

    @rule(start_child=st.booleans())
    def finish_own_span_in_its_release(self, start_child):
        """A log value whose release finishes its own span, released when
        sampling.priority 0 discards that span: the slot is freed once, and the span
        is neither reported nor counted twice."""
        host = self.tracer.start_span("host", ignore_active_span=True)
        hm = self.start("host", span=host)
        self.add_log(hm, {"msg": None})
        host.log_kv({"msg": FinishesOnFree(self, hm, start_child)})
        self.apply_pending()        # a log turned away was freed (and finished) at once
        host.set_tag(PRIORITY, 0)
        self.set_tag(hm, PRIORITY, 0)
        self.apply_pending()

    # -- reading --------------------------------------------------------------------

    @rule()
    def flush(self):
        assert self.tracer.flush() is True
        assert self.tracer.backlog == 0

    @rule()
    def read_spans(self):
        self.check_reported(self.reporter.spans)

    @rule()
    def read_stats(self):
        self.check_stats(self.tracer.stats())

    def check_reported(self, reported):
        self.apply_pending()
        assert self.tracer.backlog == 0
        expected = self.finish_order
        kept = len(reported)
        if self.max_spans is None:
            assert kept == len(expected)
        else:
            assert kept == min(len(expected), self.max_spans)
            assert self.reporter.dropped == len(expected) - kept
        assert len({(s.trace_id, s.span_id) for s in reported}) == kept   # none twice
        for record, m in zip(reported, expected):
            assert (record.trace_id, record.span_id) == (m.trace_id, m.span_id), (record, m)
            assert record.parent_id == m.parent_id
            assert record.operation_name == m.name
            assert record.references == m.references
            assert record.sampled and record.debug == m.debug
            assert same(record.tags, m.tags), (record.tags, m.tags)
            logs = [fields for _, fields in record.logs]
            assert len(logs) == len(m.logs) and all(map(same, logs, m.logs)), (logs, m.logs)
            if m.end_ns is not None:
                assert record.end_ns == m.end_ns
            assert record.end_ns >= record.start_ns

    def check_stats(self, stats):
        self.apply_pending()
        e = self.expected
        assert stats["started"] == e["started"]
        assert stats["sampled"] == e["sampled"]
        assert stats["unsampled"] == e["unsampled"]
        assert stats["finished"] == e["finished"]
        assert stats["arena_open"] == len(self.recording_open())
        assert stats["arena_finished"] == self.tracer.backlog
        dropped, truncated = stats["dropped"], stats["truncated"]
        assert dropped["arena_full"] == e["arena_full"]
        assert dropped["abandoned"] == e["abandoned"]
        assert dropped["reporter_error"] == 0
        assert stats["unsampled_by_priority"] == e["by_priority"]
        for kind in ("tags", "values", "keys", "timestamps", "logs", "tag_pool_full",
                     "log_pool_full"):
            assert truncated[kind] == e[kind], (kind, truncated, e)
        # every recorded span that finished was reported, is kept or counted by the
        # reporter, or waits in the arena
        assert stats["reported"] + stats["arena_finished"] == e["finished"]
        assert stats["reporter"]["kept"] + stats["reporter"]["dropped"] == stats["reported"]
        if self.max_spans is not None:
            assert dropped.get("reporter_dropped", 0) == self.reporter.dropped

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def counters_in_range(self):
        def walk(value):
            if isinstance(value, dict):
                for v in value.values():
                    walk(v)
            elif isinstance(value, int):
                assert 0 <= value <= COUNTER_MAX, value
        walk(self.tracer.stats())

    @invariant()
    def model_agrees(self):
        self.check_stats(self.tracer.stats())
        for m in self.spans:
            if m.span is None:
                continue
            assert m.span.finished == m.finished
            assert m.span.is_recording == (m.recording and not m.finished)
            assert m.span.context.sampled == m.sampled
            assert dict(m.span.context.baggage) == m.baggage
            if not m.finished:
                assert m.span.operation_name == m.name


# ~10-20 s on a 2-core machine; .ci/debug-builds runs fewer against its slower builds
EXAMPLES = int(os.environ.get("FASTTRACE_STATE_MACHINE_EXAMPLES", "1000"))
TracerMachine.TestCase.settings = settings(
    derandomize=True, deadline=None, max_examples=EXAMPLES, stateful_step_count=50,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_tracer_machine = TracerMachine.TestCase

# SPDX-License-Identifier: Apache-2.0
"""The Tracer: construction, parenting, references, baggage, inject/extract, stats."""
import opentracing
import pytest
from opentracing import Format, child_of, follows_from
from opentracing.ext import tags as ext_tags

import fasttrace

CHILD_OF = opentracing.ReferenceType.CHILD_OF
FOLLOWS_FROM = opentracing.ReferenceType.FOLLOWS_FROM
FORMATS = [
    (Format.TEXT_MAP, dict),
    (Format.HTTP_HEADERS, dict),
    (Format.BINARY, bytearray),
]


def _by_name(spans):
    out = {}
    for s in spans:
        assert s.operation_name not in out, s.operation_name
        out[s.operation_name] = s
    return out


# -- construction ----------------------------------------------------------------------

def test_tracer_is_an_opentracing_tracer(tracer):
    assert isinstance(tracer, opentracing.Tracer)


def test_all_constructor_arguments(reporter):
    tracer = fasttrace.Tracer(service_name="svc", sampler=fasttrace.ConstSampler(True),
                              reporter=reporter, propagators=("tracecontext", "baggage"),
                              scope_manager=None, tags={"k": "v"}, capacity=128,
                              max_tags=4, max_logs=4, max_value_length=16)
    with tracer.start_active_span("op"):
        pass
    (record,) = reporter.spans
    assert record.service_name == "svc"
    assert record.sampled is True
    assert tracer.stats()["started"] == 1
    tracer.close()


def test_defaults_record_in_memory():
    tracer = fasttrace.Tracer()
    tracer.start_span("x").finish()
    assert tracer.flush() is True
    assert tracer.stats()["finished"] == 1
    tracer.close()


def test_process_tags_reach_the_reporter(make_tracer):
    batches = []

    class Capture(fasttrace.Reporter):
        def report(self, batch):
            batches.append(batch)

    tracer = make_tracer(reporter=Capture(), service_name="checkout",
                         tags={"deployment": "prod"})
    tracer.start_span("a").finish()
    tracer.flush()
    assert batches
    assert batches[0].service_name == "checkout"
    assert batches[0].resource == {"deployment": "prod"}
    # process tags are not copied onto every span
    assert list(batches[0])[0].tags == {}


# -- parenting -------------------------------------------------------------------------

def test_child_of_span_and_context(tracer, reporter):
    root = tracer.start_span("root")
    by_span = tracer.start_span("by-span", child_of=root)
    by_ctx = tracer.start_span("by-ctx", child_of=root.context)
    for child in (by_span, by_ctx):
        assert child.trace_id == root.trace_id
        assert child.parent_id == root.span_id
        assert child.span_id != root.span_id
        child.finish()
    root.finish()
    spans = _by_name(reporter.spans)
    assert spans["root"].references == []
    for name in ("by-span", "by-ctx"):
        assert spans[name].parent_id == root.span_id
        assert spans[name].references == [(CHILD_OF, root.trace_id, root.span_id)]


def test_start_child_span_helper(tracer):
    parent = tracer.start_span("p")
    child = opentracing.start_child_span(parent, "c", tags={"x": 1})
    assert child.parent_id == parent.span_id
    assert child.operation_name == "c"


def test_parent_from_extracted_context(tracer, reporter):
    ctx = fasttrace.SpanContext(0x0123456789ABCDEF0123456789ABCDEF, 0x1122334455667788)
    span = tracer.start_span("server", child_of=ctx)
    assert span.trace_id == ctx.trace_id
    assert span.parent_id == ctx.span_id
    span.finish()
    (record,) = reporter.spans
    assert record.trace_id == ctx.trace_id
    assert record.parent_id == 0x1122334455667788


def test_64_bit_trace_id_from_a_peer_is_kept(tracer, reporter):
    ctx = fasttrace.SpanContext(0xDEADBEEF, 0x42)
    with tracer.start_span("s", child_of=ctx) as span:
        assert span.trace_id == 0xDEADBEEF
        with tracer.start_span("c", child_of=span) as child:
            assert child.trace_id == 0xDEADBEEF
    assert {s.trace_id for s in reporter.spans} == {0xDEADBEEF}


def test_explicit_parent_beats_active_span(tracer):
    other = tracer.start_span("other")
    with tracer.start_active_span("active"):
        span = tracer.start_span("x", child_of=other)
        assert span.parent_id == other.span_id
        ref = tracer.start_span("y", references=[follows_from(other.context)])
        assert ref.parent_id == other.span_id
        assert ref.trace_id == other.trace_id


# -- references ------------------------------------------------------------------------

def test_follows_from_single_reference(tracer, reporter):
    producer = tracer.start_span("producer")
    consumer = tracer.start_span("consumer", references=[follows_from(producer.context)])
    assert consumer.trace_id == producer.trace_id
    assert consumer.parent_id == producer.span_id
    consumer.finish()
    producer.finish()
    rec = _by_name(reporter.spans)["consumer"]
    assert rec.references == [(FOLLOWS_FROM, producer.trace_id, producer.span_id)]
    assert rec.parent_id == producer.span_id


def test_child_of_single_reference(tracer, reporter):
    parent = tracer.start_span("parent")
    child = tracer.start_span("child", references=[child_of(parent.context)])
    child.finish()
    rec = _by_name(reporter.spans)["child"]
    assert rec.references == [(CHILD_OF, parent.trace_id, parent.span_id)]
    assert rec.parent_id == parent.span_id


def test_several_references_parent_is_first_child_of(tracer, reporter):
    a = tracer.start_span("a")
    b = tracer.start_span("b")
    c = tracer.start_span("c")
    span = tracer.start_span("joined", references=[
        follows_from(a.context), child_of(b.context), child_of(c.context)])
    assert span.parent_id == b.span_id
    assert span.trace_id == b.trace_id
    span.finish()
    rec = _by_name(reporter.spans)["joined"]
    assert rec.parent_id == b.span_id
    assert rec.trace_id == b.trace_id
    assert rec.references == [
        (FOLLOWS_FROM, a.trace_id, a.span_id),
        (CHILD_OF, b.trace_id, b.span_id),
        (CHILD_OF, c.trace_id, c.span_id),
    ]


def test_several_follows_from_parent_is_first_reference(tracer, reporter):
    a = tracer.start_span("a")
    b = tracer.start_span("b")
    span = tracer.start_span("batch", references=[follows_from(a.context),
                                                  follows_from(b.context)])
    assert span.parent_id == a.span_id and span.trace_id == a.trace_id
    span.finish()
    rec = _by_name(reporter.spans)["batch"]
    assert rec.parent_id == a.span_id
    assert rec.references == [(FOLLOWS_FROM, a.trace_id, a.span_id),
                              (FOLLOWS_FROM, b.trace_id, b.span_id)]


def test_child_of_argument_and_references_together(tracer, reporter):
    p = tracer.start_span("p")
    q = tracer.start_span("q")
    span = tracer.start_span("both", child_of=p, references=[follows_from(q.context)])
    assert span.parent_id == p.span_id
    span.finish()
    rec = _by_name(reporter.spans)["both"]
    assert rec.parent_id == p.span_id
    assert (CHILD_OF, p.trace_id, p.span_id) in rec.references
    assert (FOLLOWS_FROM, q.trace_id, q.span_id) in rec.references
    assert len(rec.references) == 2


def test_reference_types_compare_as_strings(tracer, reporter):
    a = tracer.start_span("a")
    tracer.start_span("f", references=[follows_from(a.context)]).finish()
    tracer.start_span("c", child_of=a).finish()
    spans = _by_name(reporter.spans)
    assert spans["f"].references[0][0] == "follows_from"
    assert spans["c"].references[0][0] == "child_of"


def test_references_in_start_active_span(tracer, reporter):
    a = tracer.start_span("a")
    b = tracer.start_span("b")
    with tracer.start_active_span("x", references=[follows_from(a.context),
                                                   follows_from(b.context)]) as scope:
        assert scope.span.parent_id == a.span_id
    rec = _by_name(reporter.spans)["x"]
    assert [r[2] for r in rec.references] == [a.span_id, b.span_id]


def test_empty_references_with_active_span(tracer):
    with tracer.start_active_span("active") as scope:
        span = tracer.start_span("x", references=[])
        assert span.parent_id == scope.span.span_id


# -- baggage ---------------------------------------------------------------------------

def test_child_inherits_baggage_without_leaking_back(tracer):
    parent = tracer.start_span("parent")
    parent.set_baggage_item("user", "alice")
    child = tracer.start_span("child", child_of=parent)
    assert child.get_baggage_item("user") == "alice"
    child.set_baggage_item("user", "mallory")
    child.set_baggage_item("extra", "1")
    assert parent.get_baggage_item("user") == "alice"
    assert parent.get_baggage_item("extra") is None
    assert parent.context.baggage == {"user": "alice"}
    grandchild = tracer.start_span("grandchild", child_of=child.context)
    assert grandchild.context.baggage == {"user": "mallory", "extra": "1"}
    sibling = tracer.start_span("sibling", child_of=parent)
    assert sibling.context.baggage == {"user": "alice"}


def test_baggage_set_after_child_started_is_not_inherited(tracer):
    parent = tracer.start_span("parent")
    child = tracer.start_span("child", child_of=parent)
    parent.set_baggage_item("late", "x")
    assert child.get_baggage_item("late") is None


def test_active_span_baggage_inherited(tracer):
    with tracer.start_active_span("p") as scope:
        scope.span.set_baggage_item("k", "v")
        with tracer.start_active_span("c") as child:
            assert child.span.get_baggage_item("k") == "v"


@pytest.mark.parametrize("fmt, carrier_type", FORMATS)
def test_baggage_survives_inject_extract(tracer, fmt, carrier_type):
    span = tracer.start_span("client")
    span.set_baggage_item("user-id", "alice")
    span.set_baggage_item("tenant", "acme corp")
    carrier = carrier_type()
    tracer.inject(span.context, fmt, carrier)
    ctx = tracer.extract(fmt, carrier)
    assert ctx is not None
    assert ctx.trace_id == span.trace_id
    assert ctx.span_id == span.span_id
    assert ctx.sampled is True
    assert ctx.baggage == {"user-id": "alice", "tenant": "acme corp"}
    server = tracer.start_span("server", child_of=ctx)
    assert server.get_baggage_item("tenant") == "acme corp"
    assert server.parent_id == span.span_id


@pytest.mark.parametrize("fmt, carrier_type", FORMATS)
def test_inject_extract_without_baggage(tracer, fmt, carrier_type):
    span = tracer.start_span("client")
    carrier = carrier_type()
    tracer.inject(span.context, fmt, carrier)
    ctx = tracer.extract(fmt, carrier)
    assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (span.trace_id, span.span_id, True)
    assert ctx.baggage == {}


@pytest.mark.parametrize("fmt, carrier_type", FORMATS)
def test_extract_from_empty_carrier_is_none(tracer, fmt, carrier_type):
    assert tracer.extract(fmt, carrier_type()) is None


@pytest.mark.parametrize("fmt, carrier_type", FORMATS)
def test_inject_accepts_a_span(tracer, fmt, carrier_type):
    span = tracer.start_span("s")
    carrier = carrier_type()
    tracer.inject(span, fmt, carrier)
    assert tracer.extract(fmt, carrier).span_id == span.span_id


@pytest.mark.parametrize("fmt, carrier_type", FORMATS)
def test_two_tracers_interoperate(make_tracer, fmt, carrier_type):
    client, server = make_tracer(service_name="client"), make_tracer(service_name="server")
    span = client.start_span("call")
    span.set_baggage_item("b", "1")
    carrier = carrier_type()
    client.inject(span.context, fmt, carrier)
    remote = server.start_span("handle", child_of=server.extract(fmt, carrier))
    assert remote.trace_id == span.trace_id and remote.parent_id == span.span_id
    assert remote.get_baggage_item("b") == "1"


def test_unknown_format(tracer):
    span = tracer.start_span("s")
    with pytest.raises(opentracing.UnsupportedFormatException):
        tracer.inject(span.context, "no-such-format", {})
    with pytest.raises(opentracing.UnsupportedFormatException):
        tracer.extract("no-such-format", {})


def test_binary_carrier_is_a_bytearray(tracer):
    span = tracer.start_span("s")
    carrier = bytearray()
    tracer.inject(span.context, Format.BINARY, carrier)
    assert len(carrier) > 0
    ctx = tracer.extract(Format.BINARY, bytes(carrier))
    assert ctx is None or ctx.span_id == span.span_id


# -- SpanContext -----------------------------------------------------------------------

def test_span_context_constructor():
    ctx = fasttrace.SpanContext(1 << 100, 7, sampled=False, baggage={"a": "b"})
    assert ctx.trace_id == 1 << 100
    assert ctx.span_id == 7
    assert ctx.sampled is False
    assert ctx.baggage == {"a": "b"}
    assert ctx.debug is False
    plain = fasttrace.SpanContext(5, 6)
    assert plain.sampled is True and plain.baggage == {}


def test_unsampled_extracted_parent_stays_unsampled(tracer, reporter):
    ctx = fasttrace.SpanContext(123456789, 987654321, sampled=False)
    span = tracer.start_span("s", child_of=ctx)
    assert span.context.sampled is False
    assert span.trace_id == 123456789 and span.parent_id == 987654321
    span.finish()
    assert reporter.spans == []


# -- start_active_span -----------------------------------------------------------------

def test_start_active_span_arguments(tracer, reporter):
    parent = tracer.start_span("parent")
    with tracer.start_active_span("op", child_of=parent, tags={"a": 1}, start_time=5.0,
                                  finish_on_close=True) as scope:
        assert tracer.active_span is scope.span
        assert scope.span.parent_id == parent.span_id
    rec = _by_name(reporter.spans)["op"]
    assert rec.tags == {"a": 1}
    assert rec.start_ns == 5_000_000_000


def test_error_tag_given_explicitly(tracer, reporter):
    tracer.start_span("e", tags={ext_tags.ERROR: True}).finish()
    assert reporter.spans[0].tags == {"error": True}


# -- stats, flush, close -----------------------------------------------------------------

def test_stats_counters(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    stats = tracer.stats()
    for key in ("started", "finished", "sampled", "unsampled", "dropped", "reported",
                "truncated"):
        assert key in stats, key
    assert "arena_full" in stats["dropped"]
    for key in ("tags", "logs", "values"):
        assert key in stats["truncated"], key
    for i in range(5):
        tracer.start_span(f"s{i}").finish()
    tracer.start_span("open")
    stats = tracer.stats()
    assert (stats["started"], stats["finished"], stats["sampled"]) == (6, 5, 6)
    assert stats["unsampled"] == 0
    tracer.flush()
    assert tracer.stats()["reported"] == 5


def test_flush_returns_true_and_close_is_idempotent(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    tracer.start_span("a").finish()
    assert tracer.flush() is True
    assert tracer.flush(timeout=1.0) is True
    assert [s.operation_name for s in reporter.spans] == ["a"]
    tracer.start_span("b").finish()
    tracer.close()
    tracer.close(timeout=1.0)
    assert sorted(s.operation_name for s in reporter.spans) == ["a", "b"]

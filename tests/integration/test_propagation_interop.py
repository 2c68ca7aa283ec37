# SPDX-License-Identifier: Apache-2.0
"""Interoperability with the peers' own propagation code, in both directions.

For every format: a context is built and injected by the peer and extracted by us,
and built and injected by us and extracted by the peer; ids, the sampled flag,
tracestate and baggage must survive.  Peers: OpenTelemetry's
``TraceContextTextMapPropagator``, ``W3CBaggagePropagator``, ``B3SingleFormat``,
``B3MultiFormat`` and ``JaegerPropagator``; jaeger-client's ``TextCodec`` (HTTP_HEADERS
with URL-encoding, TEXT_MAP without) through a real ``jaeger_client.Tracer``.

Carriers: the plain dict a TEXT_MAP user passes, and for HTTP_HEADERS the headers as a
server hands them over -- ``http.client.HTTPMessage`` (an ``email.message.Message``)
with names in whatever case the sender used.
"""
from __future__ import annotations

import http.client

import jaeger_client
import pytest
from jaeger_client.codecs import TextCodec
from jaeger_client.reporter import NullReporter
from jaeger_client.sampler import ConstSampler
from opentelemetry import baggage as otel_baggage
from opentelemetry import trace as otel_trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentracing import Format

from fasttrace._context import SpanContext
from fasttrace.propagation import make_propagation

IDS = [
    pytest.param(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, id="128-bit"),
    pytest.param(0x00000000000000008448EB211C80319C, 0x00F067AA0BA902B7, id="64-bit"),
    pytest.param(0xABC, 0x1, id="short-ids"),
    pytest.param(2**128 - 1, 2**64 - 1, id="max"),
]
SAMPLED = [pytest.param(True, id="sampled"), pytest.param(False, id="unsampled")]

# values every peer carries faithfully, and values with spaces and "+", which
# OpenTelemetry Python's W3C baggage propagator form-encodes (a space is "+"); see
# test_w3c_baggage_plus_and_space_with_opentelemetry
BAGGAGE = {"user": "alice", "tenant": "acme/eu-1", "note": "50%;a,b=c", "uni": "caf\u00e9\u2713"}
BAGGAGE_SPACES = {"phrase": "hello world", "plus": "1+1=2"}


def http_headers(carrier):
    """The carrier as a server sees it: an HTTPMessage, names in a different case."""
    msg = http.client.HTTPMessage()
    for key, value in carrier.items():
        msg[key.title() if key.islower() else key.lower()] = value
    return msg


CARRIERS = [pytest.param(dict, id="text_map-dict"), pytest.param(http_headers, id="http-message")]


# -- OpenTelemetry helpers ---------------------------------------------------------------

def otel_context(trace_id, span_id, sampled, tracestate=None, baggage=None):
    sc = otel_trace.SpanContext(
        trace_id, span_id, is_remote=False,
        trace_flags=otel_trace.TraceFlags(1 if sampled else 0),
        trace_state=TraceState.from_header([tracestate]) if tracestate else None,
    )
    ctx = otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(sc), Context())
    for key, value in (baggage or {}).items():
        ctx = otel_baggage.set_baggage(key, value, ctx)
    return ctx


def otel_read(ctx):
    sc = otel_trace.get_current_span(ctx).get_span_context()
    ids = (sc.trace_id, sc.span_id, sc.trace_flags.sampled) if sc.is_valid else None
    ts = sc.trace_state.to_header() if sc.is_valid and sc.trace_state else None
    return ids, ts or None, dict(otel_baggage.get_all(ctx))


def ours(ctx):
    ids = (ctx.trace_id, ctx.span_id, ctx.sampled) if ctx.trace_id else None
    return ids, ctx.tracestate, ctx.baggage


# -- W3C Trace Context + Baggage ---------------------------------------------------------

W3C = make_propagation(["tracecontext", "baggage"])
OTEL_W3C = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


@pytest.mark.parametrize("carrier_kind", CARRIERS)
@pytest.mark.parametrize("sampled", SAMPLED)
@pytest.mark.parametrize("trace_id,span_id", IDS)
def test_w3c_from_opentelemetry(trace_id, span_id, sampled, carrier_kind):
    baggage = {**BAGGAGE, **BAGGAGE_SPACES}
    carrier = {}
    OTEL_W3C.inject(carrier, otel_context(trace_id, span_id, sampled,
                                          "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", baggage))
    ctx = W3C.extract_py(carrier_kind(carrier))
    assert ours(ctx) == ((trace_id, span_id, sampled),
                         "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", baggage)


@pytest.mark.parametrize("carrier_kind", CARRIERS)
@pytest.mark.parametrize("sampled", SAMPLED)
@pytest.mark.parametrize("trace_id,span_id", IDS)
def test_w3c_to_opentelemetry(trace_id, span_id, sampled, carrier_kind):
    baggage = {**BAGGAGE, **BAGGAGE_SPACES}
    carrier = {}
    W3C.inject_py(SpanContext(trace_id, span_id, sampled, baggage, tracestate="congo=t61rcWkgMzE"),
                  carrier)
    got = otel_read(OTEL_W3C.extract(carrier_kind(carrier)))
    assert got == ((trace_id, span_id, sampled), "congo=t61rcWkgMzE", baggage)


def test_w3c_round_trip_through_opentelemetry_twice():
    """us -> OpenTelemetry -> us: nothing lost or changed on the way, spaces and "+"
    included (we send %20 and %2B, it sends "+" and %2B)."""
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
                      {**BAGGAGE, **BAGGAGE_SPACES}, tracestate="a=1,b@c=2")
    first = {}
    W3C.inject_py(ctx, first)
    second = {}
    OTEL_W3C.inject(second, OTEL_W3C.extract(first))
    assert "+" in second["baggage"]  # its form encoding of the spaces
    back = W3C.extract_py(second)
    assert (back.trace_id, back.span_id, back.sampled, back.tracestate) == (
        ctx.trace_id, ctx.span_id, True, "a=1,b@c=2")
    assert back.baggage == ctx.baggage


# values OpenTelemetry keeps as they are: it strips leading and trailing whitespace after
# decoding, and drops members it cannot encode as ASCII after quote_plus (none here)
PLUS_VALUES = ["alice jones", "a+b", "a + b", "1+1=2", "++", "100% sure", "%2B", "%20",
               "50%+", "caf\u00e9 cr\u00e8me", "\u2713+\u2713", "x\u00a0y", "tab\there",
               "a+%41", "+%", "\U0001f600 + \U0001f601"]


@pytest.mark.parametrize("value", PLUS_VALUES)
def test_w3c_baggage_plus_and_space_with_opentelemetry(value):
    """OpenTelemetry Python form-encodes baggage (quote_plus: a space is "+", "+" is
    %2B) and form-decodes it (unquote_plus: "+" is a space).  We read "+" as a space
    too, and write space and "+" percent-encoded, so both directions keep the value."""
    items = {"k": value, "key with space+plus/\u00e9": value}
    carrier = {}
    OTEL_W3C.inject(carrier, otel_context(1, 1, True, baggage=items))
    assert W3C.extract_py(carrier).baggage == items
    carrier = {}
    W3C.inject_py(SpanContext(1, 1, True, items), carrier)
    assert " " not in carrier["baggage"] and "+" not in carrier["baggage"]
    assert otel_read(OTEL_W3C.extract(carrier))[2] == items
    # and our own round trip
    assert W3C.extract_py(carrier).baggage == items


def test_w3c_baggage_plus_written_by_opentelemetry():
    """The drop-in case: an OpenTelemetry Python service sets "alice jones"."""
    carrier = {}
    OTEL_W3C.inject(carrier, otel_context(1, 1, True, baggage={"user": "alice jones"}))
    assert carrier["baggage"] == "user=alice+jones"
    assert W3C.extract_py(carrier).baggage == {"user": "alice jones"}


# -- B3 ----------------------------------------------------------------------------------

B3_PAIRS = [
    pytest.param("b3", B3SingleFormat(), id="single"),
    pytest.param("b3multi", B3MultiFormat(), id="multi"),
]


@pytest.mark.parametrize("carrier_kind", CARRIERS)
@pytest.mark.parametrize("sampled", SAMPLED)
@pytest.mark.parametrize("trace_id,span_id", IDS)
@pytest.mark.parametrize("name,peer", B3_PAIRS)
def test_b3_from_opentelemetry(name, peer, trace_id, span_id, sampled, carrier_kind):
    carrier = {}
    peer.inject(carrier, otel_context(trace_id, span_id, sampled))
    ctx = make_propagation([name]).extract_py(carrier_kind(carrier))
    assert ours(ctx) == ((trace_id, span_id, sampled), None, {})


@pytest.mark.parametrize("carrier_kind", CARRIERS)
@pytest.mark.parametrize("sampled", SAMPLED)
@pytest.mark.parametrize("trace_id,span_id", IDS)
@pytest.mark.parametrize("name,peer", B3_PAIRS)
def test_b3_to_opentelemetry(name, peer, trace_id, span_id, sampled, carrier_kind):
    carrier = {}
    make_propagation([name]).inject_py(SpanContext(trace_id, span_id, sampled), carrier)
    assert otel_read(peer.extract(carrier_kind(carrier)))[0] == (trace_id, span_id, sampled)


@pytest.mark.parametrize("name,peer", B3_PAIRS)
def test_b3_debug_reads_as_sampled_in_opentelemetry(name, peer):
    carrier = {}
    make_propagation([name]).inject_py(SpanContext(5, 6, True, debug=True), carrier)
    assert otel_read(peer.extract(carrier))[0] == (5, 6, True)


# -- Jaeger: OpenTelemetry's propagator --------------------------------------------------

@pytest.mark.parametrize("carrier_kind", CARRIERS)
@pytest.mark.parametrize("sampled", SAMPLED)
@pytest.mark.parametrize("trace_id,span_id", IDS)
def test_jaeger_from_opentelemetry(trace_id, span_id, sampled, carrier_kind):
    baggage = {**BAGGAGE, **BAGGAGE_SPACES}
    carrier = {}
    JaegerPropagator().inject(carrier, otel_context(trace_id, span_id, sampled, baggage=baggage))
    ctx = make_propagation(["jaeger"]).extract_py(carrier_kind(carrier))
    assert ours(ctx) == ((trace_id, span_id, sampled), None, baggage)


@pytest.mark.parametrize("carrier_kind", CARRIERS)
@pytest.mark.parametrize("sampled", SAMPLED)
@pytest.mark.parametrize("trace_id,span_id", IDS)
def test_jaeger_to_opentelemetry(trace_id, span_id, sampled, carrier_kind):
    baggage = {**BAGGAGE, **BAGGAGE_SPACES}
    carrier = {}
    make_propagation(["jaeger"]).inject_py(SpanContext(trace_id, span_id, sampled, baggage),
                                           carrier)
    # OpenTelemetry's Jaeger propagator matches "uberctx-" case-sensitively, so it reads
    # the dict we wrote, and the HTTPMessage through its case-insensitive get()
    if carrier_kind is dict:
        got = otel_read(JaegerPropagator().extract(carrier))
        assert got == ((trace_id, span_id, sampled), None, baggage)
    else:
        ids = otel_read(JaegerPropagator().extract(carrier_kind(carrier)))[0]
        assert ids == (trace_id, span_id, sampled)


# -- Jaeger: jaeger-client ---------------------------------------------------------------

@pytest.fixture(scope="module")
def jaeger_tracers():
    tracers = {
        bits: jaeger_client.Tracer(
            service_name="interop", reporter=NullReporter(), sampler=ConstSampler(True),
            generate_128bit_trace_id=(bits == 128), tags={"ip": "127.0.0.1"})
        for bits in (64, 128)
    }
    yield tracers
    for tracer in tracers.values():
        tracer.close()


JAEGER_FORMATS = [
    # (OpenTracing format, jaeger-client's codec for it, our propagation for it)
    pytest.param(Format.HTTP_HEADERS, True, id="http_headers-url_encoded"),
    pytest.param(Format.TEXT_MAP, False, id="text_map-plain"),
]


@pytest.mark.parametrize("bits", [64, 128])
@pytest.mark.parametrize("fmt,url_encoding", JAEGER_FORMATS)
def test_jaeger_client_to_us(jaeger_tracers, bits, fmt, url_encoding):
    tracer = jaeger_tracers[bits]
    span = tracer.start_span("op")
    for key, value in {**BAGGAGE, **BAGGAGE_SPACES}.items():
        span.set_baggage_item(key, value)
    carrier = {}
    tracer.inject(span.context, fmt, carrier)
    assert TextCodec(url_encoding=url_encoding).extract(carrier).trace_id == span.trace_id
    prop = make_propagation(["jaeger"], text_map=not url_encoding)
    for c in (carrier, http_headers(carrier)) if url_encoding else (carrier,):
        ctx = prop.extract_py(c)
        assert ctx.trace_id == span.trace_id
        assert (ctx.trace_id >> 64 != 0) == (bits == 128 and span.trace_id >> 64 != 0)
        assert ctx.span_id == span.span_id
        assert ctx.sampled is True
        assert ctx.baggage == {**BAGGAGE, **BAGGAGE_SPACES}
    span.finish()


@pytest.mark.parametrize("trace_id,span_id", IDS)
@pytest.mark.parametrize("sampled", SAMPLED)
@pytest.mark.parametrize("fmt,url_encoding", JAEGER_FORMATS)
def test_us_to_jaeger_client(jaeger_tracers, trace_id, span_id, sampled, fmt, url_encoding):
    baggage = {**BAGGAGE, **BAGGAGE_SPACES}
    carrier = {}
    make_propagation(["jaeger"], text_map=not url_encoding).inject_py(
        SpanContext(trace_id, span_id, sampled, baggage), carrier)
    peer = jaeger_tracers[128].extract(fmt, carrier)
    assert (peer.trace_id, peer.span_id, peer.parent_id) == (trace_id, span_id, None)
    assert bool(peer.flags & 1) is sampled
    assert peer.baggage == baggage
    # and a child the peer starts from it stays in the trace
    child = jaeger_tracers[128].start_span("child", child_of=peer)
    assert (child.trace_id, child.parent_id) == (trace_id, span_id)


@pytest.mark.parametrize("url_encoding", [True, False])
def test_jaeger_client_codec_flags(url_encoding):
    """sampled / debug / firehose bits from jaeger-client's own serialisation."""
    codec = TextCodec(url_encoding=url_encoding)
    prop = make_propagation(["jaeger"], text_map=not url_encoding)
    for flags, sampled, debug in [(0, False, False), (1, True, False), (3, True, True)]:
        carrier = {}
        codec.inject(jaeger_client.SpanContext(trace_id=7, span_id=8, parent_id=9, flags=flags),
                     carrier)
        ctx = prop.extract_py(carrier)
        assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.debug) == (7, 8, sampled, debug)
        back = {}
        prop.inject_py(ctx, back)
        assert codec.extract(back).flags == flags


def test_jaeger_client_debug_id(jaeger_tracers):
    """jaeger-debug-id: both sides make a debug-id container; the peer's tracer starts a
    debug trace from ours."""
    carrier = {"jaeger-debug-id": "corr-123", "uberctx-user": "alice"}
    peer = TextCodec(url_encoding=True).extract(carrier)
    ctx = make_propagation(["jaeger"]).extract_py(carrier)
    assert peer.is_debug_id_container_only and peer.debug_id == "corr-123"
    assert (ctx.trace_id, ctx.span_id, ctx.debug_id, ctx.baggage) == (0, 0, "corr-123",
                                                                       {"user": "alice"})
    assert peer.baggage == ctx.baggage
    # with ids too: both keep the ids and the debug id
    carrier["uber-trace-id"] = "abc:def:0:1"
    peer = TextCodec(url_encoding=True).extract(carrier)
    ctx = make_propagation(["jaeger"]).extract_py(carrier)
    assert (ctx.trace_id, ctx.span_id, ctx.debug_id) == (peer.trace_id, peer.span_id,
                                                         peer.debug_id)


def test_jaeger_client_baggage_header():
    carrier = {"jaeger-baggage": "k1=v1, k2=v2, bad, k3=a=b"}
    peer = TextCodec(url_encoding=False).extract(carrier)
    ctx = make_propagation(["jaeger"]).extract_py(carrier)
    assert ctx.baggage == peer.baggage == {"k1": "v1", "k2": "v2"}
    # one deliberate difference: jaeger-client keeps an empty key as ""; we skip it
    carrier = {"jaeger-baggage": "=x, k1=v1"}
    assert TextCodec(url_encoding=False).extract(carrier).baggage == {"": "x", "k1": "v1"}
    assert make_propagation(["jaeger"]).extract_py(carrier).baggage == {"k1": "v1"}


@pytest.mark.parametrize("value", ["abc", "0:0:0:0", "1:0:0:1", "0:1:0:1", "x:1:0:1",
                                   "1:2:3", "1:2:3:4:5", "", "1:2:3:zz"])
def test_jaeger_client_agrees_on_corrupt(value):
    """What jaeger-client calls corrupt, we call corrupt."""
    from opentracing import SpanContextCorruptedException
    with pytest.raises(SpanContextCorruptedException):
        TextCodec().extract({"uber-trace-id": value})
    with pytest.raises(SpanContextCorruptedException):
        make_propagation(["jaeger"]).extract_py({"uber-trace-id": value})


# -- all formats at once -----------------------------------------------------------------

def test_every_format_in_one_carrier_is_read_by_every_peer(jaeger_tracers):
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
                      {"user": "alice"}, tracestate="congo=t61rcWkgMzE")
    carrier = {}
    make_propagation(["tracecontext", "baggage", "jaeger", "b3", "b3multi"]).inject_py(ctx, carrier)
    want = (ctx.trace_id, ctx.span_id, True)
    assert otel_read(TraceContextTextMapPropagator().extract(carrier))[0] == want
    assert otel_read(B3SingleFormat().extract(carrier))[0] == want
    assert otel_read(B3MultiFormat().extract(carrier))[0] == want
    assert otel_read(JaegerPropagator().extract(carrier))[0] == want
    assert dict(otel_baggage.get_all(W3CBaggagePropagator().extract(carrier))) == {"user": "alice"}
    peer = jaeger_tracers[128].extract(Format.HTTP_HEADERS, carrier)
    assert (peer.trace_id, peer.span_id, peer.baggage) == (ctx.trace_id, ctx.span_id,
                                                           {"user": "alice"})

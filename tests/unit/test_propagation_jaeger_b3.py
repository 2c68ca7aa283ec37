# SPDX-License-Identifier: Apache-2.0
"""Jaeger and B3 details, the composite's rules, carriers, and make_propagation.

Where a peer implements the same rule, the expectation is checked against it too
(jaeger-client's ``span_context_from_string`` for uber-trace-id, OpenTelemetry's B3
propagators for what B3 input is valid).
"""
from __future__ import annotations

import email.message
from collections.abc import Mapping

import pytest
from jaeger_client.codecs import TextCodec, span_context_from_string
from opentelemetry import trace as otel_trace
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentracing import InvalidCarrierException, SpanContextCorruptedException

from fasttrace._carrier import Propagation, codec_stats
from fasttrace._context import SpanContext
from fasttrace.propagation import KNOWN_PROPAGATORS, make_propagation

FLAG_SAMPLED, FLAG_DEBUG, FLAG_FIREHOSE, FLAG_DEFERRED = 1, 2, 8, 16
JAEGER = make_propagation(["jaeger"])
JAEGER_TM = make_propagation(["jaeger"], text_map=True)
B3 = make_propagation(["b3"])
B3M = make_propagation(["b3multi"])
TID = "463ac35c9f6413ad48485a3953bb6124"
SID = "a2fb4a1d1a96d312"
T, S = int(TID, 16), int(SID, 16)
TRACEPARENT = f"00-{TID}-{SID}-01"


# -- Jaeger ------------------------------------------------------------------------------

UBER_VALID = [
    ("128-bit", f"{TID}:{SID}:0:1", (T, S, FLAG_SAMPLED)),
    ("64-bit", f"{TID[16:]}:{SID}:0:1", (T & (2**64 - 1), S, FLAG_SAMPLED)),
    ("no zero padding", "abc:def:0:1", (0xABC, 0xDEF, FLAG_SAMPLED)),
    ("uppercase hex", "ABC:DEF:0:1", (0xABC, 0xDEF, FLAG_SAMPLED)),
    ("parent id kept out", f"abc:def:{SID}:1", (0xABC, 0xDEF, FLAG_SAMPLED)),
    ("not sampled", "abc:def:0:0", (0xABC, 0xDEF, 0)),
    ("debug", "abc:def:0:3", (0xABC, 0xDEF, FLAG_SAMPLED | FLAG_DEBUG)),
    ("firehose", "abc:def:0:9", (0xABC, 0xDEF, FLAG_SAMPLED | FLAG_FIREHOSE)),
    ("unknown flag bits dropped", "abc:def:0:f5", (0xABC, 0xDEF, FLAG_SAMPLED)),
    ("url-encoded colons", "abc%3Adef%3A0%3A1", (0xABC, 0xDEF, FLAG_SAMPLED)),
    ("surrounding OWS", " abc:def:0:1\t", (0xABC, 0xDEF, FLAG_SAMPLED)),
]


@pytest.mark.parametrize("case,value,expected", UBER_VALID, ids=[c[0] for c in UBER_VALID])
def test_uber_trace_id_valid(case, value, expected):
    ctx = JAEGER.extract_py({"uber-trace-id": value})
    assert (ctx.trace_id, ctx.span_id, ctx.flags) == expected
    if "%" not in value:  # jaeger-client reads the same ids (it URL-decodes in HTTP mode)
        peer = span_context_from_string(value)
        assert (peer[0], peer[1]) == expected[:2]
    else:
        peer = TextCodec(url_encoding=True).extract({"uber-trace-id": value})
        assert (peer.trace_id, peer.span_id) == expected[:2]


UBER_CORRUPT = [
    ("three fields", "abc:def:0"), ("five fields", "abc:def:0:1:2"), ("empty", ""),
    ("zero trace id", "0:def:0:1"), ("zero span id", "abc:0:0:1"), ("not hex", "xyz:def:0:1"),
    ("empty field", "abc::0:1"), ("trace id over 128 bits", "1" * 33 + ":def:0:1"),
    ("span id over 64 bits", "abc:" + "1" * 17 + ":0:1"), ("flags over a byte", "abc:def:0:100"),
    ("inner space", "abc :def:0:1"), ("non-ascii", "abc:d\u00e9f:0:1"),
]


@pytest.mark.parametrize("case,value", UBER_CORRUPT, ids=[c[0] for c in UBER_CORRUPT])
def test_uber_trace_id_corrupt(case, value):
    codec_stats(reset=True)
    with pytest.raises(SpanContextCorruptedException):
        JAEGER.extract_py({"uber-trace-id": value})
    assert codec_stats()["malformed_jaeger"] == 1


def test_uber_trace_id_twice_is_corrupt():
    msg = email.message.Message()
    msg["uber-trace-id"] = "abc:def:0:1"
    msg["Uber-Trace-Id"] = "abc:def:0:1"
    with pytest.raises(SpanContextCorruptedException):
        JAEGER.extract_py(msg)
    with pytest.raises(SpanContextCorruptedException):  # jaeger-client says the same
        span_context_from_string(["abc:def:0:1", "abc:def:0:1"])


def test_uber_inject_format():
    carrier = {}
    JAEGER.inject_py(SpanContext(T, S, True), carrier)
    assert carrier == {"uber-trace-id": f"{TID}:{SID}:0:1"}
    carrier = {}
    JAEGER.inject_py(SpanContext(0xABC, 0xDEF, False, debug=True), carrier)
    # 64-bit trace ids are written with 16 digits; jaeger-client reads the same numbers
    assert carrier == {"uber-trace-id": "0000000000000abc:0000000000000def:0:2"}
    assert span_context_from_string(carrier["uber-trace-id"]) == (0xABC, 0xDEF, None, 2)


def test_uberctx_keys_lowercased_values_decoded():
    carrier = {"uber-trace-id": "abc:def:0:1", "UberCtx-User-Id": "a%20b", "uberctx-x": "%E2%9C%93",
               "uberctx-": "empty key ignored"}
    assert JAEGER.extract_py(carrier).baggage == {"user-id": "a b", "x": "\u2713"}
    # jaeger-client agrees
    assert TextCodec(url_encoding=True).extract(carrier).baggage == {
        "user-id": "a b", "x": "\u2713", "": "empty key ignored"}
    # TEXT_MAP mode: values are taken as they are
    assert JAEGER_TM.extract_py(carrier).baggage == {"user-id": "a%20b", "x": "%E2%9C%93"}


def test_uberctx_inject_encoding_and_token_keys():
    codec_stats(reset=True)
    ctx = SpanContext(1, 2, True, {"k": "a b/\u00e9", "bad key": "v", "ok": "plain"})
    carrier = {}
    JAEGER.inject_py(ctx, carrier)
    assert carrier["uberctx-k"] == "a%20b%2F%C3%A9"
    assert carrier["uberctx-ok"] == "plain"
    assert "uberctx-bad key" not in carrier
    assert codec_stats()["baggage_dropped"] == 1
    carrier = {}
    JAEGER_TM.inject_py(ctx, carrier)
    assert carrier["uberctx-k"] == "a b/\u00e9"


def test_uberctx_limits():
    codec_stats(reset=True)
    carrier = {"uber-trace-id": "1:1:0:1"}
    carrier.update({f"uberctx-k{i}": "v" for i in range(70)})
    assert len(JAEGER.extract_py(carrier).baggage) == 64
    assert codec_stats()["baggage_dropped"] == 6


def test_jaeger_debug_id_container():
    ctx = JAEGER.extract_py({"Jaeger-Debug-Id": "abc%20def"})
    assert (ctx.trace_id, ctx.span_id, ctx.debug_id) == (0, 0, "abc def")
    assert ctx.flags == FLAG_DEFERRED
    assert JAEGER.extract_py({"jaeger-debug-id": "  "}) is None


def test_jaeger_baggage_header_percent_decoded_and_merged():
    carrier = {"jaeger-baggage": "a=1%202, b=2", "uberctx-b": "from-uberctx"}
    assert JAEGER.extract_py(carrier).baggage == {"a": "1 2", "b": "from-uberctx"}


# -- B3 single ---------------------------------------------------------------------------

B3_SINGLE = [
    ("ids only: deferred", f"{TID}-{SID}", (T, S, FLAG_DEFERRED)),
    ("accept", f"{TID}-{SID}-1", (T, S, FLAG_SAMPLED)),
    ("deny", f"{TID}-{SID}-0", (T, S, 0)),
    ("debug", f"{TID}-{SID}-d", (T, S, FLAG_SAMPLED | FLAG_DEBUG)),
    ("with parent", f"{TID}-{SID}-1-05e3ac9a4f6e3b90", (T, S, FLAG_SAMPLED)),
    ("64-bit trace id", f"{TID[16:]}-{SID}-1", (T & (2**64 - 1), S, FLAG_SAMPLED)),
    ("uppercase hex tolerated", f"{TID.upper()}-{SID.upper()}-1", (T, S, FLAG_SAMPLED)),
    ("OWS", f" {TID}-{SID}-1 ", (T, S, FLAG_SAMPLED)),
]


@pytest.mark.parametrize("case,value,expected", B3_SINGLE, ids=[c[0] for c in B3_SINGLE])
def test_b3_single_valid(case, value, expected):
    ctx = B3.extract_py({"b3": value})
    assert (ctx.trace_id, ctx.span_id, ctx.flags) == expected
    peer = otel_trace.get_current_span(B3SingleFormat().extract({"b3": value.strip()}))
    assert (peer.get_span_context().trace_id, peer.get_span_context().span_id) == expected[:2]


B3_INVALID = [
    ("trace id 15 digits", f"{TID[:15]}-{SID}-1"), ("trace id 20 digits", f"{TID[:20]}-{SID}-1"),
    ("span id 15 digits", f"{TID}-{SID[:15]}-1"), ("zero trace id", f"{'0' * 32}-{SID}-1"),
    ("zero span id", f"{TID}-{'0' * 16}-1"), ("bad sampling state", f"{TID}-{SID}-x"),
    ("bad parent", f"{TID}-{SID}-1-xyz"), ("extra field", f"{TID}-{SID}-1-{SID}-x"),
    ("not hex", f"{'g' * 32}-{SID}-1"), ("empty", ""), ("bare 2", "2"), ("dash", "-"),
]


@pytest.mark.parametrize("case,value", B3_INVALID, ids=[c[0] for c in B3_INVALID])
def test_b3_single_invalid_ignored(case, value):
    codec_stats(reset=True)
    assert B3.extract_py({"b3": value}) is None
    assert codec_stats()["malformed_b3"] == 1


@pytest.mark.parametrize("value,flags", [("0", 0), ("1", FLAG_SAMPLED),
                                         ("d", FLAG_SAMPLED | FLAG_DEBUG)])
def test_b3_single_sampling_only(value, flags):
    ctx = B3.extract_py({"b3": value})
    assert (ctx.trace_id, ctx.span_id, ctx.flags) == (0, 0, flags)


@pytest.mark.parametrize("flags,suffix", [(FLAG_SAMPLED, "-1"), (0, "-0"),
                                          (FLAG_SAMPLED | FLAG_DEBUG, "-d"), (FLAG_DEFERRED, "")])
def test_b3_single_inject_round_trip(flags, suffix):
    ctx = B3.extract_py({"b3": f"{TID}-{SID}{suffix}"})
    assert ctx.flags == flags
    carrier = {}
    B3.inject_py(ctx, carrier)
    assert carrier == {"b3": f"{TID}-{SID}{suffix}"}


def test_b3_64bit_trace_id_written_with_16_digits():
    carrier = {}
    B3.inject_py(SpanContext(0xABC, 0xDEF, True), carrier)
    assert carrier == {"b3": "0000000000000abc-0000000000000def-1"}


# -- B3 multi ----------------------------------------------------------------------------

def _multi(**fields):
    names = {"trace": "X-B3-TraceId", "span": "X-B3-SpanId", "sampled": "X-B3-Sampled",
             "flags": "X-B3-Flags", "parent": "X-B3-ParentSpanId"}
    return {names[k]: v for k, v in fields.items()}


B3_MULTI = [
    ("deferred", _multi(trace=TID, span=SID), (T, S, FLAG_DEFERRED)),
    ("sampled 1", _multi(trace=TID, span=SID, sampled="1"), (T, S, FLAG_SAMPLED)),
    ("sampled 0", _multi(trace=TID, span=SID, sampled="0"), (T, S, 0)),
    ("sampled true", _multi(trace=TID, span=SID, sampled="true"), (T, S, FLAG_SAMPLED)),
    ("sampled False", _multi(trace=TID, span=SID, sampled="False"), (T, S, 0)),
    ("garbage sampled: no decision", _multi(trace=TID, span=SID, sampled="yes"),
     (T, S, FLAG_DEFERRED)),
    ("debug flag", _multi(trace=TID, span=SID, flags="1"), (T, S, FLAG_SAMPLED | FLAG_DEBUG)),
    ("debug wins over sampled 0", _multi(trace=TID, span=SID, sampled="0", flags="1"),
     (T, S, FLAG_SAMPLED | FLAG_DEBUG)),
    ("parent accepted", _multi(trace=TID, span=SID, sampled="1", parent=SID), (T, S, FLAG_SAMPLED)),
]


@pytest.mark.parametrize("case,carrier,expected", B3_MULTI, ids=[c[0] for c in B3_MULTI])
def test_b3_multi(case, carrier, expected):
    ctx = B3M.extract_py(carrier)
    assert (ctx.trace_id, ctx.span_id, ctx.flags) == expected
    peer = otel_trace.get_current_span(B3MultiFormat().extract(
        {k.lower(): v for k, v in carrier.items()})).get_span_context()
    assert (peer.trace_id, peer.span_id) == expected[:2]


@pytest.mark.parametrize("carrier", [_multi(trace=TID), _multi(span=SID),
                                     _multi(trace=TID[:20], span=SID),
                                     _multi(trace=TID, span="0" * 16)])
def test_b3_multi_invalid_ignored(carrier):
    assert B3M.extract_py(carrier) is None


def test_b3_multi_sampling_only():
    ctx = B3M.extract_py(_multi(sampled="0"))
    assert (ctx.trace_id, ctx.flags) == (0, 0)


def test_b3_multi_inject():
    carrier = {}
    B3M.inject_py(SpanContext(T, S, True), carrier)
    assert carrier == {"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-sampled": "1"}
    carrier = {}
    B3M.inject_py(SpanContext(T, S, True, debug=True), carrier)
    assert carrier == {"x-b3-traceid": TID, "x-b3-spanid": SID, "x-b3-flags": "1"}


# -- the composite -----------------------------------------------------------------------

def test_first_valid_context_wins():
    p = make_propagation(["b3", "tracecontext"])
    carrier = {"traceparent": TRACEPARENT, "b3": "abc-" + "1" * 16 + "-0"}
    assert B3.extract_py({"b3": carrier["b3"]}) is None  # b3 here is invalid (3-digit id)
    assert p.extract_py(carrier).trace_id == T
    carrier["b3"] = "0" * 13 + "abc-" + "1" * 16 + "-0"
    assert p.extract_py(carrier).trace_id == 0xABC
    assert make_propagation(["tracecontext", "b3"]).extract_py(carrier).trace_id == T


def test_tracestate_only_with_its_own_traceparent():
    p = make_propagation(["b3", "tracecontext"])
    ctx = p.extract_py({"b3": f"{TID[16:]}-{SID}-1", "traceparent": TRACEPARENT,
                        "tracestate": "a=1"})
    assert (ctx.trace_id, ctx.tracestate) == (T & (2**64 - 1), None)


def test_corrupt_jaeger_does_not_hide_a_valid_context():
    carrier = {"uber-trace-id": "garbage", "traceparent": TRACEPARENT}
    for names in (["jaeger", "tracecontext"], ["tracecontext", "jaeger"]):
        assert make_propagation(names).extract_py(carrier).trace_id == T
    with pytest.raises(SpanContextCorruptedException):
        make_propagation(["jaeger", "baggage"]).extract_py(
            {"uber-trace-id": "garbage", "baggage": "a=1"})


def test_baggage_merges_earlier_propagator_wins():
    carrier = {"traceparent": TRACEPARENT, "baggage": "a=w3c,b=w3c", "uberctx-b": "jaeger",
               "uberctx-c": "jaeger"}
    ctx = make_propagation(["tracecontext", "baggage", "jaeger"]).extract_py(carrier)
    assert ctx.baggage == {"a": "w3c", "b": "w3c", "c": "jaeger"}
    ctx = make_propagation(["jaeger", "baggage"]).extract_py(carrier)
    assert ctx.baggage == {"a": "w3c", "b": "jaeger", "c": "jaeger"}
    assert ctx.trace_id == 0  # a container: no propagator here reads traceparent


def test_nothing_found_is_none():
    p = make_propagation(list(KNOWN_PROPAGATORS))
    assert p.extract_py({}) is None
    assert p.extract_py({"content-type": "text/html"}) is None
    assert p.extract_py(None) is None


# -- carriers ----------------------------------------------------------------------------

class Adapter(Mapping):
    """A WSGI-style adapter: a Mapping with no dict underneath."""

    def __init__(self, d):
        self._d = d

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


class ItemsRaises:
    def items(self):
        raise RuntimeError("boom")


class ItemsPartly:
    def items(self):
        yield "traceparent", TRACEPARENT
        raise RuntimeError("boom")


def test_carrier_kinds():
    p = make_propagation(["tracecontext", "baggage"])
    msg = email.message.Message()
    msg["TraceParent"] = TRACEPARENT
    msg["Baggage"] = "a=1"
    for carrier in (msg, Adapter({"Traceparent": TRACEPARENT, "BAGGAGE": "a=1"}),
                    {"traceparent": TRACEPARENT, "baggage": ["a=1"]},
                    {"traceparent": (TRACEPARENT,), "baggage": "a=1"}):
        ctx = p.extract_py(carrier)
        assert (ctx.trace_id, ctx.baggage) == (T, {"a": "1"}), carrier


def test_unreadable_carriers_are_not_errors():
    p = make_propagation(list(KNOWN_PROPAGATORS))
    codec_stats(reset=True)
    assert p.extract_py(ItemsRaises()) is None
    assert p.extract_py(42) is None
    assert p.extract_py("traceparent") is None
    assert p.extract_py(ItemsPartly()).trace_id == T  # what it gave before failing
    assert codec_stats()["unreadable_carrier"] >= 3


def test_non_str_keys_and_values_ignored():
    p = make_propagation(list(KNOWN_PROPAGATORS))
    carrier = {1: "x", b"traceparent": TRACEPARENT, None: None, "baggage": b"a=1",
               "uber-trace-id": 5, "UBERCTX-K": object(), "b3": None}
    assert p.extract_py(carrier) is None
    carrier["traceparent"] = TRACEPARENT
    assert p.extract_py(carrier).trace_id == T


def test_inject_into_bad_carriers():
    ctx = SpanContext(T, S, True)
    p = make_propagation(["tracecontext"])
    for carrier in (None, 5, "str", (), Adapter({})):
        with pytest.raises(InvalidCarrierException):
            p.inject_py(ctx, carrier)
    msg = email.message.Message()
    p.inject_py(ctx, msg)
    assert msg["traceparent"] == TRACEPARENT


def test_container_contexts_inject_no_ids():
    ctx = make_propagation(["baggage"]).extract_py({"baggage": "a=1"})
    carrier = {}
    make_propagation(list(KNOWN_PROPAGATORS)).inject_py(ctx, carrier)
    assert carrier == {"baggage": "a=1", "uberctx-a": "1"}


# -- make_propagation --------------------------------------------------------------------

def test_make_propagation_names():
    assert make_propagation(["tracecontext", "baggage"]).names == ("tracecontext", "baggage")
    assert make_propagation("b3multi, Jaeger ,b3").names == ("b3multi", "jaeger", "b3")
    assert make_propagation(["b3", "B3", "none"]).names == ("b3",)
    assert make_propagation([]).names == ()
    assert make_propagation("none").names == ()
    assert make_propagation(["jaeger"], text_map=True).text_map is True
    assert isinstance(make_propagation(["b3"]), Propagation)


def test_make_propagation_unknown_name_lists_known():
    with pytest.raises(ValueError) as info:
        make_propagation(["tracecontext", "xray"])
    for name in KNOWN_PROPAGATORS:
        assert name in str(info.value)
    assert "xray" in str(info.value)
    with pytest.raises(TypeError):
        make_propagation([1])


def test_propagation_layer_reexports():
    from fasttrace import propagation
    assert propagation.KNOWN_PROPAGATORS == ("tracecontext", "baggage", "jaeger", "b3", "b3multi")
    p = propagation.make_propagation("tracecontext,baggage")
    carrier = {}
    p.inject_py(SpanContext(T, S, True, {"k": "v"}), carrier)
    assert p.extract_py(carrier).baggage == {"k": "v"}
    assert set(propagation.codec_stats()) >= {"baggage_dropped", "tracestate_dropped",
                                              "malformed_traceparent"}

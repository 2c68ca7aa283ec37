# SPDX-License-Identifier: Apache-2.0
"""W3C Trace Context (traceparent: Level 1; tracestate: the editor's draft) and W3C
Baggage, rule by rule.

Tables of valid, invalid and edge-case headers.  Expectations come from the spec text
(the case names cite the rule or the W3C test-suite case, w3c/trace-context
test/test.py) and are also checked against OpenTelemetry's propagator: where it
implements the same rule it must agree, so a table row that is wrong for both would
have to be wrong for OpenTelemetry too; where it does not, the row records what it does
instead.
"""
from __future__ import annotations

import email.message
from collections.abc import Mapping

import pytest
from opentelemetry import baggage as otel_baggage
from opentelemetry import trace as otel_trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fasttrace._carrier import codec_stats
from fasttrace._context import SpanContext
from fasttrace.propagation import make_propagation

TC = make_propagation(["tracecontext"])
BAG = make_propagation(["baggage"])
W3C = make_propagation(["tracecontext", "baggage"])
OTEL_TC = TraceContextTextMapPropagator()
OTEL_BAG = W3CBaggagePropagator()

TID = "12345678901234567890123456789012"
SID = "1234567890123456"
VALID = f"00-{TID}-{SID}-01"


class HeaderList(Mapping):
    """A read-only mapping over (name, value) pairs that may repeat a name, like the
    headers of a real request (``items()`` yields every pair)."""

    def __init__(self, pairs):
        self._pairs = list(pairs)

    def __getitem__(self, key):
        for k, v in self._pairs:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self):
        return iter(k for k, _ in self._pairs)

    def __len__(self):
        return len(self._pairs)

    def items(self):
        return list(self._pairs)


def otel_ids(carrier):
    """(trace_id, span_id, sampled) OpenTelemetry extracts, or None."""
    ctx = OTEL_TC.extract(carrier)
    sc = otel_trace.get_current_span(ctx).get_span_context()
    if not sc.is_valid:
        return None
    return sc.trace_id, sc.span_id, sc.trace_flags.sampled


def our_ids(carrier):
    ctx = TC.extract_py(carrier)
    if ctx is None:
        return None
    return ctx.trace_id, ctx.span_id, ctx.sampled


# -- traceparent -------------------------------------------------------------------------

T = int(TID, 16)
S = int(SID, 16)

# (case, header value, expected (trace_id, span_id, sampled) or None)
TRACEPARENT = [
    ("valid sampled", VALID, (T, S, True)),
    ("valid not sampled", f"00-{TID}-{SID}-00", (T, S, False)),
    ("spec example", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
     (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)),
    ("other flag bits ignored, sampled kept", f"00-{TID}-{SID}-09", (T, S, True)),
    ("unknown flag bits only", f"00-{TID}-{SID}-fe", (T, S, False)),
    ("version 00 with trailing char (test_traceparent_version_0x00)", VALID + ".", None),
    ("version 00 with extra field", VALID + "-what-the-future-will-be-like", None),
    ("future version cc (test_traceparent_version_0xcc)", f"cc-{TID}-{SID}-01", (T, S, True)),
    ("future version with extra field", f"cc-{TID}-{SID}-01-what-the-future-will-be-like",
     (T, S, True)),
    ("future version, extra field without dash", f"cc-{TID}-{SID}-01.what-the-future", None),
    ("future version, sampled bit only", f"cc-{TID}-{SID}-02", (T, S, False)),
    ("version ff is invalid", f"ff-{TID}-{SID}-01", None),
    ("version illegal char 1", f".0-{TID}-{SID}-01", None),
    ("version illegal char 2", f"0.-{TID}-{SID}-01", None),
    ("version too long", f"000-{TID}-{SID}-01", None),
    ("version too long 4", f"0000-{TID}-{SID}-01", None),
    ("version too short", f"0-{TID}-{SID}-01", None),
    ("version uppercase hex", f"0A-{TID}-{SID}-01", None),
    ("trace id all zero", f"00-{'0' * 32}-{SID}-01", None),
    ("trace id illegal first char", f"00-.{TID[1:]}-{SID}-01", None),
    ("trace id illegal last char", f"00-{TID[:-1]}.-{SID}-01", None),
    ("trace id too long", f"00-{TID}3-{SID}-01", None),
    ("trace id too short", f"00-{TID[:-1]}-{SID}-01", None),
    ("trace id uppercase", f"00-{'ABCDEF' + TID[6:]}-{SID}-01", None),
    ("parent id all zero", f"00-{TID}-{'0' * 16}-01", None),
    ("parent id illegal first char", f"00-{TID}-.{SID[1:]}-01", None),
    ("parent id illegal last char", f"00-{TID}-{SID[:-1]}.-01", None),
    ("parent id too long", f"00-{TID}-{SID}7-01", None),
    ("parent id too short", f"00-{TID}-{SID[:-1]}-01", None),
    ("parent id uppercase", f"00-{TID}-ABCDEF7890123456-01", None),
    ("flags illegal first char", f"00-{TID}-{SID}-.0", None),
    ("flags illegal last char", f"00-{TID}-{SID}-0.", None),
    ("flags too long", f"00-{TID}-{SID}-001", None),
    ("flags too short", f"00-{TID}-{SID}-1", None),
    ("flags uppercase", f"00-{TID}-{SID}-0A", None),
    ("leading space (test_traceparent_ows_handling)", " " + VALID, (T, S, True)),
    ("leading tab", "\t" + VALID, (T, S, True)),
    ("trailing space", VALID + " ", (T, S, True)),
    ("trailing tab", VALID + "\t", (T, S, True)),
    ("both sides", "\t " + VALID + " \t", (T, S, True)),
    ("inner space", f"00-{TID} -{SID}-01", None),
    ("wrong separator", f"00_{TID}_{SID}_01", None),
    ("empty", "", None),
    ("garbage", "hello", None),
    ("only dashes", "-" * 55, None),
    ("non-ascii", f"00-{TID}-{SID}-0\u00e9", None),
]


@pytest.mark.parametrize("case,header,expected", TRACEPARENT, ids=[c[0] for c in TRACEPARENT])
def test_traceparent_table(case, header, expected):
    carrier = {"traceparent": header}
    assert our_ids(carrier) == expected
    # OpenTelemetry implements the same Level 1 rules
    assert otel_ids(carrier) == expected


@pytest.mark.parametrize("name", ["traceparent", "TraceParent", "TrAcEpArEnT", "TRACEPARENT"])
def test_traceparent_name_any_case(name):
    """test_traceparent_header_name_valid_casing"""
    assert our_ids({name: VALID}) == (T, S, True)
    assert our_ids(HeaderList([(name, VALID)])) == (T, S, True)


@pytest.mark.parametrize("name", ["trace-parent", "trace.parent", "traceparent ", "xtraceparent"])
def test_traceparent_wrong_names_ignored(name):
    """test_traceparent_header_name"""
    assert TC.extract_py({name: VALID}) is None


def test_traceparent_duplicated_restarts_trace():
    """test_traceparent_duplicated: two traceparent headers are invalid."""
    pairs = [("traceparent", f"00-{TID[:-1]}1-{SID}-01"), ("traceparent", VALID)]
    assert TC.extract_py(HeaderList(pairs)) is None
    msg = email.message.Message()
    for k, v in pairs:
        msg[k] = v
    assert TC.extract_py(msg) is None
    # the same, as a list value and as a case-variant duplicate in one dict
    assert TC.extract_py({"traceparent": [pairs[0][1], VALID]}) is None
    assert TC.extract_py({"Traceparent": pairs[0][1], "TRACEPARENT": VALID}) is None


def test_invalid_traceparent_is_counted():
    codec_stats(reset=True)
    assert TC.extract_py({"traceparent": "00-xyz"}) is None
    assert codec_stats()["malformed_traceparent"] == 1


def test_inject_matches_opentelemetry():
    """The traceparent we write is the one OpenTelemetry writes for the same context."""
    for tid, sid, sampled in [(T, S, True), (T, S, False), (1, 1, True),
                              (2**128 - 1, 2**64 - 1, False), (0xABC, 0xDEF, True)]:
        carrier = {}
        TC.inject_py(SpanContext(tid, sid, sampled), carrier)
        otel = {}
        sc = otel_trace.SpanContext(tid, sid, False, otel_trace.TraceFlags(int(sampled)))
        OTEL_TC.inject(otel, otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(sc)))
        assert carrier == otel


def test_debug_and_deferred_flags_are_not_written_as_trace_flags():
    ctx = SpanContext(T, S, True, debug=True)
    carrier = {}
    TC.inject_py(ctx, carrier)
    assert carrier["traceparent"].endswith("-01")


# -- tracestate --------------------------------------------------------------------------
# The key grammar is the editor's draft's (w3c/trace-context spec/, June 2026):
#   key = ( lcalpha / DIGIT ) 0*255( keychar ); keychar = lcalpha / DIGIT / "_" / "-" /
#   "*" / "/" / "@"
# OpenTelemetry Python (opentelemetry-api 1.45) still applies Level 1's tenant@system
# rule: it rejects "foo@", "foo@@bar", "foo@bar@baz", "1abc", "foo@1bar", a tenant of
# 242 or a system of 15 characters, and drops the whole tracestate for them.  Rows where
# it disagrees with the draft give its result in the last column; we assert the draft.

KEY_ALL = "".join(map(chr, range(0x61, 0x7B))) + "0123456789_-*/"
VALUE_ALL = (
    "".join(map(chr, range(0x20, 0x2C)))
    + "".join(map(chr, range(0x2D, 0x3D)))
    + "".join(map(chr, range(0x3E, 0x7F)))
)
BARS = [",".join(f"bar{i:02d}={i:02d}" for i in range(a, b)) for a, b in
        ((1, 11), (11, 21), (21, 31), (31, 33))]
SAME = object()  # OpenTelemetry's TraceContextTextMapPropagator gives the same result
OTEL_LEVEL1 = None  # ... drops the tracestate: a key the draft allows broke Level 1's rule

# (case, tracestate header(s), expected tracestate kept on the context or None,
#  what OpenTelemetry gives)
TRACESTATE = [
    ("single", ["foo=1"], "foo=1", SAME),
    ("two members", ["foo=1,bar=2"], "foo=1,bar=2", SAME),
    ("spec example", ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"],
     "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", SAME),
    ("multiple headers combined in order", ["foo=1,bar=2", "rojo=1,congo=2", "baz=3"],
     "foo=1,bar=2,rojo=1,congo=2,baz=3", SAME),
    ("empty header", [""], None, SAME),
    ("empty header after a value", ["foo=1", ""], "foo=1", SAME),
    ("empty header before a value", ["", "foo=1"], "foo=1", SAME),
    ("empty members", ["foo=1,,bar=2,"], "foo=1,bar=2", SAME),
    ("whitespace-only members", ["foo=1, \t ,bar=2"], "foo=1,bar=2", SAME),
    ("ows around members 1", ["foo=1 \t , \t bar=2, \t baz=3"], "foo=1,bar=2,baz=3", SAME),
    ("ows around members 2", ["foo=1\t \t,\t \tbar=2,\t \tbaz=3"], "foo=1,bar=2,baz=3", SAME),
    ("leading space", [" foo=1"], "foo=1", SAME),
    ("leading tab", ["\tfoo=1"], "foo=1", SAME),
    ("trailing space", ["foo=1 "], "foo=1", SAME),
    ("trailing tab", ["foo=1\t"], "foo=1", SAME),
    ("leading space in value kept", ["foo= 1"], "foo= 1", SAME),
    ("all allowed characters", [KEY_ALL + "=" + VALUE_ALL], KEY_ALL + "=" + VALUE_ALL, SAME),
    ("all allowed, with @ (test_tracestate_all_allowed_characters)",
     [KEY_ALL + "@a-z0-9_-*/=" + VALUE_ALL], KEY_ALL + "@a-z0-9_-*/=" + VALUE_ALL, SAME),
    # key grammar: first character
    ("key starting with a digit", ["1abc=1"], "1abc=1", OTEL_LEVEL1),
    ("key of one digit", ["0=1"], "0=1", OTEL_LEVEL1),
    ("key starting with a digit, with @", ["0a@b=1"], "0a@b=1", SAME),
    ("key starting with @ (test_tracestate_key_illegal_vendor_format)", ["@foo=1,bar=2"], None,
     SAME),
    ("key starting with _", ["_foo=1"], None, SAME),
    ("key starting with -", ["-foo=1"], None, SAME),
    ("key starting with *", ["*foo=1"], None, SAME),
    ("key starting with /", ["/foo=1"], None, SAME),
    # key grammar: "@" is a keychar like any other
    ("key ending in @ (test_tracestate_key_illegal_vendor_format)", ["foo@=1,bar=2"],
     "foo@=1,bar=2", OTEL_LEVEL1),
    ("key with @@", ["foo@@bar=1,bar=2"], "foo@@bar=1,bar=2", OTEL_LEVEL1),
    ("key with two @", ["foo@bar@baz=1,bar=2"], "foo@bar@baz=1,bar=2", OTEL_LEVEL1),
    ("key with a digit after @", ["foo@1bar=1"], "foo@1bar=1", OTEL_LEVEL1),
    ("key with a keychar after @", ["foo@_bar=1"], "foo@_bar=1", OTEL_LEVEL1),
    ("key of a letter and @", ["a@=1"], "a@=1", OTEL_LEVEL1),
    ("tenant@system key", ["congo@rojo=1,rojo=2"], "congo@rojo=1,rojo=2", SAME),
    # key grammar: other characters
    ("space in key (test_tracestate_key_illegal_characters)", ["foo =1"], None, SAME),
    ("uppercase key", ["FOO=1"], None, SAME),
    ("uppercase after the first character", ["fOO=1"], None, SAME),
    ("dot in key", ["foo.bar=1"], None, SAME),
    ("empty key", ["=1"], None, SAME),
    ("non-ascii key", ["f\u00f6o=1"], None, SAME),
    # key length: 256 characters, "@" or not (test_tracestate_key_length_limit)
    ("key of 256", ["foo=1", "z" * 256 + "=1"], "foo=1," + "z" * 256 + "=1", SAME),
    ("key of 257", ["foo=1", "z" * 257 + "=1"], None, SAME),
    ("key of 256: 241, @, 14", ["foo=1", "t" * 241 + "@" + "v" * 14 + "=1"],
     "foo=1," + "t" * 241 + "@" + "v" * 14 + "=1", SAME),
    ("key of 244: 242, @, 1", ["foo=1", "t" * 242 + "@v=1"], "foo=1," + "t" * 242 + "@v=1",
     OTEL_LEVEL1),
    ("key of 17: 1, @, 15", ["foo=1", "t@" + "v" * 15 + "=1"], "foo=1,t@" + "v" * 15 + "=1",
     OTEL_LEVEL1),
    ("key of 256 ending in @", ["foo=1", "t" * 255 + "@=1"], "foo=1," + "t" * 255 + "@=1",
     OTEL_LEVEL1),
    ("key of 256 starting with a digit", ["9" * 256 + "=1"], "9" * 256 + "=1", OTEL_LEVEL1),
    ("key of 257 with @", ["foo=1", "t" * 241 + "@" + "v" * 15 + "=1"], None, SAME),
    ("key of 257 of @", ["foo=1", "t" + "@" * 256 + "=1"], None, SAME),
    # members
    # a repeated key: the first member stays.  OpenTelemetry drops the whole tracestate,
    # which the draft's test suite (test_tracestate_duplicated_keys) does not accept.
    ("duplicate keys same value (test_tracestate_duplicated_keys)", ["foo=1,foo=1"], "foo=1",
     None),
    ("duplicate keys different value", ["foo=1,foo=2"], "foo=1", None),
    ("duplicate keys across headers", ["foo=1", "foo=2"], "foo=1", None),
    ("duplicate keys, same headers", ["foo=1", "foo=1"], "foo=1", None),
    ("duplicate key among others", ["a=1,foo=1,b=2,foo=2,c=3,a=4"], "a=1,foo=1,b=2,c=3", None),
    ("duplicate key with @", ["x@y=1,x@y=2"], "x@y=1", None),
    ("key repeated to 40 members", [",".join(["k=1"] * 40)], "k=1", None),
    ("32 distinct keys and a repeated one", BARS[:3] + ["bar31=31,bar32=32,bar01=99"],
     ",".join(BARS[:3] + ["bar31=31,bar32=32"]), None),
    ("33 distinct keys and a repeated one", BARS[:3] + ["bar01=99,bar31=31,bar32=32,bar33=33"],
     None, SAME),
    ("a repeated key does not hide a malformed member", ["foo=1,foo=2,Bad=3"], None, SAME),
    ("32 members (test_tracestate_member_count_limit)", BARS[:3] + ["bar31=31,bar32=32"],
     ",".join(BARS[:3] + ["bar31=31,bar32=32"]), SAME),
    ("33 members", BARS[:3] + ["bar31=31,bar32=32,bar33=33"], None, SAME),
    # value grammar
    ("value of 256", ["foo=" + "v" * 256], "foo=" + "v" * 256, SAME),
    ("value of 256 and trailing OWS", ["foo=" + "v" * 256 + " \t "], "foo=" + "v" * 256, SAME),
    ("value of 257", ["foo=" + "v" * 257], None, SAME),
    ("value of 256 with a leading space", ["foo= " + "v" * 255], "foo= " + "v" * 255, SAME),
    ("value of 257 with a leading space", ["foo= " + "v" * 256], None, SAME),
    ("= in value (test_tracestate_value_illegal_characters)", ["foo=bar=baz"], None, SAME),
    ("empty value", ["foo=,bar=3"], None, SAME),
    ("spaces-only value", ["foo=   ,bar=3"], None, SAME),
    ("tab inside value", ["foo=a\tb"], None, SAME),
    ("non-ascii value", ["foo=\u00e9"], None, SAME),
    ("control char in value", ["foo=a\x01"], None, SAME),
    ("DEL in value", ["foo=a\x7f"], None, SAME),
    ("no equals", ["foo"], None, SAME),
]


def _otel_tracestate(headers):
    """What OpenTelemetry's W3C propagator keeps of the same headers."""
    ctx = OTEL_TC.extract({"traceparent": VALID, "tracestate": list(headers)})
    ts = otel_trace.get_current_span(ctx).get_span_context().trace_state
    return ts.to_header() or None


@pytest.mark.parametrize("case,headers,expected,otel", TRACESTATE,
                         ids=[c[0] for c in TRACESTATE])
def test_tracestate_table(case, headers, expected, otel):
    pairs = [("traceparent", VALID)] + [("tracestate", h) for h in headers]
    msg = email.message.Message()
    for k, v in pairs:
        msg[k] = v
    carriers = [HeaderList(pairs), msg]
    if len(headers) == 1:
        carriers.append({"traceparent": VALID, "tracestate": headers[0]})
        carriers.append({"TraceParent": VALID, "TraceState": headers[0]})
    else:
        carriers.append({"traceparent": VALID, "tracestate": list(headers)})
    # a discarded tracestate is counted; an empty one is simply absent
    dropped = 1 if expected is None and ",".join(headers).strip(" \t,") else 0
    for carrier in carriers:
        codec_stats(reset=True)
        ctx = TC.extract_py(carrier)
        # failure to parse tracestate never affects traceparent
        assert (ctx.trace_id, ctx.span_id) == (T, S)
        assert ctx.tracestate == expected, carrier
        assert codec_stats()["tracestate_dropped"] == dropped
        # what is kept is passed on exactly
        out = {}
        TC.inject_py(ctx, out)
        assert out.get("tracestate") == expected
    assert _otel_tracestate(headers) == (expected if otel is SAME else otel)


def test_tracestate_kept_as_the_same_string_when_canonical():
    header = "foo@=1,1abc=2,t@" + "v" * 15 + "=3"
    ctx = TC.extract_py({"traceparent": VALID, "tracestate": header})
    assert ctx.tracestate is header


def test_tracestate_ignored_when_traceparent_invalid():
    """test_tracestate_included_traceparent_missing; "MUST NOT attempt to parse"."""
    assert TC.extract_py({"tracestate": "foo=1"}) is None
    assert TC.extract_py({"traceparent": "00-bad", "tracestate": "foo=1"}) is None


@pytest.mark.parametrize("name", ["tracestate", "TraceState", "TrAcEsTaTe", "TRACESTATE"])
def test_tracestate_name_any_case(name):
    ctx = TC.extract_py({"traceparent": VALID, name: "foo=1"})
    assert ctx.tracestate == "foo=1"


@pytest.mark.parametrize("name", ["trace-state", "trace.state"])
def test_tracestate_wrong_names_ignored(name):
    assert TC.extract_py({"traceparent": VALID, name: "foo=1"}).tracestate is None


def test_discarded_tracestate_is_counted():
    codec_stats(reset=True)
    TC.extract_py({"traceparent": VALID, "tracestate": "foo=1,@foo=2"})
    assert codec_stats()["tracestate_dropped"] == 1


def test_tracestate_round_trip_through_opentelemetry():
    ctx = SpanContext(T, S, True, tracestate="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    carrier = {}
    TC.inject_py(ctx, carrier)
    assert carrier["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    otel_ctx = OTEL_TC.extract(carrier)
    sc = otel_trace.get_current_span(otel_ctx).get_span_context()
    assert sc.trace_state.to_header() == ctx.tracestate


# -- baggage -----------------------------------------------------------------------------

# (case, baggage header(s), expected baggage or None, OpenTelemetry agrees)
BAGGAGE = [
    ("simple", ["userId=alice"], {"userId": "alice"}, True),
    ("spec example, single header", ["userId=alice,serverNode=DF%2028,isProduction=false"],
     {"userId": "alice", "serverNode": "DF 28", "isProduction": "false"}, True),
    ("spec example, split", ["userId=alice", "serverNode=DF%2028,isProduction=false"],
     {"userId": "alice", "serverNode": "DF 28", "isProduction": "false"}, False),
    ("spec example, OWS", ["userId =   alice", "serverNode = DF%2028, isProduction = false"],
     {"userId": "alice", "serverNode": "DF 28", "isProduction": "false"}, False),
    ("properties tolerated",
     ["key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue"],
     {"key1": "value1", "key2": "value2", "key3": "value3"}, False),
    ("equals signs in value", ["k=a=b=c"], {"k": "a=b=c"}, True),
    ("empty value", ["k="], {"k": ""}, True),
    ("utf-8 percent-decoded", ["k=%E2%9C%93%20ok"], {"k": "\u2713 ok"}, True),
    ("lowercase escapes", ["k=%e2%9c%93"], {"k": "\u2713"}, True),
    ("invalid utf-8 becomes U+FFFD", ["k=a%FFb"], {"k": "a\ufffdb"}, True),
    ("truncated utf-8 becomes U+FFFD", ["k=%E2%9C"], {"k": "\ufffd"}, True),
    ("lone % kept", ["k=100%"], {"k": "100%"}, True),
    ("bad escape kept", ["k=%zz"], {"k": "%zz"}, True),
    # "+" is a space, as OpenTelemetry Python (and other form-style writers) send it;
    # RFC 3986 readers (OpenTelemetry Java, Go) would give "a+b"
    ("plus is a space", ["k=a+b"], {"k": "a b"}, True),
    ("plus in a key", ["a+b=1"], {"a b": "1"}, True),
    ("plus and encoded plus", ["k=1%2B1+2"], {"k": "1+1 2"}, True),
    ("plus between escapes", ["k=%41+%42"], {"k": "A B"}, True),
    ("plus after a lone %", ["k=%2+x"], {"k": "%2 x"}, True),
    ("plus with utf-8", ["k=caf%C3%A9+cr%C3%A8me"], {"k": "caf\u00e9 cr\u00e8me"}, True),
    ("leading and trailing plus", ["k=+a+"], {"k": " a "}, False),  # OpenTelemetry strips
    ("encoded space", ["k=a%20b"], {"k": "a b"}, True),
    ("encoded plus", ["k=a%2Bb"], {"k": "a+b"}, True),
    ("encoded percent then plus", ["k=%25+%2B"], {"k": "% +"}, True),
    ("last duplicate wins", ["k=1,k=2"], {"k": "2"}, True),
    ("malformed member skipped", ["a=1,novalue,b=2"], {"a": "1", "b": "2"}, True),
    ("space in value is malformed", ["a=1,b=x y,c=3"], {"a": "1", "c": "3"}, False),
    ("quote in value is malformed", ['a=1,b="x"'], {"a": "1"}, True),
    ("backslash in value is malformed", ["a=1,b=x\\y"], {"a": "1"}, True),
    ("key not a token", ["a=1,b(x)=2"], {"a": "1"}, True),
    ("empty key", ["=1,a=1"], {"a": "1"}, True),
    ("non-ascii raw value is malformed", ["a=1,b=\u00e9"], {"a": "1"}, True),
    ("empty members skipped", [",a=1,,b=2,"], {"a": "1", "b": "2"}, True),
    ("only separators", [", ,"], None, True),
    ("empty header", [""], None, True),
]


def _otel_baggage(headers):
    ctx = OTEL_BAG.extract({"baggage": ",".join(headers)})
    return dict(otel_baggage.get_all(ctx)) or None


@pytest.mark.parametrize("case,headers,expected,otel_agrees", BAGGAGE,
                         ids=[c[0] for c in BAGGAGE])
def test_baggage_table(case, headers, expected, otel_agrees):
    pairs = [("baggage", h) for h in headers]
    carriers = [HeaderList(pairs), {"baggage": headers if len(headers) > 1 else headers[0]}]
    for carrier in carriers:
        ctx = BAG.extract_py(carrier)
        if expected is None:
            assert ctx is None
        else:
            # a baggage-only context is a container: no ids
            assert (ctx.trace_id, ctx.span_id) == (0, 0)
            assert ctx.baggage == expected
    if otel_agrees:
        assert _otel_baggage(headers) == expected


def test_baggage_name_any_case():
    assert BAG.extract_py({"Baggage": "a=1"}).baggage == {"a": "1"}
    assert BAG.extract_py({"BAGGAGE": "a=1"}).baggage == {"a": "1"}


def test_baggage_with_traceparent_goes_on_the_context():
    ctx = W3C.extract_py({"traceparent": VALID, "baggage": "a=1"})
    assert (ctx.trace_id, ctx.span_id, ctx.baggage) == (T, S, {"a": "1"})


def test_baggage_extract_member_limit():
    codec_stats(reset=True)
    header = ",".join(f"k{i}=v{i}" for i in range(70))
    ctx = BAG.extract_py({"baggage": header})
    assert ctx.baggage == {f"k{i}": f"v{i}" for i in range(64)}
    assert codec_stats()["baggage_dropped"] == 6


def test_baggage_extract_byte_limit_drops_whole_members():
    codec_stats(reset=True)
    big = "x" * 4000
    # 3 members of 4003 bytes: the third would pass 8192 bytes, a small fourth fits
    header = f"a={big},b={big},c={big},d=1"
    ctx = BAG.extract_py({"baggage": header})
    assert ctx.baggage == {"a": big, "b": big, "d": "1"}
    assert codec_stats()["baggage_dropped"] == 1


def test_baggage_extract_exactly_8192_bytes_kept():
    # two members joined by one comma: 4095 + 1 + 4096 = 8192 bytes
    a = "a=" + "x" * 4093
    b = "b=" + "y" * 4094
    assert len(a) + 1 + len(b) == 8192
    ctx = BAG.extract_py({"baggage": f"{a},{b}"})
    assert set(ctx.baggage) == {"a", "b"}


def test_baggage_inject_limits_drop_whole_members():
    codec_stats(reset=True)
    items = {f"k{i:02d}": "v" for i in range(70)}
    carrier = {}
    BAG.inject_py(SpanContext(T, S, True, items), carrier)
    members = carrier["baggage"].split(",")
    assert len(members) == 64
    assert codec_stats()["baggage_dropped"] == 6
    codec_stats(reset=True)
    big = "x" * 4000
    carrier = {}
    BAG.inject_py(SpanContext(T, S, True, {"a": big, "b": big, "z": big, "c": "1"}), carrier)
    assert len(carrier["baggage"]) <= 8192
    assert codec_stats()["baggage_dropped"] == 1
    # whole members only: both readers get the members that fit, complete
    assert _otel_baggage([carrier["baggage"]]) == {"a": big, "b": big, "c": "1"}
    assert BAG.extract_py(carrier).baggage == {"a": big, "b": big, "c": "1"}


VALUES = ["plain", "with space", "plus+sign", "100%", "a,b;c=d", '"quoted"', "back\\slash",
          "caf\u00e9 \u2713 \U0001f600", "tab\there", "%41", "", " lead and trail ",
          "=;,", "\x7f\x00"]


@pytest.mark.parametrize("value", VALUES)
def test_baggage_values_survive_opentelemetry(value):
    """We encode space and '+', so OpenTelemetry's form decoding reads the same value."""
    carrier = {}
    BAG.inject_py(SpanContext(T, S, True, {"key": value, "odd key/é": value}), carrier)
    otel = dict(otel_baggage.get_all(OTEL_BAG.extract(carrier)))
    assert otel["key"] == value.strip()  # OpenTelemetry strips values after decoding
    assert otel["odd key/é"] == value.strip()
    assert BAG.extract_py(carrier).baggage == {"key": value, "odd key/é": value}


@pytest.mark.parametrize("value", VALUES)
def test_baggage_values_from_opentelemetry(value):
    """What OpenTelemetry writes (quote_plus: a space is '+') we read back exactly."""
    ctx = otel_baggage.set_baggage("odd key/é", value, otel_baggage.set_baggage("key", value))
    carrier = {}
    OTEL_BAG.inject(carrier, ctx)
    assert BAG.extract_py(carrier).baggage == {"key": value, "odd key/é": value}


def test_baggage_encoding_is_spec_percent_encoding():
    """Space is %20 (never '+'), '+' and '%' are escaped, baggage-octets stay readable."""
    carrier = {}
    BAG.inject_py(SpanContext(T, S, True, {"k": "a b+c%d/e:f"}), carrier)
    assert carrier["baggage"] == "k=a%20b%2Bc%25d/e:f"


def test_baggage_unencodable_items_dropped_and_counted():
    codec_stats(reset=True)
    carrier = {}
    BAG.inject_py(SpanContext(T, S, True, {"ok": "1", "bad": "\ud800"}), carrier)
    assert carrier == {"baggage": "ok=1"}
    assert codec_stats()["baggage_dropped"] == 1

# SPDX-License-Identifier: Apache-2.0
"""Property-based fuzzing of every extractor (hypothesis).

Whatever a carrier holds, extraction gives only ``None``, a valid SpanContext, or
``SpanContextCorruptedException`` -- and a context it returns can be injected again.
Inputs: arbitrary header maps (arbitrary names, the real header names in any case,
garbage and near-valid values, repeated headers, non-str entries) for every
propagator alone, all of them together and random subsets; arbitrary and mutated
bytes for Format.BINARY.  Round trips of arbitrary contexts must be exact.
"""
from __future__ import annotations

import email.message

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentracing import SpanContextCorruptedException

from fasttrace._binary import extract_binary, inject_binary
from fasttrace._context import SpanContext
from fasttrace.propagation import KNOWN_PROPAGATORS, make_propagation

FLAG_DEFERRED = 16
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

HEADER_NAMES = ["traceparent", "tracestate", "baggage", "uber-trace-id", "jaeger-debug-id",
                "jaeger-baggage", "uberctx-user", "uberctx-", "b3", "x-b3-traceid",
                "x-b3-spanid", "x-b3-sampled", "x-b3-flags", "x-b3-parentspanid"]
HEX = "0123456789abcdefABCDEF"


def _case(name):
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.upper() if f else c for c, f in zip(name, flips)))


names = st.one_of(
    st.sampled_from(HEADER_NAMES),
    st.sampled_from(HEADER_NAMES).flatmap(_case),
    st.text(max_size=20),
)

hexes = st.text(alphabet=HEX, min_size=0, max_size=34)
near_valid = st.one_of(
    st.builds(lambda v, t, s, f, tail: f"{v}-{t}-{s}-{f}{tail}",
              st.sampled_from(["00", "01", "cc", "ff", "0", "000"]), hexes, hexes,
              st.text(alphabet=HEX, max_size=3), st.sampled_from(["", "-x", ".", " ", "-"])),
    st.builds(lambda t, s, p, f: f"{t}:{s}:{p}:{f}", hexes, hexes, hexes,
              st.text(alphabet=HEX, max_size=3)),
    st.builds(lambda t, s, x: f"{t}-{s}{x}", hexes, hexes,
              st.sampled_from(["", "-1", "-0", "-d", "-x", "-1-" + "a" * 16, "-1-zz"])),
    st.sampled_from(["0", "1", "d", "true", "false", ""]),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6).map(
        lambda kv: ",".join(f"{k}={v}" for k, v in kv)),
    st.text(alphabet="abc=,;% \t+%0123456789ABCDEF@*/-_", max_size=60),
)
values = st.one_of(st.text(max_size=80), near_valid)
entry_values = st.one_of(
    values, values, values,
    st.lists(values, max_size=3),
    st.tuples(values, values),
    st.none(), st.integers(), st.binary(max_size=10), st.builds(object),
)
carriers = st.dictionaries(
    st.one_of(names, names, names, st.integers(), st.binary(max_size=8), st.none()),
    entry_values, max_size=12)
pairs = st.lists(st.tuples(names, values), max_size=12)

propagator_sets = st.one_of(
    st.sampled_from([[n] for n in KNOWN_PROPAGATORS]),
    st.just(list(KNOWN_PROPAGATORS)),
    st.lists(st.sampled_from(KNOWN_PROPAGATORS), min_size=1, max_size=5, unique=True),
)

ALL = [make_propagation([n]) for n in KNOWN_PROPAGATORS] + [
    make_propagation(list(KNOWN_PROPAGATORS)),
    make_propagation(list(reversed(KNOWN_PROPAGATORS))),
    make_propagation(["jaeger"], text_map=True),
]


def check_result(fn):
    """Calls fn(); returns its SpanContext (or None) after checking it is valid."""
    try:
        ctx = fn()
    except SpanContextCorruptedException:
        return None
    if ctx is None:
        return None
    assert type(ctx) is SpanContext
    tid, sid = ctx.trace_id, ctx.span_id
    assert 0 <= tid < 2**128 and 0 <= sid < 2**64
    assert (tid == 0) == (sid == 0)
    if tid == 0:  # a container must hold something
        assert ctx.baggage or ctx.debug_id is not None or ctx.flags != FLAG_DEFERRED
    assert all(type(k) is str and type(v) is str for k, v in ctx.baggage.items())
    assert ctx.tracestate is None or type(ctx.tracestate) is str
    assert ctx.debug_id is None or type(ctx.debug_id) is str
    # and it can be sent on
    for p in ALL:
        p.inject_py(ctx, {})
    inject_binary(ctx, bytearray())
    return ctx


@SETTINGS
@given(carrier=carriers)
def test_every_extractor_on_arbitrary_dicts(carrier):
    for p in ALL:
        check_result(lambda: p.extract_py(carrier))


@SETTINGS
@given(names_=propagator_sets, carrier=carriers)
def test_random_propagator_sets(names_, carrier):
    p = make_propagation(names_)
    check_result(lambda: p.extract_py(carrier))


@SETTINGS
@given(items=pairs)
def test_repeated_headers_in_messages(items):
    msg = email.message.Message()
    for k, v in items:
        if not k or any(c in k for c in ":\r\n") or any(c in v for c in "\r\n"):
            continue
        msg[k] = v
    for p in ALL:
        check_result(lambda: p.extract_py(msg))


@SETTINGS
@given(data=st.binary(max_size=200))
def test_binary_arbitrary_bytes(data):
    check_result(lambda: extract_binary(data))
    check_result(lambda: extract_binary(bytearray(data)))


def _valid_payload():
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
                      {"user": "alice", "k": "\u00e9"}, tracestate="a=1")
    carrier = bytearray()
    inject_binary(ctx, carrier)
    return bytes(carrier)


VALID_PAYLOAD = _valid_payload()


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_PAYLOAD) - 1), st.integers(0, 255)),
                      min_size=1, max_size=4),
       cut=st.integers(0, len(VALID_PAYLOAD)), extra=st.binary(max_size=4))
def test_binary_mutated_payloads(edits, cut, extra):
    data = bytearray(VALID_PAYLOAD)
    for pos, byte in edits:
        data[pos] = byte
    data = bytes(data[:cut]) + extra
    check_result(lambda: extract_binary(data))


# -- round trips -------------------------------------------------------------------------

trace_ids = st.one_of(st.integers(1, 2**64 - 1), st.integers(1, 2**128 - 1))
span_ids = st.integers(1, 2**64 - 1)
bag_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
baggages = st.dictionaries(bag_text.filter(bool), bag_text, max_size=8)
tc_key = st.from_regex(r"[a-z0-9][a-z0-9_\-*/@]{0,10}", fullmatch=True)
tc_value = st.from_regex(r"[\x21-\x2b\x2d-\x3c\x3e-\x7e]{1,10}", fullmatch=True)
tracestates = st.one_of(st.none(), st.dictionaries(tc_key, tc_value, min_size=1, max_size=5).map(
    lambda d: ",".join(f"{k}={v}" for k, v in d.items())))


@SETTINGS
@given(tid=trace_ids, sid=span_ids, sampled=st.booleans(), debug=st.booleans(),
       baggage=baggages, tracestate=tracestates)
def test_round_trips(tid, sid, sampled, debug, baggage, tracestate):
    ctx = SpanContext(tid, sid, sampled, baggage, debug=debug, tracestate=tracestate)
    # W3C: ids, sampled, tracestate, every baggage item
    carrier = {}
    make_propagation(["tracecontext", "baggage"]).inject_py(ctx, carrier)
    back = make_propagation(["tracecontext", "baggage"]).extract_py(carrier)
    assert (back.trace_id, back.span_id, back.sampled, back.tracestate, back.baggage) == (
        tid, sid, sampled, tracestate, baggage)
    # B3 single and multi: ids and the sampling state (in B3 debug implies sampled)
    for name in ("b3", "b3multi"):
        carrier = {}
        make_propagation([name]).inject_py(ctx, carrier)
        back = make_propagation([name]).extract_py(carrier)
        assert (back.trace_id, back.span_id, back.flags) == (tid, sid,
                                                             ctx.flags | (1 if debug else 0))
    # Jaeger: ids, flags, the baggage items whose keys are tokens (lowercased)
    for text_map in (False, True):
        carrier = {}
        make_propagation(["jaeger"], text_map=text_map).inject_py(ctx, carrier)
        back = make_propagation(["jaeger"], text_map=text_map).extract_py(carrier)
        assert (back.trace_id, back.span_id, back.flags) == (tid, sid, ctx.flags)
        tokens = {k.lower(): v for k, v in baggage.items()
                  if all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in k)}
        assume(len(tokens) == len({k for k in baggage if k.lower() in tokens}))
        assert back.baggage == tokens
    # binary: everything
    carrier = bytearray()
    inject_binary(ctx, carrier)
    assert extract_binary(carrier) == ctx


# -- the one-pass dict path against the general path ------------------------------------

def _outcome(prop, carrier):
    """What extract gives (ids, flags, baggage, tracestate, debug id, or the exception
    type) and how the codec counters moved."""
    from fasttrace._carrier import codec_stats
    before = codec_stats()
    try:
        ctx = prop.extract_py(carrier)
        got = None if ctx is None else (ctx.trace_id, ctx.span_id, ctx.flags, dict(ctx.baggage),
                                        ctx.tracestate, ctx.debug_id)
    except SpanContextCorruptedException:
        got = "corrupt"
    after = codec_stats()
    return got, {key: after[key] - before[key] for key in after}


JAEGER_ONLY = [make_propagation(["jaeger"]), make_propagation(["jaeger"], text_map=True)]
jaeger_carriers = st.dictionaries(
    st.one_of(names, st.sampled_from(["uber-trace-id", "uberctx-k", "user-agent", "User-Agent",
                                      "UBERCTX-Big", "jaeger-debug-id"]), st.integers()),
    st.one_of(values, st.sampled_from([
        "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331:0:1", "b7ad6b7169203331:1:0:3",
        " 1:2:0:1 ", "a%3Ab%3A0%3A1", "1:2:3:1ff"]), st.lists(values, max_size=2), st.none()),
    max_size=8)


@SETTINGS
@given(jaeger_carriers, st.sampled_from(JAEGER_ONLY))
def test_jaeger_dict_fast_path_matches_the_general_path(carrier, prop):
    from fasttrace._carrier import Propagation, Propagator
    from fasttrace._jaeger import JaegerPropagator
    fast = _outcome(prop, carrier)
    # next to a propagator that reads nothing, the lone-propagator path is not taken
    general_prop = Propagation([JaegerPropagator(url_encoding=not prop.text_map), Propagator()],
                               text_map=prop.text_map)
    general = _outcome(general_prop, carrier)
    assert fast == general


class _Headers(dict):
    """A dict subclass: inject takes its general path (exact dicts have a fast one)."""


baggage_maps = st.dictionaries(
    st.one_of(st.sampled_from(["user", "tenant", "k", "bad key", "", "Ünï"]), st.text(max_size=10)),
    st.one_of(st.text(max_size=40), st.sampled_from(["acme eu-1", "\udc80", "€" * 3000])),
    max_size=6)


@SETTINGS
@given(baggage_maps, st.sampled_from(JAEGER_ONLY))
def test_jaeger_inject_into_a_dict_matches_the_general_path(baggage, prop):
    from fasttrace._carrier import codec_stats
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, baggage)
    results = []
    for carrier in ({}, _Headers(), {}):    # the second {}: names now cached
        before = codec_stats()["baggage_dropped"]
        prop.inject_py(ctx, carrier)
        results.append((dict(carrier), codec_stats()["baggage_dropped"] - before))
    assert results[0] == results[1] == results[2]

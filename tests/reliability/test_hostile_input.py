# SPDX-License-Identifier: Apache-2.0
"""Hostile input from the network and from application code: header bombs, malformed
and oversized headers and baggage, invalid UTF-8, NUL bytes, huge tag and log values.
Limits hold, extraction stays fast, tracer.extract() only ever returns None or a
SpanContext or raises SpanContextCorruptedException, and nothing from a carrier is ever
evaluated."""
import email.message
import time

import opentracing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentracing import Format, SpanContextCorruptedException

import fasttrace
from fasttrace.propagation import codec_stats

from support.servers import report

PROPAGATORS = ("tracecontext", "baggage", "jaeger", "b3", "b3multi")
MAX_BAGGAGE_MEMBERS = 64
MAX_BAGGAGE_BYTES = 8192
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UBER = "0af7651916cd43dd8448eb211c80319c:b7ad6b7169203331:0:1"

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tracers():
    made = {name: fasttrace.Tracer("hostile", propagators=(name,)) for name in PROPAGATORS}
    made["all"] = fasttrace.Tracer("hostile", propagators=PROPAGATORS)
    yield made
    for t in made.values():
        t.close()


def extract_ok(tracer, fmt, carrier):
    """The only outcomes extract() may have."""
    try:
        ctx = tracer.extract(fmt, carrier)
    except SpanContextCorruptedException:
        return "corrupt"
    assert ctx is None or isinstance(ctx, fasttrace.SpanContext), type(ctx)
    if ctx is not None:
        # and whatever came back is usable: a child span, an injection
        with tracer.start_active_span("child", child_of=ctx) as scope:
            scope.span.set_tag("ok", True)
        tracer.inject(ctx, Format.HTTP_HEADERS, {})
        check_baggage_limits(ctx.baggage)
    return ctx


def baggage_bytes(baggage):
    return sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
               for k, v in baggage.items())


def check_baggage_limits(baggage):
    assert len(baggage) <= MAX_BAGGAGE_MEMBERS
    assert baggage_bytes(baggage) <= MAX_BAGGAGE_BYTES      # bytes, not characters


def timed_extract(tracer, fmt, carrier, bound=1.0):
    t0 = time.perf_counter()
    result = extract_ok(tracer, fmt, carrier)
    elapsed = time.perf_counter() - t0
    assert elapsed < bound, elapsed
    return result, elapsed


# -- header bombs ----------------------------------------------------------------------

def test_huge_baggage_header(tracers):
    bomb = ",".join(f"k{i}={'v' * 50}" for i in range(40_000))      # ~2.3 MB
    worst = 0.0
    for name in ("baggage", "all"):
        for fmt in (Format.HTTP_HEADERS, Format.TEXT_MAP):
            ctx, elapsed = timed_extract(tracers[name], fmt,
                                         {"traceparent": TP, "baggage": bomb})
            worst = max(worst, elapsed)
            assert isinstance(ctx, fasttrace.SpanContext)
            assert 0 < len(ctx.baggage) <= MAX_BAGGAGE_MEMBERS
    report("hostile/baggage-bomb", header_bytes=len(bomb), worst_extract_s=worst)


def test_ten_thousand_baggage_members_and_single_huge_member(tracers):
    many = ",".join(f"k{i}=v" for i in range(10_000))
    huge = "k=" + "v" * 1_000_000
    for carrier in ({"baggage": many}, {"baggage": huge}, {"baggage": huge + "," + many},
                    {"jaeger-baggage": many}, {"jaeger-baggage": huge}):
        carrier["traceparent"] = TP
        carrier["uber-trace-id"] = UBER
        for name in ("baggage", "jaeger", "all"):
            timed_extract(tracers[name], Format.HTTP_HEADERS, dict(carrier))


def test_ten_thousand_uberctx_headers(tracers):
    carrier = {f"uberctx-k{i}": "v" * 20 for i in range(10_000)}
    carrier["uber-trace-id"] = UBER
    for name in ("jaeger", "all"):
        ctx, _ = timed_extract(tracers[name], Format.HTTP_HEADERS, carrier)
        assert isinstance(ctx, fasttrace.SpanContext)
        assert len(ctx.baggage) <= MAX_BAGGAGE_MEMBERS


def test_deeply_repeated_headers(tracers):
    # an email.message.Message (what http.server hands out) with 10k copies of each
    msg = email.message.Message()
    for _ in range(10_000):
        msg["traceparent"] = TP
        msg["baggage"] = "a=b"
        msg["uber-trace-id"] = UBER
        msg["b3"] = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
    for name in PROPAGATORS + ("all",):
        ctx, _ = timed_extract(tracers[name], Format.HTTP_HEADERS, msg, bound=2.0)
        if name == "tracecontext" and isinstance(ctx, fasttrace.SpanContext):
            pytest.fail("a repeated traceparent is invalid (W3C) and must be ignored")


@pytest.mark.parametrize("header", ["uberctx-k", "jaeger-baggage"])
def test_jaeger_baggage_limit_counts_utf8_bytes(tracers, header):
    value = "\U0001F600" * 5000                  # 5,000 characters, 20,000 UTF-8 bytes
    if header == "jaeger-baggage":
        value = "k=" + value
    ctx = tracers["jaeger"].extract(Format.HTTP_HEADERS, {"uber-trace-id": UBER,
                                                          header: value})
    assert baggage_bytes(ctx.baggage) <= MAX_BAGGAGE_BYTES
    assert ctx.baggage == {}                     # one member, over the limit: dropped whole


def test_jaeger_inject_counts_utf8_bytes(tracers):
    # 3,000 characters of 3 UTF-8 bytes each: 9,000 bytes, over the 8,192-byte limit
    # in TEXT_MAP (written as is), although 3,000 characters would fit
    ctx = tracers["jaeger"].extract(Format.HTTP_HEADERS, {"uber-trace-id": UBER})
    ctx = ctx.with_baggage_item("big", "\u20ac" * 3000).with_baggage_item("small", "x")
    for fmt in (Format.TEXT_MAP, Format.HTTP_HEADERS):
        out = {}
        tracers["jaeger"].inject(ctx, fmt, out)
        assert "uberctx-big" not in out and out["uberctx-small"] == "x"


def test_huge_tracestate_is_dropped(tracers):
    ts = ",".join(f"k{i}=v{i}" for i in range(50_000))
    ctx, _ = timed_extract(tracers["tracecontext"], Format.HTTP_HEADERS,
                           {"traceparent": TP, "tracestate": ts})
    assert isinstance(ctx, fasttrace.SpanContext) and ctx.span_id == 0xB7AD6B7169203331
    out = {}
    tracers["tracecontext"].inject(ctx, Format.HTTP_HEADERS, out)
    assert len(out.get("tracestate", "")) <= 512 * 33


def test_huge_values_in_id_headers(tracers):
    big = "f" * 1_000_000
    for carrier in ({"traceparent": big}, {"traceparent": f"00-{big}-{'a' * 16}-01"},
                    {"uber-trace-id": big}, {"uber-trace-id": f"{big}:1:0:1"},
                    {"b3": big}, {"x-b3-traceid": big, "x-b3-spanid": big},
                    {"traceparent": TP + "-" + big}):
        for name in PROPAGATORS + ("all",):
            timed_extract(tracers[name], Format.HTTP_HEADERS, carrier)


@pytest.mark.parametrize("value", [
    "\x00", TP + "\x00", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033\x0031-01",
    "\udcff\udcfe", "k=\udcff", "k=%ff%fe%00", "\ufeff" + TP, "k=v\r\nx-injected: 1",
    "ключ=значение", "k=" + "\U0001F600" * 5000, "%" * 10_000, ";" * 10_000,
    "=" * 10_000, "," * 100_000,
], ids=lambda v: repr(v[:24]) + (f"..({len(v)})" if len(v) > 24 else ""))
def test_invalid_utf8_nul_and_control_characters(tracers, value):
    for key in ("traceparent", "tracestate", "baggage", "uber-trace-id", "uberctx-k",
                "jaeger-baggage", "jaeger-debug-id", "b3", "x-b3-traceid", "x-b3-sampled"):
        carrier = {"traceparent": TP, "uber-trace-id": UBER, key: value}
        for name in PROPAGATORS + ("all",):
            for fmt in (Format.HTTP_HEADERS, Format.TEXT_MAP):
                ctx, _ = timed_extract(tracers[name], fmt, dict(carrier))
                if isinstance(ctx, fasttrace.SpanContext):
                    for k, v in ctx.baggage.items():
                        assert isinstance(k, str) and isinstance(v, str)


def test_bytes_and_odd_carrier_values(tracers):
    class Exploding:
        def __str__(self):
            raise RuntimeError("boom")
        __repr__ = __format__ = __str__

        def __eq__(self, other):
            raise RuntimeError("boom")
        __hash__ = None

    class ExplodingMapping(dict):
        def items(self):
            raise RuntimeError("boom")

        def keys(self):
            raise RuntimeError("boom")

        def __iter__(self):
            raise RuntimeError("boom")

        def get(self, *a):
            raise RuntimeError("boom")

    carriers = [
        {"traceparent": TP.encode()}, {"baggage": b"k=\xff\xfe"},
        {"traceparent": None}, {"traceparent": 12345}, {"traceparent": Exploding()},
        {"uber-trace-id": Exploding()}, {b"traceparent": TP}, {1: 2},
        {"baggage": ["a=b"]}, ExplodingMapping(traceparent=TP), {"uberctx-k": Exploding()},
    ]
    for carrier in carriers:
        for name in PROPAGATORS + ("all",):
            for fmt in (Format.HTTP_HEADERS, Format.TEXT_MAP):
                extract_ok(tracers[name], fmt, carrier)
    for bad in (None, 42, "traceparent", [("traceparent", TP)], object()):
        for fmt in (Format.HTTP_HEADERS, Format.TEXT_MAP, Format.BINARY):
            try:
                extract_ok(tracers["all"], fmt, bad)
            except (opentracing.InvalidCarrierException, TypeError):
                pass        # a carrier of the wrong type is the caller's bug


def test_binary_bombs(tracers):
    tracer = tracers["all"]
    for payload in (b"\xf1" + b"\xff" * 10_000_000, b"\x00" * 10_000_000,
                    bytes(range(256)) * 4096, b"\xf1\x01" + b"\x00" * 26 + b"\xff" * 100):
        for carrier in (payload, bytearray(payload), memoryview(payload)):
            timed_extract(tracer, Format.BINARY, carrier)


def test_nothing_from_a_carrier_is_evaluated(tracers):
    marker = []
    payloads = [
        "__import__('builtins').marker_hit()", "{0.__class__.__init__.__globals__}",
        "%s%s%s%n", "${jndi:ldap://x/a}", "`touch /tmp/x`", "$(id)",
        "eval(compile('1','x','eval'))", "{{7*7}}",
    ]
    import builtins
    builtins.marker_hit = lambda: marker.append(1)
    try:
        for p in payloads:
            carrier = {"traceparent": TP, "baggage": f"k={p}", "uber-trace-id": UBER,
                       "uberctx-code": p, "jaeger-debug-id": p, "jaeger-baggage": f"k={p}"}
            for name in PROPAGATORS + ("all",):
                ctx = extract_ok(tracers[name], Format.HTTP_HEADERS, carrier)
                if isinstance(ctx, fasttrace.SpanContext) and "code" in ctx.baggage:
                    # data comes back as the same (decoded) text, never a result
                    assert ctx.baggage["code"] in (p, p.replace("%", "%"))
    finally:
        del builtins.marker_hit
    assert marker == []


# -- fuzzing tracer.extract for every format and propagator ------------------------------

HEADER_NAMES = ["traceparent", "tracestate", "baggage", "uber-trace-id", "uberctx-user",
                "jaeger-debug-id", "jaeger-baggage", "b3", "x-b3-traceid", "x-b3-spanid",
                "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "Traceparent", "BAGGAGE"]

near_valid = st.sampled_from([
    TP, TP[:-1], TP.replace("-", ":"), "ff-" + TP[3:], "00-" + "0" * 32 + TP[35:], UBER,
    UBER.replace(":", "%3A"), "0:0:0:0", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    "80f198ee56343ba8-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90", "a=1,b=2;prop", "k=%zz",
    "ro=1,congo=t61rcWkgMzE", "1", "0", "d", "true",
])
hostile_text = st.one_of(
    near_valid,
    st.text(max_size=64),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=200),
    st.builds(lambda s, n: s * n, st.sampled_from(["a=b,", "%", ",", "f", "\x00", "k=v;p;"]),
              st.integers(1, 3000)),
    st.tuples(near_valid, st.integers(0, 60), st.text(max_size=3)).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:]),
)
header_dicts = st.dictionaries(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=12)),
                               hostile_text, max_size=8)


@SETTINGS
@given(carrier=header_dicts, name=st.sampled_from(PROPAGATORS + ("all",)),
       fmt=st.sampled_from([Format.HTTP_HEADERS, Format.TEXT_MAP]))
def test_fuzz_text_formats_every_propagator(tracers, carrier, name, fmt):
    timed_extract(tracers[name], fmt, carrier)


@SETTINGS
@given(items=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), hostile_text), max_size=12),
       name=st.sampled_from(PROPAGATORS + ("all",)))
def test_fuzz_repeated_headers_in_messages(tracers, items, name):
    msg = email.message.Message()
    for k, v in items:
        if any(c in v for c in "\r\n"):
            continue
        msg[k] = v
    timed_extract(tracers[name], Format.HTTP_HEADERS, msg)


def _binary_valid():
    ctx = fasttrace.Tracer("b").start_span("x").context
    out = bytearray()
    t = fasttrace.Tracer("b")
    span = t.start_span("x")
    span.set_baggage_item("user", "alice")
    t.inject(span.context, Format.BINARY, out)
    del ctx
    return bytes(out)


BINARY = _binary_valid()


@SETTINGS
@given(data=st.one_of(
    st.binary(max_size=300),
    st.tuples(st.lists(st.tuples(st.integers(0, len(BINARY) - 1), st.integers(0, 255)),
                       max_size=6), st.integers(0, len(BINARY)), st.binary(max_size=8)).map(
        lambda t: bytes(_mutate(BINARY, t[0]))[:t[1]] + t[2])))
def test_fuzz_binary(tracers, data):
    timed_extract(tracers["all"], Format.BINARY, data)
    timed_extract(tracers["all"], Format.BINARY, bytearray(data))


def _mutate(data, edits):
    out = bytearray(data)
    for pos, byte in edits:
        out[pos] = byte
    return out


def test_codec_counts_what_it_rejected(tracers):
    before = codec_stats()
    tracers["all"].extract(Format.HTTP_HEADERS, {
        "traceparent": "garbage", "baggage": ",".join(f"k{i}=v" for i in range(100))})
    after = codec_stats()
    assert after["malformed_traceparent"] > before["malformed_traceparent"]
    assert after["baggage_dropped"] > before["baggage_dropped"]


# -- huge values from application code ---------------------------------------------------

def test_huge_tag_and_log_values_are_truncated_and_counted():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer("big-values", reporter=reporter, max_value_length=1024,
                              max_tags=32, max_logs=8)
    huge = "x" * 10_000_000
    t0 = time.perf_counter()
    with tracer.start_active_span("op", tags={"start": huge}) as sc:
        span = sc.span
        span.set_tag("big", huge)
        span.set_tag("bytes", huge.encode())
        for i in range(10_000):
            span.set_tag(f"tag{i}", i)
        for i in range(1000):
            span.log_kv({"event": huge, "i": i})
        span.log_kv({f"f{i}": huge for i in range(100)})
        span.set_baggage_item("b", huge[:100])
    elapsed = time.perf_counter() - t0
    [finished] = reporter.spans
    stats = tracer.stats()["truncated"]
    assert len(finished.tags) <= 32
    for v in finished.tags.values():
        assert len(str(v)) <= 1024 + 64
    assert len(finished.logs) <= 8
    for _, fields in finished.logs:
        for v in fields.values():
            assert len(str(v)) <= 1024 + 64
    assert stats["tags"] > 0 and stats["logs"] > 0 and stats["values"] > 0
    assert elapsed < 5
    tracer.close()
    report("hostile/huge-values", seconds=elapsed, tags_dropped=stats["tags"],
           logs_dropped=stats["logs"], values_truncated=stats["values"])


def test_unprintable_and_hostile_objects_as_tag_and_log_values():
    class Evil:
        def __str__(self):
            raise RuntimeError("no")
        __repr__ = __str__

    class Recursive(list):
        pass
    rec = Recursive()
    rec.append(rec)
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer("evil", reporter=reporter)
    with tracer.start_active_span("op") as sc:
        sc.span.set_tag("evil", Evil())
        sc.span.set_tag(Evil(), 1)
        sc.span.log_kv({"evil": Evil(), "rec": rec})
        sc.span.set_operation_name("op2")
    [finished] = reporter.spans
    assert finished.operation_name == "op2"
    tracer.close()

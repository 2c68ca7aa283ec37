# SPDX-License-Identifier: Apache-2.0
"""Propagation codecs: inject + extract round trips, fasttrace next to the peers.

One pytest-benchmark group per format; in each, the same round trip -- inject a
context into a fresh dict, extract it back -- through fasttrace's codec
(``Propagation.inject_py`` / ``extract_py``, ``inject_binary`` / ``extract_binary``)
and through the peers' own codecs for that format: OpenTelemetry's propagators
(``TraceContextTextMapPropagator``, ``W3CBaggagePropagator``, ``B3SingleFormat``,
``B3MultiFormat``, ``JaegerPropagator``) and jaeger-client's ``TextCodec`` /
``BinaryCodec``.  Contexts are built before timing; every callable is run once untimed
and must give back the ids it was given, so nothing can win by doing nothing::

    pytest benchmarks/test_bench_propagation.py --benchmark-only
    pytest benchmarks/test_bench_propagation.py --benchmark-disable   # run once, as tests

Target (issue 3): fasttrace at least 10x faster than each peer in its group.

``test_paired_speedup`` measures those ratios robustly on a shared, noisy machine: per
group it alternates short rounds of fasttrace and of each peer and records the median
of the per-pair ratios (``extra_info["speedup"]``), so a slow patch of the machine
slows both sides of a pair.
"""
from __future__ import annotations

import statistics
import time

import pytest

from fasttrace._binary import extract_binary, inject_binary
from fasttrace._context import SpanContext
from fasttrace.propagation import make_propagation

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
BAGGAGE = {"user": "alice", "tenant": "acme eu-1"}
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


# -- fasttrace ---------------------------------------------------------------------------

def ours(names, baggage=None, tracestate=None, text_map=False):
    prop = make_propagation(names, text_map=text_map)
    ctx = SpanContext(TRACE_ID, SPAN_ID, True, baggage, tracestate=tracestate)
    inject, extract = prop.inject_py, prop.extract_py

    def round_trip():
        carrier = {}
        inject(ctx, carrier)
        return extract(carrier)

    def check(result):
        assert (result.trace_id, result.span_id, result.sampled) == (TRACE_ID, SPAN_ID, True)
        assert result.baggage == (baggage or {})
        assert result.tracestate == tracestate

    return round_trip, check


def ours_binary(baggage=None):
    ctx = SpanContext(TRACE_ID, SPAN_ID, True, baggage)

    def round_trip():
        carrier = bytearray()
        inject_binary(ctx, carrier)
        return extract_binary(carrier)

    def check(result):
        assert result == ctx

    return round_trip, check


# -- OpenTelemetry -----------------------------------------------------------------------

def otel(make_propagator, baggage=None, tracestate=None):
    otel_baggage = pytest.importorskip("opentelemetry.baggage")
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace.span import TraceState

    prop = make_propagator()
    sc = trace.SpanContext(TRACE_ID, SPAN_ID, is_remote=False,
                           trace_flags=trace.TraceFlags(1),
                           trace_state=TraceState.from_header([tracestate]) if tracestate else None)
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(sc), Context())
    for key, value in (baggage or {}).items():
        ctx = otel_baggage.set_baggage(key, value, ctx)
    inject, extract = prop.inject, prop.extract

    def round_trip():
        carrier = {}
        inject(carrier, ctx)
        return extract(carrier)

    def check(result):
        got = trace.get_current_span(result).get_span_context()
        assert (got.trace_id, got.span_id, got.trace_flags.sampled) == (TRACE_ID, SPAN_ID, True)
        assert dict(otel_baggage.get_all(result)) == (baggage or {})

    return round_trip, check


def otel_w3c():
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    return TraceContextTextMapPropagator()


def otel_w3c_baggage():
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    return CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def otel_b3():
    return pytest.importorskip("opentelemetry.propagators.b3").B3SingleFormat()


def otel_b3multi():
    return pytest.importorskip("opentelemetry.propagators.b3").B3MultiFormat()


def otel_jaeger():
    return pytest.importorskip("opentelemetry.propagators.jaeger").JaegerPropagator()


# -- jaeger-client -----------------------------------------------------------------------

def jaeger_client(url_encoding=True, baggage=None, binary=False):
    codecs = pytest.importorskip("jaeger_client.codecs")
    from jaeger_client import SpanContext as JaegerContext

    codec = codecs.BinaryCodec() if binary else codecs.TextCodec(url_encoding=url_encoding)
    ctx = JaegerContext(trace_id=TRACE_ID, span_id=SPAN_ID, parent_id=None, flags=1,
                        baggage=dict(baggage or {}))
    inject, extract = codec.inject, codec.extract
    new_carrier = bytearray if binary else dict

    def round_trip():
        carrier = new_carrier()
        inject(ctx, carrier)
        return extract(carrier)

    def check(result):
        assert (result.trace_id, result.span_id, result.flags) == (TRACE_ID, SPAN_ID, 1)
        assert result.baggage == (baggage or {})

    return round_trip, check


# -- the groups --------------------------------------------------------------------------

CASES = {
    # group: {implementation: factory}
    "propagation w3c traceparent": {
        "fasttrace": lambda: ours(["tracecontext"]),
        "otel": lambda: otel(otel_w3c),
    },
    "propagation w3c traceparent+tracestate+baggage": {
        "fasttrace": lambda: ours(["tracecontext", "baggage"], BAGGAGE, TRACESTATE),
        "otel": lambda: otel(otel_w3c_baggage, BAGGAGE, TRACESTATE),
    },
    "propagation b3 single": {
        "fasttrace": lambda: ours(["b3"]),
        "otel": lambda: otel(otel_b3),
    },
    "propagation b3 multi": {
        "fasttrace": lambda: ours(["b3multi"]),
        "otel": lambda: otel(otel_b3multi),
    },
    "propagation jaeger http_headers": {
        "fasttrace": lambda: ours(["jaeger"]),
        "otel": lambda: otel(otel_jaeger),
        "jaeger-client": lambda: jaeger_client(url_encoding=True),
    },
    "propagation jaeger http_headers + 2 baggage items": {
        "fasttrace": lambda: ours(["jaeger"], BAGGAGE),
        "otel": lambda: otel(otel_jaeger, BAGGAGE),
        "jaeger-client": lambda: jaeger_client(url_encoding=True, baggage=BAGGAGE),
    },
    "propagation jaeger text_map + 2 baggage items": {
        "fasttrace": lambda: ours(["jaeger"], BAGGAGE, text_map=True),
        "jaeger-client": lambda: jaeger_client(url_encoding=False, baggage=BAGGAGE),
    },
    "propagation binary + 2 baggage items": {
        "fasttrace": lambda: ours_binary(BAGGAGE),
        "jaeger-client": lambda: jaeger_client(baggage=BAGGAGE, binary=True),
    },
}

PARAMS = [
    pytest.param(group, impl, id=f"{group.replace('propagation ', '')}-{impl}",
                 marks=pytest.mark.benchmark(group=group))
    for group, impls in CASES.items()
    for impl in impls
]


@pytest.mark.parametrize("group,impl", PARAMS)
def test_round_trip(benchmark, group, impl):
    round_trip, check = CASES[group][impl]()
    check(round_trip())  # untimed: it really does the work
    benchmark.extra_info["impl"] = impl
    check(benchmark(round_trip))


PAIRED_ROUNDS = 200
PAIRED_NS = 200_000          # about this long per round and implementation


@pytest.mark.parametrize("group", list(CASES))
@pytest.mark.benchmark(group="propagation paired: peer / fasttrace, interleaved (extra_info)")
def test_paired_speedup(benchmark, group):
    impls = {impl: make()[0] for impl, make in CASES[group].items()}
    rounds = PAIRED_ROUNDS if benchmark.enabled else 2
    clock = time.perf_counter_ns

    def per_op(fn, n):
        t0 = clock()
        for _ in range(n):
            fn()
        return (clock() - t0) / n

    # calls per round: about PAIRED_NS of work for each implementation
    counts = {impl: max(1, int(PAIRED_NS // max(per_op(fn, 200), 1.0))) for impl, fn in impls.items()}
    if not benchmark.enabled:
        counts = dict.fromkeys(impls, 5)

    def measure():
        times = {impl: [] for impl in impls}
        ratios = {impl: [] for impl in impls if impl != "fasttrace"}
        for i in range(rounds):
            order = list(impls) if i % 2 else list(reversed(impls))
            got = {impl: per_op(impls[impl], counts[impl]) for impl in order}
            for impl, ns in got.items():
                times[impl].append(ns)
                if impl != "fasttrace":
                    ratios[impl].append(ns / got["fasttrace"])
        return ({impl: statistics.median(v) for impl, v in times.items()},
                {impl: statistics.median(v) for impl, v in ratios.items()})

    medians, speedups = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(
        group=group, paired_rounds=rounds,
        median_ns={impl: round(ns, 1) for impl, ns in medians.items()},
        speedup={impl: round(r, 2) for impl, r in speedups.items()})

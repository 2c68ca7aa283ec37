# SPDX-License-Identifier: Apache-2.0
"""Format.BINARY: the versioned layout documented in fasttrace/_binary.pyx.

No peer writes this layout, so the reference bytes here are built field by field
with ``struct`` from the documented grammar (a second, independent encoder), not
copied from our own output.
"""
from __future__ import annotations

import array
import struct

import pytest
from opentracing import InvalidCarrierException, SpanContextCorruptedException

from fasttrace._binary import extract_binary, inject_binary
from fasttrace._carrier import codec_stats
from fasttrace._context import SpanContext
from fasttrace.propagation import make_propagation

T = 0x0AF7651916CD43DD8448EB211C80319C
S = 0xB7AD6B7169203331


def reference(flags, trace_id, span_id, tracestate=b"", baggage=(), version=0xF1):
    """The layout, written independently from the grammar in the docs."""
    out = struct.pack(">BBQQQ", version, flags, trace_id >> 64, trace_id & (2**64 - 1), span_id)
    out += struct.pack(">H", len(tracestate)) + tracestate
    out += struct.pack(">B", len(baggage))
    for key, value in baggage:
        k, v = key.encode(), value.encode()
        out += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    return out


def test_layout_matches_the_documented_grammar():
    ctx = SpanContext(T, S, True, {"user": "alice", "k\u00e9y": "v\u2713"}, tracestate="a=1,b=2")
    carrier = bytearray()
    inject_binary(ctx, carrier)
    assert bytes(carrier) == reference(1, T, S, b"a=1,b=2",
                                       [("user", "alice"), ("k\u00e9y", "v\u2713")])
    carrier = bytearray()
    inject_binary(SpanContext(5, 6, False, debug=True), carrier)
    assert bytes(carrier) == reference(2, 5, 6)
    assert len(carrier) == 29


@pytest.mark.parametrize("ctx", [
    SpanContext(T, S, True),
    SpanContext(T, S, False),
    SpanContext(1, 1, True, debug=True),
    SpanContext(2**128 - 1, 2**64 - 1, True, {"a": "", "b": "x" * 1000}, tracestate="k=v"),
    SpanContext(0xABC, 0xDEF, True, {"\U0001f600": "\u00e9", "sp ace": "1 2"}),
])
@pytest.mark.parametrize("kind", [bytearray, bytes, memoryview])
def test_round_trip(ctx, kind):
    carrier = bytearray()
    inject_binary(ctx, carrier)
    back = extract_binary(kind(carrier))
    assert back == ctx
    assert (back.trace_id, back.span_id, back.sampled, back.debug, back.baggage,
            back.tracestate) == (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.debug,
                                 ctx.baggage, ctx.tracestate)


def test_flags_survive():
    for flags in (0, 1, 2, 3, 8, 9, 16, 27):
        back = extract_binary(reference(flags, T, S))
        assert back.flags == flags


def test_carrier_content_is_replaced():
    carrier = bytearray(b"old content that is longer than a context" * 3)
    inject_binary(SpanContext(T, S, True), carrier)
    assert bytes(carrier) == reference(1, T, S)


def test_container_context_round_trip():
    ctx = make_propagation(["baggage"]).extract_py({"baggage": "a=1"})
    carrier = bytearray()
    inject_binary(ctx, carrier)
    back = extract_binary(carrier)
    assert (back.trace_id, back.span_id, back.baggage) == (0, 0, {"a": "1"})


def test_extract_array_buffer():
    carrier = array.array("B", reference(1, T, S))
    assert extract_binary(carrier).trace_id == T


@pytest.mark.parametrize("carrier", [bytearray(), b"", memoryview(b"")])
def test_empty_is_none(carrier):
    assert extract_binary(carrier) is None


@pytest.mark.parametrize("carrier", [None, "text", 5, {"a": 1}, [1, 2]])
def test_not_a_buffer_is_none(carrier):
    codec_stats(reset=True)
    assert extract_binary(carrier) is None
    assert codec_stats()["unreadable_carrier"] == 1


@pytest.mark.parametrize("carrier", [None, b"", "text", {}, memoryview(bytearray())])
def test_inject_needs_a_bytearray(carrier):
    with pytest.raises(InvalidCarrierException):
        inject_binary(SpanContext(T, S, True), carrier)


def test_every_truncation_is_corrupt():
    full = reference(1, T, S, b"a=1", [("k", "v"), ("key2", "value2")])
    assert extract_binary(full).baggage == {"k": "v", "key2": "value2"}
    for n in range(1, len(full)):
        with pytest.raises(SpanContextCorruptedException):
            extract_binary(full[:n])


CORRUPT = [
    ("version 0", reference(1, T, S, version=0x00)),
    ("version 2", reference(1, T, S, version=0xF2)),
    ("jaeger binary layout", struct.pack(">QQQQBI", 0, T & (2**64 - 1), S, 0, 1, 0)),
    ("unknown flag bit", reference(4, T, S)),
    ("high flag bit", reference(0x80, T, S)),
    ("trace id zero, span id not", reference(1, 0, S)),
    ("span id zero, trace id not", reference(1, T, 0)),
    ("trailing byte", reference(1, T, S) + b"\x00"),
    ("tracestate length past the end", reference(1, T, S)[:26] + b"\x00\x10abc\x00"),
    ("tracestate not printable", reference(1, T, S, b"a=\x01")),
    ("tracestate not ascii", reference(1, T, S, "a=\u00e9".encode())),
    ("too many baggage items", reference(1, T, S)[:-1] + b"\x41"
     + b"".join(struct.pack(">H", 1) + b"k" + struct.pack(">H", 0) for _ in range(65))),
    ("empty baggage key", reference(1, T, S)[:-1] + b"\x01\x00\x00\x00\x00"),
    ("invalid utf-8 key", reference(1, T, S)[:-1] + b"\x01\x00\x01\xff\x00\x00"),
    ("invalid utf-8 value", reference(1, T, S)[:-1] + b"\x01\x00\x01k\x00\x01\xff"),
    ("duplicate key", reference(1, T, S, baggage=[("k", "1"), ("k", "2")])),
    ("baggage over 8192 bytes", reference(1, T, S, baggage=[("a", "x" * 5000), ("b", "y" * 5000)])),
    ("garbage", b"\x00garbage"),
]


@pytest.mark.parametrize("case,data", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt(case, data):
    codec_stats(reset=True)
    for carrier in (data, bytearray(data), memoryview(data)):
        with pytest.raises(SpanContextCorruptedException):
            extract_binary(carrier)
    assert codec_stats()["malformed_binary"] == 3


def test_inject_limits_drop_whole_items():
    codec_stats(reset=True)
    items = {f"k{i:02d}": "v" for i in range(70)}
    carrier = bytearray()
    inject_binary(SpanContext(T, S, True, items), carrier)
    assert len(extract_binary(carrier).baggage) == 64
    assert codec_stats()["baggage_dropped"] == 6
    codec_stats(reset=True)
    big = {"a": "x" * 5000, "b": "y" * 5000, "c": "z"}
    carrier = bytearray()
    inject_binary(SpanContext(T, S, True, big), carrier)
    assert extract_binary(carrier).baggage == {"a": "x" * 5000, "c": "z"}
    assert codec_stats()["baggage_dropped"] == 1


def test_inject_drops_unencodable_items_and_bad_tracestate():
    codec_stats(reset=True)
    carrier = bytearray()
    inject_binary(SpanContext(T, S, True, {"ok": "1", "bad": "\udc80"},
                              tracestate="x=\u00e9"), carrier)
    back = extract_binary(carrier)
    assert (back.baggage, back.tracestate) == ({"ok": "1"}, None)
    stats = codec_stats()
    assert (stats["baggage_dropped"], stats["tracestate_dropped"]) == (1, 1)

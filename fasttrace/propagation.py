# SPDX-License-Identifier: Apache-2.0
"""Propagation formats: the readable face of the compiled codecs in ``_codec.pyx``.

A tracer injects and extracts ``Format.TEXT_MAP`` / ``Format.HTTP_HEADERS`` through a
:class:`Propagation`, an ordered list of named propagators, and ``Format.BINARY``
through :func:`inject_binary` / :func:`extract_binary`.  The header grammars, the
decisions the specs leave to implementations, and the binary layout are documented in
full in the module docstring of ``fasttrace._codec`` (``help(fasttrace._codec)``).

Propagator names (``propagators=(...)`` on the Tracer, ``OTEL_PROPAGATORS``):

``tracecontext``
    W3C Trace Context: ``traceparent`` (Level 1) and ``tracestate`` (the editor's
    draft's grammar: a key is ``a-z``/``0-9`` then up to 255 of ``a-z 0-9 _ - * / @``,
    so ``foo@``, ``foo@@bar`` and ``1abc`` are keys).  An invalid
    traceparent is ignored (a new trace starts); a tracestate with a malformed member or
    more than 32 members is dropped as a whole; of a repeated key, the first member is
    kept.
``baggage``
    W3C Baggage: ``baggage``, percent-encoded UTF-8 values ("+" reads as a space, as
    OpenTelemetry Python writes it; space and "+" are written as ``%20`` and ``%2B``), at
    most 64 members and 8192 bytes (whole members beyond that are dropped and counted).
``jaeger``
    ``uber-trace-id``, ``uberctx-<key>``, ``jaeger-debug-id``, ``jaeger-baggage``.  A
    malformed ``uber-trace-id`` raises ``SpanContextCorruptedException``.
``b3`` / ``b3multi``
    Zipkin B3, single ``b3`` header or ``X-B3-*`` headers.  Invalid input is ignored.

Extraction matches header names case-insensitively in any mapping (``dict``,
``email.message.Message``, ``Mapping`` adapters), tries the propagators in order and
takes the first valid context; baggage from all of them is merged.  It returns
``None``, a ``SpanContext``, or raises ``opentracing.SpanContextCorruptedException``;
nothing else escapes.  A context holding only baggage or a Jaeger debug id (or a bare
B3 sampling decision) comes back as a *container*: trace and span id 0.

Binary layout, version 1 (big-endian)::

    offset  size  field
    0       1     0xF1: high nibble F = fasttrace, low nibble = layout version 1
    1       1     flags: 1 sampled, 2 debug, 8 firehose, 16 deferred (other bits: corrupt)
    2       8     trace id, high 64 bits
    10      8     trace id, low 64 bits
    18      8     span id
    26      2     tracestate length T (0: none), then T bytes of printable ASCII
    28+T    1     baggage item count N (at most 64), then N times:
                  2-byte key length K (>= 1), K bytes UTF-8 key,
                  2-byte value length V, V bytes UTF-8 value
                  (keys + values at most 8192 bytes)

    Nothing may follow.  Ids are both zero (a baggage-only container) or both
    non-zero.  inject_binary replaces the content of a bytearray carrier;
    extract_binary reads any contiguous buffer (empty: None).

Counters of what was ignored or dropped are in :func:`codec_stats`.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Union

from fasttrace._codec import (
    KNOWN_PROPAGATORS,
    B3MultiPropagator,
    B3SinglePropagator,
    JaegerPropagator,
    Propagation,
    Propagator,
    TraceContextPropagator,
    W3CBaggagePropagator,
)
from fasttrace._codec import codec_stats as _codec_stats
from fasttrace._codec import extract_binary as _extract_binary
from fasttrace._codec import inject_binary as _inject_binary
from fasttrace._codec import make_propagation as _make_propagation
from fasttrace._context import SpanContext

__all__ = [
    "B3MultiPropagator",
    "B3SinglePropagator",
    "BINARY_VERSION",
    "DEFAULT_PROPAGATORS",
    "JaegerPropagator",
    "KNOWN_PROPAGATORS",
    "Propagation",
    "Propagator",
    "TraceContextPropagator",
    "W3CBaggagePropagator",
    "codec_stats",
    "extract_binary",
    "inject_binary",
    "make_propagation",
]

#: What a Tracer uses when no ``propagators`` are given (the OpenTelemetry default).
DEFAULT_PROPAGATORS = ("tracecontext", "baggage")

#: The first byte of every ``Format.BINARY`` payload this version writes.
BINARY_VERSION = 0xF1


def make_propagation(names: Union[str, Iterable[str]], *, text_map: bool = False) -> Propagation:
    """Builds the propagation for the given propagator names.

    Args:
        names: names from :data:`KNOWN_PROPAGATORS`, in the order extraction should try
            them; a comma-separated string (the ``OTEL_PROPAGATORS`` syntax) is split.
            Case and surrounding spaces are ignored, duplicates too; ``"none"`` adds
            nothing.
        text_map: build it for ``Format.TEXT_MAP``: Jaeger ``uberctx-`` values are then
            written and read without URL-encoding, as jaeger-client's TEXT_MAP codec
            does.  Every other format is the same for both.

    Returns:
        A :class:`Propagation`; ``inject_py(ctx, carrier)`` and ``extract_py(carrier)``
        call it from Python.

    Raises:
        ValueError: an unknown name; the message lists the known ones (configuration
            from the environment turns this into a warning).
        TypeError: a name that is not a str.
    """
    return _make_propagation(names, text_map=text_map)


def inject_binary(span_context: SpanContext, carrier: bytearray) -> None:
    """Writes ``span_context`` into ``carrier`` in the binary layout above.

    Args:
        span_context: a fasttrace SpanContext.
        carrier: a ``bytearray``; its previous content is replaced.

    Raises:
        opentracing.InvalidCarrierException: the carrier is not a bytearray.
    """
    _inject_binary(span_context, carrier)


def extract_binary(carrier: Union[bytes, bytearray, memoryview]) -> Optional[SpanContext]:
    """Reads a context written by :func:`inject_binary`.

    Args:
        carrier: ``bytes``, ``bytearray``, ``memoryview`` or any contiguous buffer.

    Returns:
        The SpanContext, or None when the carrier is empty (or not a buffer).

    Raises:
        opentracing.SpanContextCorruptedException: another layout version, truncated
            data, trailing bytes, impossible lengths or invalid UTF-8.
    """
    return _extract_binary(carrier)


def codec_stats(reset: bool = False) -> Dict[str, int]:
    """Process-wide counters of what the codecs ignored or dropped.

    Args:
        reset: zero the counters after reading them.

    Returns:
        ``malformed_traceparent``, ``tracestate_dropped``, ``baggage_dropped``,
        ``malformed_baggage``, ``malformed_jaeger``, ``malformed_b3``,
        ``malformed_binary``, ``unreadable_carrier``, ``extract_errors``.
    """
    return _codec_stats(reset)

# SPDX-License-Identifier: Apache-2.0
"""Propagation formats: the readable face of the compiled codecs.

A tracer injects and extracts ``Format.TEXT_MAP`` / ``Format.HTTP_HEADERS`` through a
:class:`Propagation`, an ordered list of named propagators, and ``Format.BINARY``
through :func:`inject_binary` / :func:`extract_binary`.  The header grammars, the
decisions the specs leave to implementations, and the binary layout are documented in
full in the module docstrings of the compiled modules: ``fasttrace._carrier`` (carriers,
the composite), ``fasttrace._w3c``, ``fasttrace._jaeger``, ``fasttrace._b3`` and
``fasttrace._binary`` (``help(fasttrace._w3c)``).

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

``Format.BINARY`` (:func:`inject_binary` / :func:`extract_binary`) has its own layout,
documented in ``fasttrace._binary`` (``help(fasttrace._binary)``).

``traceresponse`` (W3C Trace Context Level 2, the response header a server with tail
sampling sends back; in gRPC a trailing metadata entry): :func:`format_traceresponse`
and :func:`parse_traceresponse` (version 00 only, strictly; anything else is ignored and
counted), defined in ``fasttrace._w3c`` and used by the integrations.

Counters of what was ignored or dropped are in :func:`codec_stats`.
"""
from __future__ import annotations

from fasttrace._b3 import B3MultiPropagator, B3SinglePropagator
from fasttrace._binary import extract_binary as _extract_binary
from fasttrace._binary import inject_binary as _inject_binary
from fasttrace._carrier import Propagation, Propagator
from fasttrace._carrier import codec_stats as _codec_stats
from fasttrace._context import SpanContext
from fasttrace._jaeger import JaegerPropagator
from fasttrace._w3c import (
    TraceContextPropagator,
    W3CBaggagePropagator,
    format_traceresponse,
    parse_traceresponse,
)

# the annotations are strings (__future__), for type checkers only: no typing import
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

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
    "format_traceresponse",
    "inject_binary",
    "make_propagation",
    "parse_propagator_names",
    "parse_traceresponse",
]

#: The names :func:`make_propagation` accepts, in the order of the docs.
KNOWN_PROPAGATORS = ("tracecontext", "baggage", "jaeger", "b3", "b3multi")

# name -> the propagator for it (argument: text_map); a new format adds its line here
_FACTORIES: Dict[str, Callable[[bool], Propagator]] = {
    "tracecontext": lambda text_map: TraceContextPropagator(),
    "baggage": lambda text_map: W3CBaggagePropagator(),
    "jaeger": lambda text_map: JaegerPropagator(url_encoding=not text_map),
    "b3": lambda text_map: B3SinglePropagator(),
    "b3multi": lambda text_map: B3MultiPropagator(),
}

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
    return Propagation([_FACTORIES[key](text_map) for key in parse_propagator_names(names)],
                       text_map=text_map)


def parse_propagator_names(names: Union[str, Iterable[Any]],
                           on_unknown: Optional[Callable[[Any, Optional[str]], None]] = None,
                           *, none_clears: bool = False) -> Tuple[str, ...]:
    """The propagator names in `names`, normalised: the one parser of them.

    A str is split on ","; each name is stripped and lowercased; empty names, repeats
    and ``"none"`` are skipped.

    Args:
        names: a comma-separated str or an iterable of names.
        on_unknown: called as ``on_unknown(name, key)`` for a name that is not in
            :data:`KNOWN_PROPAGATORS` (key: its normalised form, None when the name is
            not a str), which is then skipped; None: raise instead.
        none_clears: ``"none"`` makes the result empty (``OTEL_PROPAGATORS``), rather
            than adding nothing.

    Raises:
        ValueError: an unknown name, without `on_unknown` (the message lists the known
            ones).
        TypeError: a name that is not a str, without `on_unknown`.
    """
    if isinstance(names, str):
        names = names.split(",")
    keys: list = []
    for name in names:
        if not isinstance(name, str):
            if on_unknown is None:
                raise TypeError(f"propagator names are str, not {type(name).__name__}")
            on_unknown(name, None)
            continue
        key = name.strip().lower()
        if not key or key in keys:
            continue
        if key == "none":
            if none_clears:
                return ()
            continue
        if key not in _FACTORIES:
            if on_unknown is None:
                raise ValueError(
                    f"unknown propagator {name!r}; known: {', '.join(KNOWN_PROPAGATORS)}")
            on_unknown(name, key)
            continue
        keys.append(key)
    return tuple(keys)


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
        ``malformed_traceparent``, ``malformed_traceresponse``, ``tracestate_dropped``,
        ``baggage_dropped``,
        ``malformed_baggage``, ``malformed_jaeger``, ``malformed_b3``,
        ``malformed_binary``, ``unreadable_carrier``, ``extract_errors``.
    """
    return _codec_stats(reset)

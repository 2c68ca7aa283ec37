# SPDX-License-Identifier: Apache-2.0
"""Stub for the compiled fasttrace._context (see _context.pyx)."""
from typing import Dict, Optional, final

import opentracing

# opentracing.SpanContext is in the compiled type's MRO at runtime (src/ft_pytype.h),
# so isinstance() holds and fasttrace contexts type-check wherever opentracing ones do.
@final
class SpanContext(opentracing.SpanContext):
    """Trace id (128-bit), span id (64-bit), sampling flags and baggage of a span."""

    trace_hi: int
    trace_lo: int
    flags: int
    tracestate: Optional[str]
    debug_id: Optional[str]
    def __init__(self, trace_id: int, span_id: int, sampled: bool = True,
                 baggage: Optional[Dict[str, str]] = None, debug: bool = False,
                 tracestate: Optional[str] = None) -> None: ...
    @property
    def trace_id(self) -> int: ...
    @property
    def span_id(self) -> int: ...
    @property
    def sampled(self) -> bool: ...
    @property
    def debug(self) -> bool: ...
    @property
    def baggage(self) -> Dict[str, str]: ...
    @property
    def trace_id_hex(self) -> str: ...
    @property
    def span_id_hex(self) -> str: ...
    def with_baggage_item(self, key: str, value: Optional[str]) -> "SpanContext": ...

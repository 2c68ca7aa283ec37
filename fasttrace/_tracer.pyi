# SPDX-License-Identifier: Apache-2.0
"""Stub for the compiled fasttrace._tracer (see _tracer.pyx)."""
from typing import Any, List, Mapping, Optional, Union

import opentracing

from fasttrace._context import SpanContext
from fasttrace._scope import Scope
from fasttrace._span import Span

_Parent = Union[opentracing.Span, opentracing.SpanContext, None]

class TracerCore(opentracing.Tracer):
    def start_span(self, operation_name: Optional[str] = None,
                   child_of: _Parent = None,
                   references: Optional[List[opentracing.Reference]] = None,
                   tags: Optional[Mapping[str, Any]] = None,
                   start_time: Optional[float] = None,
                   ignore_active_span: bool = False) -> Span: ...
    def start_active_span(self, operation_name: str,
                          child_of: _Parent = None,
                          references: Optional[List[opentracing.Reference]] = None,
                          tags: Optional[Mapping[str, Any]] = None,
                          start_time: Optional[float] = None,
                          ignore_active_span: bool = False,
                          finish_on_close: bool = True) -> Scope: ...
    @property
    def scope_manager(self) -> opentracing.ScopeManager: ...
    @property
    def active_span(self) -> Optional[Span]: ...
    def inject(self, span_context: Union[opentracing.SpanContext, opentracing.Span],
               format: str, carrier: Any) -> None: ...
    # None when the carrier holds no context (opentracing's own docstring allows it)
    def extract(self, format: str, carrier: Any) -> Optional[SpanContext]: ...  # type: ignore[override]

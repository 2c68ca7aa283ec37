# SPDX-License-Identifier: Apache-2.0
"""Stub for fasttrace.testing: MockTracer (opentracing's MockTracer API on fasttrace)."""
from typing import Any, ClassVar, Dict, List, Optional

import opentracing

from fasttrace._context import SpanContext
from fasttrace.batch import FinishedSpan
from fasttrace.tracer import Tracer

__all__ = ["LogData", "MockTracer", "SpanRecord"]

class LogData:
    key_values: Dict[str, Any]
    timestamp: float
    def __init__(self, key_values: Dict[str, Any], timestamp: float) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

class SpanRecord:
    finished: ClassVar[bool]
    operation_name: str
    tags: Dict[str, Any]
    logs: List[LogData]
    start_time: float
    finish_time: float
    parent_id: Optional[int]
    context: SpanContext
    references: List[opentracing.Reference]
    tracer: "MockTracer"
    finished_span: FinishedSpan
    def __init__(self, finished_span: FinishedSpan, context: SpanContext,
                 tracer: "MockTracer") -> None: ...
    def get_baggage_item(self, key: str) -> Optional[str]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class MockTracer(Tracer):
    def __init__(self, scope_manager: Optional[opentracing.ScopeManager] = None,
                 **tracer_kwargs: Any) -> None: ...
    def finished_spans(self) -> List[SpanRecord]: ...
    def reset(self) -> None: ...
    def register_propagator(self, format: str, propagator: Any) -> None: ...

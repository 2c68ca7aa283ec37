# SPDX-License-Identifier: Apache-2.0
"""Stub for fasttrace.tracer: the public Tracer (an opentracing.Tracer)."""
import concurrent.futures
from typing import Any, Dict, Generator, Iterable, Mapping, Optional, Union

import opentracing

from fasttrace._sampling import Sampler
from fasttrace._tracer import TracerCore
from fasttrace.batch import SpanBatch
from fasttrace.reporting import Reporter

DRAIN_CHUNK: int
DRAIN_THRESHOLD: int

class Closed(concurrent.futures.Future[bool]):
    def __init__(self, delivered: bool) -> None: ...
    def __bool__(self) -> bool: ...
    def __await__(self) -> Generator[Any, None, bool]: ...

class Tracer(TracerCore, opentracing.Tracer):
    service_name: str
    tags: Dict[str, Any]
    sampler: Sampler
    reporter: Reporter
    tail_sampling: Optional[Any]
    def __init__(self, service_name: str = "unknown_service",
                 sampler: Optional[Any] = None,
                 reporter: Optional[Reporter] = None,
                 propagators: Union[str, Iterable[str]] = ("tracecontext", "baggage"),
                 scope_manager: Optional[opentracing.ScopeManager] = None,
                 tags: Optional[Mapping[str, Any]] = None,
                 capacity: int = 65536, max_tags: int = 128, max_logs: int = 128,
                 max_value_length: int = 4096, trace_id_bits: int = 128,
                 tail_sampling: Optional[Any] = None) -> None: ...
    def flush(self, timeout: Optional[float] = None) -> bool: ...
    def close(self, timeout: Optional[float] = None) -> Closed: ...
    def stats(self) -> Dict[str, Any]: ...
    def keep_trace(self, span_context: Any) -> bool: ...
    def tail_verdict(self, span: Any, error: bool = False) -> str: ...
    def drain(self, max_spans: int = -1) -> Optional[SpanBatch]: ...
    @property
    def spans_finished(self) -> int: ...
    @property
    def spans_drained(self) -> int: ...
    @property
    def backlog(self) -> int: ...

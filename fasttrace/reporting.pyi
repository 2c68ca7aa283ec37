# SPDX-License-Identifier: Apache-2.0
"""Stub for fasttrace.reporting: Reporter/Exporter interfaces and the two reporters."""
from typing import Any, Dict, List, Optional

from fasttrace.batch import FinishedSpan, SpanBatch

class Reporter:
    """Base class of reporters: the tracer hands them batches of finished spans."""

    def report(self, batch: SpanBatch) -> None: ...
    def flush(self, timeout: Optional[float] = None) -> bool: ...
    def close(self, timeout: Optional[float] = None) -> None: ...

class Exporter:
    """Base class of exporters: send a batch to a backend."""

    def export(self, batch: SpanBatch) -> bool: ...
    def shutdown(self) -> None: ...

class InMemoryReporter(Reporter):
    max_spans: Optional[int]
    dropped: int
    def __init__(self, max_spans: Optional[int] = None) -> None: ...
    @property
    def spans(self) -> List[FinishedSpan]: ...
    def clear(self) -> None: ...
    def stats(self) -> Dict[str, int]: ...

class BatchReporter(Reporter):
    exporter: Exporter
    flush_interval: float
    max_batch_size: int
    max_queue_size: int
    exit_timeout: Optional[float]
    drain_threshold: int
    def __init__(self, exporter: Exporter, flush_interval: float = 1.0,
                 max_batch_size: int = 512, max_queue_size: int = 65536,
                 exit_timeout: Optional[float] = 5.0) -> None: ...
    def batch_ready(self, tracer: Any) -> None: ...
    def stats(self) -> Dict[str, Any]: ...

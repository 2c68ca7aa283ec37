# SPDX-License-Identifier: Apache-2.0
"""Stub for fasttrace.config: init_tracer() from OTEL_* environment variables."""
from typing import Any, Iterable, List, Mapping, Optional, Tuple

from fasttrace.batch import SpanBatch
from fasttrace.reporting import Exporter
from fasttrace.tracer import Tracer

KNOWN_PROPAGATORS: Tuple[str, ...]
DEFAULT_PROPAGATORS: Tuple[str, ...]
DEFAULT_OTLP_BASE: str
DEFAULT_ZIPKIN_ENDPOINT: str
DEFAULT_JSONL_PATH: str
DEFAULT_SAMPLER: str
SAMPLERS: Tuple[str, ...]

class FanOutExporter(Exporter):
    exporters: List[Exporter]
    def __init__(self, exporters: Iterable[Exporter]) -> None: ...
    def export(self, batch: SpanBatch) -> bool: ...
    def shutdown(self) -> None: ...

def init_tracer(environ: Optional[Mapping[str, str]] = None, set_global: bool = True,
                **overrides: Any) -> Tracer: ...

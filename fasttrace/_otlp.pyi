# SPDX-License-Identifier: Apache-2.0
from typing import Any, Dict, Optional, Sequence, Union

from fasttrace.batch import SpanBatch

def encode_export_request(batches: Union[SpanBatch, Sequence[SpanBatch]],
                          scope_version: str = "",
                          stats: Optional[Dict[str, Any]] = None) -> bytes:
    """Encodes SpanBatches as an OTLP ExportTraceServiceRequest (one ResourceSpans each);
    adds the number of values sent as placeholders to stats["unprintable_values"]."""

def decode_export_response(data: bytes) -> tuple[int, str]:
    """Reads an ExportTraceServiceResponse: (rejected_spans, error_message)."""

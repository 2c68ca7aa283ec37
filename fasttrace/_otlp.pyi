# SPDX-License-Identifier: Apache-2.0
from typing import Sequence, Union

from fasttrace.batch import SpanBatch

def encode_export_request(batches: Union[SpanBatch, Sequence[SpanBatch]],
                          scope_version: str = "") -> bytes:
    """Encodes SpanBatches as an OTLP ExportTraceServiceRequest (one ResourceSpans each)."""

def decode_export_response(data: bytes) -> tuple[int, str]:
    """Reads an ExportTraceServiceResponse: (rejected_spans, error_message)."""

# SPDX-License-Identifier: Apache-2.0
"""The Zipkin v2 JSON encoder over SpanBatch columns."""
from typing import Any, Dict, Optional

from fasttrace.batch import SpanBatch

def encode_zipkin(batch: SpanBatch, local_endpoint: bytes, resource_tags: Dict[str, str],
                  stats: Optional[Dict[str, Any]] = None) -> bytes:
    """A SpanBatch as a Zipkin v2 JSON array (UTF-8 bytes)."""
def json_string(s: str) -> bytes: ...

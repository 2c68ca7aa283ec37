# SPDX-License-Identifier: Apache-2.0
"""The SpanBatch contract's codes (fasttrace/_layout.pxd), and its typed view for encoders."""
from typing import Any, Dict, List, Optional

TAG_STR: int
TAG_BOOL: int
TAG_INT: int
TAG_FLOAT: int
TAG_BIGINT: int
UNINTERNED: int
FLAG_SAMPLED: int
FLAG_DEBUG: int
FLAG_FIRST_REF_FOLLOWS: int
FLAG_CONTEXT_PARENT: int

def raw_columns(batch: Any) -> Optional[Dict[str, Any]]: ...
def raw_column(batch: Any, name: str) -> Any: ...
def shadowed_tags(tag_key: Any, tag_obj: List[Any], start: int, stop: int) -> set[int]: ...

class BatchView:
    """Typed views over a SpanBatch's columns (for the compiled encoders)."""
    def __init__(self, batch: Any) -> None: ...

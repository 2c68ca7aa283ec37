# SPDX-License-Identifier: Apache-2.0
from typing import Any, Dict, List, Optional

class Arena:
    capacity: int
    tag_capacity: int
    log_capacity: int
    max_tags: int
    max_logs: int
    max_value_length: int
    max_interned: int
    finished_count: int
    names: List[str]
    keys: List[str]
    pid: int
    def __init__(self, capacity: int = ..., max_tags: int = ..., max_logs: int = ...,
                 max_value_length: int = ..., tag_capacity: int = ..., log_capacity: int = ...,
                 max_interned: int = ...) -> None: ...
    @property
    def slot_bytes(self) -> int: ...
    @property
    def tag_bytes(self) -> int: ...
    @property
    def total_bytes(self) -> int: ...
    @property
    def open_count(self) -> int: ...
    def reset_if_forked(self) -> None: ...
    def reset_after_fork(self) -> None: ...
    def drain(self, max_spans: int = ...) -> Optional[Dict[str, Any]]: ...
    def counters(self) -> Dict[str, Any]: ...

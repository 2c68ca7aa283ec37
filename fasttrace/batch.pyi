# SPDX-License-Identifier: Apache-2.0
"""Stub for fasttrace.batch: SpanBatch (what reporters receive) and FinishedSpan."""
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_TagValue = Union[str, bool, int, float]
#: (reference type: "child_of" | "follows_from", trace_id, span_id)
_SpanReference = Tuple[str, int, int]

from fasttrace._layout import (FLAG_DEBUG as FLAG_DEBUG,
                               FLAG_FIRST_REF_FOLLOWS as FLAG_FIRST_REF_FOLLOWS,
                               FLAG_SAMPLED as FLAG_SAMPLED, TAG_BIGINT as TAG_BIGINT,
                               TAG_BOOL as TAG_BOOL, TAG_FLOAT as TAG_FLOAT, TAG_INT as TAG_INT,
                               TAG_STR as TAG_STR, UNINTERNED as UNINTERNED,
                               shadowed_tags as shadowed_tags)

class FinishedSpan:
    """One finished span, as reporters and tests read it."""

    trace_id: int
    span_id: int
    parent_id: Optional[int]
    operation_name: str
    service_name: str
    start_ns: int
    end_ns: int
    tags: Dict[str, Any]
    logs: List[Tuple[int, Dict[str, Any]]]
    references: List[_SpanReference]
    sampled: bool
    debug: bool
    def __init__(self, trace_id: int, span_id: int, parent_id: Optional[int],
                 operation_name: str, service_name: str, start_ns: int, end_ns: int,
                 tags: Dict[str, Any], logs: List[Tuple[int, Dict[str, Any]]],
                 references: List[_SpanReference], sampled: bool = True,
                 debug: bool = False) -> None: ...
    @property
    def duration_ns(self) -> int: ...
    @property
    def trace_id_hex(self) -> str: ...
    @property
    def span_id_hex(self) -> str: ...
    def __eq__(self, other: object) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

class SpanBatch:
    """Finished spans drained from the arena, as numpy columns plus tag and log tables."""

    trace_id_hi: npt.NDArray[np.uint64]
    trace_id_lo: npt.NDArray[np.uint64]
    span_id: npt.NDArray[np.uint64]
    parent_id: npt.NDArray[np.uint64]
    start_ns: npt.NDArray[np.int64]
    end_ns: npt.NDArray[np.int64]
    flags: npt.NDArray[np.uint8]
    name_id: npt.NDArray[np.uint32]
    operation_names: List[str]
    tag_offsets: npt.NDArray[np.int32]
    tag_key: npt.NDArray[np.uint32]
    tag_type: npt.NDArray[np.uint8]
    tag_num: npt.NDArray[np.int64]
    tag_obj: List[Any]
    tag_keys: List[str]
    log_offsets: npt.NDArray[np.int32]
    log_ts: npt.NDArray[np.int64]
    log_fields: List[Dict[str, Any]]
    extras: List[Optional[Dict[str, Any]]]
    service_name: str
    resource: Dict[str, Any]
    def __init__(self, columns: Mapping[str, Any], service_name: str = "",
                 resource: Optional[Mapping[str, Any]] = None) -> None: ...
    @property
    def tag_float(self) -> npt.NDArray[np.float64]: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[FinishedSpan]: ...
    def __getitem__(self, i: int) -> FinishedSpan: ...
    def operation_name(self, i: int) -> str: ...
    def tags(self, i: int) -> Dict[str, Any]: ...
    def logs(self, i: int) -> List[Tuple[int, Dict[str, Any]]]: ...
    def references(self, i: int) -> List[_SpanReference]: ...
    def trace_id(self, i: int) -> int: ...
    def slice(self, start: Optional[int], stop: Optional[int]) -> "SpanBatch": ...
    def select(self, rows: Any) -> "SpanBatch": ...
    def concat(self, parts: Sequence["SpanBatch"]) -> "SpanBatch": ...

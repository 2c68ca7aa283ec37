# SPDX-License-Identifier: Apache-2.0
"""Jaeger Thrift (compact and binary) encoders over SpanBatch columns."""
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set,
                    Tuple, Union)

from typing_extensions import Self

from fasttrace._columns import Column
from fasttrace.batch import SpanBatch

PROTOCOL_COMPACT: int
PROTOCOL_BINARY: int
UNINTERNED: int

# {span index: (tag indices to drop, log indices to drop, (key, value) tag to add or None)}
_TrimPlan = Dict[int, Tuple[Set[int], Set[int], Optional[Tuple[str, Any]]]]
_Packets = Tuple[List[bytes], List[int], List[int]]

class SpanEncoder:
    """Encodes SpanBatches as jaeger.Span structs into a buffer kept between calls.

    Args:
        protocol: PROTOCOL_COMPACT (agent) or PROTOCOL_BINARY (collector).
    """
    count: int
    protocol: int
    #: values the last encode() sent as "<unprintable TypeName>"
    unprintable: int
    def __new__(cls, protocol: int = ...) -> Self: ...  # __cinit__
    def encode(self, batch: SpanBatch, trimmed: Optional[_TrimPlan] = ...,
               only: Optional[Sequence[int]] = ...) -> int:
        """Encodes the batch's spans (replacing what was held); returns how many."""
    def span_size(self, k: int) -> int: ...
    def data(self) -> Tuple[bytes, Column]:
        """(spans, int64 offsets of count + 1)."""
    def agent_packets(self, process: bytes, max_packet_size: int, seqid: int = ...) -> _Packets:
        """(datagrams, spans per datagram, indices of spans too large for any)."""
    def collector_body(self, process: bytes) -> bytes:
        """One jaeger.Batch struct."""

def encode_spans(batch: SpanBatch, protocol: int = ..., trimmed: Optional[_TrimPlan] = ...,
                 only: Optional[Sequence[int]] = ...) -> Tuple[bytes, Column]: ...
def encode_process(service_name: str,
                   tags: Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None] = ...,
                   protocol: int = ...) -> bytes: ...
def span_parts_sizes(batch: SpanBatch, i: int,
                     protocol: int = ...) -> Tuple[List[int], List[int]]: ...
def emit_batch_overhead(process_len: int, nspans: int = ..., seqid: int = ...) -> int: ...
def agent_packets(process: bytes, spans: bytes, offsets: Any, max_packet_size: int,
                  seqid: int = ...) -> _Packets: ...
def collector_body(process: bytes, spans: bytes, offsets: Any,
                   protocol: int = ...) -> bytes: ...

# SPDX-License-Identifier: Apache-2.0
from typing import final

from fasttrace._carrier import Propagator

@final
class TraceContextPropagator(Propagator):
    def __init__(self) -> None: ...

@final
class W3CBaggagePropagator(Propagator):
    def __init__(self) -> None: ...

def format_traceresponse(trace_id: int, span_id: int, sampled: bool) -> str: ...
def parse_traceresponse(value: object) -> tuple[int, int, int] | None: ...

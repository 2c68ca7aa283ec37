# SPDX-License-Identifier: Apache-2.0
from typing import Any, Dict, Optional, Tuple

class Sampler:
    errors: int
    def is_sampled(self, trace_id: int, operation_name: Optional[str] = ...) -> Tuple[bool, Dict[str, Any]]: ...
    def close(self) -> None: ...

class ConstSampler(Sampler):
    decision: bool
    def __init__(self, decision: bool = ...) -> None: ...

class ProbabilisticSampler(Sampler):
    rate: float
    def __init__(self, rate: float = ...) -> None: ...

class RateLimitingSampler(Sampler):
    max_traces_per_second: float
    def __init__(self, max_traces_per_second: float = ...) -> None: ...

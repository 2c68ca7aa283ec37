# SPDX-License-Identifier: Apache-2.0
from typing import final

from fasttrace._carrier import Propagator

@final
class TraceContextPropagator(Propagator):
    def __init__(self) -> None: ...

@final
class W3CBaggagePropagator(Propagator):
    def __init__(self) -> None: ...

# SPDX-License-Identifier: Apache-2.0
from typing import final

from fasttrace._carrier import Propagator

@final
class B3SinglePropagator(Propagator):
    def __init__(self) -> None: ...

@final
class B3MultiPropagator(Propagator):
    def __init__(self) -> None: ...

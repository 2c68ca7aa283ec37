# SPDX-License-Identifier: Apache-2.0
from typing import final

from typing_extensions import Self

from fasttrace._carrier import Propagator

@final
class JaegerPropagator(Propagator):
    # arguments go to __cinit__ (tp_new), as for every cdef class of the codecs
    def __new__(cls, url_encoding: bool = True) -> Self: ...

# SPDX-License-Identifier: Apache-2.0
from libc.stdint cimport int64_t, uint64_t


cdef class Sampler:
    cdef public unsigned long long errors    # calls of is_sampled that raised
    # True to record a new trace.  Only root spans ask: children follow their parent.
    cdef bint sample(self, uint64_t trace_hi, uint64_t trace_lo, object operation_name) except -1


cdef class ConstSampler(Sampler):
    cdef readonly bint decision


cdef class ProbabilisticSampler(Sampler):
    cdef readonly double rate
    cdef uint64_t boundary
    cdef bint always


cdef class RateLimitingSampler(Sampler):
    cdef readonly double max_traces_per_second
    cdef double balance
    cdef double max_balance
    cdef int64_t last_tick_ns
    cdef bint _take(self, int64_t now) noexcept

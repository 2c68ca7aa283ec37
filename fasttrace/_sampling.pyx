# SPDX-License-Identifier: Apache-2.0
"""Head samplers: the decision is made once, at the root span, and propagated.

`is_sampled(trace_id, operation_name) -> (bool, tags)` is jaeger-client's interface, so
jaeger-style custom samplers can subclass `Sampler` and override only that.
"""
from libc.stdint cimport int64_t, uint64_t

from fasttrace._cdefs cimport ft_monotonic_ns
from fasttrace._context cimport int_to_u128, u128_to_int

# imports logging at the first warning (fasttrace._lazy)
from fasttrace._lazy import logging


cdef class Sampler:
    """Base class: subclasses override `is_sampled` (Python) or `sample` (Cython)."""

    cdef bint sample(self, uint64_t trace_hi, uint64_t trace_lo, object operation_name) except -1:
        # the path through Python code (a subclass's is_sampled): one that raises says
        # no, counted and logged once -- tracing never raises into the application
        try:
            decision = self.is_sampled(u128_to_int(trace_hi, trace_lo), operation_name)
            if isinstance(decision, tuple):
                decision = decision[0]
            return bool(decision)
        except Exception:
            self.errors += 1
            if self.errors == 1:
                logging.getLogger("fasttrace").warning(
                    "fasttrace: the sampler %r raised; its traces are not sampled "
                    "(counted in stats()[\"sampler_errors\"])", self, exc_info=True)
            return False

    def is_sampled(self, trace_id, operation_name=None):
        """Returns (sampled, tags), as jaeger-client's samplers do."""
        cdef uint64_t hi, lo
        if type(self).sample is Sampler.sample:
            raise NotImplementedError("Sampler subclasses must override is_sampled")
        int_to_u128(trace_id, &hi, &lo)
        return self.sample(hi, lo, operation_name), {}

    def close(self):
        pass


cdef class ConstSampler(Sampler):
    """Samples every trace (True) or none (False)."""

    def __init__(self, decision=True):
        self.decision = bool(decision)

    cdef bint sample(self, uint64_t trace_hi, uint64_t trace_lo, object operation_name) except -1:
        return self.decision

    def is_sampled(self, trace_id, operation_name=None):
        return self.decision, {"sampler.type": "const", "sampler.param": self.decision}

    def __repr__(self):
        return f"ConstSampler({self.decision})"


cdef class ProbabilisticSampler(Sampler):
    """Samples a fraction `rate` of traces, decided from the trace id.

    Sampled iff the low 64 bits of the trace id are below rate * 2**64, the rule of
    OpenTelemetry's TraceIdRatioBased sampler: every service (whatever its tracer)
    configured with the same rate makes the same decision for the same trace.
    """

    def __init__(self, double rate=0.001):
        if not (0.0 <= rate <= 1.0):
            raise ValueError(f"sampling rate must be between 0.0 and 1.0, got {rate}")
        self.rate = rate
        self.always = rate >= 1.0
        # round(rate * 2**64), as OpenTelemetry computes its bound
        self.boundary = 0 if self.always else <uint64_t>(rate * 18446744073709551616.0 + 0.5)

    cdef bint sample(self, uint64_t trace_hi, uint64_t trace_lo, object operation_name) except -1:
        return self.always or trace_lo < self.boundary

    def is_sampled(self, trace_id, operation_name=None):
        cdef uint64_t hi, lo
        int_to_u128(trace_id, &hi, &lo)
        return self.sample(hi, lo, operation_name), {
            "sampler.type": "probabilistic", "sampler.param": self.rate}

    def __repr__(self):
        return f"ProbabilisticSampler({self.rate})"


cdef class RateLimitingSampler(Sampler):
    """Samples at most `max_traces_per_second` traces per second (a token bucket).

    The bucket holds max(rate, 1) tokens, so a rate below one still lets a trace
    through as soon as a whole token has accumulated; it starts full.
    """

    def __init__(self, double max_traces_per_second=10.0):
        if not (max_traces_per_second >= 0.0):
            raise ValueError("max_traces_per_second must be >= 0")
        self.max_traces_per_second = max_traces_per_second
        self.max_balance = max(max_traces_per_second, 1.0)
        self.balance = self.max_balance
        self.last_tick_ns = ft_monotonic_ns()

    cdef bint sample(self, uint64_t trace_hi, uint64_t trace_lo, object operation_name) except -1:
        return self._take(ft_monotonic_ns())

    cdef bint _take(self, int64_t now) noexcept:
        cdef double elapsed = (now - self.last_tick_ns) * 1e-9
        self.last_tick_ns = now
        if elapsed > 0:
            self.balance += elapsed * self.max_traces_per_second
            if self.balance > self.max_balance:
                self.balance = self.max_balance
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False

    def _take_at(self, int64_t now_ns):
        """Takes a token as of a given monotonic time (tests drive the clock with it)."""
        return self._take(now_ns)

    def is_sampled(self, trace_id, operation_name=None):
        return self._take(ft_monotonic_ns()), {
            "sampler.type": "ratelimiting", "sampler.param": self.max_traces_per_second}

    def __repr__(self):
        return f"RateLimitingSampler({self.max_traces_per_second})"

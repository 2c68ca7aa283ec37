# SPDX-License-Identifier: Apache-2.0
"""Remote sampling's decision, in C: the strategy a poll installed, applied per root span.

`Strategy` is what one good answer of the Jaeger sampling endpoint says: probabilistic,
rate limiting, or per operation (a probability per operation plus a guaranteed lower
bound of traces per second, jaeger-client's GuaranteedThroughputProbabilisticSampler).
Its configuration never changes once built; the poller (`fasttrace/remote_sampling.py`)
swaps a whole new one in (`RemoteSamplerCore._install`, one attribute store under the
GIL), so a decision always sees one strategy, never half of two.  What does change in
place is what jaeger-client's samplers change in place too: the token buckets, and the
per-operation table, which learns operations it was not told about (up to
`max_operations`; past that they get the default probability, counted).

The decision (`sample`) is a C call from the tracer like ProbabilisticSampler's: one
typed attribute read, a branch on the kind, and for per-operation strategies one dict
lookup by the (already hashed) operation name.
"""
cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t

from fasttrace._cdefs cimport ft_coarse_monotonic_ns
from fasttrace._pyapi cimport PyDict_GET_SIZE, PyDict_GetItemWithError
from fasttrace._sampling cimport Sampler

PROBABILISTIC = 0
RATE_LIMITING = 1
PER_OPERATION = 2
KIND_NAMES = ("probabilistic", "rate_limiting", "per_operation")

cdef enum:
    CACHE_SIZE = 64          # operation names remembered by identity, a power of 2
    K_PROBABILISTIC = 0
    K_RATE_LIMITING = 1
    K_PER_OPERATION = 2


cdef inline uint64_t _boundary(double rate) noexcept:
    # ProbabilisticSampler's rule: round(rate * 2**64); rate 1.0 is "always"
    if rate >= 1.0:
        return 0
    return <uint64_t>(rate * 18446744073709551616.0 + 0.5)


@cython.final
cdef class Bucket:
    """A token bucket of `rate` traces per second holding max(rate, 1) tokens, full at
    first (RateLimitingSampler's, and jaeger-client's RateLimiter's refill rule), on the
    coarse monotonic clock (src/ft_clock.h: a millisecond is nothing at traces/s)."""
    cdef readonly double rate
    cdef readonly double balance
    cdef double max_balance
    cdef int64_t last_tick_ns

    def __init__(self, double rate):
        if not (rate >= 0.0):
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.rate = rate
        self.max_balance = max(rate, 1.0)
        self.balance = self.max_balance
        self.last_tick_ns = ft_coarse_monotonic_ns()

    def updated(self, double rate):
        """This bucket at a new rate: the balance scaled to the new size, as
        jaeger-client's RateLimiter.update does (itself when the rate is the same)."""
        if rate == self.rate:
            return self
        cdef Bucket b = Bucket(rate)
        self.take_at(ft_coarse_monotonic_ns(), 0.0)      # refilled up to now first
        b.balance = self.balance * b.max_balance / self.max_balance
        b.last_tick_ns = self.last_tick_ns
        return b

    cdef inline bint take(self, int64_t now) noexcept:
        return self.take_at(now, 1.0)

    cdef inline bint take_at(self, int64_t now, double cost) noexcept:
        cdef int64_t elapsed = now - self.last_tick_ns
        if elapsed > 0:
            self.last_tick_ns = now
            self.balance += elapsed * 1e-9 * self.rate
            if self.balance > self.max_balance:
                self.balance = self.max_balance
        if self.balance >= cost:
            self.balance -= cost
            return cost > 0.0
        return False

    def _take_at(self, int64_t now_ns):
        """Takes a token as of a given coarse-monotonic time (tests drive the clock)."""
        return self.take(now_ns)

    def _clock_ns(self):
        return ft_coarse_monotonic_ns()


cdef class Operation:
    """One operation of a per-operation strategy: sampled by trace id with probability
    `rate`, else by its own lower-bound bucket at `lower_bound` traces per second."""
    cdef readonly double rate
    cdef readonly double lower_bound
    cdef readonly Bucket limiter
    cdef uint64_t boundary
    cdef bint always

    def __init__(self, double rate, double lower_bound, Bucket limiter=None):
        if not (0.0 <= rate <= 1.0):
            raise ValueError(f"sampling rate must be between 0.0 and 1.0, got {rate}")
        if not (lower_bound >= 0.0):
            raise ValueError(f"lower bound must be >= 0, got {lower_bound}")
        self.rate = rate
        self.lower_bound = lower_bound
        self.always = rate >= 1.0
        self.boundary = _boundary(rate)
        self.limiter = Bucket(lower_bound) if limiter is None else limiter.updated(lower_bound)

    cdef inline bint decide(self, uint64_t trace_lo) noexcept:
        # as GuaranteedThroughputProbabilisticSampler: the bucket is asked every time
        # (a trace sampled by id takes a token too), so the lower bound is a floor on
        # the operation's whole rate, not an addition to it
        cdef bint by_id = self.always or trace_lo < self.boundary
        cdef bint by_bucket = self.limiter.take(ft_coarse_monotonic_ns())
        return by_id or by_bucket

    def __repr__(self):
        return f"Operation(rate={self.rate}, lower_bound={self.lower_bound})"


cdef class Strategy:
    """One sampling strategy, as one good answer of the endpoint described it.

    Built with `Strategy.probabilistic(rate)`, `Strategy.rate_limiting(mtps)` or
    `Strategy.per_operation(default_rate, lower_bound, upper_bound, rates)`; each can
    take the strategy it replaces (`previous`) to keep its buckets where the rate did not
    change, and the operations it had learned, as jaeger-client's samplers update.
    """
    cdef readonly int kind
    cdef readonly double rate            # probabilistic: the rate; per operation: the default
    cdef readonly double max_traces_per_second
    cdef readonly double lower_bound
    cdef readonly double upper_bound     # parsed and kept; not enforced (nor by jaeger-client)
    cdef readonly Bucket limiter
    cdef dict ops                        # name -> Operation (per operation only)
    cdef uint64_t boundary
    cdef bint always
    # the last operation names seen, by identity (direct-mapped on the str's address): a
    # root span's name is most often the same str object each time (a literal), and a
    # pointer compare is cheaper than the dict lookup.  _pins owns the references the
    # two arrays point at; an entry is never stale, since a strategy's table only grows.
    cdef PyObject *cache_names[CACHE_SIZE]
    cdef PyObject *cache_ops[CACHE_SIZE]
    cdef list _pins

    cdef inline Operation lookup(self, str name):
        cdef size_t idx = ((<size_t><PyObject*>name) >> 4) & (CACHE_SIZE - 1)
        cdef PyObject *found
        if self.cache_names[idx] == <PyObject*>name:
            return <Operation>self.cache_ops[idx]
        found = PyDict_GetItemWithError(self.ops, name)
        if found is NULL:
            return None
        self.cache_names[idx] = NULL
        self._pins[2 * idx] = name
        self._pins[2 * idx + 1] = <Operation>found
        self.cache_ops[idx] = found
        self.cache_names[idx] = <PyObject*>name
        return <Operation>found

    def __init__(self, *args, **kwargs):
        raise TypeError("use Strategy.probabilistic, .rate_limiting or .per_operation")

    @staticmethod
    def probabilistic(double rate):
        if not (0.0 <= rate <= 1.0):
            raise ValueError(f"sampling rate must be between 0.0 and 1.0, got {rate}")
        cdef Strategy s = Strategy.__new__(Strategy)
        s.kind = K_PROBABILISTIC
        s.rate = rate
        s.always = rate >= 1.0
        s.boundary = _boundary(rate)
        return s

    @staticmethod
    def rate_limiting(double max_traces_per_second, Strategy previous=None):
        if not (max_traces_per_second >= 0.0):
            raise ValueError("max_traces_per_second must be >= 0")
        cdef Strategy s = Strategy.__new__(Strategy)
        s.kind = K_RATE_LIMITING
        s.max_traces_per_second = max_traces_per_second
        if previous is not None and previous.kind == K_RATE_LIMITING:
            s.limiter = previous.limiter.updated(max_traces_per_second)
        else:
            s.limiter = Bucket(max_traces_per_second)
        return s

    @staticmethod
    def per_operation(double default_rate, double lower_bound, double upper_bound,
                      dict rates, Strategy previous=None, Py_ssize_t max_operations=2000):
        """`rates`: {operation: probability}.  Operations `previous` learned that `rates`
        does not name stay, with the new default rate (at most `max_operations` in all)."""
        cdef Strategy s = Strategy.__new__(Strategy)
        cdef Operation old
        cdef dict ops = {}
        if not (0.0 <= default_rate <= 1.0):
            raise ValueError(f"sampling rate must be between 0.0 and 1.0, got {default_rate}")
        if not (lower_bound >= 0.0):
            raise ValueError(f"lower bound must be >= 0, got {lower_bound}")
        s.kind = K_PER_OPERATION
        s.rate = default_rate
        s.always = default_rate >= 1.0
        s.boundary = _boundary(default_rate)
        s.lower_bound = lower_bound
        s.upper_bound = upper_bound
        old_ops = previous.ops if previous is not None and previous.kind == K_PER_OPERATION \
            else None
        for name, rate in rates.items():
            if len(ops) >= max_operations:
                break
            old = old_ops.get(name) if old_ops is not None else None
            ops[name] = Operation(rate, lower_bound, None if old is None else old.limiter)
        if old_ops is not None:
            for name, old in list(old_ops.items()):
                if len(ops) >= max_operations:
                    break
                if name not in ops:
                    ops[name] = Operation(default_rate, lower_bound, old.limiter)
        s.ops = ops
        s._pins = [None] * (2 * CACHE_SIZE)
        return s

    @property
    def kind_name(self):
        return KIND_NAMES[self.kind]

    @property
    def operations(self):
        """{operation: (rate, lower_bound)}: a copy of the per-operation table."""
        if self.ops is None:
            return {}
        return {name: (op.rate, op.lower_bound) for name, op in list(self.ops.items())}

    def operation(self, name):
        """The Operation for `name`, or None."""
        return None if self.ops is None else self.ops.get(name)

    def describe(self):
        """What this strategy is, as a plain dict (stats() shows it)."""
        if self.kind == K_PROBABILISTIC:
            return {"type": "probabilistic", "rate": self.rate}
        if self.kind == K_RATE_LIMITING:
            return {"type": "rate_limiting",
                    "max_traces_per_second": self.max_traces_per_second}
        return {"type": "per_operation", "default_rate": self.rate,
                "lower_bound": self.lower_bound, "upper_bound": self.upper_bound,
                "operations": len(self.ops)}

    def __repr__(self):
        return f"Strategy({self.describe()!r})"


cdef class RemoteSamplerCore(Sampler):
    """The C half of fasttrace.RemoteSampler: the decision under the installed strategy.

    The Python subclass (fasttrace/remote_sampling.py) polls and installs strategies.
    """
    cdef Strategy _strategy
    cdef public Py_ssize_t max_operations
    cdef public unsigned long long operations_over_limit
    # set in a forked child: the next decision (re)starts the poller, once
    cdef public bint _restart_pending

    def __init__(self, double initial_sampling_rate=0.001, Py_ssize_t max_operations=2000):
        if max_operations < 0:
            raise ValueError("max_operations must be >= 0")
        self._strategy = Strategy.probabilistic(initial_sampling_rate)
        self.max_operations = max_operations

    @property
    def strategy(self):
        """The strategy in force (a Strategy)."""
        return self._strategy

    def _install(self, Strategy strategy not None):
        """Puts `strategy` in force: one store, seen whole by the next decision."""
        self._strategy = strategy

    def _restart_poller(self):
        pass

    cdef bint sample(self, uint64_t trace_hi, uint64_t trace_lo, object operation_name) except -1:
        cdef Strategy s = self._strategy
        cdef Operation op
        if self._restart_pending:
            self._restart_pending = False
            try:
                self._restart_poller()
            except Exception:
                self.errors += 1
        if s.kind == K_PROBABILISTIC:
            return s.always or trace_lo < s.boundary
        if s.kind == K_RATE_LIMITING:
            return s.limiter.take(ft_coarse_monotonic_ns())
        if type(operation_name) is str:
            op = s.lookup(operation_name)
            if op is not None:
                return op.decide(trace_lo)
            return self._new_operation(s, trace_lo, operation_name)
        return s.always or trace_lo < s.boundary

    cdef bint _new_operation(self, Strategy s, uint64_t trace_lo, str name) except -1:
        # an operation the strategy did not name: it gets the default rate and the lower
        # bound, as jaeger-client's AdaptiveSampler does, while the table has room
        cdef Operation op
        if PyDict_GET_SIZE(s.ops) >= self.max_operations:
            self.operations_over_limit += 1
            return s.always or trace_lo < s.boundary
        op = Operation(s.rate, s.lower_bound)
        s.ops[name] = op
        return op.decide(trace_lo)

    def decide(self, trace_id, operation_name=None):
        """The decision for a trace id (an int) as a root span would get it (tests)."""
        cdef uint64_t hi = (trace_id >> 64) & 0xFFFFFFFFFFFFFFFF
        cdef uint64_t lo = trace_id & 0xFFFFFFFFFFFFFFFF
        return self.sample(hi, lo, operation_name)

    def is_sampled(self, trace_id, operation_name=None):
        cdef Strategy s = self._strategy
        sampled = self.decide(trace_id, operation_name)
        if s.kind == K_PROBABILISTIC:
            return sampled, {"sampler.type": "probabilistic", "sampler.param": s.rate}
        if s.kind == K_RATE_LIMITING:
            return sampled, {"sampler.type": "ratelimiting",
                             "sampler.param": s.max_traces_per_second}
        return sampled, {"sampler.type": "lowerbound", "sampler.param": s.rate}


def bench_decisions(Sampler sampler, Py_ssize_t n, object operation_name, uint64_t seed=1):
    """Makes `n` decisions with `sampler` from C (the benchmark's loop, no span around
    them); trace ids from a xorshift generator.  Returns how many were sampled."""
    cdef Py_ssize_t i
    cdef Py_ssize_t sampled = 0
    cdef uint64_t x = seed or 1
    for i in range(n):
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        sampled += sampler.sample(0, x, operation_name)
    return sampled

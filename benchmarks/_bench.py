# SPDX-License-Identifier: Apache-2.0
"""What every benchmark module shares: the tracers compared, the loop each timed
call runs, and the median of hand-timed rounds (for the paired, same-run ratios).

A plain module, not conftest: ``tests/`` has a conftest module too, and the two
would shadow each other when both directories are collected in one run.
"""
from __future__ import annotations

import statistics
import time

# the tracers every comparison runs, in table order (benchmarks/report.py's columns)
KINDS = ("noop", "fasttrace", "otel-shim", "otel-sdk", "jaeger", "ddtrace")

# Each timed call loops OPS times, so per-operation times are well above the timer's
# resolution; pytest-benchmark's tables show times per OPS operations, and
# extra_info["ops_per_call"] is the divisor report.py uses.
OPS = 100
REPS = range(OPS)


def bench_loop(benchmark, run):
    """Times ``run`` (which loops OPS times) after one untimed call that warms
    caches and interns names; records the divisor."""
    benchmark.extra_info["ops_per_call"] = OPS
    run()
    return benchmark(run)


def median_seconds(fn, rounds, setup=None):
    """Median wall time of ``rounds`` calls of ``fn``, ``setup()`` untimed before each."""
    times = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)

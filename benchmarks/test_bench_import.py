# SPDX-License-Identifier: Apache-2.0
"""What importing each tracer costs a fresh interpreter (the README table's import row).

For each tracer the module an application imports to use it runs in a new
``python -X importtime -c "...; import X"`` ``IMPORT_RUNS`` times after one untimed
run that writes the bytecode caches (as ``pip install`` does); with ``--benchmark-disable``, ``QUICK_RUNS`` times, the first one
included.  A run's cost
is the sum of the cumulative microseconds of the top-level lines ``-X importtime``
prints after a marker written just before the import statement: everything that
statement imported, parents and dependencies included, and nothing of the
interpreter's own start-up (those lines come before the marker) -- so it is already the
cost over a bare interpreter, which (``-c pass``) has no such line.  The median of the
runs is in ``extra_info["import_ms"]``, with whether numpy ended up in
``sys.modules`` and how many modules the statement added.

``-X importtime`` adds its own bookkeeping to every import (more for tracers that
import more modules), so these are a little above an untimed import; the order and the
ratios are what the row is for.  The subprocesses get this process's environment
(``OPENBLAS_NUM_THREADS``, ``PYTHONPATH`` with the fasttrace being benchmarked first)
plus ``conftest.DDTRACE_ENV``, the configuration the ddtrace benchmarks use.

    pytest benchmarks/test_bench_import.py --benchmark-only
"""
from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys

import pytest

from _bench import KINDS
from conftest import DDTRACE_ENV

G_IMPORT = "7 import (ms, -X importtime, median)"
IMPORT_RUNS = 20
QUICK_RUNS = 5
MARK = "@@fasttrace-bench-import@@"

# kind -> the modules an application imports to get that tracer
MODULES = {
    "noop": ("opentracing",),
    "fasttrace": ("fasttrace",),
    # the shim needs the SDK behind it (create_tracer(TracerProvider()))
    "otel-shim": ("opentelemetry.sdk.trace", "opentelemetry.shim.opentracing_shim"),
    "otel-sdk": ("opentelemetry.sdk.trace",),
    "jaeger": ("jaeger_client",),
    "ddtrace": ("ddtrace",),  # creates the global tracer (ddtrace.trace.tracer)
}


def _env():
    env = dict(os.environ)
    for key, value in DDTRACE_ENV.items():
        env.setdefault(key, value)
    spec = importlib.util.find_spec("fasttrace")
    if spec is not None and spec.origin:
        here = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def parse_importtime(stderr: str) -> int:
    """Microseconds: the cumulative times of the top-level import lines after MARK."""
    _, found, tail = stderr.partition(MARK)
    if not found:
        raise AssertionError("marker missing from -X importtime output:\n" + stderr[-2000:])
    total = 0
    for line in tail.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:"):].split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the header line
        name = fields[2]
        if name.startswith(" ") and not name.startswith("  "):  # top level: one space
            total += int(fields[1])
    return total


def run_once(modules, env):
    """(microseconds, numpy in sys.modules, modules added) for one fresh interpreter."""
    code = ("import sys; n = len(sys.modules); sys.stderr.write(%r + '\\n'); sys.stderr.flush()\n"
            "import %s\n"
            "print('numpy' in sys.modules, len(sys.modules) - n)") % (MARK, ", ".join(modules))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"import {', '.join(modules)} failed: {proc.stderr[-1500:]}")
    numpy, added = proc.stdout.split()[-2:]
    return parse_importtime(proc.stderr), numpy == "True", int(added)


def test_parse_importtime():
    err = ("import time: self [us] | cumulative | imported package\n"
           "import time:       100 |        100 | site\n" + MARK + "\n"
           "import time:        50 |         50 |     opentelemetry\n"
           "import time:        30 |         80 |   opentelemetry.sdk\n"
           "import time:        20 |        300 | opentelemetry.sdk.trace\n"
           "import time:         7 |          7 | six\n")
    assert parse_importtime(err) == 307


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.benchmark(group=G_IMPORT)
def test_import_cost(benchmark, kind):
    modules = MODULES[kind]
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a parent package is missing
            found = False
        if not found:
            pytest.skip(f"{module} is not installed")
    env = _env()
    runs = IMPORT_RUNS if benchmark.enabled else QUICK_RUNS
    # untimed: the page cache, and the bytecode caches written as pip writes them at
    # install (an environment with PYTHONDONTWRITEBYTECODE would otherwise compile every
    # module of a source checkout in every run)
    warm = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        first = run_once(modules, warm)
    except RuntimeError as exc:
        if kind == "ddtrace":
            pytest.skip(f"ddtrace cannot be imported here: {exc}")
        raise

    def measure():
        done = [] if benchmark.enabled else [first]  # CI: the first run counts
        return done + [run_once(modules, env) for _ in range(runs - len(done))]

    results = benchmark.pedantic(measure, rounds=1, iterations=1)
    micros = [us for us, _, _ in results]
    benchmark.extra_info.update(
        statement="import " + ", ".join(modules),
        import_ms=round(statistics.median(micros) / 1000, 2),
        import_ms_min=round(min(micros) / 1000, 2),
        import_ms_max=round(max(micros) / 1000, 2),
        import_runs=runs,
        numpy_imported=results[-1][1],
        modules_added=results[-1][2],
    )
    assert statistics.median(micros) > 0

# SPDX-License-Identifier: Apache-2.0
"""`import fasttrace` stays cheap (issue 16): it loads none of the heavy stdlib modules
that only a feature most programs never use needs (an exporter's HTTP client, the
remote sampler, multiprocessing's fork finalizer, the logging of a first warning).

Which modules load is asserted, never how long it takes: a module set is exact on every
machine, a time is not."""
import subprocess
import sys

# Each of these costs from one to several milliseconds on its own (measured with
# `python -X importtime -c 'import X'`), and fasttrace imports it where it is used.
HEAVY = (
    "multiprocessing",      # batching: only once a multiprocessing child may fork
    "concurrent.futures",   # tracer.Closed: made by the first close()
    "subprocess", "signal", "socket", "selectors", "pickle",   # multiprocessing's
    "http.client", "urllib.request", "ssl", "email",   # the HTTP exporters, the sampler
    "json",                 # the jsonl and zipkin exporters, the remote sampler
    "urllib.parse", "ipaddress",   # init_tracer's URL and key=value variables
    "inspect", "ast", "dis", "tokenize",   # @traced's function kinds, at decoration
    "logging", "string",    # the first warning (fasttrace._lazy)
    "traceback", "linecache", "textwrap",  # the first error log formatted
    "typing",               # annotations are for type checkers only
    "dataclasses", "numbers", "asyncio", "zlib", "gzip",
    "ctypes", "platform", "datetime",
)


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.strip()


def _loaded_by_import_fasttrace():
    # numpy's own imports are not fasttrace's to avoid: while the core still imports
    # numpy, it is imported first, so what it loads is not counted
    uses_numpy = _run("import sys, fasttrace; print('numpy' in sys.modules)") == "True"
    code = ("import sys\n"
            + ("import numpy\n" if uses_numpy else "")
            + "before = set(sys.modules)\n"
              "import fasttrace\n"
              "print(' '.join(sorted(set(sys.modules) - before)))")
    return set(_run(code).split())


def test_import_fasttrace_loads_none_of_the_heavy_modules():
    loaded = _loaded_by_import_fasttrace()
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_a_tracer_that_records_spans_loads_none_of_them_either():
    code = ("import sys, fasttrace\n"
            "before = set(sys.modules)\n"
            "tracer = fasttrace.Tracer('svc')\n"
            "with tracer.start_active_span('a'):\n"
            "    tracer.start_span('b').finish()\n"
            "tracer.flush(1)\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n"
            # close() makes the Closed future, the public fasttrace.tracer.Closed
            "closed = tracer.close(1)\n"
            "from fasttrace.tracer import Closed\n"
            "assert type(closed) is Closed and closed.result() is True, closed\n"
            "assert Closed.__module__ == 'fasttrace.tracer'\n")
    loaded = set(_run(code).split())
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_the_first_warning_imports_logging_and_reaches_the_fasttrace_logger():
    # no handler configured: logging's last resort prints it, as before
    code = ("import fasttrace\n"
            "fasttrace.Tracer('svc', propagators='tracecontext,nope')\n"
            "import logging\n"
            "print(fasttrace.tracer.log.name, logging.getLogger('fasttrace').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["fasttrace", "fasttrace"]
    assert "fasttrace: unknown propagator 'nope' ignored" in out.stderr

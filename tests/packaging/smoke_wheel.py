# SPDX-License-Identifier: Apache-2.0
"""Smoke test for an installed fasttrace (a wheel in a fresh environment).

Run as a script, never collected by pytest:

    python tests/packaging/smoke_wheel.py [--out FILE] [--not-under DIR]

It imports fasttrace, checks that the compiled core is what got imported, records a
small trace through a BatchReporter into a JsonLinesExporter, closes the tracer and reads
the file back.  cibuildwheel runs it first for every wheel (pyproject.toml
[tool.cibuildwheel] test-command), and tests/packaging/test_packaging.py runs it inside a fresh
virtual environment that has no compiler and no Cython.  Exit status 0 means it passed.
"""
import argparse
import importlib
import importlib.machinery
import json
import os
import sys
import tempfile

# the project's sources say which modules are compiled (setup.py builds every .pyx)
COMPILED = tuple(sorted(
    name[:-4] for name in os.listdir(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  os.pardir, os.pardir, "fasttrace"))
    if name.endswith(".pyx")))


def check(condition, message):
    if not condition:
        print(f"smoke_wheel: FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON-lines file to write (default: a temp file)")
    parser.add_argument("--not-under", action="append", default=[],
                        help="fail if fasttrace is imported from below this directory")
    args = parser.parse_args(argv)

    import fasttrace
    from fasttrace.exporters.jsonl import JsonLinesExporter

    package_dir = os.path.dirname(os.path.realpath(fasttrace.__file__))
    for forbidden in args.not_under:
        forbidden = os.path.realpath(forbidden)
        check(os.path.commonpath([package_dir, forbidden]) != forbidden,
              f"fasttrace was imported from {package_dir}, inside {forbidden}")

    # the compiled core, not sources: every module is an extension module
    for name in COMPILED:
        module = importlib.import_module(f"fasttrace.{name}")
        origin = module.__file__ or ""
        check(origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)),
              f"fasttrace.{name} is not an extension module: {origin}")
    check(fasttrace.IMPLEMENTATION == "cython", f"IMPLEMENTATION={fasttrace.IMPLEMENTATION}")

    from importlib.metadata import PackageNotFoundError, version
    try:
        installed = version("fasttrace")
    except PackageNotFoundError:
        installed = None   # imported from a checkout (PYTHONPATH): nothing to compare
    check(installed in (None, fasttrace.__version__),
          f"metadata {installed} != __version__ {fasttrace.__version__}")

    tmp = None
    path = args.out
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "spans.jsonl")

    tracer = fasttrace.Tracer(
        service_name="smoke",
        reporter=fasttrace.BatchReporter(JsonLinesExporter(path), flush_interval=0.1),
    )
    with tracer.start_active_span("parent") as scope:
        scope.span.set_tag("wheel", True)
        scope.span.log_kv({"event": "inside"})
        with tracer.start_active_span("child") as child:
            child.span.set_tag("n", 1)
    check(tracer.flush(timeout=10), "flush() did not confirm delivery")
    tracer.close(timeout=10)

    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    by_name = {span["operation_name"]: span for span in lines}
    check(sorted(by_name) == ["child", "parent"], f"unexpected spans: {lines}")
    parent, child = by_name["parent"], by_name["child"]
    check(parent["parent_id"] is None, f"parent has a parent: {parent}")
    check(child["parent_id"] == parent["span_id"], "child is not linked to its parent")
    check(child["trace_id"] == parent["trace_id"], "child left the trace")
    check(parent["tags"].get("wheel") is True, f"tag lost: {parent['tags']}")
    check(parent["service_name"] == "smoke", f"service: {parent['service_name']}")
    check(0 < parent["start_ns"] <= child["start_ns"] <= child["end_ns"] <= parent["end_ns"],
          f"timestamps out of order: {parent} {child}")
    check(parent["logs"] and parent["logs"][0]["fields"].get("event") == "inside",
          f"log lost: {parent['logs']}")

    print(f"smoke_wheel: OK fasttrace {fasttrace.__version__} from {package_dir} "
          f"(Python {sys.version.split()[0]}); {len(lines)} spans in {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

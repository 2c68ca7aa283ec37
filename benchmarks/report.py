#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Runs the comparison benchmarks and prints the README's markdown tables.

    python benchmarks/report.py                       # run, then print the tables
    python benchmarks/report.py --json out.json       # also keep the raw pytest-benchmark JSON
    python benchmarks/report.py --from out.json       # only format an earlier run
    python benchmarks/report.py -- --benchmark-max-time=5   # extra pytest arguments
    python benchmarks/report.py --propagation          # also the propagation codecs

It runs ``pytest benchmarks/test_bench_peers.py benchmarks/test_bench_import.py
benchmarks/test_memory.py --benchmark-only --benchmark-json=...`` (plus
``benchmarks/test_bench_span.py`` with ``--all``) and prints, for each scenario, every
tracer's median time per operation in nanoseconds and its ratio to the no-op tracer
(``opentracing.Tracer()``) measured in the same run, the milliseconds ``import``-ing
each tracer costs (``-X importtime``, median of fresh interpreters), then the bytes each
tracer keeps per finished span.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from _bench import KINDS
LABELS = {
    "noop": "no-op (`opentracing.Tracer()`)",
    "fasttrace": "**fasttrace**",
    "otel-shim": "OTel SDK via OpenTracing shim",
    "otel-sdk": "OTel SDK native",
    "jaeger": "jaeger-client",
    "ddtrace": "ddtrace (native API)",
}
SHORT = {
    "noop": "no-op",
    "fasttrace": "fasttrace",
    "otel-shim": "OTel shim",
    "otel-sdk": "OTel native",
    "jaeger": "jaeger-client",
    "ddtrace": "ddtrace",
}
# fasttrace's targets, as a multiple of the no-op tracer, by scenario number ("6": the
# BatchReporter against the in-memory case, both fasttrace)
TARGETS = {"1": 1.4, "2": 1.3, "4": 2.5, "5": 1.1, "6": 1.15}
PACKAGES = ("fasttrace", "opentracing", "opentelemetry-sdk", "opentelemetry-opentracing-shim",
            "jaeger-client", "ddtrace", "pytest-benchmark", "numpy", "Cython")


def run_benchmarks(json_path, include_span, extra, include_propagation=False):
    files = [os.path.join("benchmarks", "test_bench_peers.py"),
             os.path.join("benchmarks", "test_bench_import.py"),
             os.path.join("benchmarks", "test_memory.py")]
    if include_span:
        files.append(os.path.join("benchmarks", "test_bench_span.py"))
    if include_propagation:
        files.append(os.path.join("benchmarks", "test_bench_propagation.py"))
    cmd = [sys.executable, "-m", "pytest", *files, "--benchmark-only",
           f"--benchmark-json={json_path}", "-q", "-p", "no:cacheprovider", *extra]
    print("$ " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr)
    if proc.returncode != 0:
        print(f"report.py: pytest exited with {proc.returncode}; "
              "tabulating whatever was measured", file=sys.stderr)
    return proc.returncode


def kind_of(bench):
    params = bench.get("params") or {}
    if "kind" in params:
        return params["kind"]
    name = bench["name"]
    return name[name.index("[") + 1:-1] if "[" in name else name


def per_call_ns(bench, stat="median"):
    ops = (bench.get("extra_info") or {}).get("ops_per_call", 1)
    return bench["stats"][stat] * 1e9 / ops


def fmt_ns(ns):
    if ns >= 100:
        return f"{ns:,.0f}"
    return f"{ns:,.1f}"


def fmt_ratio(r):
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def scenario_tables(data):
    groups = {}
    harness = None
    for b in data["benchmarks"]:
        group = b.get("group") or ""
        if group.startswith("0 "):
            harness = per_call_ns(b)
        elif group[:1].isdigit():
            groups.setdefault(group, {})[kind_of(b)] = b
    if not groups:
        return "(no scenario benchmarks in this run)\n"
    kinds = [k for k in KINDS if any(k in g for g in groups.values())]
    lines = []
    header = "| scenario | " + " | ".join(SHORT[k] for k in kinds) + " |"
    lines.append(header)
    lines.append("|" + "---|" * (len(kinds) + 1))
    notes = []
    import_notes = []
    paired = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info") or {}
        if "paired_ratio" in info:
            paired[info["scenario"].split()[0]] = info
    for group in sorted(groups, key=lambda g: (int(g.split()[0]), g)):
        row = groups[group]
        floor = per_call_ns(row["noop"]) if "noop" in row else None
        cells = []
        imports = {k: (b.get("extra_info") or {}) for k, b in row.items()
                   if "import_ms" in (b.get("extra_info") or {})}
        for k in kinds:
            if k not in row:
                cells.append("–")
                continue
            if k in imports:  # the import row: milliseconds, no ratio
                cells.append(f"{imports[k]['import_ms']:,.1f} ms")
                continue
            ns = per_call_ns(row[k])
            if floor and k != "noop":
                cells.append(f"{fmt_ns(ns)} ({fmt_ratio(ns / floor)})")
            else:
                cells.append(fmt_ns(ns))
        label = group.split(" ", 1)[1] if " " in group else group
        if imports:
            label = "`import` (ms over a bare interpreter, `-X importtime`, median)"
            with_numpy = [SHORT[k] for k in kinds if imports.get(k, {}).get("numpy_imported")]
            runs = max(i.get("import_runs", 0) for i in imports.values())
            import_notes.append("\nImport row: the statement each column times: " + "; ".join(
                f"{SHORT[k]} `{imports[k]['statement']}` ({imports[k]['modules_added']} modules)"
                for k in kinds if k in imports) + f"; median of {runs} fresh interpreters. "
                "numpy ends up in sys.modules for: " + (", ".join(with_numpy) or "none") + ".\n")
        lines.append(f"| {group.split()[0]}. {label} | " + " | ".join(cells) + " |")
        target = TARGETS.get(group.split()[0])
        if target and floor and "fasttrace" in row:
            ft = per_call_ns(row["fasttrace"])
            ratio = ft / floor
            verdict = "met" if ratio <= target else "NOT met"
            net = ""
            if harness is not None and floor > harness:
                net = f" ({(ft - harness) / (floor - harness):.2f}x net of the loop)"
            notes.append(f"- {label}: fasttrace at {ratio:.2f}x the no-op{net}, "
                         f"target <= {target}x: {verdict}")
            p = paired.get(group.split()[0])
            if p:
                pv = "met" if p["paired_ratio"] <= target else "NOT met"
                notes.append(f"  - interleaved with the no-op ({p['paired_rounds']} pairs of rounds, "
                             f"median of per-pair ratios): {p['paired_ratio']:.2f}x "
                             f"({p['noop_ns']:,} vs {p['fasttrace_ns']:,} ns): {pv}")
    out = "\n".join(lines) + "\n"
    out += ("\nMedian nanoseconds per operation (in parentheses: the ratio to the no-op tracer "
            "in the same run). Each timed call repeats its scenario in a loop; log_kv is timed "
            "16 calls at a time on a fresh open span.\n")
    if harness is not None:
        out += (f"Every time except log_kv's includes about {fmt_ns(harness)} ns of loop overhead "
                "(the empty loop, measured the same way), the same for every tracer.\n")
    out += "".join(import_notes)
    if "ddtrace" in kinds:
        out += DDTRACE_NOTE
    if notes:
        out += "\nTargets:\n" + "\n".join(notes) + "\n"
    return out


DDTRACE_NOTE = (
    "\nddtrace: its native API (`tracer.start_span`/`set_tag`/`finish`, `with tracer.trace(...)`, "
    "`HTTPPropagator.inject`/`extract`; log_kv: `span._add_event`, private -- ddtrace has no public "
    "span log call, this is what its OpenTelemetry bridge's `add_event` calls). Each complete trace "
    "goes through ddtrace's span processors and trace processors (sampling, tags, service name) to "
    "a writer that counts and drops it (no encoding, no agent, no writer thread); telemetry, remote "
    "configuration, runtime metrics, profiling, AppSec/IAST, data streams, crash tracking and "
    "startup logs are off by environment variables; nothing is patched. Unsampled: a sampling rule "
    "with rate 0 -- ddtrace still records the trace and hands it to the writer (the agent drops "
    "it). Its cases run after every other benchmark of the session (see benchmarks/conftest.py).\n")


def paired_table(data):
    """test_paired_ratio's interleaved measurements, the ones the targets are judged on."""
    rows = [b["extra_info"] for b in data["benchmarks"]
            if "paired_ratio" in (b.get("extra_info") or {})]
    if not rows:
        return ""
    rows.sort(key=lambda i: i["scenario"])
    lines = ["| scenario (interleaved, one run) | baseline ns/op | fasttrace ns/op | "
             "median of per-pair ratios | target |", "|---|---:|---:|---:|---|"]
    for info in rows:
        number, label = info["scenario"].split(" ", 1)
        target = TARGETS.get(number)
        verdict = ""
        if target:
            verdict = f"<= {target}x: {'met' if info['paired_ratio'] <= target else 'NOT met'}"
        base = "in-memory" if number == "6" else "no-op"
        lines.append(f"| {number}. {label} ({base} baseline) | {info['noop_ns']:,} | "
                     f"{info['fasttrace_ns']:,} | {info['paired_ratio']:.2f}x | {verdict} |")
    return "\n".join(lines) + ("\n\nEach row alternates rounds of the baseline and fasttrace "
                               f"({rows[0]['paired_rounds']} pairs or more), the periodic "
                               "drains included, and takes the median of the per-pair ratios.\n")


def memory_table(data):
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info") or {}
        if "bytes_per_span" in info:
            rows.append(info)
    if not rows:
        return ""
    order = {k: i for i, k in enumerate(KINDS)}
    rows.sort(key=lambda i: order.get(i.get("tracer"), 99))
    lines = ["| tracer | bytes per retained finished span (2 tags) | how |", "|---|---|---|"]
    for info in rows:
        if info.get("tracer") == "fasttrace":
            how = (f"arena layout: {info['arena_slot_bytes']} B slot + 2 x {info['arena_tag_bytes']} B "
                   f"tag entries; tracemalloc growth over {info['spans']:,} undrained spans: "
                   f"{info['tracemalloc_bytes_per_span']} B/span; arena preallocated at construction: "
                   f"{info.get('preallocated_bytes_per_slot', '?')} B/slot (incl. tag/log pools)")
        else:
            how = f"tracemalloc, {info['spans']:,} spans kept in memory"
        lines.append(f"| {LABELS.get(info.get('tracer'), info.get('tracer'))} | "
                     f"{info['bytes_per_span']:,} | {how} |")
    return "\n".join(lines) + "\n"


def other_tables(data):
    groups = {}
    for b in data["benchmarks"]:
        group = b.get("group") or ""
        if group.startswith("span:"):
            groups.setdefault(group, []).append(b)
    if not groups:
        return ""
    lines = ["| fasttrace micro-benchmark | no-op | fasttrace | ratio |", "|---|---|---|---|"]
    for group in sorted(groups):
        row = {kind_of(b): b for b in groups[group]}
        if "noop" not in row or "fasttrace" not in row:
            continue
        floor, ft = per_call_ns(row["noop"]), per_call_ns(row["fasttrace"])
        lines.append(f"| {group[5:].strip()} | {fmt_ns(floor)} | {fmt_ns(ft)} | {fmt_ratio(ft / floor)} |")
    return "\n".join(lines) + "\n"


def propagation_table(data):
    """One row per propagation group: medians of the plain benchmarks and the median
    per-pair speed-up of the interleaved measurement (test_paired_speedup)."""
    plain, paired = {}, {}
    for b in data["benchmarks"]:
        info = b.get("extra_info") or {}
        group = b.get("group") or ""
        if group.startswith("propagation paired"):
            paired[info.get("group")] = info
        elif group.startswith("propagation ") and "impl" in info:
            plain.setdefault(group, {})[info["impl"]] = b["stats"]["median"] * 1e9
    if not plain and not paired:
        return ""
    lines = ["| round trip (inject + extract) | fasttrace | peers (ns, speed-up in the same run) "
             "| interleaved speed-up (median of 200 pairs) |", "|---|---|---|---|"]
    for group in sorted(set(plain) | set(paired)):
        row = plain.get(group, {})
        ours = row.get("fasttrace")
        peers = ", ".join(f"{impl} {fmt_ns(ns)}" + (f" ({ns / ours:.1f}x)" if ours else "")
                          for impl, ns in sorted(row.items()) if impl != "fasttrace")
        pair = paired.get(group, {}).get("speedup") or {}
        pair_text = ", ".join(f"{impl} {r:.1f}x" for impl, r in sorted(pair.items()))
        lines.append(f"| {group[len('propagation '):]} | {fmt_ns(ours) if ours else ''} "
                     f"| {peers} | {pair_text} |")
    return "\n".join(lines) + "\n"


def machine(data):
    info = data.get("machine_info") or {}
    cpu = (info.get("cpu") or {}).get("brand_raw") or info.get("processor") or platform.processor()
    cores = (info.get("cpu") or {}).get("count") or os.cpu_count()
    py = f"{info.get('python_implementation', 'CPython')} {info.get('python_version', platform.python_version())}"
    system = f"{info.get('system', platform.system())} {info.get('release', platform.release())}"
    when = (data.get("datetime") or "")[:10]
    versions = []
    for pkg in PACKAGES:
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return (f"Measured {when} on {cpu} ({cores} CPUs), {system}, {py}.\n"
            f"Versions: {', '.join(versions)}.\n")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="keep pytest-benchmark's JSON here")
    p.add_argument("--from", dest="from_json", help="format this JSON instead of running")
    p.add_argument("--all", action="store_true", help="also run test_bench_span.py")
    p.add_argument("--propagation", action="store_true",
                   help="also run test_bench_propagation.py")
    args = p.parse_args(argv)

    if args.from_json:
        path = args.from_json
    else:
        path = args.json or os.path.join(tempfile.mkdtemp(prefix="fasttrace-bench-"), "bench.json")
        run_benchmarks(path, args.all, extra, args.propagation)
        if not os.path.exists(path):
            print("report.py: no JSON was written", file=sys.stderr)
            return 1
    with open(path) as f:
        data = json.load(f)

    print(machine(data))
    print(scenario_tables(data))
    paired = paired_table(data)
    if paired:
        print(paired)
    mem = memory_table(data)
    if mem:
        print(mem)
    other = other_tables(data)
    if other:
        print(other)
    prop = propagation_table(data)
    if prop:
        print(prop)
    return 0


if __name__ == "__main__":
    sys.exit(main())

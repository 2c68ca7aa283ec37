# SPDX-License-Identifier: Apache-2.0
"""Memory: RSS stays flat over millions of span cycles (arena, interning, reporter and
encoders do not leak), and attacker-controlled operation names and tag keys (URLs with
ids) cannot grow the interning tables without bound.

RSS is read from /proc/self/statm in a fresh interpreter, after a warm-up that brings
the arena, pools and allocator to their steady state; the growth is reported."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import fasttrace

from support.servers import report, scale

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="reads RSS from /proc")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fasttrace.__file__)))

PRELUDE = textwrap.dedent("""
    import gc, json, os, sys, time
    import fasttrace
    from opentracing import Format
    from fasttrace._otlp import encode_export_request
    from fasttrace._thrift import encode_spans
    from fasttrace.reporting import BatchReporter, Exporter

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    class Encoding(Exporter):
        # encodes every batch (OTLP protobuf and Jaeger Thrift) and throws it away, so
        # the encoders' memory is part of the cycle
        def __init__(self, check=None):
            self.spans = 0
            self.bytes = 0
            self.check = check
        def export(self, batch):
            self.bytes += len(encode_export_request(batch, "soak"))
            self.bytes += len(encode_spans(batch)[0])
            self.spans += len(batch)
            if self.check is not None:
                self.check(batch)
            return True

    def measure(tracer, step, warmup, n):
        # RSS is read only once the reporter has exported everything finished so far:
        # how far its thread lags behind the application depends on scheduling, and
        # spans still queued are not a leak
        step(warmup)
        tracer.flush(60)
        gc.collect()
        before = rss()
        t0 = time.perf_counter()
        step(n)
        elapsed = time.perf_counter() - t0
        tracer.flush(60)
        gc.collect()
        return before, rss(), elapsed
""")

SOAK = PRELUDE + textwrap.dedent("""
    N = int(sys.argv[1])
    exporter = Encoding()
    tracer = fasttrace.Tracer("soak", reporter=BatchReporter(
        exporter, flush_interval=0.05, max_batch_size=1024), capacity=16384)

    def plain(n):
        for i in range(n // 2):
            with tracer.start_active_span("request"):
                with tracer.start_active_span("db"):
                    pass

    def heavy(n):
        carrier = {}
        for i in range(n // 3):
            with tracer.start_active_span("request", tags={"http.url": "/items/%d" % i,
                                                           "n": i, "ok": True}) as root:
                root.span.set_baggage_item("user", "u%d" % (i % 100))
                carrier.clear()
                tracer.inject(root.span.context, Format.HTTP_HEADERS, carrier)
                ctx = tracer.extract(Format.HTTP_HEADERS, carrier)
                with tracer.start_active_span("db", child_of=ctx) as db:
                    db.span.set_tag("rows", 1.5)
                    db.span.log_kv({"event": "query", "sql": "select %d" % i})
                span = tracer.start_span("bigint", tags={"id": 1 << 80})
                span.finish()
            if i % 10000 == 0:
                tracer.flush(10)

    out = {}
    for name, step, n in (("plain", plain, N), ("heavy", heavy, N // 4)):
        before, after, elapsed = measure(tracer, step, 200_000, n)
        out[name] = {"cycles": n, "rss_before": before, "rss_after": after,
                     "seconds": elapsed}
    tracer.close(30)
    st = tracer.stats()
    out["exported"] = st["exported"]
    out["sampled"] = st["sampled"]
    out["lost"] = sum(v for k, v in st["dropped"].items() if k != "arena_full")
    out["interned"] = [st["interned_names"], st["interned_keys"]]
    print(json.dumps(out))
""")

INTERNING = PRELUDE + textwrap.dedent("""
    N = int(sys.argv[1])
    wrong = []

    def check(batch):
        # the reported name of every span is the one it was given (its "url" tag)
        for i in range(0, len(batch), 97):
            span = batch[i] if hasattr(batch, "__getitem__") else None
            if span is not None and span.operation_name != span.tags.get("url"):
                wrong.append([span.operation_name, span.tags.get("url")])

    exporter = Encoding(check)
    tracer = fasttrace.Tracer("interning", reporter=BatchReporter(
        exporter, flush_interval=0.05, max_batch_size=1024), capacity=16384)
    counter = [0]

    def attack(n):
        # every request a new URL as operation name, and a new tag key from a header
        for _ in range(n):
            i = counter[0] = counter[0] + 1
            url = "GET /api/v1/users/%d/orders/%d" % (i, i * 7919)
            with tracer.start_active_span(url, tags={"url": url}) as sc:
                sc.span.set_tag("x-custom-header-%d" % i, "v")
                sc.span.set_operation_name(url)

    before, after, elapsed = measure(tracer, attack, 100_000, N)
    tracer.flush(30)
    st = tracer.stats()
    tracer.close(30)
    print(json.dumps({"rss_before": before, "rss_after": after, "seconds": elapsed,
                      "cycles": N, "interned_names": st["interned_names"],
                      "interned_keys": st["interned_keys"], "exported": st["exported"],
                      "wrong": wrong[:5]}))
""")

BIG_NAMES = PRELUDE + textwrap.dedent("""
    # few distinct names, each huge: what the interning tables keep after the spans left
    size, n = int(sys.argv[1]), int(sys.argv[2])
    tracer = fasttrace.Tracer("big", reporter=BatchReporter(Encoding(), flush_interval=0.05))
    tracer.start_span("warm", tags={"k": "v"}).finish()
    tracer.flush(10)
    gc.collect()
    before = rss()
    for i in range(n):
        name = ("/%d/" % i) + "x" * size
        key = ("k%d" % i) + "y" * size
        tracer.start_span(name, tags={key: 1}).finish()
        del name, key
    tracer.flush(30)
    gc.collect()
    print(json.dumps({"rss_before": before, "rss_after": rss(), "n": n, "size": size}))
""")


def run(script, *args, timeout=300):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


MB = 2**20


def test_rss_flat_over_millions_of_span_cycles():
    n = int(2_000_000 * scale())
    out = run(SOAK, n)
    assert out["lost"] == 0
    assert out["exported"] == out["sampled"]
    assert out["interned"][0] <= 16 and out["interned"][1] <= 16
    figures = {}
    for name in ("plain", "heavy"):
        r = out[name]
        growth = (r["rss_after"] - r["rss_before"]) / MB
        figures[f"{name}_cycles"] = r["cycles"]
        figures[f"{name}_rss_growth_mb"] = growth
        figures[f"{name}_spans_per_s"] = (r["cycles"] / r["seconds"])
        # a leak of even 8 bytes per span would show as 16 MB over 2 million spans
        assert growth < 8, (name, growth)
    report("memory/soak", **figures)


def test_attacker_controlled_names_and_keys_cannot_grow_interning():
    n = int(300_000 * scale())
    out = run(INTERNING, n)
    assert out["interned_names"] == 16384
    assert out["interned_keys"] == 16384
    assert not out["wrong"], out["wrong"]
    assert out["exported"] == n + 100_000
    growth = (out["rss_after"] - out["rss_before"]) / MB
    # past the cap names and keys live with their span only, and leave with it
    assert growth < 8, growth
    report("memory/interning", cycles=n, interned_names=out["interned_names"],
           interned_keys=out["interned_keys"], rss_growth_mb=growth,
           spans_per_s=n / out["seconds"])


def test_huge_names_and_keys_are_not_kept_after_export():
    out = run(BIG_NAMES, 256 * 1024, 200)
    growth = (out["rss_after"] - out["rss_before"]) / MB
    report("memory/huge-names", n=out["n"], size=out["size"], rss_growth_mb=growth)
    assert growth < 20, growth

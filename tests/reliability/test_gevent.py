# SPDX-License-Identifier: Apache-2.0
"""A gevent.monkey.patch_all() process traces and exports (jaeger-client and ddtrace
users lost every span there: their reporter threads or IO loops never ran).

The traced process is a subprocess whose first statement is patch_all(); it exports to
a loopback OTLP sink in the (unpatched) test process."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import fasttrace

from support.servers import OTLPSink, free_port, report

pytest.importorskip("gevent", reason="gevent is not installed (pip install gevent)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fasttrace.__file__)))

SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json, sys, time
    import gevent
    import fasttrace
    from fasttrace.exporters import OTLPExporter
    from fasttrace.reporting import BatchReporter

    URL, OUT, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tracer = fasttrace.Tracer("gevent-svc", reporter=BatchReporter(
        OTLPExporter(URL, timeout=float(sys.argv[4])), flush_interval=0.1,
        max_batch_size=256))
    expected = {}
    errors = []

    def request(i):
        try:
            with tracer.start_active_span("request", tags={"i": i}) as root:
                expected[root.span.span_id] = [0, "request"]
                gevent.sleep(0.001 * (i % 5))
                for k in range(3):
                    with tracer.start_active_span(f"db{k}") as sc:
                        if sc.span.parent_id != root.span.span_id:
                            errors.append(["wrong parent", i, k])
                        expected[sc.span.span_id] = [root.span.span_id, f"db{k}"]
                        gevent.sleep(0)
                if tracer.active_span is not root.span:
                    errors.append(["lost active span", i])
        except BaseException as exc:
            errors.append(repr(exc))

    t0 = time.monotonic()
    gevent.joinall([gevent.spawn(request, i) for i in range(N)], timeout=60)
    # no flush(): the reporter (a greenlet under patch_all) must export on its own
    deadline = time.monotonic() + float(sys.argv[5])
    while tracer.stats()["exported"] < len(expected) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    exported_without_flush = tracer.stats()["exported"]
    waited = time.monotonic() - t0
    # more spans, then a plain exit: the atexit hook exports them
    for i in range(N, N + 50):
        request(i)
    json.dump({"expected": {str(k): v for k, v in expected.items()}, "errors": errors,
               "exported_without_flush": exported_without_flush,
               "first_wave": 4 * N, "waited": waited}, open(OUT, "w"))
""")


def _run(sink_url, tmp_path, n, timeout_s=10.0, wait_s=15.0, proc_timeout=90):
    path = tmp_path / "gevent_app.py"
    path.write_text(SCRIPT)
    out = tmp_path / "out.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(path), sink_url, str(out), str(n),
                           str(timeout_s), str(wait_s)],
                          capture_output=True, text=True, timeout=proc_timeout, cwd=ROOT,
                          env=env)
    return proc, out, time.monotonic() - t0


def test_gevent_patch_all_traces_and_exports(tmp_path):
    n = 300
    with OTLPSink() as sink:
        proc, out, elapsed = _run(sink.url, tmp_path, n)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stderr == "", proc.stderr[-3000:]
        result = json.loads(out.read_text())
        assert not result["errors"], result["errors"][:5]
        expected = {int(k): v for k, v in result["expected"].items()}
        assert len(expected) == 4 * (n + 50)
        # the reporter ran under gevent without any flush()
        assert result["exported_without_flush"] == result["first_wave"]
        sink.wait_for(len(expected), timeout=5)
        got = sink.snapshot()
        assert not sink.duplicates()
    assert len(got) == len(expected)            # the last 200 came from the atexit hook
    for rec in got:
        parent, name = expected[rec.span_id]
        assert (rec.parent_id or 0, rec.name) == (parent, name)
    report("gevent", spans=len(got), export_wait_s=result["waited"], process_s=elapsed)


def test_gevent_process_exits_promptly_when_the_backend_is_down(tmp_path):
    proc, out, elapsed = _run(f"http://127.0.0.1:{free_port()}/v1/traces", tmp_path, 20,
                              timeout_s=2.0, wait_s=1.0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["exported_without_flush"] == 0
    # 1 s of waiting for exports that cannot happen, then exit within exit_timeout (5 s)
    assert elapsed < 1 + 5 + 10
    report("gevent/backend-down", process_s=elapsed,
           stderr_lines=len(proc.stderr.splitlines()))

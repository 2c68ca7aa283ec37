# SPDX-License-Identifier: Apache-2.0
"""After os.fork(): new ids in the child, an empty arena, the parent's spans reported
once (by the parent)."""
import gc
import json
import os
import subprocess
import sys
import textwrap
import traceback

import pytest

import fasttrace
from support.forking import fork

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")


def _in_child(fn):
    """Runs fn() in a forked child; returns (what it returned, JSON-decoded, and the
    parent's own continuation result of `after_fork_parent`)."""
    r, w = os.pipe()
    pid = fork()
    if pid == 0:                                    # child
        os.close(r)
        try:
            payload = {"ok": fn()}
        except BaseException:
            payload = {"error": traceback.format_exc()}
        try:
            os.write(w, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def _collect(pid, r):
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    payload = json.loads(b"".join(chunks) or b'{"error": "child wrote nothing"}')
    if "error" in payload:
        pytest.fail("in the forked child:\n" + payload["error"])
    return payload["ok"]


def _draw_ids(tracer, n=200):
    ids = []
    for _ in range(n):
        s = tracer.start_span("id")
        ids.append([s.trace_id, s.span_id])
        s.finish()
    return ids


def test_fork_child_has_new_ids_and_empty_arena(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    reported_before = tracer.start_span("reported-before-fork")
    reported_before.finish()
    assert [s.operation_name for s in reporter.spans] == ["reported-before-fork"]
    undrained = tracer.start_span("undrained-at-fork")
    undrained.finish()                  # finished, still in the arena
    open_at_fork = tracer.start_span("open-at-fork")

    def child():
        ids = _draw_ids(tracer)
        new = tracer.start_span("child-span", tags={"who": "child"})
        # a handle from the parent is stale here: it must not write into the child's
        # arena (the new span may well occupy the same slot)
        open_at_fork.set_tag("leak", True)
        open_at_fork.log_kv({"leak": True})
        open_at_fork.set_operation_name("leaked")
        open_at_fork.finish()
        new.finish()
        spans = reporter.spans
        return {
            "ids": ids,
            "names": [s.operation_name for s in spans],
            "child_span": [[s.tags, len(s.logs)] for s in spans
                           if s.operation_name == "child-span"],
        }

    pid, r = _in_child(child)
    parent_ids = _draw_ids(tracer)
    result = _collect(pid, r)

    child_ids = result["ids"]
    assert not {t for t, _ in parent_ids} & {t for t, _ in child_ids}
    assert not {s for _, s in parent_ids} & {s for _, s in child_ids}
    # the child reports only what it recorded itself
    names = result["names"]
    assert "undrained-at-fork" not in names
    assert "open-at-fork" not in names and "leaked" not in names
    assert "reported-before-fork" not in names
    assert sorted(set(names)) == ["child-span", "id"]
    assert names.count("id") == 200
    assert result["child_span"] == [[{"who": "child"}, 0]]

    # the parent still reports its own spans, exactly once
    open_at_fork.set_tag("still-mine", True)
    open_at_fork.finish()
    names = [s.operation_name for s in reporter.spans]
    assert names.count("undrained-at-fork") == 1
    assert names.count("open-at-fork") == 1
    assert names.count("reported-before-fork") == 1
    assert "child-span" not in names
    assert [s.tags for s in reporter.spans if s.operation_name == "open-at-fork"] == [
        {"still-mine": True}]


def test_fork_child_records_after_parent_filled_the_arena(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter, capacity=4)
    held = [tracer.start_span(f"held{i}") for i in range(4)]     # parent's arena full
    tracer.start_span("dropped-in-parent")
    assert tracer.stats()["dropped"]["arena_full"] == 1

    def child():
        for i in range(4):
            tracer.start_span(f"child{i}").finish()
        return {"names": [s.operation_name for s in reporter.spans],
                "dropped": tracer.stats()["dropped"]["arena_full"]}

    pid, r = _in_child(child)
    result = _collect(pid, r)
    assert sorted(result["names"]) == [f"child{i}" for i in range(4)]
    assert result["dropped"] == 0
    for s in held:
        s.finish()
    assert sorted(s.operation_name for s in reporter.spans) == [f"held{i}"
                                                                for i in range(4)]


def test_fork_active_scope_in_child(make_tracer, reporter):
    tracer = make_tracer(reporter=reporter)
    with tracer.start_active_span("parent-request") as scope:
        def child():
            # the child inherits the active span as a context (same trace) but records
            # its own spans only
            with tracer.start_active_span("child-work") as cs:
                ids = [cs.span.trace_id, cs.span.parent_id, cs.span.span_id]
            return {"ids": ids, "names": [s.operation_name for s in reporter.spans]}

        pid, r = _in_child(child)
        result = _collect(pid, r)
        assert result["ids"][0] == scope.span.trace_id
        assert result["ids"][1] == scope.span.span_id
        assert result["names"] == ["child-work"]
    assert [s.operation_name for s in reporter.spans] == ["parent-request"]


def test_fork_twice_gives_different_ids(make_tracer):
    tracer = make_tracer(sampler=fasttrace.ConstSampler(False))
    pids = [_in_child(lambda: _draw_ids(tracer, 50)) for _ in range(2)]
    a, b = (_collect(pid, r) for pid, r in pids)
    assert not {s for _, s in a} & {s for _, s in b}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc fork()")
def test_fork_from_c_without_python_hooks():
    # servers such as uwsgi fork from C: os.register_at_fork hooks do not run
    script = textwrap.dedent("""
        import ctypes, json, os
        import fasttrace
        reporter = fasttrace.InMemoryReporter()
        tracer = fasttrace.Tracer(reporter=reporter)
        tracer.start_span("undrained-at-fork").finish()
        held = tracer.start_span("open-at-fork")
        r, w = os.pipe()
        libc = ctypes.PyDLL(None)          # keeps the GIL across the call
        pid = libc.fork()
        if pid == 0:
            try:
                ids = []
                for _ in range(100):
                    s = tracer.start_span("id")
                    ids.append(s.span_id)
                    s.finish()
                held.set_tag("leak", True)
                held.finish()
                out = {"ids": ids, "names": [s.operation_name for s in reporter.spans]}
            except BaseException as exc:
                out = {"error": repr(exc)}
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        parent_ids = []
        for _ in range(100):
            s = tracer.start_span("id")
            parent_ids.append(s.span_id)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.waitpid(pid, 0)
        child = json.loads(data)
        held.finish()
        print(json.dumps({"child": child, "parent_ids": parent_ids,
                          "parent_names": [s.operation_name for s in reporter.spans]}))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fasttrace.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    child = out["child"]
    assert "error" not in child, child
    assert not set(child["ids"]) & set(out["parent_ids"])
    assert set(child["names"]) == {"id"}
    assert len(child["names"]) == 100
    assert out["parent_names"].count("undrained-at-fork") == 1
    assert out["parent_names"].count("open-at-fork") == 1


def test_fork_child_exporter_counters_start_at_zero():
    # the counters of stats() describe what this process sent; a child inherits the
    # parent's exporter objects, not its history
    from fasttrace.exporters import JaegerExporter, OTLPExporter, ZipkinExporter
    from fasttrace.reporting import BatchReporter

    exporters = [OTLPExporter("http://127.0.0.1:9/v1/traces"),
                 ZipkinExporter("http://127.0.0.1:9/api/v2/spans"),
                 JaegerExporter(collector_endpoint="http://127.0.0.1:9/api/traces")]
    tracers = [fasttrace.Tracer("fork-stats", reporter=BatchReporter(e)) for e in exporters]
    try:
        for exporter in exporters:                   # as if the parent had exported
            exporter._http.requests = exporter._http.bytes_sent = 7
            exporter._http.last_status = 500
            exporter._stats = dict.fromkeys(exporter._stats, 3)

        def child():
            return [exporter.stats() for exporter in exporters]

        for stats in _collect(*_in_child(child)):
            counters = {k: v for k, v in stats.items() if isinstance(v, int)}
            assert counters and set(counters.values()) == {0}, stats
            assert stats.get("last_status") is None
        assert exporters[0].stats()["requests"] == 7     # the parent's are untouched
    finally:
        for tracer in tracers:
            tracer.close(1)


# A collection inside a drain runs finalizers (here: a gc callback standing in for one)
# that may fork -- on the draining thread, or on another thread while the drainer waits.
# The child must start from an empty arena, export its own spans only, and never stall.
FORK_IN_DRAIN = """
    import gc, json, os, sys, threading
    import fasttrace
    MODE = %r
    tracer = fasttrace.Tracer(reporter=fasttrace.InMemoryReporter(), capacity=64)
    for i in range(10):
        tracer.start_span(f"parent-{i}").finish()
    in_drain, forked = threading.Event(), threading.Event()
    state = {}

    def in_a_drain():
        f = sys._getframe(2)
        while f is not None:
            if f.f_code.co_name in ("_drain_to_reporter", "drain"):
                return True
            f = f.f_back
        return False

    def callback(phase, info):
        if phase != "start" or state.get("done") or not in_a_drain():
            return
        state["done"] = True
        if MODE == "same-thread":
            state["pid"] = os.fork()
        else:                              # hold the drainer here until the fork is done
            in_drain.set()
            forked.wait(60)

    gc.callbacks.append(callback)
    gc.set_threshold(1)
    if MODE == "same-thread":
        tracer.flush()
        pid = state["pid"]
    else:
        drainer = threading.Thread(target=tracer.flush)
        drainer.start()
        assert in_drain.wait(60)
        pid = os.fork()
        if pid:
            forked.set()
    gc.set_threshold(700)
    gc.callbacks.clear()
    if pid == 0:
        spans = [tracer.start_span(f"child-{i}") for i in range(70)]
        recording = sum(s.is_recording for s in spans)
        for s in spans:
            s.finish()
        tracer.flush()
        st = tracer.stats()
        out = {"recording": recording, "names": [s.operation_name for s in tracer.reporter.spans],
               "finished": st["arena_finished"], "open": st["arena_open"],
               "dropped": st["dropped"]["arena_full"]}
        sys.stdout.write(json.dumps(out) + "\\n")
        sys.stdout.flush()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if MODE != "same-thread":
        drainer.join(60)
    print(json.dumps({"status": status,
                      "parent": [s.operation_name for s in tracer.reporter.spans]}))
"""


@pytest.mark.parametrize("mode", ["same-thread", "other-thread"])
def test_a_fork_in_the_middle_of_a_drain(mode):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fasttrace.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FORK_IN_DRAIN % mode)],
                          capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    child = next(line for line in lines if "recording" in line)
    parent = lines[-1]
    assert parent["status"] == 0
    # the child: 64 of 70 recorded (capacity), all its own, nothing of the parent's
    assert child["recording"] == 64 and child["dropped"] == 6
    assert sorted(child["names"]) == sorted(f"child-{i}" for i in range(64))
    assert child["finished"] == 0 and child["open"] == 0
    # the parent: its ten spans, once
    assert sorted(parent["parent"]) == sorted(f"parent-{i}" for i in range(10))


# The tracer's fork hook allocates (new reporter state); a collection it set off would
# run the finalizers of the parent's garbage in the child, where the threads they may
# wait for (grpc's channels and servers join theirs) do not exist.
def test_fork_hooks_run_with_collection_off_and_restore_it(monkeypatch):
    import weakref

    from fasttrace import _fork

    class Hook:
        def _after_fork_in_child(self):
            self.collecting = gc.isenabled()

    hook = Hook()
    # a registry of this hook alone: the live tracers of other tests are not reset
    monkeypatch.setattr(_fork, "_registered", weakref.WeakSet([hook]))
    _fork.run()
    assert hook.collecting is False and gc.isenabled()

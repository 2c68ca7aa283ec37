# SPDX-License-Identifier: Apache-2.0
"""Fork under load: pre-fork servers (gunicorn), multiprocessing's fork start method and a
bare fork() from C (uwsgi: pthread_atfork handlers run, os.register_at_fork hooks do not).

Every process exports to one loopback OTLP sink in the test process, which counts spans
per span id: children export their own spans, the parent's spans arrive exactly once,
ids never collide across processes, and no child hangs when it was forked while the
parent's reporter thread was busy (holding its locks) exporting to a slow backend.

Each scenario runs in a fresh interpreter (a forking pytest process with live threads
would be the test's problem, not the tracer's)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import fasttrace

from support.servers import OTLPSink, report, scale

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc fork via ctypes"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fasttrace.__file__)))

COMMON = textwrap.dedent("""
    import ctypes, json, os, sys, threading, time
    import fasttrace
    from fasttrace.exporters import OTLPExporter
    from fasttrace.reporting import BatchReporter

    URL, OUT = sys.argv[1], sys.argv[2]
    CFG = json.loads(sys.argv[3])
    _libc = ctypes.PyDLL(None)          # PyDLL: the GIL stays held across fork()

    def do_fork():
        return _libc.fork() if CFG["fork"] == "libc" else os.fork()

    def make_tracer(name, **kw):
        return fasttrace.Tracer(name, reporter=BatchReporter(
            OTLPExporter(URL, timeout=10), flush_interval=CFG.get("interval", 0.05),
            max_batch_size=CFG.get("batch", 256)), **kw)

    def record(tracer, label, n, ids):
        # nested spans, ids noted; tag "who" says which process recorded it
        for i in range(n):
            with tracer.start_active_span(label, tags={"who": label}) as sc:
                ids.append(sc.span.span_id)
                with tracer.start_active_span(label + "-child",
                                              tags={"who": label}) as cc:
                    ids.append(cc.span.span_id)

    def send(fd, obj):
        data = json.dumps(obj).encode()
        while data:
            data = data[os.write(fd, data):]
        os.close(fd)

    def receive(fd, deadline):
        chunks = []
        os.set_blocking(fd, False)
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:
                break
            chunks.append(chunk)
        else:
            return None
        os.close(fd)
        return json.loads(b"".join(chunks) or b"null")

    def reap(pid, deadline):
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return "hung"

    class Load:
        # a parent thread recording spans all the time (the server keeps serving)
        def __init__(self, tracer, ids):
            self.stop = threading.Event()
            self.t = threading.Thread(target=self.run, args=(tracer, ids), daemon=True)
            self.t.start()

        def run(self, tracer, ids):
            limit = len(ids) + CFG.get("load_max", 20000)
            while not self.stop.is_set() and len(ids) < limit:
                record(tracer, "parent-load", 20, ids)
                time.sleep(0.002)

        def finish(self):
            self.stop.set()
            self.t.join(10)
""")

PREFORK = COMMON + textwrap.dedent("""
    tracer = make_tracer("prefork")
    parent_ids, children, codes = [], {}, {}
    record(tracer, "parent-before", 300, parent_ids)
    tracer.flush(10)                            # some exported before the fork ...
    record(tracer, "parent-undrained", 50, parent_ids)   # ... some still in the arena
    held = tracer.start_span("parent-held")     # open across every fork
    parent_ids.append(held.span_id)
    load = Load(tracer, parent_ids) if CFG["load"] else None
    pipes = {}
    for k in range(CFG["workers"]):
        r, w = os.pipe()
        pid = do_fork()
        if pid == 0:
            os.close(r)
            out = {"ids": [], "error": None}
            try:
                held.set_tag("leak", k)         # a stale handle: must not write anything
                held.finish()
                label = f"worker{k}"
                record(tracer, label, CFG["spans"], out["ids"])
                out["flushed"] = tracer.flush(20)
                tracer.close(10)
                st = tracer.stats()
                out["exported"] = st["exported"]
                out["dropped"] = {k2: v for k2, v in st["dropped"].items() if v}
            except BaseException as exc:
                out["error"] = repr(exc)
            send(w, out)
            os._exit(0)
        os.close(w)
        pipes[k] = (pid, r)
        time.sleep(0.02)
    deadline = time.monotonic() + 60
    for k, (pid, r) in pipes.items():
        children[k] = receive(r, deadline)
        codes[k] = reap(pid, deadline)
    if load:
        load.finish()
    held.finish()
    ok = tracer.flush(20)
    tracer.close(10)
    st = tracer.stats()
    json.dump({"parent_ids": parent_ids, "children": children, "codes": codes,
               "parent_flushed": ok, "parent_exported": st["exported"],
               "parent_dropped": {k: v for k, v in st["dropped"].items() if v}},
              open(OUT, "w"))
""")

BUSY_FORKS = COMMON + textwrap.dedent("""
    # the parent's reporter is mid-export to a slow sink (holding the exporter's
    # connection lock) whenever we fork
    tracer = make_tracer("busy")
    parent_ids, children, codes = [], {}, {}
    if CFG["load"]:
        load = Load(tracer, parent_ids)
    else:
        load = None
        record(tracer, "parent-before", 600, parent_ids)  # a full batch: export starts
    time.sleep(0.3)
    pipes = {}
    for k in range(CFG["forks"]):
        r, w = os.pipe()
        pid = do_fork()
        if pid == 0:
            os.close(r)
            out = {"ids": [], "error": None}
            try:
                record(tracer, f"fork{k}", CFG["spans"], out["ids"])
                out["flushed"] = tracer.flush(20)
                tracer.close(10)
                out["exported"] = tracer.stats()["exported"]
            except BaseException as exc:
                out["error"] = repr(exc)
            send(w, out)
            os._exit(0)
        os.close(w)
        pipes[k] = (pid, r)
        time.sleep(CFG["gap"])
    deadline = time.monotonic() + 60
    for k, (pid, r) in pipes.items():
        children[k] = receive(r, deadline)
        codes[k] = reap(pid, deadline)
    if load:
        load.finish()
    ok = tracer.flush(30)
    tracer.close(10)
    json.dump({"parent_ids": parent_ids, "children": children, "codes": codes,
               "parent_flushed": ok, "parent_exported": tracer.stats()["exported"]},
              open(OUT, "w"))
""")

MULTIPROCESSING = COMMON + textwrap.dedent("""
    if CFG.get("import_late"):
        # `import fasttrace` does not import multiprocessing: the reporter exists first
        assert "multiprocessing" not in sys.modules
        tracer = make_tracer("mp")
        import multiprocessing as mp
    else:
        import multiprocessing as mp
        tracer = make_tracer("mp")

    def work(k, q, flush):
        import faulthandler
        ids = []
        record(tracer, f"mp{k}", CFG["spans"], ids)
        if flush:
            # a flush that hangs leaves every thread's stack on stderr
            faulthandler.dump_traceback_later(8, file=sys.stderr)
            tracer.flush(20)
            faulthandler.cancel_dump_traceback_later()
        q.put((k, ids))

    if __name__ == "__main__":
        parent_ids = []
        record(tracer, "parent-before", 100, parent_ids)
        load = Load(tracer, parent_ids)   # os.fork (multiprocessing): hooks run
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=work, args=(k, q, CFG["flush"]))
                 for k in range(CFG["workers"])]
        for p in procs:
            p.start()
        children = dict(q.get(timeout=60) for _ in procs)
        codes = {}
        for k, p in enumerate(procs):
            p.join(60)
            codes[k] = "hung" if p.is_alive() else p.exitcode
            if p.is_alive():
                p.kill()
        load.finish()
        tracer.close(10)
        json.dump({"parent_ids": parent_ids, "codes": codes,
                   "children": {k: {"ids": ids, "error": None}
                                for k, ids in children.items()}},
                  open(OUT, "w"))
""")


def run_script(tmp_path, script, sink, cfg, timeout=120):
    path = tmp_path / "scenario.py"
    path.write_text(script)
    out = tmp_path / "out.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(path), sink.url, str(out), json.dumps(cfg)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if proc.stderr:
        print(proc.stderr[-20000:])           # shown when the test fails
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stderr


def check_exactly_once(result, sink, expect_all_children=True):
    """Every recorded id arrived exactly once, in the process that recorded it."""
    codes = {int(k): v for k, v in result["codes"].items()}
    assert all(code == 0 for code in codes.values()), codes
    children = {int(k): v for k, v in result["children"].items()}
    for k, child in children.items():
        assert child is not None, f"child {k} sent nothing (hung?)"
        assert child["error"] is None, child["error"]
    parent_ids = result["parent_ids"]
    all_ids = list(parent_ids)
    for child in children.values():
        all_ids.extend(child["ids"])
    assert len(all_ids) == len(set(all_ids)), "span ids collided across processes"
    got = sink.snapshot()
    dups = sink.duplicates()
    assert not dups, f"{len(dups)} spans exported more than once"
    by_id = {rec.span_id: rec for rec in got}
    missing_parent = [i for i in parent_ids if i not in by_id]
    assert not missing_parent, f"{len(missing_parent)} parent spans never arrived"
    for k, child in children.items():
        missing = [i for i in child["ids"] if i not in by_id]
        if expect_all_children:
            assert not missing, f"child {k}: {len(missing)}/{len(child['ids'])} spans lost"
        for i in child["ids"]:
            if i in by_id:
                assert by_id[i].attrs.get("who", "").endswith(str(k)), by_id[i]
    # nothing arrived that nobody recorded (e.g. a child re-exporting its parent's spans)
    assert set(by_id) <= set(all_ids)
    return len(all_ids), len(got)


# A fork() from C leaves CPython's GIL unusable in the child when another Python thread
# was waiting for the GIL at that instant (CPython does not re-initialise it without
# PyOS_AfterFork_Child; unbit/uwsgi#1149, #1369): the child deadlocks on its first GIL
# hand-off, tracer or not.  So the libc variants fork with no parent thread contending
# for the GIL: the parent's reporter thread sleeps (long flush_interval) or sits in a
# blocking socket read (a held export), which is what uwsgi's master looks like.
LIBC_QUIET = {"load": False, "interval": 5.0}


@pytest.mark.parametrize("fork", ["os", "libc"])
def test_prefork_server(tmp_path, fork):
    cfg = {"fork": fork, "workers": 4, "spans": int(500 * scale()), "load": True}
    if fork == "libc":
        cfg.update(LIBC_QUIET)
    with OTLPSink() as sink:
        result, _ = run_script(tmp_path, PREFORK, sink, cfg)
        recorded, arrived = check_exactly_once(result, sink)
    assert recorded == arrived
    for child in result["children"].values():
        assert child["flushed"] is True
        assert child["exported"] == len(child["ids"]), child
        assert not child["dropped"], child
    assert result["parent_flushed"] is True
    assert result["parent_exported"] == len(result["parent_ids"])
    report(f"fork/prefork-{fork}", workers=cfg["workers"], spans=recorded,
           arrived=arrived, duplicates=0)


@pytest.mark.parametrize("fork", ["os", "libc"])
def test_fork_while_the_reporter_is_busy_with_a_slow_backend(tmp_path, fork):
    # os.fork: a parent thread keeps recording and the sink takes 0.15 s per request,
    # so the parent's reporter thread is nearly always inside an export (holding the
    # exporter's connection lock) when a fork happens.
    # libc fork: the parent's first export is held for 4 s by the sink, so every fork
    # happens while the reporter thread is blocked inside it (see LIBC_QUIET).
    cfg = {"fork": fork, "forks": int(10 * scale()), "spans": 600, "gap": 0.03,
           "batch": 512, "load": True}
    sink_args = {"mode": "slow", "delay": 0.15}
    if fork == "libc":
        cfg.update(LIBC_QUIET)
        sink_args = {"mode": "hold_first", "hold": 4.0}
    with OTLPSink(**sink_args) as sink:
        result, _ = run_script(tmp_path, BUSY_FORKS, sink, cfg)
        recorded, arrived = check_exactly_once(result, sink)
    assert recorded == arrived
    assert result["parent_flushed"] is True
    report(f"fork/busy-reporter-{fork}", forks=cfg["forks"], spans=recorded,
           arrived=arrived)


def test_multiprocessing_fork_children_export_what_they_flush(tmp_path):
    cfg = {"fork": "os", "workers": 4, "spans": int(400 * scale()), "flush": True,
           "load": True}
    with OTLPSink() as sink:
        result, _ = run_script(tmp_path, MULTIPROCESSING, sink, cfg)
        recorded, arrived = check_exactly_once(result, sink)
    assert recorded == arrived
    report("fork/multiprocessing", workers=cfg["workers"], spans=recorded, arrived=arrived)


def test_multiprocessing_fork_children_export_without_an_explicit_flush(tmp_path):
    cfg = {"fork": "os", "workers": 2, "spans": 100, "flush": False, "load": True}
    with OTLPSink() as sink:
        result, _ = run_script(tmp_path, MULTIPROCESSING, sink, cfg)
        check_exactly_once(result, sink)


def test_multiprocessing_fork_children_export_when_multiprocessing_came_after_the_tracer(
        tmp_path):
    # the children's finalizer is registered only once multiprocessing is imported
    cfg = {"fork": "os", "workers": 2, "spans": 100, "flush": False, "load": True,
           "import_late": True}
    with OTLPSink() as sink:
        result, _ = run_script(tmp_path, MULTIPROCESSING, sink, cfg)
        check_exactly_once(result, sink)


LIBC_FORK_FEW = COMMON + textwrap.dedent("""
    tracer = make_tracer("few", )
    record(tracer, "parent", 5, [])
    tracer._drain_to_reporter()         # the parent's spans wait in the reporter's queue
    r, w = os.pipe()
    pid = do_fork()
    if pid == 0:
        os.close(r)
        ids = []
        record(tracer, "child0", 5, ids)   # fewer than max_batch_size: no batch_ready
        ok = tracer.flush(10)
        tracer.close(10)
        send(w, {"ids": ids, "error": None, "flushed": ok,
                 "exported": tracer.stats()["exported"]})
        os._exit(0)
    os.close(w)
    child = receive(r, time.monotonic() + 30)
    code = reap(pid, time.monotonic() + 30)
    tracer.close(10)
    json.dump({"parent_ids": [], "children": {0: child}, "codes": {0: code}},
              open(OUT, "w"))
""")


# Regression: Tracer.flush() in a C-forked child used to drain the child's spans into
# the reporter's inherited queue, which BatchReporter.flush() then replaced on noticing
# the new pid (spans lost silently, flush() True).  Fewer spans than max_batch_size, so
# no batch_ready() call notices the fork first.
def test_libc_fork_child_flush_exports_a_few_spans(tmp_path):
    with OTLPSink() as sink:
        result, _ = run_script(tmp_path, LIBC_FORK_FEW, sink, {"fork": "libc", "batch": 512})
        child = result["children"]["0"]
        sink.wait_for(10, timeout=2)
        got = {rec.span_id for rec in sink.snapshot()}
    assert set(child["ids"]) <= got, "the child's spans never arrived"
    assert child["exported"] == 10

# SPDX-License-Identifier: Apache-2.0
"""`python -m fasttrace demo`: run for real in a subprocess; its printed waterfall and
its JSON-lines file are parsed and checked against each other.

With grpcio and requests (the test extras) the gateway calls the inventory over HTTP
(requests) and gRPC; a second run blocks both imports, as on a machine with only
`pip install .`, where the demo uses urllib and HTTP only.

Both runs also check the demo's tail-sampling run (TAIL_REQUESTS requests through two
tail-sampling tracers at a 1% baseline, request FAILING_REQUEST failing in the
inventory's database): on what is kept, never on timing.  Which traces the baseline
keeps depends on the random trace ids, so those are checked against the rule itself.
"""
import html.parser
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fasttrace
from fasttrace.demo import FAILING_REQUEST, TAIL_POLICY, TAIL_REQUESTS
from fasttrace.tail import ratio_bound
from support.waterfall import parse_waterfall

ROOT = Path(fasttrace.__file__).resolve().parent.parent
REQUEST_LINE = re.compile(r"^  GET (?P<path>/checkout\?\S+)\s+-> (?P<status>\d{3}) .*"
                          r"trace (?P<trace>[0-9a-f]{32})$")
TAIL_FAILING = re.compile(r"^  request (?P<n>\d+): GET (?P<path>\S+) -> (?P<status>\d{3}) ")
TAIL_TRACE = re.compile(r"^\s+trace (?P<trace>[0-9a-f]{32})$")
TAIL_SERVICE = re.compile(r"^  (?P<service>gateway|inventory)\s+(?P<seen>\d+) traces: "
                          r"(?P<kept>\d+) kept(?: \((?P<by>[^)]*)\))?, (?P<discarded>\d+) "
                          r"discarded \((?P<spans>\d+) spans\)$")
BLOCK_OPTIONAL = ("import sys; sys.modules['grpc'] = None; sys.modules['requests'] = None; "
                  "from fasttrace.__main__ import main; sys.exit(main(sys.argv[1:]))")


def run_demo(tmp_path, *extra, code=None):
    out = tmp_path / "demo.jsonl"
    page = tmp_path / "demo.html"
    args = ["demo", "--out", str(out), "--html", str(page), "--no-color", "--width", "140",
            *extra]
    cmd = [sys.executable, "-m", "fasttrace", *args] if code is None else \
        [sys.executable, "-c", code, *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", env=env,
                          timeout=60, cwd=str(tmp_path))
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
    spans = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return {"stdout": proc.stdout, "elapsed": elapsed, "spans": spans, "out": out,
            "html": page}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pytest.importorskip("grpc")
    pytest.importorskip("requests")
    return run_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def demo_stdlib_only(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo-stdlib"), code=BLOCK_OPTIONAL)


def requests_sent(stdout):
    return [m.groupdict() for m in map(REQUEST_LINE.match, stdout.splitlines()) if m]


def by_trace(spans):
    traces = {}
    for span in spans:
        traces.setdefault(span["trace_id"], []).append(span)
    return traces


def kind(span):
    return span["tags"].get("span.kind")


def check_trace(spans, failing, rpc):
    """The shape of one request's trace, from the JSON-lines records; returns the spans by
    role.  rpc: "grpc" or "http" (how the reservation travelled)."""
    ids = {s["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert (root["service_name"], root["operation_name"], kind(root)) == \
        ("gateway", "GET /checkout", "server")
    for span in spans:                                    # parents resolve in the trace
        assert span["parent_id"] is None or span["parent_id"] in ids, span
        assert span["start_ns"] >= root["start_ns"]
    children = {}
    for span in spans:
        children.setdefault(span["parent_id"], []).append(span)

    def only(parent, **want):
        found = [s for s in children.get(parent["span_id"], ())
                 if all((kind(s) if k == "kind" else s[k]) == v for k, v in want.items())]
        assert len(found) == 1, (parent["operation_name"], want, children.get(
            parent["span_id"]))
        return found[0]

    roles = {"root": root}
    # gateway -> inventory over HTTP: client span in the gateway, server span in the
    # inventory (a child of the client span: the context crossed in the headers)
    roles["stock_client"] = only(root, service_name="gateway", kind="client",
                                 operation_name="HTTP GET")
    roles["stock_server"] = only(roles["stock_client"], service_name="inventory",
                                 kind="server", operation_name="GET /stock/{sku}")
    roles["db"] = only(roles["stock_server"], operation_name="db.query")
    # gateway -> inventory: the reservation
    if rpc == "grpc":
        (client,) = [s for s in children[root["span_id"]]
                     if kind(s) == "client" and s["tags"].get("component") == "grpc"]
        assert client["service_name"] == "gateway" and "Reserve" in client["operation_name"]
        server = only(client, service_name="inventory", kind="server")
        assert server["tags"].get("component") == "grpc"
        assert "Reserve" in server["operation_name"]
    else:
        client = only(root, service_name="gateway", kind="client", operation_name="HTTP POST")
        server = only(client, service_name="inventory", kind="server",
                      operation_name="POST /reserve")
    roles["reserve_client"], roles["reserve_server"] = client, server
    roles["warehouse"] = only(server, operation_name="warehouse.reserve")
    # the event published after the reply follows_from the request
    published = [s for s in spans if s["operation_name"] == "publish order-event"]
    if failing:
        assert published == []
        assert len(spans) == 7
    else:
        (event,) = published
        assert event["parent_id"] == root["span_id"]
        assert event["references"] == [{"type": "follows_from", "trace_id": root["trace_id"],
                                        "span_id": root["span_id"]}]
        assert event["start_ns"] >= roles["warehouse"]["end_ns"]
        roles["event"] = event
        assert len(spans) == 8
    # time nests: children inside their (synchronous, same-service) parents
    for parent, child in [("root", "stock_client"), ("stock_server", "db"),
                          ("root", "reserve_client"), ("reserve_server", "warehouse")]:
        p, c = roles[parent], roles[child]
        assert p["start_ns"] <= c["start_ns"] and c["end_ns"] <= p["end_ns"], (parent, child)
    # across the wire the server starts while the client waits (a WSGI server span may
    # end a little after the client has the response: it ends when the body is sent)
    for parent, child in [("stock_client", "stock_server"),
                          ("reserve_client", "reserve_server")]:
        p, c = roles[parent], roles[child]
        assert p["start_ns"] <= c["start_ns"] <= p["end_ns"], (parent, child)
    assert roles["stock_client"]["end_ns"] <= roles["reserve_client"]["start_ns"]
    errors = {role for role, s in roles.items() if s["tags"].get("error") is True}
    if failing:
        assert errors == {"root", "reserve_client", "reserve_server", "warehouse"}
        assert roles["root"]["tags"]["http.status_code"] == 502
        (log,) = [entry for entry in roles["warehouse"]["logs"]
                  if entry["fields"].get("event") == "error"]
        assert log["fields"]["message"] == "warehouse eu-1 did not confirm within 3 ms"
    else:
        assert errors == set()
        assert roles["root"]["tags"]["http.status_code"] == 200
    return roles


def check_waterfall(trace, spans, roles):
    """The printed rows of one trace against its JSON-lines records."""
    rows = trace["rows"]
    assert len(rows) == len(spans)
    expected = [("gateway", 0, "GET /checkout"), ("gateway", 1, "HTTP GET"),
                ("inventory", 2, "GET /stock/{sku}"), ("inventory", 3, "db.query"),
                ("gateway", 1, roles["reserve_client"]["operation_name"]),
                ("inventory", 2, roles["reserve_server"]["operation_name"]),
                ("inventory", 3, "warehouse.reserve")]
    order = ["root", "stock_client", "stock_server", "db", "reserve_client",
             "reserve_server", "warehouse"]
    if "event" in roles:
        expected.append(("gateway", 1, "publish order-event"))
        order.append("event")
    assert [(r["service"], r["depth"], r["op"]) for r in rows] == expected
    assert [r["follows"] for r in rows] == [role == "event" for role in order]
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    total = max(end - start, 1)
    columns = trace["columns"]
    for row, role in zip(rows, order):
        span = roles[role]
        # the bar is exactly where start and end put it on the axis
        first = min(max((span["start_ns"] - start) * columns // total, 0), columns - 1)
        last = min(max(-(-(span["end_ns"] - start) * columns // total), first + 1), columns)
        assert (row["first"], row["last"]) == (first, last), (role, row)
        assert row["duration_ns"] == pytest.approx(span["duration_ns"], rel=0.01, abs=100)
        assert row["error"] == (span["tags"].get("error") is True)
    # start order is bar order, and the root covers the request
    by_start = sorted(zip(order, rows), key=lambda item: roles[item[0]]["start_ns"])
    assert [r["first"] for _, r in by_start] == sorted(r["first"] for r in rows)
    assert rows[0]["first"] == 0


def test_demo_runs_quickly_and_cleanly(demo):
    assert demo["elapsed"] < 20
    out = demo["stdout"]
    assert "gRPC on 127.0.0.1:" in out and "calls inventory with requests and gRPC" in out
    assert f"See them again:  python -m fasttrace view {demo['out']}" in out
    assert f"HTML waterfall: {demo['html']}" in out
    assert "\x1b[" not in out                               # --no-color


def test_one_trace_per_request_in_the_file(demo):
    sent = requests_sent(demo["stdout"])
    assert [(r["path"], r["status"]) for r in sent] == [
        ("/checkout?sku=apple&qty=2", "200"), ("/checkout?sku=pear&qty=1", "200"),
        ("/checkout?sku=durian&qty=5", "502")]
    traces = by_trace(demo["spans"])
    # distinct, in order, first in the file (the tail-sampling run's kept traces follow)
    assert list(traces)[:3] == [r["trace"] for r in sent]
    for request, (trace_id, spans) in zip(sent, traces.items()):
        assert all(s["sampled"] for s in spans)
        check_trace(spans, failing=request["status"] == "502", rpc="grpc")


def test_grpc_and_http_tags(demo):
    traces = list(by_trace(demo["spans"]).values())
    roles = check_trace(traces[0], failing=False, rpc="grpc")
    assert roles["stock_client"]["tags"]["component"] == "requests"
    assert roles["stock_client"]["tags"]["http.status_code"] == 200
    assert roles["stock_server"]["tags"]["component"] == "wsgi"
    assert roles["stock_server"]["tags"]["http.url"].endswith("/stock/apple")
    assert roles["root"]["tags"]["order.sku"] == "apple"
    failed = check_trace(traces[2], failing=True, rpc="grpc")
    assert failed["reserve_client"]["tags"]["rpc.grpc.status_code"] != 0


def test_waterfall_matches_the_file(demo):
    printed = parse_waterfall(demo["stdout"])[:3]
    traces = dict(list(by_trace(demo["spans"]).items())[:3])
    assert [t["trace_id"] for t in printed] == list(traces)
    for trace, (trace_id, spans) in zip(printed, traces.items()):
        failing = trace_id == list(traces)[2]
        roles = check_trace(spans, failing=failing, rpc="grpc")
        check_waterfall(trace, spans, roles)
        assert "kept" not in trace["header"]                  # not tail-sampled
        assert all(r["decision"] is None for r in trace["rows"])
        services = "gateway, inventory"
        assert f"{len(spans)} spans" in trace["header"] and services in trace["header"]
        if failing:
            assert "4 errors" in trace["header"]
            details = {r["op"]: r["detail"] for r in trace["rows"] if r["error"]}
            assert details["GET /checkout"].startswith("✗ HTTP 502")
            assert "http.status_code=502" in details["GET /checkout"]
            assert details["warehouse.reserve"].startswith(
                "✗ TimeoutError: warehouse eu-1 did not confirm within 3 ms")
            server = roles["reserve_server"]["operation_name"]
            assert "warehouse eu-1 did not confirm" in details[server]


def test_view_shows_the_same_waterfall(demo):
    """`view FILE` (what the demo tells the user to run) prints the same rows."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-m", "fasttrace", "view", str(demo["out"]),
                           "--width", "140", "--no-color"], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    again = {t["trace_id"]: t for t in parse_waterfall(proc.stdout)}
    shown = parse_waterfall(demo["stdout"])
    assert len(shown) == 4 and set(again) == set(by_trace(demo["spans"]))
    for trace in shown:
        assert again[trace["trace_id"]]["rows"] == trace["rows"]
        assert again[trace["trace_id"]]["header"] == trace["header"]


def test_html_has_every_span(demo):
    class Spans(html.parser.HTMLParser):
        ids = []
        external = []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "data-span-id" in attrs:
                self.ids.append(attrs["data-span-id"])
            if any(k in attrs for k in ("src", "href")):
                self.external.append((tag, attrs))

    parser = Spans()
    parser.feed(demo["html"].read_text(encoding="utf-8"))
    assert sorted(parser.ids) == sorted(s["span_id"] for s in demo["spans"])
    assert parser.external == []


def test_stdlib_only(demo_stdlib_only):
    """As after a bare `pip install .`: no grpcio, no requests."""
    out = demo_stdlib_only["stdout"]
    assert "no gRPC hop: grpcio is not installed" in out
    assert "calls inventory with urllib" in out
    sent = requests_sent(out)
    assert [r["status"] for r in sent] == ["200", "200", "502"]
    traces = by_trace(demo_stdlib_only["spans"])
    assert list(traces)[:3] == [r["trace"] for r in sent]
    printed = parse_waterfall(out)
    for request, trace, (trace_id, spans) in zip(sent, printed, traces.items()):
        roles = check_trace(spans, failing=request["status"] == "502", rpc="http")
        assert roles["stock_client"]["tags"]["component"] == "urllib"
        check_waterfall(trace, spans, roles)


def test_in_process_leaves_no_threads_and_no_instrumentation(tmp_path):
    """run_demo() stops its servers and threads and takes its patches off."""
    pytest.importorskip("requests")
    from fasttrace.contrib import requests as ft_requests
    from fasttrace.demo import run_demo as run
    before = set(threading.enumerate())
    stream = io.StringIO()
    assert run(out=str(tmp_path / "d.jsonl"), stream=stream, width=120) == 0
    assert len(parse_waterfall(stream.getvalue())) == 4
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left:
            break
        time.sleep(0.05)
    assert left == []
    assert not ft_requests.is_instrumented()


# -- the tail-sampling run --------------------------------------------------------------

def check_tail_run(run, rpc):
    """What the tail-sampling run printed and wrote: every trace counted in both services,
    the failing request's trace kept whole as "error", and each other kept trace one the
    1% baseline keeps by its id, whole in both services."""
    lines = run["stdout"].splitlines()
    first_run = [r["trace"] for r in requests_sent(run["stdout"])]
    (at,) = [i for i, line in enumerate(lines) if TAIL_FAILING.match(line)]
    failing = TAIL_FAILING.match(lines[at]).groupdict()
    assert (int(failing["n"]), failing["path"], failing["status"]) == \
        (FAILING_REQUEST, "/checkout?sku=kiwi&qty=1", "502")
    failing_trace = TAIL_TRACE.match(lines[at + 1]).group("trace")
    counted = {m["service"]: m.groupdict() for m in map(TAIL_SERVICE.match, lines) if m}
    assert set(counted) == {"gateway", "inventory"}
    for c in counted.values():
        assert int(c["seen"]) == TAIL_REQUESTS == int(c["kept"]) + int(c["discarded"])
        by = dict(item.split() for item in c["by"].split(", "))
        assert by.pop("error") == "1" and set(by) <= {"baseline"}
        assert int(c["kept"]) == 1 + int(by.get("baseline", 0))
        # a discarded request leaves 4 spans in each service, the late ones included
        # (the gateway's "publish order-event" finishes after its root)
        assert int(c["spans"]) == 4 * int(c["discarded"])
    assert counted["gateway"]["kept"] == counted["inventory"]["kept"]

    traces = by_trace(run["spans"])
    tail = {tid: spans for tid, spans in traces.items() if tid not in first_run}
    assert list(traces)[:3] == first_run
    assert len(tail) == int(counted["gateway"]["kept"])
    assert all(s["sampled"] for spans in tail.values() for s in spans)
    # the failing request: kept whole, in both services, for its error
    spans = tail.pop(failing_trace)
    assert sorted((s["service_name"], s["operation_name"]) for s in spans) == [
        ("gateway", "GET /checkout"), ("gateway", "HTTP GET"),
        ("inventory", "GET /stock/{sku}"), ("inventory", "db.query")]
    assert {s["tags"]["sampling.decision"] for s in spans} == {"error"}
    assert all(s["tags"].get("error") is True for s in spans)
    (db,) = [s for s in spans if s["operation_name"] == "db.query"]
    (log,) = [e for e in db["logs"] if e["fields"].get("event") == "error"]
    assert log["fields"]["message"] == \
        "inventory-db: cannot read the stock of 'kiwi' (disk I/O error)"
    # the others: kept by the baseline, by trace id (the same in both services)
    bound = ratio_bound(TAIL_POLICY["baseline_ratio"])
    for trace_id, spans in tail.items():
        assert int(trace_id, 16) & ((1 << 64) - 1) < bound, trace_id
        assert {s["tags"]["sampling.decision"] for s in spans} == {"baseline"}
        check_trace(spans, failing=False, rpc=rpc)
    # the printed waterfall of the failing trace, after the first run's three
    printed = parse_waterfall(run["stdout"])
    assert [t["trace_id"] for t in printed] == [*first_run, failing_trace]
    shown = printed[3]
    assert " · kept: error · " in shown["header"] and "4 errors" in shown["header"]
    assert [(r["service"], r["depth"], r["op"], r["decision"]) for r in shown["rows"]] == [
        ("gateway", 0, "GET /checkout", "error"), ("gateway", 1, "HTTP GET", "error"),
        ("inventory", 2, "GET /stock/{sku}", "error"), ("inventory", 3, "db.query", "error")]
    assert f"{len(tail) + 1} of the {TAIL_REQUESTS} traces kept, in the file; the failing " \
        "request's, whole:" in run["stdout"]


def test_tail_sampling_run_keeps_the_failing_trace_whole(demo):
    check_tail_run(demo, rpc="grpc")


def test_tail_sampling_run_stdlib_only(demo_stdlib_only):
    check_tail_run(demo_stdlib_only, rpc="http")

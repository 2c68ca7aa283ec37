# SPDX-License-Identifier: Apache-2.0
"""``python -m fasttrace demo``: a gateway and an inventory service, traced, on loopback.

Two services run in this process, each with a tracer of its own (as if each were its own
process), both exporting to ONE JSON-lines file through a BatchReporter:

    driver (plain HTTP, untraced, like curl)
      -> gateway    WSGI app behind fasttrace.contrib.wsgi.TracingMiddleware
           -> inventory  GET /stock/{sku} over HTTP   (client: contrib.requests, or
                                                       contrib.urllib without requests)
           -> inventory  Reserve over gRPC            (contrib.grpc interceptors; without
                                                       grpcio: POST /reserve over HTTP)
           ⇢ gateway    "publish order-event", follows_from the request, after the reply

Three requests: two succeed, the third fails in the inventory's warehouse call, which
the gateway turns into a 502.  The spans are read back from the file and shown as
waterfalls; the file stays, for ``python -m fasttrace view FILE``.

Then the tail-sampling run: the same two services again, each with a new tracer whose
head sampler is off and which tail-samples with ``TailSampling(baseline_ratio=0.01,
keep_head_sampled=False)``: it keeps 1% of traces by trace id (the same traces in both
services) and every trace with an error.  TAIL_REQUESTS requests go through them, eight
at a time; request FAILING_REQUEST fails deep in the inventory (its database call
raises).  The demo prints how many traces each service saw, kept (by policy) and
discarded, and the failing request's trace, kept whole in both services
(``kept: error``).  The kept traces go to the same file, after the first run's.

The failure is in the inventory's first call of its request (the stock lookup): the
tail stage decides a trace when its *first* local root finishes, so a failure in a
second call to the same service within one trace (the reservation, after a stock
lookup that did not fail) is not seen by the ``error`` policy (see
tests/reliability/test_tail_acceptance.py, the strict xfail).

Nothing but the standard library and fasttrace's own dependencies is required:
``requests`` and ``grpcio`` are used when installed (``pip install 'fasttrace[grpc,requests]'``).
Because both services share the process, every integration gets its tracer explicitly
(``tracer=``): the OpenTracing global tracer can only be one of them.
"""
import io
import json
import os
import socket
import socketserver
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import opentracing

import fasttrace
from fasttrace.contrib import wsgi as ft_wsgi
from fasttrace.decorators import traced
from fasttrace.exporters.jsonl import JsonLinesExporter

__all__ = ["run_demo", "REQUESTS", "TAIL_REQUESTS", "FAILING_REQUEST", "TAIL_POLICY"]

#: (path, expected status) sent to the gateway, in order.
REQUESTS = (
    ("/checkout?sku=apple&qty=2", 200),
    ("/checkout?sku=pear&qty=1", 200),
    ("/checkout?sku=durian&qty=5", 502),
)

#: The tail-sampling run: requests sent, and which one (1-based) fails in the inventory.
TAIL_REQUESTS = 200
FAILING_REQUEST = 137
#: Both services' tail policy in that run (their head sampler is ConstSampler(False)).
TAIL_POLICY = {"baseline_ratio": 0.01, "keep_head_sampled": False}
_TAIL_CONCURRENCY = 8

_STOCK = {"apple": 12, "pear": 4, "durian": 9}
# the tail run's stock: enough for every request; "kiwi" is in a table the database
# cannot read (the failing request's)
_TAIL_STOCK = {"apple": 100_000, "pear": 100_000, "kiwi": 50}
_UNREADABLE = frozenset(("kiwi",))
_RESERVE_METHOD = "/inventory.Inventory/Reserve"


# -- servers ----------------------------------------------------------------------------

class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without its access log and tracebacks on stderr (the spans
    record both)."""

    def log_message(self, *args):
        pass

    def get_stderr(self):
        return io.StringIO()


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    # server_close() joins the request threads: nothing is left running afterwards
    daemon_threads = False
    block_on_close = True


def _serve(app):
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"demo-wsgi-{server.server_port}", daemon=True)
    thread.start()
    return server, thread


def _json_response(start_response, status, body, headers=()):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), *headers])
    return [data]


# -- the inventory service --------------------------------------------------------------

class DatabaseError(RuntimeError):
    """The inventory's database failed (the tail-sampling run's failing request)."""


class Inventory:
    """Stock over HTTP (GET /stock/{sku}), reservations over gRPC (or POST /reserve)."""

    def __init__(self, tracer, stock=_STOCK):
        self.tracer = tracer
        self.lock = threading.Lock()
        self.stock = dict(stock)

        # @fasttrace.traced, applied here because the tracer is this instance's
        self.query_stock = traced("db.query", tracer=tracer, tags={
            "db.type": "sql", "db.statement": "SELECT available FROM stock WHERE sku = ?",
            "span.kind": "client", "peer.service": "inventory-db"})(self._query_stock)

    def _query_stock(self, sku):
        time.sleep(0.002)
        if sku in _UNREADABLE:
            # the db.query span records it (error=true, an error log); the inventory's
            # server span and the gateway's client span get the 500
            raise DatabaseError(f"inventory-db: cannot read the stock of {sku!r} "
                                "(disk I/O error)")
        return self.stock.get(sku)

    def reserve(self, sku, qty):
        with self.tracer.start_active_span("warehouse.reserve", tags={
                "warehouse": "eu-1", "sku": sku, "qty": qty}) as scope:
            time.sleep(0.003)
            if sku == "durian":
                # the span records the exception (error=true, an error log) on exit
                raise TimeoutError("warehouse eu-1 did not confirm within 3 ms")
            with self.lock:
                self.stock[sku] = remaining = self.stock.get(sku, 0) - qty
            scope.span.log_kv({"event": "reserved", "remaining": remaining})
            return {"sku": sku, "reserved": qty}

    def wsgi_app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/stock/"):
            environ["fasttrace.route"] = "/stock/{sku}"
            available = self.query_stock(path[len("/stock/"):])
            if available is None:
                return _json_response(start_response, "404 Not Found", {"error": "no such sku"})
            return _json_response(start_response, "200 OK", {"available": available})
        if path == "/reserve" and environ.get("REQUEST_METHOD") == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            order = json.loads(environ["wsgi.input"].read(size) or b"{}")
            # an exception here becomes a 500 (and an error on the server span)
            return _json_response(start_response, "200 OK",
                                  self.reserve(order["sku"], order["qty"]))
        return _json_response(start_response, "404 Not Found", {"error": "not found"})

    def grpc_reserve(self, request, context):
        order = json.loads(request)
        return json.dumps(self.reserve(order["sku"], order["qty"])).encode()


# -- the gateway ------------------------------------------------------------------------

class Gateway:
    """GET /checkout?sku=..&qty=..: checks stock over HTTP, reserves over gRPC."""

    def __init__(self, tracer, inventory_url, http_get, http_post, grpc_reserve):
        self.tracer = tracer
        self.inventory_url = inventory_url
        self.http_get = http_get
        self.http_post = http_post
        self.grpc_reserve = grpc_reserve
        self.background = []

    def wsgi_app(self, environ, start_response):
        span = self.tracer.active_span          # the middleware's server span
        trace_header = [("X-Trace-Id", f"{span.trace_id:032x}")] if span is not None else []
        if environ.get("PATH_INFO") != "/checkout":
            return _json_response(start_response, "404 Not Found", {"error": "not found"},
                                  trace_header)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        sku = query.get("sku", [""])[0]
        qty = int(query.get("qty", ["1"])[0])
        span.set_tag("order.sku", sku)
        status, available = self.http_get(f"{self.inventory_url}/stock/{sku}")
        if status == 404:
            return _json_response(start_response, "404 Not Found", {"error": "unknown sku"},
                                  trace_header)
        if status != 200:
            span.log_kv({"event": "upstream failed",
                         "message": f"inventory answered HTTP {status} to the stock lookup"})
            return _json_response(start_response, "502 Bad Gateway",
                                  {"error": "inventory failed"}, trace_header)
        try:
            if self.grpc_reserve is not None:
                result = self.grpc_reserve(sku, qty)
            else:
                code, result = self.http_post(f"{self.inventory_url}/reserve",
                                              {"sku": sku, "qty": qty})
                if code != 200:
                    raise RuntimeError(f"inventory answered HTTP {code}")
        except Exception as exc:
            details = getattr(exc, "details", None)       # a grpc.RpcError's message
            span.log_kv({"event": "upstream failed",
                         "message": details() if callable(details) else str(exc)})
            return _json_response(start_response, "502 Bad Gateway",
                                  {"error": "inventory failed"}, trace_header)
        self._publish_later(span, result)
        return _json_response(start_response, "200 OK", {"order": result, "stock": available},
                              trace_header)

    def _publish_later(self, request_span, order):
        """An event published after the reply: follows_from the request, not its child."""
        ref = opentracing.follows_from(request_span.context)

        def publish():
            with self.tracer.start_active_span("publish order-event", references=[ref],
                                               ignore_active_span=True,
                                               tags={"span.kind": "producer",
                                                     "message_bus.destination": "orders"}):
                time.sleep(0.002)

        worker = threading.Thread(target=publish, name="demo-publish")
        self.background.append(worker)
        worker.start()


# -- clients ----------------------------------------------------------------------------

def _http_clients(tracer):
    """(get, post, uninstrument, name): HTTP calls from the gateway, with client spans."""
    try:
        import requests
    except ImportError:
        requests = None
    if requests is not None:
        from fasttrace.contrib import requests as ft_requests
        ft_requests.instrument(tracer=tracer)
        session = requests.Session()

        def get(url):
            r = session.get(url, timeout=5)
            return r.status_code, r.json() if r.status_code in (200, 404) else None

        def post(url, body):
            r = session.post(url, json=body, timeout=5)
            return r.status_code, r.json() if r.status_code == 200 else None

        def close():
            session.close()
            ft_requests.uninstrument()
        return get, post, close, "requests"

    import urllib.error
    import urllib.request

    from fasttrace.contrib import urllib as ft_urllib
    ft_urllib.instrument(tracer=tracer)

    def call(url, data=None):
        req = urllib.request.Request(url, data=data, headers={"Content-Type":
                                                              "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code, None

    return (call, lambda url, body: call(url, json.dumps(body).encode()),
            ft_urllib.uninstrument, "urllib")


def _grpc(inventory, gateway_tracer, inventory_tracer):
    """(reserve(sku, qty), stop(), port) over a real grpcio server; None without grpcio."""
    try:
        import grpc
    except ImportError:
        return None
    from fasttrace.contrib.grpc import client_interceptor, server_interceptor

    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="demo-grpc")
    server = grpc.server(pool, interceptors=[server_interceptor(tracer=inventory_tracer)])
    handler = grpc.method_handlers_generic_handler("inventory.Inventory", {
        "Reserve": grpc.unary_unary_rpc_method_handler(inventory.grpc_reserve)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.intercept_channel(grpc.insecure_channel(target),
                                     client_interceptor(tracer=gateway_tracer, target=target))
    call = channel.unary_unary(_RESERVE_METHOD)   # no serializers: bytes in, bytes out

    def reserve(sku, qty):
        return json.loads(call(json.dumps({"sku": sku, "qty": qty}).encode(), timeout=5))

    def stop():
        channel.close()
        server.stop(grace=1).wait(2)
        pool.shutdown(wait=True)

    return reserve, stop, port


def _drive(port, path):
    """GET http://127.0.0.1:port/path from outside (a plain socket, like curl: the
    integrations see a request with no trace context).  Returns (status, reason,
    headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
                     f"User-Agent: fasttrace-demo\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    _version, status, reason = (head[0].split(None, 2) + [""])[:3]
    headers = {k.strip().lower(): v.strip()
               for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
    return int(status), reason, headers


# -- the whole demo ---------------------------------------------------------------------

class _Services:
    """The gateway and the inventory on loopback, each traced by its tracer; `close()`
    stops them (servers, threads, the client patches)."""

    def __init__(self, gateway_tracer, inventory_tracer, stock=_STOCK):
        self.cleanup = []
        self.transport = {}
        try:
            self._start(gateway_tracer, inventory_tracer, stock)
        except BaseException:
            self.close()
            raise

    def _start(self, gateway_tracer, inventory_tracer, stock):
        inventory = Inventory(inventory_tracer, stock)
        inv_server, inv_thread = _serve(ft_wsgi.TracingMiddleware(inventory.wsgi_app,
                                                                  tracer=inventory_tracer))
        self.cleanup.append(lambda: (inv_server.shutdown(), inv_server.server_close(),
                                     inv_thread.join(2)))
        grpc_parts = _grpc(inventory, gateway_tracer, inventory_tracer)
        if grpc_parts is not None:
            grpc_reserve, grpc_stop, grpc_port = grpc_parts
            self.cleanup.append(grpc_stop)
            self.transport["grpc"] = f"127.0.0.1:{grpc_port}"
        else:
            grpc_reserve = None
        http_get, http_post, http_close, client_name = _http_clients(gateway_tracer)
        self.cleanup.append(http_close)
        self.transport["http_client"] = client_name
        self.gateway = Gateway(gateway_tracer, f"http://127.0.0.1:{inv_server.server_port}",
                               http_get, http_post, grpc_reserve)
        gw_server, gw_thread = _serve(ft_wsgi.TracingMiddleware(
            self.gateway.wsgi_app, tracer=gateway_tracer, excluded_paths=("/healthz",)))
        self.cleanup.append(lambda: (gw_server.shutdown(), gw_server.server_close(),
                                     gw_thread.join(2)))
        self.port = gw_server.server_port

    def drive(self, path):
        """(status, reason, trace id) of GET path, sent to the gateway from outside."""
        status, reason, headers = _drive(self.port, path)
        return status, reason, headers.get("x-trace-id", "")

    def join_background(self):
        for worker in self.gateway.background:
            worker.join(5)

    def close(self):
        while self.cleanup:
            step = self.cleanup.pop()
            try:
                step()
            except Exception as exc:  # pragma: no cover - shown, never hidden
                print(f"fasttrace demo: cleanup failed: {exc!r}", file=sys.stderr)


def _tail_path(n):
    """The n-th (1-based) request of the tail-sampling run."""
    if n == FAILING_REQUEST:
        return "/checkout?sku=kiwi&qty=1", 502
    return f"/checkout?sku={'apple' if n % 2 else 'pear'}&qty=1", 200


def _kept_text(stats):
    kept = {name: n for name, n in stats["kept"].items() if n}
    total = sum(kept.values())
    by = ", ".join(f"{name} {n}" for name, n in kept.items())
    return total, f"{total} kept" + (f" ({by})" if by else "")


def run_demo(out=None, html=None, style=None, width=None, stream=None):
    """Runs the demo; returns the exit code (0: every request answered as expected, every
    span was written, and the tail-sampling run kept its failing request's trace)."""
    from fasttrace.viewer import Style, filter_traces, group_traces, load_jsonl, \
        render_waterfall

    stream = sys.stdout if stream is None else stream
    style = style or Style.for_stream(stream)
    if out is None:
        fd, out = tempfile.mkstemp(prefix="fasttrace-demo-", suffix=".jsonl")
        os.close(fd)
    else:
        open(out, "w").close()          # the demo's file holds this run only
    out = os.path.abspath(out)

    reporter = fasttrace.BatchReporter(JsonLinesExporter(out), flush_interval=0.2)
    gateway_tracer = fasttrace.Tracer("gateway", reporter=reporter,
                                      tags={"demo": True, "version": "1.4.2"})
    inventory_tracer = fasttrace.Tracer("inventory", reporter=reporter,
                                        tags={"demo": True, "version": "0.9.0"})
    # the tail-sampling run's services: head sampler off, 1% baseline, every error
    tail_tracers = tuple(
        fasttrace.Tracer(name, reporter=reporter, tags={"demo": True, "version": version},
                         sampler=fasttrace.ConstSampler(False),
                         tail_sampling=fasttrace.TailSampling(**TAIL_POLICY))
        for name, version in (("gateway", "1.4.2"), ("inventory", "0.9.0")))
    tracers = (gateway_tracer, inventory_tracer, *tail_tracers)

    answers = []
    tail_answers = []
    delivered = True
    try:
        services = _Services(gateway_tracer, inventory_tracer)
        try:
            transport = services.transport
            inventory_url = services.gateway.inventory_url
            gw_url = f"http://127.0.0.1:{services.port}"
            calls = f"{transport['http_client']}" + (" and gRPC" if "grpc" in transport
                                                     else "")
            print("fasttrace demo: a gateway and an inventory service on loopback, each "
                  "with its own tracer", file=stream)
            print(f"  gateway    {gw_url:<24}  WSGI; calls inventory with {calls}",
                  file=stream)
            print(f"  inventory  {inventory_url:<24}  WSGI"
                  + (f"; gRPC on {transport['grpc']}" if "grpc" in transport else ""),
                  file=stream)
            if "grpc" not in transport:
                print("  (no gRPC hop: grpcio is not installed; pip install "
                      "'fasttrace[grpc]'. Reservations go over HTTP.)", file=stream)
            print("\nRequests from outside (a plain HTTP client, like curl):", file=stream)
            for path, expected in REQUESTS:
                status, reason, trace_id = services.drive(path)
                answers.append((path, expected, status, trace_id))
                print(f"  GET {path:<28} -> {status} {reason:<12} trace {trace_id or '?'}",
                      file=stream)
            services.join_background()
        finally:
            services.close()
        # the first run's spans reach the file before the second run's
        delivered = all(t.flush(5) for t in (gateway_tracer, inventory_tracer))

        services = _Services(*tail_tracers, stock=_TAIL_STOCK)
        try:
            with ThreadPoolExecutor(_TAIL_CONCURRENCY,
                                    thread_name_prefix="demo-driver") as pool:
                sent = [(n, *_tail_path(n)) for n in range(1, TAIL_REQUESTS + 1)]
                results = pool.map(lambda item: services.drive(item[1]), sent)
                tail_answers = [(n, path, expected, *result)
                                for (n, path, expected), result in zip(sent, results)]
            services.join_background()
        finally:
            services.close()
    finally:
        flushed = [t.flush(5) for t in tracers]      # every one, even after a False
        delivered = all(flushed) and delivered
        for t in tracers:
            t.close(5)

    result = load_jsonl(out)
    traces = group_traces(result.spans)
    wanted = [trace_id for _p, _e, _s, trace_id in answers if trace_id]
    print(file=stream)
    for spans in filter_traces(traces, wanted).values():
        stream.write(render_waterfall(spans, width=width, style=style))
        stream.write("\n")

    # the tail-sampling run
    failing = [a for a in tail_answers if a[0] == FAILING_REQUEST]
    failing_trace = failing[0][5] if failing else ""
    print(f"Tail sampling: {len(tail_answers)} more requests ({_TAIL_CONCURRENCY} at a time) "
          "through two new tracers, head sampler off,", file=stream)
    print(f"each with TailSampling(baseline_ratio={TAIL_POLICY['baseline_ratio']}, "
          f"keep_head_sampled={TAIL_POLICY['keep_head_sampled']}): it keeps 1% of the",
          file=stream)
    print("traces by trace id (the same ones in both services) and every trace with an "
          "error.", file=stream)
    for n, path, _expected, status, reason, trace_id in failing:
        print(f"  request {n}: GET {path} -> {status} {reason} (the inventory's database "
              "failed)", file=stream)
        print(f"  {'':{len(str(n)) + 9}}trace {trace_id or '?'}", file=stream)
    kept_ok = True
    for tracer in tail_tracers:
        stats = tracer.stats()["tail_sampling"]
        kept, text = _kept_text(stats)
        seen = kept + stats["traces_discarded"]
        print(f"  {tracer.service_name:<10} {seen} traces: {text}, "
              f"{stats['traces_discarded']} discarded ({stats['spans_discarded']} spans)",
              file=stream)
        kept_ok = kept_ok and stats["kept"]["error"] >= 1 and seen == len(tail_answers)
    tail_ids = {trace_id for *_rest, trace_id in tail_answers}
    tail_kept = [t for t in traces if f"{t:032x}" in tail_ids]
    shown = filter_traces(traces, [failing_trace]) if failing_trace else {}
    print(f"  {len(tail_kept)} of the {len(tail_answers)} traces kept, in the file"
          + ("; the failing request's, whole:" if shown else "."), file=stream)
    if shown:
        print(file=stream)
        for spans in shown.values():
            stream.write(render_waterfall(spans, width=width, style=style))
        kept_ok = kept_ok and {s.service_name for spans in shown.values()
                               for s in spans} == {"gateway", "inventory"}
    else:
        kept_ok = False
        print("  (the failing request's trace is not in the file)", file=stream)

    print(file=stream)
    names = sorted({s.service_name for s in result.spans})
    print(f"{len(result.spans)} spans from {len(names)} services ({', '.join(names)}) "
          f"in {len(traces)} traces were written to {out}", file=stream)
    if html:
        from fasttrace.view.html import render_html
        with open(html, "w", encoding="utf-8") as f:
            f.write(render_html(result.spans, title="fasttrace demo", source=out))
        print(f"HTML waterfall: {os.path.abspath(html)}", file=stream)
    print(f"See them again:  python -m fasttrace view {_quote(out)}", file=stream)
    print(f"In a browser:    python -m fasttrace view {_quote(out)} --html traces.html",
          file=stream)

    wrong = [(p, s, e) for p, e, s, _ in answers if s != e]
    wrong += [(p, s, e) for _n, p, e, s, _r, _t in tail_answers if s != e]
    ok = delivered and not wrong and kept_ok
    if not ok:
        print("fasttrace demo: something went wrong: "
              + ("; ".join(f"{p} answered {s}, expected {e}" for p, s, e in wrong)
                 or ("not every span reached the file" if not delivered else
                     "the tail-sampling run did not keep the failing request's trace")),
              file=sys.stderr)
    return 0 if ok else 1


def _quote(path):
    import shlex
    return shlex.quote(path)

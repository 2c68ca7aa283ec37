# SPDX-License-Identifier: Apache-2.0
"""Loopback servers for the tests: HTTP and UDP sinks on free 127.0.0.1 ports that record
what they receive, answer as told, and stop when closed (a ``with`` block, or the fixtures
in conftest.py); they serve from daemon threads, so a forgotten one never blocks exit.

``HttpSink``: records every request (``sink.requests``: ``Request`` tuples) and answers
from a script of replies -- ``(status, headers, body)`` tuples or callables
``reply(handler) -> (status, headers, body)`` -- the i-th request gets the i-th reply, the
last one repeating; 200 with no body when none is given.  ``delayed(seconds, reply)``
answers late; ``echo`` is the reply of a test backend for HTTP clients (fixture
``echo_url``).

``OTLPSink``: an OTLP/HTTP collector on 127.0.0.1 whose behaviour can be switched while
exporters talk to it:

    sink.mode = "up"        200, spans recorded
    sink.mode = "slow"      sleeps ``sink.delay`` seconds, then 200 (spans recorded)
    sink.mode = "500"       500 (nothing recorded)
    sink.mode = "429"       429 with ``Retry-After: sink.retry_after``
    sink.mode = "503"       503 (retryable)
    sink.mode = "reset"     accepts, reads nothing, closes the connection
    sink.mode = "hang"      reads the request, never answers (until the sink closes)
    sink.mode = "hold_first" the first request is answered (200) only after ``sink.hold``
                            seconds, every later one at once: a reporter stuck mid-export
    sink.mode = "flap"      alternates 200 / 503 every ``sink.flap_period`` seconds
    sink.down() / sink.up() closes / re-opens the listening socket on the same port, so
                            clients get ECONNREFUSED while it is down

Recorded spans are decoded (opentelemetry-proto) into ``SpanRecord`` tuples; the sink
keeps per-span-id counts so tests can check "exactly once" across processes.

``UDPSink``: keeps the datagrams sent to a loopback UDP port (a Jaeger agent).

``Serving(server)``: any socketserver server (a WSGI one too) run from a daemon thread.
``free_port()``: a port nobody listens on.  ``blackhole()``: a listening TCP socket that
never accepts: connects succeed, requests are never answered.
"""
import collections
import gzip
import http.server
import json
import socket
import sys
import threading
import time
import urllib.parse

SpanRecord = collections.namedtuple(
    "SpanRecord", "trace_id span_id parent_id name service pid attrs")


def _decoder():
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    return trace_service_pb2.ExportTraceServiceRequest


def _attr_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


# -- HTTP ----------------------------------------------------------------------------------

Request = collections.namedtuple("Request", "method path headers body peer time")
Request.__doc__ = """A request an HttpSink received: headers as a dict (names as sent), the
client's (host, port), and time.monotonic() when it had been read."""

OK = (200, {}, b"")
ACCEPTED = (202, {}, b"")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Passes every request to the server's ``on_request(handler)``."""

    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, *args):
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except OSError:                     # the client went away (or timed out)
            self.close_connection = True

    def _dispatch(self):
        self.server.on_request(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):   # a bug in a reply: show it
            super().handle_error(request, client_address)


class Serving:
    """Runs `server` (a socketserver server bound on 127.0.0.1: http.server, werkzeug,
    wsgiref) from a daemon thread until ``close()``; ``url`` is its base URL."""

    def __init__(self, server):
        self.server = server
        self.port = server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


def _serve(on_request, port=0):
    """Serving of an HTTP/1.1 server on 127.0.0.1 (a free port, or `port`: retried while
    the old socket lingers) that calls ``on_request(handler)`` for each request."""
    for _ in range(50):
        try:
            server = _Server(("127.0.0.1", port), _Handler)
            break
        except OSError:
            if not port:
                raise
            time.sleep(0.05)
    else:  # pragma: no cover
        raise RuntimeError(f"could not re-bind 127.0.0.1:{port}")
    server.on_request = on_request
    return Serving(server)


def read_body(handler):
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def reply(handler, status, headers=None, body=b""):
    """Sends one answer (with its Content-Length, so the connection can be kept alive)."""
    try:
        handler.send_response(status)
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
    except OSError:
        handler.close_connection = True


class HttpSink:
    """A loopback HTTP server that records each request and answers from `replies` (see
    the module doc).  ``url`` is ``http://127.0.0.1:<port>`` + `path`."""

    def __init__(self, *replies, path=""):
        self.requests = []
        self._replies = replies or (OK,)
        self._lock = threading.Lock()
        self._serving = _serve(self._handle)
        self.port = self._serving.port
        self.url = f"http://127.0.0.1:{self.port}{path}"

    def _handle(self, handler):
        body = read_body(handler)
        with self._lock:
            n = len(self.requests)
            self.requests.append(Request(handler.command, handler.path,
                                         dict(handler.headers), body,
                                         handler.client_address, time.monotonic()))
        answer = self._replies[min(n, len(self._replies) - 1)]
        if callable(answer):
            answer = answer(handler)
        reply(handler, *answer)

    def close(self):
        self._serving.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def delayed(seconds, answer):
    """A reply that is sent after `seconds`."""
    def late(handler):
        time.sleep(seconds)
        return answer
    return late


def echo(handler):
    """The reply of a test backend for HTTP clients: ``/status/<n>`` answers n,
    ``/redirect`` redirects to ``/echo``, any other path answers 200 with the request's
    headers as a JSON object (names in lower case; a repeated header's values joined by
    "," as WSGI servers do)."""
    path = urllib.parse.urlsplit(handler.path).path
    if path.startswith("/status/"):
        return (int(path.rsplit("/", 1)[1]), {"Content-Type": "text/plain; charset=utf-8"},
                b"status")
    if path == "/redirect":
        return 302, {"Location": "/echo"}, b""
    headers = {}
    for name, value in handler.headers.items():
        name = name.lower()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return 200, {"Content-Type": "application/json"}, json.dumps(headers).encode()


class OTLPSink:
    """A loopback OTLP/HTTP protobuf collector with switchable failure modes."""

    def __init__(self, mode="up", delay=1.0, retry_after=1, flap_period=0.2, decode=True,
                 hold=3.0):
        self.mode = mode
        self.hold = hold
        self.delay = delay
        self.retry_after = retry_after
        self.flap_period = flap_period
        self.decode = decode
        self._lock = threading.Lock()
        self.spans = []                     # SpanRecord, in arrival order
        self.counts = collections.Counter()  # span_id -> times received
        self.requests = 0                   # requests answered with 200
        self.attempts = 0                   # requests seen, whatever the answer
        self.headers_seen = []
        self.span_count = 0
        self._stop = threading.Event()
        self._parse = _decoder() if decode else None
        self.port = None
        self._serving = None
        self.up()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1/traces"

    # -- lifecycle -----------------------------------------------------------------

    def up(self):
        if self._serving is None:
            self._serving = _serve(self._handle, self.port or 0)
            self.port = self._serving.port

    def down(self):
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.close()

    def close(self):
        self._stop.set()
        self.down()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests ------------------------------------------------------------------

    def _current_mode(self):
        mode = self.mode
        if mode == "flap":
            phase = int(time.monotonic() / self.flap_period) % 2
            return "up" if phase == 0 else "503"
        return mode

    def _handle(self, handler):
        mode = self._current_mode()
        with self._lock:
            self.attempts += 1
            first = self.attempts == 1
        if mode == "hold_first":
            mode = "slow_once" if first else "up"
        if mode == "reset":
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        body = read_body(handler)
        with self._lock:
            self.headers_seen.append(dict(handler.headers))
            del self.headers_seen[:-50]
        if mode == "hang":
            self._stop.wait(60)
            handler.close_connection = True
            return
        if mode == "slow":
            self._stop.wait(self.delay)
            mode = "up"
        elif mode == "slow_once":
            self._stop.wait(self.hold)
            mode = "up"
        if mode == "up":
            self._record(handler, body)
            reply(handler, 200)
        elif mode == "429":
            reply(handler, 429, {"Retry-After": str(self.retry_after)})
        elif mode == "503":
            reply(handler, 503)
        else:
            reply(handler, int(mode), body=b"internal error")

    def _record(self, handler, body):
        if handler.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if not self.decode:
            with self._lock:
                self.requests += 1
            return
        req = self._parse.FromString(body)
        records = []
        for rs in req.resource_spans:
            res = {a.key: _attr_value(a.value) for a in rs.resource.attributes}
            service = res.get("service.name")
            pid = res.get("process.pid")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: _attr_value(a.value) for a in s.attributes}
                    records.append(SpanRecord(
                        int.from_bytes(s.trace_id, "big"),
                        int.from_bytes(s.span_id, "big"),
                        int.from_bytes(s.parent_span_id, "big") if s.parent_span_id
                        else None,
                        s.name, service, attrs.get("pid", pid), attrs))
        with self._lock:
            self.requests += 1
            self.spans.extend(records)
            self.span_count += len(records)
            for r in records:
                self.counts[r.span_id] += 1

    # -- queries -------------------------------------------------------------------

    def snapshot(self):
        with self._lock:
            return list(self.spans)

    def duplicates(self):
        with self._lock:
            return {sid: n for sid, n in self.counts.items() if n > 1}

    def wait_for(self, n, timeout=10.0):
        """Waits until at least n spans have arrived; returns how many did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.span_count >= n:
                    return self.span_count
            time.sleep(0.02)
        return self.span_count


class UDPSink:
    """Keeps the datagrams sent to a loopback UDP port (``datagrams``, in arrival order),
    with a receive buffer large enough for bursts; stops by itself after `lifetime` s."""

    def __init__(self, lifetime=60.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in ("SO_RCVBUFFORCE", "SO_RCVBUF"):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, opt), 8 << 20)
                break
            except (AttributeError, OSError):
                pass
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.datagrams = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                data = self.sock.recv(1 << 17)
            except socket.timeout:
                continue
            except OSError:
                break
            with self._cond:
                self.datagrams.append(data)
                self._cond.notify_all()
        self.sock.close()

    def wait_for(self, count, timeout=5.0):
        """The datagrams, once there are `count` (or `timeout` seconds passed)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.datagrams) >= count, timeout)
            return list(self.datagrams)

    def settle(self, quiet=0.2):
        """All datagrams, once none has arrived for `quiet` seconds."""
        seen = -1
        while seen != len(self.datagrams):
            seen = len(self.datagrams)
            time.sleep(quiet)
        return list(self.datagrams)

    def close(self):
        self._stop.set()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def free_port():
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def blackhole():
    """A socket that listens but never accepts: (socket, url).  Close the socket after."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, f"http://127.0.0.1:{s.getsockname()[1]}/v1/traces"


def read_rss_bytes(pid="self"):
    """Resident set size from /proc/<pid>/statm (Linux), or None."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os
    return pages * os.sysconf("SC_PAGE_SIZE")


def scale():
    """FASTTRACE_STRESS_SCALE (default 1): multiplies the sizes of the stress tests."""
    import os
    try:
        return max(0.01, float(os.environ.get("FASTTRACE_STRESS_SCALE", "1")))
    except ValueError:
        return 1.0


def report(name, **figures):
    """Prints a figure line (visible with -s, and in the captured output on failure)."""
    parts = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in figures.items())
    line = f"[fasttrace-figures] {name}: {parts}"
    print(line)
    import os
    path = os.environ.get("FASTTRACE_FIGURES_FILE")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    return line

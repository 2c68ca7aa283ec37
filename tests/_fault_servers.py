# SPDX-License-Identifier: Apache-2.0
"""Loopback backends that misbehave on demand, shared by the stress and fault tests.

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

``UDPSink``: counts datagrams and bytes (a Jaeger agent that reads nothing else).

``blackhole()``: a listening TCP socket that never accepts: connects succeed, requests
are never answered.
"""
import collections
import gzip
import http.server
import socket
import threading
import time

SpanRecord = collections.namedtuple(
    "SpanRecord", "trace_id span_id parent_id name service pid attrs")


def _decoder():
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    return trace_service_pb2.ExportTraceServiceRequest


def _attr_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


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
        self._server = None
        self._thread = None
        self.up()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1/traces"

    # -- lifecycle -----------------------------------------------------------------

    def up(self):
        if self._server is not None:
            return
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *args):
                pass

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (ConnectionError, socket.timeout, OSError):
                    self.close_connection = True

            def do_POST(self):
                sink._handle(self)

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 128

            def handle_error(self, request, client_address):
                pass

        address = ("127.0.0.1", self.port or 0)
        for _ in range(50):
            try:
                self._server = Server(address, Handler)
                break
            except OSError:
                time.sleep(0.05)
        else:  # pragma: no cover
            raise RuntimeError(f"could not re-bind {address}")
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self):
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

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
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
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
            self._answer(handler, 200)
        elif mode == "429":
            self._answer(handler, 429, {"Retry-After": str(self.retry_after)})
        elif mode == "503":
            self._answer(handler, 503)
        else:
            self._answer(handler, int(mode), body=b"internal error")

    def _answer(self, handler, status, headers=None, body=b""):
        try:
            handler.send_response(status)
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            handler.close_connection = True

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
    """Counts datagrams sent to a loopback UDP port."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.datagrams = 0
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.datagrams += 1
            self.bytes += len(data)

    def close(self):
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


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

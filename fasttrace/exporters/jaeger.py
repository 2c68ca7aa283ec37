# SPDX-License-Identifier: Apache-2.0
"""JaegerExporter: Thrift compact `Agent.emitBatch` over UDP, or Thrift binary over HTTP.

Agent (the default): each export encodes the batch's spans once (fasttrace/_thrift.pyx) and
packs them into datagrams of at most `max_packet_size` bytes (65000, the agent's limit for
its compact port), each a complete `emitBatch` with the process.  A span that cannot fit a
datagram on its own is re-encoded without its largest tags and logs and tagged
`fasttrace.trimmed` (how many it lost); if even its bare fields do not fit it is dropped.
Both are counted in `stats()` (jaeger-client loses such spans silently: the agent drops
the oversized datagram, with every other span in it).

Collector: a `jaeger.Batch` in Thrift binary is POSTed to `collector_endpoint` (e.g.
`http://localhost:14268/api/traces`) with `Content-Type: application/vnd.apache.thrift.binary`
over a kept-alive `http.client` connection, with the OTLP exporter's retry policy: retry
connection errors and 429/502/503/504 with exponential backoff, honouring `Retry-After`,
never 4xx or other errors, all within `timeout` seconds.

The process carries the service name, `jaeger.version` ("Python-fasttrace-<version>"),
`hostname` and `ip` (as jaeger-client reports them), then the tracer's tags, which win.
"""
import email.utils
import http.client
import logging
import random
import socket
import threading
import time
import urllib.parse

from fasttrace import _thrift
from fasttrace._version import __version__
from fasttrace.reporting import Exporter

log = logging.getLogger("fasttrace")

__all__ = ["JaegerExporter"]

#: Value of the `jaeger.version` process tag (jaeger-client sends "Python-<version>").
CLIENT_VERSION = f"Python-fasttrace-{__version__}"
#: Tag added to a span that had tags or logs removed to fit a datagram: how many.
TRIMMED_TAG = "fasttrace.trimmed"
THRIFT_BINARY = "application/vnd.apache.thrift.binary"
# Room left for the `fasttrace.trimmed` tag when planning what to trim.
_TRIM_TAG_ROOM = 48

# HTTP statuses worth retrying (as OTLP/HTTP specifies); everything else fails at once.
RETRYABLE_STATUS = frozenset((429, 502, 503, 504))
# Backoff before retry k (k = 0, 1, ...): _BACKOFF_BASE * 2**k, capped, times a jitter
# in [0.5, 1.5) so that many processes do not retry in lockstep (as fasttrace's OTLP exporter).
_BACKOFF_BASE = 0.25
_BACKOFF_MAX = 8.0
# Answers are tiny; a bigger one is not read (and its connection is not reused).
_MAX_RESPONSE_BYTES = 1 << 20
_LOG_INTERVAL = 10.0

_host_info = None


def host_info():
    """(hostname, ipv4 or None) of this host, looked up once per process."""
    global _host_info
    if _host_info is None:
        try:
            hostname = socket.gethostname()
        except OSError:
            hostname = ""
        _host_info = (hostname, _local_ip(hostname))
    return _host_info


def _local_ip(hostname):
    ip = None
    try:
        ip = socket.gethostbyname(hostname)
        if not ip.startswith("127."):
            return ip
    except OSError:
        pass
    # the address the default route would use; connect() on UDP sends nothing
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return ip


class _RateLimitedLog:
    def __init__(self, interval=_LOG_INTERVAL):
        self.interval = interval
        self._last = float("-inf")

    def warning(self, msg, *args):
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.warning(msg, *args)


class HttpSender:
    """POSTs bodies to one URL over a kept-alive `http.client` connection, with retries.

    Retry policy (the OTLP/HTTP one, as fasttrace's OTLP exporter): connection errors and
    429/502/503/504 are retried with exponential backoff and jitter, waiting at least what
    `Retry-After` asks (seconds or an HTTP date), as long as the retry can start before
    `timeout` seconds have passed since the first attempt; any other status (400 in
    particular) fails at once.  Never raises.

    Args:
        endpoint: http:// or https:// URL.
        content_type: the body's media type.
        headers: extra request headers.
        timeout: seconds one `post` may take, retries included.
    """

    def __init__(self, endpoint, content_type, headers=None, timeout=10.0, ssl_context=None):
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        self.endpoint = endpoint
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": content_type,
                         "User-Agent": f"fasttrace/{__version__}"}
        self._headers.update(headers or {})
        self.timeout = float(timeout)
        self._ssl_context = ssl_context
        self._conn = None
        self._stop = threading.Event()
        self.requests = 0
        self.retries = 0
        self.failures = 0
        self.last_status = None
        self.last_error = None

    def post(self, body):
        """Sends `body`; returns True on a 2xx answer within the timeout."""
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return self._fail("timed out" if remaining <= 0 else "shut down")
            status, retry_after, error, stale = self._attempt(body, remaining)
            if status is not None and 200 <= status < 300:
                self.last_error = None
                return True
            if status is not None and status not in RETRYABLE_STATUS:
                return self._fail(f"HTTP {status}")
            if self._stop.is_set():
                return self._fail("shut down")
            if stale and attempt == 0:
                # the server closed the idle kept-alive connection: reconnect now
                attempt += 1
                self.retries += 1
                continue
            delay = min(_BACKOFF_MAX, _BACKOFF_BASE * (2 ** attempt)) * random.uniform(0.5, 1.5)
            if retry_after is not None:
                delay = max(delay, retry_after)
            attempt += 1
            if time.monotonic() + delay >= deadline:
                return self._fail(f"{error or f'HTTP {status}'}; no time left to retry "
                                  f"(after {attempt} attempts, next in {delay:.1f}s)")
            self.retries += 1
            if self._stop.wait(delay):
                return self._fail("shut down")

    def _attempt(self, body, remaining):
        """One request: (status, retry_after, error, stale_connection)."""
        reused = self._conn is not None
        try:
            if not reused:
                if self._https:
                    self._conn = http.client.HTTPSConnection(
                        self._host, self._port, timeout=remaining, context=self._ssl_context)
                else:
                    self._conn = http.client.HTTPConnection(self._host, self._port,
                                                            timeout=remaining)
            conn = self._conn
            conn.timeout = remaining
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            self.requests += 1
            conn.request("POST", self._path, body=body, headers=self._headers)
            resp = conn.getresponse()
            resp.read(_MAX_RESPONSE_BYTES)
            status = resp.status
            self.last_status = status
            retry_after = _parse_retry_after(resp.getheader("Retry-After"))
            if not resp.isclosed() or resp.will_close:
                self._close_conn()
            return status, retry_after, None, False
        except (OSError, http.client.HTTPException) as exc:
            self._close_conn()
            self.last_error = f"{type(exc).__name__}: {exc}"
            stale = reused and isinstance(exc, (http.client.RemoteDisconnected,
                                                ConnectionResetError, BrokenPipeError))
            return None, None, self.last_error, stale

    def _fail(self, reason):
        self.failures += 1
        self.last_error = reason
        return False

    def _close_conn(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self):
        """Stops any backoff wait, wakes a request blocked on the socket, closes it."""
        self._stop.set()
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def after_fork_in_child(self):
        # the kept-alive socket belongs to the parent: forget it without shutting it down
        self._conn = None
        self._stop = threading.Event()


def _parse_retry_after(value):
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class JaegerExporter(Exporter):
    """Sends spans to a Jaeger agent (UDP, Thrift compact) or collector (HTTP, Thrift binary).

    Args:
        agent_host, agent_port: the agent's compact-Thrift UDP endpoint (used unless
            `collector_endpoint` is given).
        collector_endpoint: e.g. "http://localhost:14268/api/traces": send there instead.
        headers: extra HTTP headers for the collector (e.g. Authorization).
        timeout: seconds one collector export may take, retries included.
        max_packet_size: largest datagram sent to the agent.
    """

    def __init__(self, agent_host="localhost", agent_port=6831, collector_endpoint=None,
                 headers=None, timeout=10.0, max_packet_size=65000):
        self.agent_host = agent_host
        self.agent_port = int(agent_port)
        self.collector_endpoint = collector_endpoint
        self.max_packet_size = int(max_packet_size)
        if self.max_packet_size < 512:
            raise ValueError("max_packet_size must be at least 512 bytes")
        self.timeout = float(timeout)
        self._http = (HttpSender(collector_endpoint, THRIFT_BINARY, headers, timeout)
                      if collector_endpoint else None)
        self._protocol = _thrift.PROTOCOL_BINARY if self._http else _thrift.PROTOCOL_COMPACT
        self._encoder = _thrift.SpanEncoder(self._protocol)
        self._lock = threading.Lock()
        self._sock = None
        self._addr = None
        self._seqid = 0
        self._process_key = None
        self._process = None
        self._closed = False
        self._log = _RateLimitedLog()
        self._stats = dict(spans_sent=0, packets_sent=0, requests_sent=0, spans_trimmed=0,
                           spans_dropped_too_large=0, spans_failed=0, send_errors=0,
                           encode_errors=0)

    # -- Exporter --------------------------------------------------------------------------

    def export(self, batch):
        """Sends one SpanBatch; True when every part of it was handed over.  Never raises."""
        if len(batch) == 0:
            return True
        with self._lock:
            if self._closed:
                self._stats["spans_failed"] += len(batch)
                return False
            try:
                process = self._process_bytes(batch)
                self._encoder.encode(batch)
            except Exception:
                self._stats["encode_errors"] += 1
                self._stats["spans_failed"] += len(batch)
                log.exception("fasttrace: Jaeger encoding failed; %d spans lost", len(batch))
                return False
            try:
                if self._http is not None:
                    return self._post(batch, process)
                return self._send_agent(batch, process)
            except Exception:
                # a bug of ours must not reach the reporter's thread, let alone the app
                self._stats["send_errors"] += 1
                log.exception("fasttrace: Jaeger export failed")
                return False

    def shutdown(self):
        """Aborts an HTTP export in progress, closes the socket or connection."""
        self._closed = True
        if self._http is not None:
            self._http.close()
        if self._lock.acquire(timeout=1.0):
            try:
                if self._http is not None:
                    self._http._close_conn()
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
            finally:
                self._lock.release()

    def _after_fork_in_child(self):
        # the parent's socket and connection are the parent's: start afresh
        self._lock = threading.Lock()
        self._sock = None
        if self._http is not None:
            self._http.after_fork_in_child()

    def stats(self):
        """Counters: spans_sent, packets_sent (agent), requests_sent (collector),
        spans_trimmed, spans_dropped_too_large, spans_failed, send_errors, encode_errors,
        and for the collector, retries."""
        out = dict(self._stats)
        if self._http is not None:
            out["retries"] = self._http.retries
        return out

    # -- process ---------------------------------------------------------------------------

    def _process_bytes(self, batch):
        key = (batch.service_name, tuple(batch.resource.items()))
        if key != self._process_key:
            hostname, ip = host_info()
            tags = {"jaeger.version": CLIENT_VERSION}
            if hostname:
                tags["hostname"] = hostname
            if ip:
                tags["ip"] = ip
            tags.update(batch.resource)
            self._process = _thrift.encode_process(batch.service_name, tags, self._protocol)
            self._process_key = key
        return self._process

    # -- agent (UDP) -----------------------------------------------------------------------

    def _send_agent(self, batch, process):
        packets, counts, oversized = self._encoder.agent_packets(process, self.max_packet_size,
                                                                 self._seqid)
        if oversized:
            more, more_counts = self._trim(batch, process, oversized,
                                           (self._seqid + len(packets)) & 0x7FFFFFFF)
            packets += more
            counts += more_counts
        ok = True
        for packet, count in zip(packets, counts):
            if self._sendto(packet):
                self._stats["packets_sent"] += 1
                self._stats["spans_sent"] += count
            else:
                ok = False
                self._stats["spans_failed"] += count
        self._seqid = (self._seqid + len(packets)) & 0x7FFFFFFF
        return ok

    def _trim(self, batch, process, oversized, seqid):
        """Re-encodes spans too large for a datagram without their largest tags and logs."""
        budget = (self.max_packet_size - _thrift.emit_batch_overhead(len(process))
                  - _TRIM_TAG_ROOM)
        plans = {}
        for i in oversized:
            tag_sizes, log_sizes = _thrift.span_parts_sizes(batch, i, self._protocol)
            bare = self._encoder.span_size(i) - sum(tag_sizes) - sum(log_sizes)
            parts = sorted([(s, "t", k) for k, s in enumerate(tag_sizes)]
                           + [(s, "l", k) for k, s in enumerate(log_sizes)], reverse=True)
            total = bare + sum(tag_sizes) + sum(log_sizes)
            drop_t, drop_l = set(), set()
            for s, kind, k in parts:
                if total <= budget:
                    break
                (drop_t if kind == "t" else drop_l).add(k)
                total -= s
            if total > budget:
                self._stats["spans_dropped_too_large"] += 1
                continue
            plans[i] = (drop_t, drop_l, (TRIMMED_TAG, len(drop_t) + len(drop_l)))
        if not plans:
            self._log.warning("fasttrace: %d spans too large for a %d-byte Jaeger datagram "
                              "were dropped", len(oversized), self.max_packet_size)
            return [], []
        order = sorted(plans)
        self._encoder.encode(batch, plans, order)
        packets, counts, still = self._encoder.agent_packets(process, self.max_packet_size,
                                                             seqid)
        self._stats["spans_dropped_too_large"] += len(still)
        self._stats["spans_trimmed"] += len(order) - len(still)
        self._log.warning("fasttrace: %d spans too large for a %d-byte Jaeger datagram were "
                          "trimmed, %d dropped", len(order) - len(still),
                          self.max_packet_size, len(oversized) - len(order) + len(still))
        return packets, counts

    def _sendto(self, packet):
        try:
            if self._sock is None:
                infos = socket.getaddrinfo(self.agent_host, self.agent_port,
                                           type=socket.SOCK_DGRAM)
                family, _, _, _, addr = infos[0]
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    # datagrams up to 64 KiB: make sure the send buffer holds a few
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 65536)
                except OSError:
                    pass
                self._sock, self._addr = sock, addr
            self._sock.sendto(packet, self._addr)
            return True
        except OSError as exc:
            self._stats["send_errors"] += 1
            self._log.warning("fasttrace: sending to the Jaeger agent at %s:%s failed: %s",
                              self.agent_host, self.agent_port, exc)
            # resolve and reopen next time (the agent may have moved)
            if self._sock is not None:
                self._sock.close()
            self._sock = None
            return False

    # -- collector (HTTP) --------------------------------------------------------------------

    def _post(self, batch, process):
        body = self._encoder.collector_body(process)
        if self._http.post(body):
            self._stats["requests_sent"] += 1
            self._stats["spans_sent"] += len(batch)
            return True
        self._stats["send_errors"] += 1
        self._stats["spans_failed"] += len(batch)
        self._log.warning("fasttrace: exporting %d spans to the Jaeger collector at %s "
                          "failed: %s", len(batch), self.collector_endpoint,
                          self._http.last_error)
        return False

    def __repr__(self):
        where = self.collector_endpoint or f"{self.agent_host}:{self.agent_port}"
        return f"<JaegerExporter {where}>"

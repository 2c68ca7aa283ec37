# SPDX-License-Identifier: Apache-2.0
"""OTLPExporter: OTLP/HTTP with protobuf bodies, to any OpenTelemetry Collector.

The request body is encoded in Cython straight from the SpanBatch columns
(`fasttrace._otlp`, whose docstring has the OpenTracing -> OTLP mapping).  HTTP goes
through the standard library's `http.client` over one kept-alive connection.

Retries follow the OTLP/HTTP spec (https://opentelemetry.io/docs/specs/otlp/#failures-1):
connection errors and the statuses 429, 502, 503, 504 are retried with exponential
backoff and jitter, waiting at least what `Retry-After` asks; every other status
(400 in particular) fails at once.  A 2xx with `partial_success.rejected_spans` is a
success: the count is logged and added to `stats()["rejected_spans"]`, not retried.
The whole export, retries included, ends within `timeout` seconds.
"""
import email.utils
import gzip
import http.client
import logging
import random
import socket
import threading
import time
import urllib.parse

from fasttrace._otlp import decode_export_response, encode_export_request
from fasttrace._version import __version__
from fasttrace.reporting import Exporter

log = logging.getLogger("fasttrace")

__all__ = ["OTLPExporter"]

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
RETRYABLE_STATUSES = frozenset((429, 502, 503, 504))
# Backoff before retry k (k = 0, 1, ...): BACKOFF_BASE * 2**k, capped, times a jitter
# factor in [0.5, 1.5) so that many processes do not retry in lockstep.
BACKOFF_BASE = 0.25
BACKOFF_MAX = 8.0
# Responses are tiny; anything bigger is not read (and the connection is not reused).
MAX_RESPONSE_BYTES = 1 << 20
USER_AGENT = f"fasttrace/{__version__} (OTLP/HTTP protobuf)"


class OTLPExporter(Exporter):
    """Sends spans as OTLP/HTTP protobuf (``ExportTraceServiceRequest``).

    Args:
        endpoint: the full URL, ``/v1/traces`` included (http or https).
        headers: extra HTTP headers (e.g. an API key), a dict.
        timeout: seconds one export may take, retries included.
        compression: None or ``"gzip"``.
        ssl_context: for https endpoints (default: the system's trusted CAs).

    Raises:
        ValueError: the endpoint is not an http(s) URL, or the compression is unknown.
    """

    def __init__(self, endpoint=DEFAULT_ENDPOINT, headers=None, timeout=10.0,
                 compression=None, ssl_context=None):
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"OTLP endpoint must be an http(s) URL, not {endpoint!r}")
        try:
            self._port = url.port
        except ValueError:
            raise ValueError(f"OTLP endpoint has an invalid port: {endpoint!r}") from None
        if compression in ("", "none"):
            compression = None
        if compression not in (None, "gzip"):
            raise ValueError(f"unsupported OTLP compression {compression!r} (None or 'gzip')")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.compression = compression
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._ssl_context = ssl_context
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": USER_AGENT,
        }
        if compression:
            self._headers["Content-Encoding"] = compression
        self._headers.update(headers or {})
        self._conn = None
        self._lock = threading.Lock()
        self._shutdown = threading.Event()
        self.last_error = None
        self._last_partial_log = -1e18
        self._stats = {"requests": 0, "retries": 0, "failed_exports": 0, "rejected_spans": 0,
                       "partial_successes": 0, "bytes_sent": 0, "last_status": None}

    def __repr__(self):
        return f"<OTLPExporter {self.endpoint}>"

    def export(self, batch):
        """Sends one batch; returns True when the collector accepted it.  Never raises."""
        if self._shutdown.is_set() or not len(batch):
            return not len(batch)
        try:
            body = encode_export_request(batch, __version__)
            if self.compression == "gzip":
                body = gzip.compress(body, compresslevel=6, mtime=0)
        except Exception as exc:
            self._fail(f"encoding failed: {exc!r}")
            log.debug("fasttrace: OTLP encoding failed", exc_info=True)
            return False
        with self._lock:
            return self._send(body)

    def _send(self, body):
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._fail(f"gave up after {attempt} attempts: {self.last_error}")
            reused = self._conn is not None
            retry_after = None
            try:
                status, headers, data = self._post(body, remaining)
            except (OSError, http.client.HTTPException) as exc:
                self._close_conn()
                if self._shutdown.is_set():
                    return self._fail("shut down during export")
                self.last_error = f"{type(exc).__name__}: {exc}"
                if reused and attempt == 0 and isinstance(
                        exc, (http.client.RemoteDisconnected, ConnectionResetError,
                              BrokenPipeError)):
                    # the collector closed the idle kept-alive connection: reconnect now
                    attempt += 1
                    self._stats["retries"] += 1
                    continue
            else:
                self._stats["last_status"] = status
                if 200 <= status < 300:
                    self.last_error = None
                    self._partial_success(headers, data)
                    return True
                self.last_error = f"HTTP {status}: {_snippet(data)}"
                if status not in RETRYABLE_STATUSES:
                    return self._fail(self.last_error)
                retry_after = _retry_after(headers.get("Retry-After"))
            delay = min(BACKOFF_MAX, BACKOFF_BASE * (2 ** attempt)) * random.uniform(0.5, 1.5)
            if retry_after is not None:
                delay = max(delay, retry_after)
            attempt += 1
            if time.monotonic() + delay >= deadline:
                return self._fail(f"{self.last_error}; no time left to retry "
                                  f"(after {attempt} attempts, next in {delay:.1f}s)")
            self._stats["retries"] += 1
            if self._shutdown.wait(delay):
                return self._fail("shut down during export")

    def _post(self, body, timeout):
        conn = self._conn
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                   context=self._ssl_context)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        self._stats["requests"] += 1
        conn.request("POST", self._path, body=body, headers=self._headers)
        self._stats["bytes_sent"] += len(body)
        resp = conn.getresponse()
        data = resp.read(MAX_RESPONSE_BYTES)
        if not resp.isclosed():
            # more than we are willing to read: do not reuse this connection
            self._close_conn()
        elif resp.will_close:
            self._close_conn()
        return resp.status, resp.headers, data

    def _partial_success(self, headers, data):
        if not data:
            return
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype and ctype != "application/x-protobuf":
            return
        try:
            rejected, message = decode_export_response(data)
        except ValueError:
            log.debug("fasttrace: undecodable OTLP response (%d bytes)", len(data))
            return
        if rejected or message:
            self._stats["partial_successes"] += 1
            self._stats["rejected_spans"] += rejected
            now = time.monotonic()
            if now - self._last_partial_log >= 10.0:
                self._last_partial_log = now
                log.warning("fasttrace: the OTLP collector at %s rejected %d spans: %s",
                            self.endpoint, rejected, message or "(no message)")

    def _fail(self, reason):
        self.last_error = reason
        self._stats["failed_exports"] += 1
        return False

    def _close_conn(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def stats(self):
        """Counters: requests, retries, failed_exports, rejected_spans (partial
        successes), bytes_sent, last_status, last_error."""
        out = dict(self._stats)
        out["last_error"] = self.last_error
        return out

    def shutdown(self):
        """Aborts retries in progress and closes the connection."""
        self._shutdown.set()
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            # wakes an export blocked on this socket in another thread
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._lock.acquire(timeout=1.0):
            try:
                self._close_conn()
            finally:
                self._lock.release()

    def _after_fork_in_child(self):
        # the kept-alive socket belongs to the parent: forget it without shutting it down
        self._conn = None
        self._lock = threading.Lock()
        self._shutdown = threading.Event()


def _retry_after(value):
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
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


def _snippet(data, limit=200):
    text = (data or b"")[:limit].decode("utf-8", "replace")
    return text.replace("\n", " ") or "(empty body)"


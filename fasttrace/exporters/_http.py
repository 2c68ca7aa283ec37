# SPDX-License-Identifier: Apache-2.0
"""HTTP POST with the OTLP/HTTP retry policy, shared by the OTLP, Jaeger-collector and
Zipkin exporters.

Retry policy (https://opentelemetry.io/docs/specs/otlp/#failures-1): connection errors
and the statuses 429, 502, 503, 504 are retried with exponential backoff and jitter,
waiting at least what `Retry-After` asks (delta-seconds or an HTTP date), as long as the
retry can start before `timeout` seconds have passed since the first attempt; every
other status (400 in particular) fails at once.  One kept-alive `http.client`
connection; a connection the server closed while idle is re-opened at once.
"""
import email.utils
import http.client
import logging
import random
import socket
import threading
import time
import urllib.parse

from fasttrace._version import __version__

log = logging.getLogger("fasttrace")

RETRYABLE_STATUSES = frozenset((429, 502, 503, 504))
# Backoff before retry k (k = 0, 1, ...): BACKOFF_BASE * 2**k, capped, times a jitter
# factor in [0.5, 1.5) so that many processes do not retry in lockstep.
BACKOFF_BASE = 0.25
BACKOFF_MAX = 8.0
# Answers are tiny; a bigger one is not read (and its connection is not reused).
MAX_RESPONSE_BYTES = 1 << 20


def backoff_delay(attempt, hint=None):
    """Seconds to wait before retry `attempt` (0, 1, ...): exponential with jitter, at
    least `hint` (the server's Retry-After or RetryInfo) when it gave one."""
    delay = min(BACKOFF_MAX, BACKOFF_BASE * (2 ** attempt)) * random.uniform(0.5, 1.5)
    return delay if hint is None else max(delay, hint)


class RetryingSender:
    """What the HTTP and gRPC senders share: the time one send may take (retries
    included), the lock a send holds, the event close() sets, the counters stats() reads."""

    def __init__(self, timeout):
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        self.timeout = float(timeout)
        self._reset_state()

    def _reset_state(self):
        # also a forked child's: the lock, the event and the counters are the parent's
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.requests = self.retries = self.failures = self.bytes_sent = 0
        self.last_status = None
        self.last_error = None

    def _fail(self, reason):
        self.failures += 1
        self.last_error = reason
        return None

    def _close_when_free(self, close):
        """Runs `close()` once no send holds the lock (waiting 1 s at most for it)."""
        if self._lock.acquire(timeout=1.0):
            try:
                close()
            finally:
                self._lock.release()


class HttpSender(RetryingSender):
    """POSTs bodies to one URL with retries.  Never raises from `post`.

    Args:
        endpoint: http:// or https:// URL.
        content_type: the bodies' media type.
        headers: extra request headers.
        timeout: seconds one `post` may take, retries included.
        ssl_context: for https endpoints (default: the system's trusted CAs).

    Raises:
        ValueError: the endpoint is not an http(s) URL or its port is invalid.
    """

    def __init__(self, endpoint, content_type, headers=None, timeout=10.0, ssl_context=None):
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        try:
            self._port = parts.port
        except ValueError:
            raise ValueError(f"invalid port in {endpoint!r}") from None
        super().__init__(timeout)
        # socket.getaddrinfo imports the idna codec on first use: a reporter thread
        # holding that import lock when the process forks would deadlock the child's
        # first connection, so the import happens now, before any reporter thread runs
        "x".encode("idna")
        self.endpoint = endpoint
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": content_type, "User-Agent": f"fasttrace/{__version__}"}
        self._headers.update(headers or {})
        self._ssl_context = ssl_context
        self._conn = None

    @property
    def headers(self):
        """The request headers sent with every body (a copy)."""
        return dict(self._headers)

    def post(self, body):
        """Sends `body`: (status, headers, data) of the 2xx answer, or None on failure."""
        with self._lock:
            return self._post(body)

    def _post(self, body):
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return self._fail("timed out" if remaining <= 0 else "shut down")
            answer, retry_after, stale = self._attempt(body, remaining)
            if answer is not None and 200 <= answer[0] < 300:
                self.last_error = None
                return answer
            if answer is not None and answer[0] not in RETRYABLE_STATUSES:
                return self._fail(self.last_error)
            if self._stop.is_set():
                return self._fail("shut down")
            if stale and attempt == 0:
                # the server closed the idle kept-alive connection: reconnect now
                attempt += 1
                self.retries += 1
                continue
            delay = backoff_delay(attempt, retry_after)
            attempt += 1
            if time.monotonic() + delay >= deadline:
                return self._fail(f"{self.last_error}; no time left to retry "
                                  f"(after {attempt} attempts, next in {delay:.1f}s)")
            self.retries += 1
            if self._stop.wait(delay):
                return self._fail("shut down")

    def _attempt(self, body, remaining):
        """One request: ((status, headers, data) or None, retry_after, stale_connection)."""
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
            self.bytes_sent += len(body)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES)
            self.last_status = resp.status
            if not 200 <= resp.status < 300:
                self.last_error = f"HTTP {resp.status}: {_snippet(data)}"
            retry_after = parse_retry_after(resp.getheader("Retry-After"))
            if not resp.isclosed() or resp.will_close:
                self._close_conn()
            return (resp.status, resp.headers, data), retry_after, False
        except (OSError, http.client.HTTPException) as exc:
            self._close_conn()
            self.last_error = f"{type(exc).__name__}: {exc}"
            stale = reused and isinstance(exc, (http.client.RemoteDisconnected,
                                                ConnectionResetError, BrokenPipeError))
            return None, None, stale

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
        self._close_when_free(self._close_conn)

    def after_fork_in_child(self):
        # the kept-alive socket belongs to the parent: forget it without shutting it down
        self._conn = None
        self._reset_state()


def parse_retry_after(value):
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

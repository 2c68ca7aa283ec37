# SPDX-License-Identifier: Apache-2.0
"""One unary gRPC method called with raw bytes, with the OTLP/gRPC retry policy (the
gRPC twin of `_http.HttpSender`, used by `OTLPGrpcExporter`).

The request is the already-encoded message and the response comes back undecoded:
``channel.unary_unary(method)`` without serializers, so no protobuf object is built.
`grpc` is imported when a sender is created, never by ``import fasttrace``.

Retry policy (https://opentelemetry.io/docs/specs/otlp/#failures): CANCELLED,
DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried, and
RESOURCE_EXHAUSTED only when the server sends a ``google.rpc.RetryInfo`` (the throttling
hint, in the ``grpc-status-details-bin`` trailer); every other code fails at once.  The
backoff is `_http`'s (exponential, jittered), at least the RetryInfo delay, and a retry
starts only if it can before `timeout` seconds have passed since the first attempt.
gRPC's own channel retries are turned off so that every attempt is counted here.  After
UNAVAILABLE the channel is closed and the next attempt opens a new one (so a collector
that came back is reached at once, not after gRPC's reconnect backoff).
"""
import logging
import time

from fasttrace.exporters._http import RetryingSender, backoff_delay

log = logging.getLogger("fasttrace")

RETRYABLE_CODES = frozenset(("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE",
                             "UNAVAILABLE", "DATA_LOSS"))
# retryable only with a RetryInfo from the server
THROTTLING_CODES = frozenset(("RESOURCE_EXHAUSTED",))

RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# where opentelemetry-python's gRPC exporter looks for the hint (a bare RetryInfo); read
# too, so servers written against it are understood
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"

INSTALL_HINT = "OTLP over gRPC needs grpcio: pip install 'fasttrace[otlp-grpc]'"


def import_grpc():
    """The grpc module, or ImportError saying which extra installs it."""
    try:
        import grpc
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    return grpc


class GrpcSender(RetryingSender):
    """Calls one unary method with bytes, retrying as above.  Never raises from `call`.

    Args:
        target: the gRPC target (``host:port``).
        method: the full method name (``/package.Service/Method``).
        secure: TLS (True) or plaintext (False).
        root_certificates, private_key, certificate_chain: PEM bytes for TLS (None: the
            system's trusted CAs, no client certificate).
        credentials: a ``grpc.ChannelCredentials`` to use instead of the above.
        metadata: (key, value) pairs sent with every call (keys lowercase).
        timeout: seconds one `call` may take, retries included.
        compression: None or ``"gzip"`` (gRPC message compression).
        user_agent: the channel's primary user agent.
    """

    def __init__(self, target, method, secure, root_certificates=None, private_key=None,
                 certificate_chain=None, credentials=None, metadata=(), timeout=10.0,
                 compression=None, user_agent=None):
        self._grpc = grpc = import_grpc()
        super().__init__(timeout)
        self.target = target
        self.method = method
        self.secure = bool(secure)
        self._tls = (root_certificates, private_key, certificate_chain)
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._compression = grpc.Compression.Gzip if compression == "gzip" else None
        self._options = [("grpc.enable_retries", 0)]
        if user_agent:
            self._options.append(("grpc.primary_user_agent", user_agent))
        if self.secure and credentials is None:
            # arguments of the wrong type fail here, not at the first export (grpc
            # checks the PEM itself only at the handshake)
            self._channel_credentials()
        self._channel = None
        self._call = None

    @property
    def metadata(self):
        """The metadata sent with every call (a copy, as a dict)."""
        return dict(self._metadata)

    def _channel_credentials(self):
        if self._credentials is not None:
            return self._credentials
        root, key, chain = self._tls
        return self._grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                                  certificate_chain=chain)

    def _open(self):
        grpc = self._grpc
        if self.secure:
            channel = grpc.secure_channel(self.target, self._channel_credentials(),
                                          options=self._options,
                                          compression=self._compression)
        else:
            channel = grpc.insecure_channel(self.target, options=self._options,
                                            compression=self._compression)
        self._channel = channel
        # no serializers: the request is sent as the bytes given, the response is
        # returned as the bytes received
        self._call = channel.unary_unary(self.method, request_serializer=None,
                                         response_deserializer=None)
        return self._call

    def call(self, body):
        """Sends `body`: the response message's bytes, or None on failure."""
        with self._lock:
            return self._send(body)

    def _send(self, body):
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return self._fail("timed out" if remaining <= 0 else "shut down")
            ok, data, code, hint = self._attempt(body, remaining)
            if ok:
                self.last_error = None
                return data
            if self._stop.is_set():
                return self._fail("shut down")
            if code not in RETRYABLE_CODES and not (code in THROTTLING_CODES
                                                    and hint is not None):
                return self._fail(self.last_error)
            if code == "UNAVAILABLE":
                self._close_channel()
            delay = backoff_delay(attempt, hint)
            attempt += 1
            if time.monotonic() + delay >= deadline:
                return self._fail(f"{self.last_error}; no time left to retry "
                                  f"(after {attempt} attempts, next in {delay:.1f}s)")
            self.retries += 1
            if self._wait(delay):
                return self._fail("shut down")

    def _wait(self, delay):
        """Waits `delay` seconds between attempts; True when shut down meanwhile."""
        return self._stop.wait(delay)

    def _attempt(self, body, remaining):
        """One call: (ok, response bytes, status code name, RetryInfo seconds or None)."""
        grpc = self._grpc
        try:
            call = self._call if self._call is not None else self._open()
            self.requests += 1
            self.bytes_sent += len(body)
            data = call(body, timeout=remaining, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = _code_name(exc)
            self.last_status = code
            details = _safe(exc, "details")
            self.last_error = f"gRPC {code}: {details or '(no details)'}"
            return False, None, code, retry_delay(_safe(exc, "trailing_metadata"))
        except Exception as exc:       # a closed channel, a bad metadata value, ...
            self.last_status = None
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._close_channel()
            return False, None, None, None
        self.last_status = "OK"
        return True, data, "OK", None

    def _close_channel(self):
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            try:
                channel.close()
            except Exception:
                pass

    def close(self):
        """Stops any backoff wait, cancels a call in flight, closes the channel."""
        self._stop.set()
        channel = self._channel
        if channel is not None:
            try:
                channel.close()        # a blocked call ends with CANCELLED
            except Exception:
                pass
        self._close_when_free(self._close_channel)

    def after_fork_in_child(self):
        # the channel (its sockets, its polling threads) is the parent's: forget it
        # without closing it; the child's first call opens its own
        self._channel = None
        self._call = None
        self._reset_state()


def _safe(exc, name):
    try:
        return getattr(exc, name)()
    except Exception:
        return None


def _code_name(exc):
    code = _safe(exc, "code")
    return getattr(code, "name", None) or "UNKNOWN"


# -- google.rpc.Status / RetryInfo, read by hand (no protobuf dependency) ----------------

def _varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data):
    """(field number, wire type, value) of one protobuf message; ValueError if malformed."""
    pos, n = 0, len(data)
    while pos < n:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > n:
                raise ValueError("truncated field")
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > n:
            raise ValueError("truncated field")
        yield number, wire, value


def _retry_info_seconds(data):
    """RetryInfo { 1: Duration { 1: seconds int64, 2: nanos int32 } } -> seconds."""
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            seconds = nanos = 0
            for n2, w2, v2 in _fields(value):
                if n2 == 1 and w2 == 0:
                    seconds = v2 - (1 << 64) if v2 >= 1 << 63 else v2
                elif n2 == 2 and w2 == 0:
                    nanos = v2 - (1 << 64) if v2 >= 1 << 63 else v2
            return max(0.0, seconds + nanos / 1e9)
    return 0.0          # a RetryInfo without a delay: retry, at the usual backoff


def retry_delay(trailing_metadata):
    """The server's RetryInfo delay in seconds from a call's trailing metadata, or None.

    Read from ``grpc-status-details-bin`` (a ``google.rpc.Status`` whose ``details``, field
    3, are ``Any { 1: type_url, 2: value }``), else from a bare RetryInfo under
    ``google.rpc.retryinfo-bin``.  Anything malformed is ignored.
    """
    for key, value in trailing_metadata or ():
        if not isinstance(value, bytes):
            continue
        try:
            if key == STATUS_DETAILS_KEY:
                for number, wire, any_msg in _fields(value):
                    if number != 3 or wire != 2:
                        continue
                    type_url = payload = None
                    for n2, w2, v2 in _fields(any_msg):
                        if n2 == 1 and w2 == 2:
                            type_url = v2.decode("utf-8", "replace")
                        elif n2 == 2 and w2 == 2:
                            payload = v2
                    if type_url == RETRY_INFO_TYPE and payload is not None:
                        return _retry_info_seconds(payload)
            elif key == RETRY_INFO_KEY:
                return _retry_info_seconds(value)
        except ValueError:
            log.debug("fasttrace: unreadable %s trailer (%d bytes)", key, len(value))
    return None

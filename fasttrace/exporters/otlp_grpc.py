# SPDX-License-Identifier: Apache-2.0
"""OTLPGrpcExporter: OTLP over gRPC (port 4317), to any OpenTelemetry Collector.

The sibling of `OTLPExporter` (OTLP/HTTP), as the OpenTelemetry SDK has one
``OTLPSpanExporter`` per transport.  The message is the same one: the
``ExportTraceServiceRequest`` bytes `fasttrace._otlp` encodes from the SpanBatch columns
are sent as they are as the gRPC request of
``/opentelemetry.proto.collector.trace.v1.TraceService/Export`` (no protobuf object is
built), and the response bytes are read by `decode_export_response` (partial success:
counted in ``stats()["rejected_spans"]``, logged, not retried).

Needs ``grpcio`` (the ``otlp-grpc`` extra), imported when an exporter is created.  The
channel opens at the first export, and a forked child opens its own.  Retries, backoff and
the RetryInfo hint: see fasttrace/exporters/_grpc.py.  The whole export, retries
included, ends within `timeout` seconds.
"""
import logging
import urllib.parse

from fasttrace._otlp import encode_export_request
from fasttrace._version import __version__
from fasttrace.exporters._grpc import GrpcSender
from fasttrace.exporters.base import BaseExporter
from fasttrace.exporters.otlp import record_partial_success

log = logging.getLogger("fasttrace")

__all__ = ["OTLPGrpcExporter"]

DEFAULT_ENDPOINT = "http://localhost:4317"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
USER_AGENT = f"fasttrace/{__version__} (OTLP/gRPC)"


def parse_endpoint(endpoint, insecure=None):
    """(gRPC target, TLS?) for an endpoint, as the OpenTelemetry SDK's gRPC exporter reads
    it: ``https://`` is always TLS; ``http://`` is plaintext unless ``insecure=False``; an
    endpoint without a scheme (``host:port``) is TLS unless ``insecure=True``.  A URL's
    path is ignored (gRPC has its own).

    Raises:
        ValueError: an empty endpoint, another scheme, no host, or an invalid port.
    """
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError(f"not a gRPC endpoint: {endpoint!r}")
    endpoint = endpoint.strip()
    if "://" in endpoint:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL or host:port: {endpoint!r}")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError(f"invalid port in {endpoint!r}") from None
        scheme = parts.scheme
        target = parts.netloc.rpartition("@")[2]
    else:
        if any(c.isspace() for c in endpoint) or "/" in endpoint:
            raise ValueError(f"not an http(s) URL or host:port: {endpoint!r}")
        scheme = None
        target = endpoint
    secure = scheme == "https" or insecure is False or (insecure is None and scheme != "http")
    return target, secure


def _metadata(headers):
    if not headers:
        return ()
    items = headers.items() if hasattr(headers, "items") else headers
    # gRPC metadata keys are lowercase (HTTP/2 header names)
    return tuple((str(k).strip().lower(), v) for k, v in items)


def _read(path, what):
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path!r}: {exc.strerror or exc}") from None


class OTLPGrpcExporter(BaseExporter):
    """Sends spans as OTLP/gRPC (``TraceService/Export``).

    Args:
        endpoint: ``http://host:port`` (plaintext), ``https://host:port`` (TLS) or
            ``host:port`` (TLS unless `insecure`); default ``http://localhost:4317``.
        insecure: True for plaintext, False for TLS; None: from the scheme (see
            `parse_endpoint`).
        headers: gRPC metadata sent with every export (e.g. an API key): a dict or
            (key, value) pairs; keys are lowercased.
        timeout: seconds one export may take, retries included.
        compression: None or ``"gzip"`` (gRPC message compression).
        certificate_file: PEM file of the CA certificates that verify the server (default:
            the system's trusted CAs).
        client_key_file, client_certificate_file: PEM files of a client key and
            certificate (mutual TLS).
        credentials: a ``grpc.ChannelCredentials`` to use instead of the three files.

    Raises:
        ImportError: grpcio is not installed (the ``otlp-grpc`` extra).
        ValueError: a bad endpoint, compression or timeout, or an unreadable file.
    """

    STATS = ("failed_exports", "rejected_spans", "partial_successes", "unprintable_values")

    def __init__(self, endpoint=DEFAULT_ENDPOINT, insecure=None, headers=None, timeout=10.0,
                 compression=None, certificate_file=None, client_key_file=None,
                 client_certificate_file=None, credentials=None):
        super().__init__()
        if compression in ("", "none"):
            compression = None
        if compression not in (None, "gzip"):
            raise ValueError(f"unsupported OTLP compression {compression!r} (None or 'gzip')")
        try:
            target, secure = parse_endpoint(endpoint, insecure)
        except ValueError as exc:
            raise ValueError(f"OTLP endpoint: {exc}") from None
        if (client_key_file is None) != (client_certificate_file is None):
            raise ValueError("client_key_file and client_certificate_file go together")
        self._sender = GrpcSender(
            target, EXPORT_METHOD, secure,
            root_certificates=_read(certificate_file, "certificate file"),
            private_key=_read(client_key_file, "client key file"),
            certificate_chain=_read(client_certificate_file, "client certificate file"),
            credentials=credentials, metadata=_metadata(headers), timeout=timeout,
            compression=compression, user_agent=USER_AGENT)
        self.endpoint = endpoint
        self.target = target
        self.insecure = not secure
        self.timeout = float(timeout)
        self.compression = compression
        self.last_error = None

    def __repr__(self):
        return f"<OTLPGrpcExporter {self.target} ({'plaintext' if self.insecure else 'TLS'})>"

    @property
    def headers(self):
        """The metadata sent with every export (a dict)."""
        return self._sender.metadata

    def export(self, batch):
        """Sends one batch; returns True when the collector accepted it.  Never raises."""
        if self._closed or not len(batch):
            return not len(batch)
        try:
            body = encode_export_request(batch, __version__, self._stats)
        except Exception as exc:
            log.debug("fasttrace: OTLP encoding failed", exc_info=True)
            return self._fail(f"encoding failed: {exc!r}")
        data = self._sender.call(body)
        if data is None:
            return self._fail(self._sender.last_error)
        self.last_error = None
        record_partial_success(self, data)
        return True

    def _fail(self, reason):
        self.last_error = reason
        self._stats["failed_exports"] += 1
        return False

    def stats(self):
        """Counters: requests (attempts), retries, failed_exports, rejected_spans (partial
        successes), unprintable_values, bytes_sent (messages before gRPC compression),
        last_status (the last gRPC status code's name), last_error."""
        out = dict(self._stats)
        s = self._sender
        out.update(requests=s.requests, retries=s.retries, bytes_sent=s.bytes_sent,
                   last_status=s.last_status, last_error=self.last_error)
        return out

    def shutdown(self):
        """Aborts retries in progress, cancels a call in flight, closes the channel."""
        self._closed = True
        self._sender.close()

    def _reset_after_fork(self):
        self._sender.after_fork_in_child()
        self.last_error = None

# SPDX-License-Identifier: Apache-2.0
"""OTLPExporter: OTLP/HTTP with protobuf bodies, to any OpenTelemetry Collector.

The request body is encoded in Cython straight from the SpanBatch columns
(`fasttrace._otlp`, whose docstring has the OpenTracing -> OTLP mapping: the error log
as the OpenTelemetry `exception` event, `telemetry.sdk.*` on the resource).  A value
whose `str()` raises is sent as `<unprintable TypeName>` and counted in
`stats()["unprintable_values"]`; the rest of the batch goes out as usual.  HTTP goes
through the standard library's `http.client` over one kept-alive connection.

Retries follow the OTLP/HTTP spec (see fasttrace/exporters/_http.py, shared with the
Jaeger-collector and Zipkin exporters).  A 2xx with `partial_success.rejected_spans` is a
success: the count is logged and added to `stats()["rejected_spans"]`, not retried.
The whole export, retries included, ends within `timeout` seconds.
"""
import gzip
import logging

from fasttrace._otlp import decode_export_response, encode_export_request
from fasttrace._version import __version__
from fasttrace.exporters._http import HttpSender
from fasttrace.exporters.base import BaseExporter

log = logging.getLogger("fasttrace")

__all__ = ["OTLPExporter"]

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
USER_AGENT = f"fasttrace/{__version__} (OTLP/HTTP protobuf)"


class OTLPExporter(BaseExporter):
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

    STATS = ("failed_exports", "rejected_spans", "partial_successes", "unprintable_values")

    def __init__(self, endpoint=DEFAULT_ENDPOINT, headers=None, timeout=10.0,
                 compression=None, ssl_context=None):
        super().__init__()
        if compression in ("", "none"):
            compression = None
        if compression not in (None, "gzip"):
            raise ValueError(f"unsupported OTLP compression {compression!r} (None or 'gzip')")
        all_headers = {"User-Agent": USER_AGENT}
        if compression:
            all_headers["Content-Encoding"] = compression
        all_headers.update(headers or {})
        try:
            self._http = HttpSender(endpoint, "application/x-protobuf", all_headers, timeout,
                                    ssl_context)
        except ValueError as exc:
            raise ValueError(f"OTLP endpoint: {exc}") from None
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.compression = compression
        self.last_error = None

    def __repr__(self):
        return f"<OTLPExporter {self.endpoint}>"

    @property
    def headers(self):
        """The HTTP headers sent with every export."""
        return self._http.headers

    def export(self, batch):
        """Sends one batch; returns True when the collector accepted it.  Never raises."""
        if self._closed or not len(batch):
            return not len(batch)
        try:
            body = encode_export_request(batch, __version__, self._stats)
            if self.compression == "gzip":
                body = gzip.compress(body, compresslevel=6, mtime=0)
        except Exception as exc:
            log.debug("fasttrace: OTLP encoding failed", exc_info=True)
            return self._fail(f"encoding failed: {exc!r}")
        answer = self._http.post(body)
        if answer is None:
            return self._fail(self._http.last_error)
        self.last_error = None
        status, headers, data = answer
        self._partial_success(headers, data)
        return True

    def _partial_success(self, headers, data):
        if not data:
            return
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype and ctype != "application/x-protobuf":
            return
        record_partial_success(self, data)

    def _fail(self, reason):
        self.last_error = reason
        self._stats["failed_exports"] += 1
        return False

    def stats(self):
        """Counters: requests, retries, failed_exports, rejected_spans (partial
        successes), unprintable_values (values sent as ``<unprintable TypeName>``),
        bytes_sent, last_status, last_error."""
        out = dict(self._stats)
        out.update(requests=self._http.requests, retries=self._http.retries,
                   bytes_sent=self._http.bytes_sent, last_status=self._http.last_status,
                   last_error=self.last_error)
        return out

    def shutdown(self):
        """Aborts retries in progress and closes the connection."""
        self._closed = True
        self._http.close()

    def _reset_after_fork(self):
        self.last_error = None


def record_partial_success(exporter, data):
    """Counts and logs an ExportTraceServiceResponse's partial success (also used by
    the gRPC exporter): `exporter` has `_stats`, `_log` and `endpoint`."""
    if not data:
        return
    try:
        rejected, message = decode_export_response(data)
    except ValueError:
        log.debug("fasttrace: undecodable OTLP response (%d bytes)", len(data))
        return
    if rejected or message:
        exporter._stats["partial_successes"] += 1
        exporter._stats["rejected_spans"] += rejected
        exporter._log.warning(
            "fasttrace: the OTLP collector at %s rejected %d spans: %s",
            exporter.endpoint, rejected, message or "(no message)")

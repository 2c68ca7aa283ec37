# SPDX-License-Identifier: Apache-2.0
"""ZipkinExporter: Zipkin v2 JSON (`POST /api/v2/spans`), over a kept-alive `http.client`.

Mapping from OpenTracing (https://zipkin.io/zipkin-api/#/default/post_spans):

- traceId: 32 lowercase hex digits, or 16 when the high half is 0 (a 64-bit trace id);
  id and parentId: 16 (no parentId for a root).
- kind: the `span.kind` tag `server`/`client`/`producer`/`consumer` becomes SERVER/CLIENT/
  PRODUCER/CONSUMER and is not repeated as a tag; any other value stays a tag.
- timestamp and duration in microseconds; duration at least 1 (Zipkin reads 0 as absent).
- localEndpoint: the service name, and the `ip` process tag (else this host's address)
  as ipv4 or ipv6.  remoteEndpoint: from `peer.service` (else `peer.hostname`),
  `peer.ipv4`, `peer.ipv6`, `peer.port`, when any is present (they stay tags too).
- tags: every value as a string (bools "true"/"false", floats as Python's repr, ints beyond
  64 bits exact); the tracer's tags (the process's) are added to every span, span tags
  winning, as OpenTelemetry's Zipkin exporter does with resource attributes.  A tag whose
  key is not interned is read as `SpanBatch.tags()` reads it (of several entries the
  arena kept for one such key, the last).
- annotations: one per log, at its timestamp; the value is the `event` field when it is
  the only one, else the fields as compact JSON (so nothing logged is lost).  The error
  log is such an annotation, its exception as `str(exc)`, the class by name.
- values JSON has no type for are written as their text (`fasttrace._text`); one whose
  `str()` raises as `<unprintable TypeName>`, counted in `stats()["unprintable_values"]`,
  and the rest of the span and batch as usual.
- debug: true for debug spans; shared is omitted.

Retries are the Jaeger collector's (`fasttrace.exporters._http.HttpSender`): connection
errors and 429/502/503/504 with backoff and `Retry-After`, nothing else, within `timeout`.
"""
import ipaddress
import json
import logging

from fasttrace import _zipkin
from fasttrace._text import placeholder, text
from fasttrace.exporters._host import host_info
from fasttrace.exporters._http import HttpSender
from fasttrace.exporters.base import BaseExporter

log = logging.getLogger("fasttrace")

__all__ = ["ZipkinExporter", "encode_spans_json"]

DEFAULT_ENDPOINT = "http://localhost:9411/api/v2/spans"

def _str_value(value):
    """A tag value as Zipkin's string (floats as their repr; see fasttrace._text)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    s = text(value)
    return placeholder(value) if s is None else s


_json_compact = json.JSONEncoder(separators=(",", ":"), default=_str_value,
                                 ensure_ascii=False).encode


def _endpoint_ip(endpoint, value):
    """Adds ipv4 or ipv6 to an endpoint dict from a str or int address, if valid."""
    try:
        ip = ipaddress.ip_address(value.strip() if isinstance(value, str) else int(value))
    except (ValueError, TypeError):
        return
    endpoint["ipv4" if ip.version == 4 else "ipv6"] = str(ip)


def local_endpoint(service_name, resource):
    """Zipkin's localEndpoint: the service name and this process's address if known."""
    endpoint = {"serviceName": service_name}
    ip = resource.get("ip") if resource else None
    if ip is None:
        ip = host_info()[1]
    if ip is not None:
        _endpoint_ip(endpoint, ip)
    return endpoint


def encode_spans_json(batch, endpoint=None, stats=None):
    """A SpanBatch as a Zipkin v2 JSON array (UTF-8 bytes), encoded in Cython
    (`fasttrace._zipkin.encode_zipkin`).

    Args:
        batch: the SpanBatch.
        endpoint: the localEndpoint dict (default: `local_endpoint(...)` of the batch).
        stats: None, or a dict whose ``"unprintable_values"`` is increased by the number
            of values sent as ``<unprintable TypeName>`` (their ``str()`` raised).
    """
    if endpoint is None:
        endpoint = local_endpoint(batch.service_name, batch.resource)
    resource_tags = {_str_value(k): _str_value(v) for k, v in batch.resource.items()}
    return _zipkin.encode_zipkin(batch, _json_compact(endpoint).encode("utf-8", "replace"),
                                 resource_tags, stats)


class ZipkinExporter(BaseExporter):
    """Sends spans to Zipkin (or anything taking Zipkin v2 JSON) over HTTP.

    Args:
        endpoint: the full URL, `/api/v2/spans` included (http or https).
        timeout: seconds one export may take, retries included.
        headers: extra HTTP headers.
    """

    STATS = ("spans_sent", "requests_sent", "spans_failed", "send_errors", "encode_errors",
             "unprintable_values")

    def __init__(self, endpoint=DEFAULT_ENDPOINT, timeout=10.0, headers=None):
        super().__init__()
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self._http = HttpSender(endpoint, "application/json", headers, timeout)
        self._endpoint_key = None
        self._endpoint = None

    def export(self, batch):
        """Sends one SpanBatch; True when Zipkin accepted it.  Never raises."""
        if len(batch) == 0:
            return True
        if self._closed:
            return self._lost(batch)
        try:
            key = (batch.service_name, tuple(batch.resource.items()))
            if key != self._endpoint_key:
                self._endpoint = local_endpoint(batch.service_name, batch.resource)
                self._endpoint_key = key
            body = encode_spans_json(batch, self._endpoint, self._stats)
        except Exception:
            return self._encoding_failed(batch, "Zipkin")
        with self._lock:
            if self._http.post(body):
                self._stats["requests_sent"] += 1
                self._stats["spans_sent"] += len(batch)
                return True
            self._lost(batch, "send_errors")
        self._log.warning("fasttrace: exporting %d spans to Zipkin at %s failed: %s",
                          len(batch), self.endpoint, self._http.last_error)
        return False

    def stats(self):
        """Counters: spans_sent, requests_sent, spans_failed, send_errors, encode_errors,
        unprintable_values (values sent as ``<unprintable TypeName>``), retries."""
        out = dict(self._stats)
        out["retries"] = self._http.retries
        return out

    def shutdown(self):
        """Aborts an export in progress and closes the connection."""
        self._closed = True
        self._http.close()

    def __repr__(self):
        return f"<ZipkinExporter {self.endpoint}>"

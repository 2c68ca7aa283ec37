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
import threading

from fasttrace import _thrift
from fasttrace._text import placeholder, text
from fasttrace.batch import (TAG_BIGINT, TAG_BOOL, TAG_FLOAT, TAG_INT, TAG_STR, UNINTERNED,
                             shadowed_tags)
from fasttrace.exporters._http import HttpSender, RateLimitedLog
from fasttrace.exporters.jaeger import host_info
from fasttrace.reporting import Exporter

log = logging.getLogger("fasttrace")

__all__ = ["ZipkinExporter", "encode_spans_json", "encode_spans_json_py"]

DEFAULT_ENDPOINT = "http://localhost:9411/api/v2/spans"

_KINDS = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER",
          "consumer": "CONSUMER"}
_PEER_KEYS = frozenset(("peer.service", "peer.hostname", "peer.ipv4", "peer.ipv6",
                        "peer.port"))
_FLAG_DEBUG = 2


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


def _remote_endpoint(peer):
    endpoint = {}
    name = peer.get("peer.service") or peer.get("peer.hostname")
    if name:
        endpoint["serviceName"] = _str_value(name)
    if "peer.ipv4" in peer:
        _endpoint_ip(endpoint, peer["peer.ipv4"])
    if "peer.ipv6" in peer:
        _endpoint_ip(endpoint, peer["peer.ipv6"])
    port = peer.get("peer.port")
    if port is not None:
        try:
            port = int(port)
            if 0 < port < 65536:
                endpoint["port"] = port
        except (TypeError, ValueError):
            pass
    return endpoint or None


def _annotation_value(fields):
    if not isinstance(fields, dict):
        return _str_value(fields)
    if len(fields) == 1:
        (key, value), = fields.items()
        if isinstance(key, str) and str.__eq__(key, "event") is True:
            return _str_value(value)
    return "{%s}" % ",".join(f"{_json_compact(_str_value(k))}:{_json_field(v)}"
                             for k, v in fields.items())


def _json_field(value):
    """A log field's value as JSON; as one string (its text) when json refuses it."""
    try:
        return _json_compact(value)
    except (TypeError, ValueError, RecursionError):
        return _json_compact(_str_value(value))


def local_endpoint(service_name, resource):
    """Zipkin's localEndpoint: the service name and this process's address if known."""
    endpoint = {"serviceName": service_name}
    ip = resource.get("ip") if resource else None
    if ip is None:
        ip = host_info()[1]
    if ip is not None:
        _endpoint_ip(endpoint, ip)
    return endpoint


def _remote_endpoint_json(service, hostname, ipv4, ipv6, port):
    peer = {}
    for key, value in (("peer.service", service), ("peer.hostname", hostname),
                       ("peer.ipv4", ipv4), ("peer.ipv6", ipv6), ("peer.port", port)):
        if value is not None:
            peer[key] = value
    endpoint = _remote_endpoint(peer)
    return None if endpoint is None else _json_compact(endpoint).encode("utf-8", "replace")


def encode_spans_json(batch, endpoint=None, stats=None):
    """A SpanBatch as a Zipkin v2 JSON array (UTF-8 bytes), encoded in Cython
    (`fasttrace._thrift.encode_zipkin`).

    Args:
        batch: the SpanBatch.
        endpoint: the localEndpoint dict (default: `local_endpoint(...)` of the batch).
        stats: None, or a dict whose ``"unprintable_values"`` is increased by the number
            of values sent as ``<unprintable TypeName>`` (their ``str()`` raised).
    """
    if endpoint is None:
        endpoint = local_endpoint(batch.service_name, batch.resource)
    resource_tags = {_str_value(k): _str_value(v) for k, v in batch.resource.items()}
    return _thrift.encode_zipkin(batch, _json_compact(endpoint).encode("utf-8", "replace"),
                                 resource_tags, _remote_endpoint_json, stats)


def encode_spans_json_py(batch, endpoint=None):
    """The same as `encode_spans_json`, in plain Python: the reference the compiled
    encoder is tested against (same JSON value, not necessarily the same bytes)."""
    if endpoint is None:
        endpoint = local_endpoint(batch.service_name, batch.resource)
    n = len(batch)
    # whole columns to Python lists once: far cheaper than indexing numpy per element
    hi = batch.trace_id_hi.tolist()
    lo = batch.trace_id_lo.tolist()
    sid = batch.span_id.tolist()
    pid = batch.parent_id.tolist()
    start = batch.start_ns.tolist()
    end = batch.end_ns.tolist()
    flags = batch.flags.tolist()
    name_id = batch.name_id.tolist()
    tag_off = batch.tag_offsets.tolist()
    log_off = batch.log_offsets.tolist()
    t_lo, t_hi = tag_off[0], tag_off[-1]
    tag_key = batch.tag_key[t_lo:t_hi].tolist()
    tag_type = batch.tag_type[t_lo:t_hi].tolist()
    tag_num = batch.tag_num[t_lo:t_hi].tolist()
    tag_flt = batch.tag_float[t_lo:t_hi].tolist()
    tag_obj = batch.tag_obj
    log_ts = batch.log_ts.tolist()
    log_fields = batch.log_fields
    extras = batch.extras
    names = batch.operation_names
    keys = batch.tag_keys
    resource_tags = {_str_value(k): _str_value(v) for k, v in batch.resource.items()}
    out = []
    for i in range(n):
        h = hi[i]
        span = {"traceId": f"{h:016x}{lo[i]:016x}" if h else f"{lo[i]:016x}",
                "id": f"{sid[i]:016x}"}
        if pid[i]:
            span["parentId"] = f"{pid[i]:016x}"
        nid = name_id[i]
        span["name"] = (names[nid] if nid != UNINTERNED
                        else (extras[i] or {}).get("name", ""))
        tags = dict(resource_tags)
        peer = None
        kind = None
        shadowed = shadowed_tags(batch.tag_key, tag_obj, tag_off[i], tag_off[i + 1])
        for t in range(tag_off[i], tag_off[i + 1]):
            k = t - t_lo
            key_id = tag_key[k]
            typ = tag_type[k]
            if key_id == UNINTERNED:
                if t in shadowed:
                    continue
                key, obj = tag_obj[t]
            else:
                key = keys[key_id]
                obj = tag_obj[t]
            key = _str_value(key)
            if typ == TAG_STR:
                value = _str_value(obj)
            elif typ == TAG_INT:
                value = tag_num[k]
            elif typ == TAG_BOOL:
                value = bool(tag_num[k])
            elif typ == TAG_FLOAT:
                value = tag_flt[k]
            elif typ == TAG_BIGINT:
                value = obj
            else:
                value = obj
            if key == "span.kind":
                kind = _KINDS.get(value) if isinstance(value, str) else None
                if kind is not None:
                    continue
            elif key in _PEER_KEYS:
                if peer is None:
                    peer = {}
                peer[key] = value
            tags[key] = _str_value(value)
        if kind is not None:
            span["kind"] = kind
        st = start[i]
        span["timestamp"] = st // 1000
        duration = (end[i] - st) // 1000
        span["duration"] = duration if duration > 0 else 1
        span["localEndpoint"] = endpoint
        if peer is not None:
            remote = _remote_endpoint(peer)
            if remote is not None:
                span["remoteEndpoint"] = remote
        l0, l1 = log_off[i], log_off[i + 1]
        if l1 > l0:
            span["annotations"] = [{"timestamp": log_ts[j] // 1000,
                                    "value": _annotation_value(log_fields[j])}
                                   for j in range(l0, l1)]
        if tags:
            span["tags"] = tags
        if flags[i] & _FLAG_DEBUG:
            span["debug"] = True
        out.append(span)
    # ASCII output (non-ASCII as \\u escapes): always valid, even for lone surrogates
    return json.dumps(out, separators=(",", ":"), default=_str_value).encode("ascii")


class ZipkinExporter(Exporter):
    """Sends spans to Zipkin (or anything taking Zipkin v2 JSON) over HTTP.

    Args:
        endpoint: the full URL, `/api/v2/spans` included (http or https).
        timeout: seconds one export may take, retries included.
        headers: extra HTTP headers.
    """

    def __init__(self, endpoint=DEFAULT_ENDPOINT, timeout=10.0, headers=None):
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self._http = HttpSender(endpoint, "application/json", headers, timeout)
        self._lock = threading.Lock()
        self._closed = False
        self._endpoint_key = None
        self._endpoint = None
        self._log = RateLimitedLog()
        self._stats = dict(spans_sent=0, requests_sent=0, spans_failed=0, send_errors=0,
                           encode_errors=0, unprintable_values=0)

    def export(self, batch):
        """Sends one SpanBatch; True when Zipkin accepted it.  Never raises."""
        if len(batch) == 0:
            return True
        if self._closed:
            self._stats["spans_failed"] += len(batch)
            return False
        try:
            key = (batch.service_name, tuple(batch.resource.items()))
            if key != self._endpoint_key:
                self._endpoint = local_endpoint(batch.service_name, batch.resource)
                self._endpoint_key = key
            body = encode_spans_json(batch, self._endpoint, self._stats)
        except Exception:
            self._stats["encode_errors"] += 1
            self._stats["spans_failed"] += len(batch)
            log.exception("fasttrace: Zipkin encoding failed; %d spans lost", len(batch))
            return False
        with self._lock:
            if self._http.post(body):
                self._stats["requests_sent"] += 1
                self._stats["spans_sent"] += len(batch)
                return True
            self._stats["send_errors"] += 1
            self._stats["spans_failed"] += len(batch)
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

    def _after_fork_in_child(self):
        self._lock = threading.Lock()
        self._http.after_fork_in_child()
        self._stats = dict.fromkeys(self._stats, 0)

    def __repr__(self):
        return f"<ZipkinExporter {self.endpoint}>"

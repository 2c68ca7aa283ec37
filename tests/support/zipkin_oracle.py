# SPDX-License-Identifier: Apache-2.0
"""The Zipkin encoder in plain Python: the reference `fasttrace.exporters.zipkin.
encode_spans_json` (compiled, fasttrace/_zipkin.pyx) is tested against (same JSON value,
not necessarily the same bytes)."""
import json

from fasttrace.batch import TAG_BIGINT, TAG_BOOL, TAG_FLOAT, TAG_INT, TAG_STR, UNINTERNED, \
    shadowed_tags
from fasttrace.exporters.zipkin import _endpoint_ip, _json_compact, _str_value, local_endpoint

__all__ = ["encode_spans_json_py"]

_KINDS = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER",
          "consumer": "CONSUMER"}
_PEER_KEYS = frozenset(("peer.service", "peer.hostname", "peer.ipv4", "peer.ipv6",
                        "peer.port"))
_FLAG_DEBUG = 2


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

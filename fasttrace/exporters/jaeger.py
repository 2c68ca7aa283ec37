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

Tags and log fields are typed Jaeger tags: str, bool, int (an int beyond 64 bits as its
decimal string), float; str, int and float subclasses as their built-in value.  Anything
else is its text (`fasttrace._text`: an exception as `str(exc)`, an exception class by
name, a traceback formatted), where jaeger-client sends `str(value)`; a value whose
`str()` raises is sent as `<unprintable TypeName>` and counted in
`stats()["unprintable_values"]`.  The error log is sent as the OpenTracing log it is.  A
tag whose key is not interned is read as `SpanBatch.tags()` reads it.
"""
import logging
import socket

from fasttrace import _thrift
from fasttrace._version import __version__
from fasttrace.exporters._host import host_info
from fasttrace.exporters._http import HttpSender
from fasttrace.exporters.base import BaseExporter

log = logging.getLogger("fasttrace")

__all__ = ["JaegerExporter"]

#: Value of the `jaeger.version` process tag (jaeger-client sends "Python-<version>").
CLIENT_VERSION = f"Python-fasttrace-{__version__}"
#: Tag added to a span that had tags or logs removed to fit a datagram: how many.
TRIMMED_TAG = "fasttrace.trimmed"
THRIFT_BINARY = "application/vnd.apache.thrift.binary"
# Room left for the `fasttrace.trimmed` tag when planning what to trim.
_TRIM_TAG_ROOM = 48


class JaegerExporter(BaseExporter):
    """Sends spans to a Jaeger agent (UDP, Thrift compact) or collector (HTTP, Thrift binary).

    Args:
        agent_host, agent_port: the agent's compact-Thrift UDP endpoint (used unless
            `collector_endpoint` is given).
        collector_endpoint: e.g. "http://localhost:14268/api/traces": send there instead.
        headers: extra HTTP headers for the collector (e.g. Authorization).
        timeout: seconds one collector export may take, retries included.
        max_packet_size: largest datagram sent to the agent.
    """

    STATS = ("spans_sent", "packets_sent", "requests_sent", "spans_trimmed",
             "spans_dropped_too_large", "spans_failed", "send_errors", "encode_errors",
             "unprintable_values")

    def __init__(self, agent_host="localhost", agent_port=6831, collector_endpoint=None,
                 headers=None, timeout=10.0, max_packet_size=65000):
        super().__init__()
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
        self._sock = None
        self._addr = None
        self._seqid = 0
        self._process_key = None
        self._process = None

    # -- Exporter --------------------------------------------------------------------------

    def export(self, batch):
        """Sends one SpanBatch; True when every part of it was handed over.  Never raises."""
        if len(batch) == 0:
            return True
        with self._lock:
            if self._closed:
                return self._lost(batch)
            try:
                process = self._process_bytes(batch)
                self._encoder.encode(batch)
                # counted once per batch: a trimmed span is encoded a second time
                self._stats["unprintable_values"] += self._encoder.unprintable
            except Exception:
                return self._encoding_failed(batch, "Jaeger")
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
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
            finally:
                self._lock.release()

    def _reset_after_fork(self):
        self._sock = None                 # the parent's

    def stats(self):
        """Counters: spans_sent, packets_sent (agent), requests_sent (collector),
        spans_trimmed, spans_dropped_too_large, spans_failed, send_errors, encode_errors,
        unprintable_values (values sent as ``<unprintable TypeName>``), and for the
        collector, retries."""
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

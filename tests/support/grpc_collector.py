# SPDX-License-Identifier: Apache-2.0
"""A loopback OTLP/gRPC collector for the tests: ``grpc.server`` with a thread pool on a
free 127.0.0.1 port, implementing opentelemetry-proto's ``TraceService`` (its generated
``trace_service_pb2_grpc`` stubs), recording every call and answering from a script.

``GrpcCollector(*replies, tls=None, options=())``: the i-th call gets the i-th reply,
the last one repeating (OK with an empty response when none is given).  A reply is a
``grpc.StatusCode`` (the call fails with it), a ``(code, retry_delay_seconds)`` tuple (it
fails with a ``google.rpc.Status`` carrying a ``RetryInfo`` in the
``grpc-status-details-bin`` trailer), an ``ExportTraceServiceResponse``, or a callable
``reply(request, context)`` returning one of those.  ``tls``: ``(key_pem, cert_pem)``,
or with a third item the CA that client certificates must chain to (mutual TLS).

``collector.calls``: ``Call`` tuples (the decoded request, the invocation metadata as a
dict, the code answered); ``wait_calls(n)`` waits for them on a condition.  ``close()``
(or the ``with`` block) stops the server.
"""
import collections
import threading
from concurrent import futures

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

Call = collections.namedtuple("Call", "request metadata code")

WAIT = 30.0


def status_with_retry_info(code, delay):
    """The ``grpc-status-details-bin`` trailer of `code` with a RetryInfo of `delay` s."""
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = int(delay)
    info.retry_delay.nanos = int(round((delay - int(delay)) * 1e9))
    status = status_pb2.Status(code=code.value[0], message=f"retry in {delay}s")
    status.details.add().Pack(info)
    return status.SerializeToString()


class _Service(pb_grpc.TraceServiceServicer):
    def __init__(self, collector):
        self.collector = collector

    def Export(self, request, context):
        return self.collector._answer(request, context)


class GrpcCollector:
    def __init__(self, *replies, tls=None, options=()):
        self.replies = list(replies) or [pb.ExportTraceServiceResponse()]
        self.calls = []
        self._cond = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  options=list(options))
        pb_grpc.add_TraceServiceServicer_to_server(_Service(self), self.server)
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            key, cert = tls[0], tls[1]
            ca = tls[2] if len(tls) > 2 else None
            creds = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        assert self.port, "no free port"
        self.target = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.target}"
        self.server.start()

    def _answer(self, request, context):
        with self._cond:
            index = len(self.calls)
            reply = self.replies[min(index, len(self.replies) - 1)]
        if callable(reply) and not isinstance(reply, grpc.StatusCode):
            reply = reply(request, context)
        code = grpc.StatusCode.OK
        response = None
        trailer = None
        if isinstance(reply, grpc.StatusCode):
            code = reply
        elif isinstance(reply, tuple):
            code, delay = reply
            trailer = status_with_retry_info(code, delay)
        else:
            response = reply
        with self._cond:
            self.calls.append(Call(request, dict(context.invocation_metadata()), code))
            self._cond.notify_all()
        if code != grpc.StatusCode.OK:
            if trailer is not None:
                context.set_trailing_metadata([("grpc-status-details-bin", trailer)])
            context.abort(code, f"scripted {code.name}")
        return response

    def wait_calls(self, n, timeout=WAIT):
        """True once `n` calls arrived (False at the deadline)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= n, timeout)

    def requests(self):
        return [c.request for c in self.calls]

    def spans(self):
        return [s for c in self.calls if c.code == grpc.StatusCode.OK
                for rs in c.request.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def close(self):
        self.server.stop(None).wait(WAIT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

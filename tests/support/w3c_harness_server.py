# SPDX-License-Identifier: Apache-2.0
"""A test service for the W3C Trace Context validation service, traced by fasttrace.

The validation service (w3c/trace-context, ``test/test.py``) POSTs to this service with
some ``traceparent`` / ``tracestate`` headers and a JSON body: a list of actions
``{"url": ..., "arguments": ...}``.  The service extracts the context from the incoming
headers (``Format.HTTP_HEADERS``), starts a server span as its child and, for each
action, a client span child of that one; it POSTs the action's ``arguments`` as JSON to
its ``url`` with that client span injected.  The harness reads the callbacks' headers.
One client span per call, as an instrumented HTTP client makes: each outgoing request
carries a parent id of its own.

Test-only; nothing here runs in the library.  Listens on 127.0.0.1 only, on a free port
unless one is given.  ``W3CHarnessServer`` is a context manager (stops when the block
ends); run as a script it prints its endpoint and stops by itself once no request has
come for ``--idle-timeout`` seconds (or at Ctrl-C)::

    python tests/support/w3c_harness_server.py [--port N] [--idle-timeout 60]
    # then, in another shell: python test.py http://127.0.0.1:N/test
"""
from __future__ import annotations

import argparse
import http.server
import json
import sys
import threading
import time
import urllib.request

import opentracing

import fasttrace

#: Time allowed for each callback to the harness: a deadline, never waited out when
#: the harness answers.
CALLBACK_TIMEOUT = 30.0


class W3CHarnessServer:
    """The service on 127.0.0.1:``port`` (0: a free one) until ``close()``.

    Args:
        tracer: the tracer whose extract/inject is under test; by default
            ``fasttrace.Tracer(propagators=("tracecontext",))``.
        port: 0 for a free port.
    """

    def __init__(self, tracer=None, port=0):
        self.tracer = tracer or fasttrace.Tracer(service_name="w3c-harness",
                                                 propagators=("tracecontext",))
        self._own_tracer = tracer is None
        self.last_request = time.monotonic()
        self.errors = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                service.last_request = time.monotonic()
                try:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    actions = json.loads(body or b"null") or []
                    if not isinstance(actions, list):
                        actions = [actions]
                    results = handle(service.tracer, self.headers, actions, _post)
                    status, reply = 200, json.dumps(results).encode()
                except Exception as exc:  # reported to the harness and kept for tests
                    service.errors.append(exc)
                    status, reply = 500, json.dumps({"error": repr(exc)}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/test"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(CALLBACK_TIMEOUT)
        if self._own_tracer:
            self.tracer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def handle(tracer, headers, actions, send):
    """What the service does with one request: extract from `headers`, a server span,
    and per action a client span whose context goes out with ``send(url, arguments,
    headers)``.  Returns what each send returned."""
    parent = tracer.extract(opentracing.Format.HTTP_HEADERS, headers)
    results = []
    with tracer.start_span("w3c-harness", child_of=parent) as server_span:
        for action in actions:
            with tracer.start_span("callback", child_of=server_span) as span:
                out = {"Content-Type": "application/json"}
                tracer.inject(span.context, opentracing.Format.HTTP_HEADERS, out)
                results.append(send(action.get("url"), action.get("arguments") or [], out))
    return results


# no proxy from the environment: every call goes to the loopback harness directly
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(url, arguments, headers):
    request = urllib.request.Request(url, data=json.dumps(arguments).encode(),
                                     headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=CALLBACK_TIMEOUT) as response:
            response.read()
            return {"url": url, "status": response.status}
    except Exception as exc:  # the harness reports a missing callback itself
        return {"url": url, "error": repr(exc)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--idle-timeout", type=float, default=60.0,
                        help="stop after this many seconds without a request")
    args = parser.parse_args(argv)
    stop = threading.Event()
    with W3CHarnessServer(port=args.port) as service:
        print(service.endpoint, flush=True)
        try:
            while not stop.wait(1.0):
                if time.monotonic() - service.last_request > args.idle_timeout:
                    break
        except KeyboardInterrupt:
            pass
        if service.errors:
            print(f"{len(service.errors)} request(s) failed: {service.errors[:3]!r}",
                  file=sys.stderr)
    return 1 if service.errors else 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.urllib: urllib.request and http.client to a real server on loopback."""
import http.client
import json
import urllib.error
import urllib.request

import opentracing
import pytest

import fasttrace
import fasttrace.contrib
from fasttrace.contrib import urllib as ft_urllib

from support.servers import free_port

TIMEOUT = 10


ORIGINALS = (http.client.HTTPConnection.request, http.client.HTTPConnection.getresponse)


@pytest.fixture(autouse=True)
def clean():
    yield
    ft_urllib.uninstrument()
    assert (http.client.HTTPConnection.request,
            http.client.HTTPConnection.getresponse) == ORIGINALS


def test_urlopen(echo_url, tracer, reporter):
    ft_urllib.instrument(tracer)
    with tracer.start_active_span("caller") as scope:
        with urllib.request.urlopen(f"{echo_url}/echo?q=1", timeout=TIMEOUT) as response:
            echoed = json.load(response)
    span = [s for s in reporter.spans if s.operation_name != "caller"][0]
    assert span.operation_name == "HTTP GET"
    assert span.parent_id == scope.span.span_id and span.trace_id == scope.span.trace_id
    assert span.tags["span.kind"] == "client"
    assert span.tags["component"] == "urllib"
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.url"] == f"{echo_url}/echo?q=1"
    assert span.tags["http.status_code"] == 200
    assert span.tags["peer.ipv4"] == "127.0.0.1"
    assert span.tags["peer.port"] == int(echo_url.rsplit(":", 1)[1])
    assert echoed["traceparent"] == f"00-{span.trace_id:032x}-{span.span_id:016x}-01"


def test_direct_http_client_with_own_headers(echo_url, tracer, reporter):
    ft_urllib.instrument(tracer)
    port = int(echo_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        # a stale context of another spelling is replaced, the other headers kept
        conn.request("POST", "/echo", body=b"{}", headers={"X-Mine": "1",
                                                           "TraceParent": "stale"})
        echoed = json.loads(conn.getresponse().read())
        conn.request("GET", "/status/500")               # keep-alive: a second span
        assert conn.getresponse().status == 500
    finally:
        conn.close()
    first, second = reporter.spans
    assert echoed["x-mine"] == "1"
    assert echoed["traceparent"].split("-")[2] == f"{first.span_id:016x}"
    assert first.tags["http.method"] == "POST" and first.tags["http.status_code"] == 200
    assert second.tags["http.status_code"] == 500 and second.tags["error"] is True


def test_http_error_and_connection_refused(echo_url, tracer, reporter):
    ft_urllib.instrument(tracer)
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{echo_url}/status/503", timeout=TIMEOUT)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{free_port()}/", timeout=TIMEOUT)
    bad, refused = reporter.spans
    assert bad.tags["error"] is True and bad.tags["http.status_code"] == 503
    assert refused.tags["error"] is True and "http.status_code" not in refused.tags
    assert [f["error.kind"] for _, f in refused.logs] == ["ConnectionRefusedError"]


def test_redirect_is_two_spans(echo_url, tracer, reporter):
    ft_urllib.instrument(tracer)
    with urllib.request.urlopen(f"{echo_url}/redirect", timeout=TIMEOUT) as response:
        echoed = json.load(response)
    first, second = reporter.spans
    assert first.tags["http.status_code"] == 302 and second.tags["http.status_code"] == 200
    assert echoed["traceparent"].split("-")[2] == f"{second.span_id:016x}"


def test_instrument_twice_and_uninstrument(echo_url, tracer, reporter):
    ft_urllib.instrument(tracer)
    ft_urllib.instrument(tracer)
    urllib.request.urlopen(f"{echo_url}/echo", timeout=TIMEOUT).close()
    assert len(reporter.spans) == 1
    ft_urllib.uninstrument()
    assert (http.client.HTTPConnection.request,
            http.client.HTTPConnection.getresponse) == ORIGINALS
    with urllib.request.urlopen(f"{echo_url}/echo", timeout=TIMEOUT) as response:
        assert "traceparent" not in json.load(response)
    assert len(reporter.spans) == 1


def test_global_tracer_and_broken_tracer(echo_url, reporter):
    ft_urllib.instrument()
    tracer = fasttrace.Tracer("late", reporter=reporter)
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    try:
        urllib.request.urlopen(f"{echo_url}/echo", timeout=TIMEOUT).close()

        class Broken(opentracing.Tracer):
            def start_span(self, *args, **kwargs):
                raise RuntimeError("tracer bug")
        fasttrace.contrib.reset_stats()
        opentracing.set_global_tracer(Broken())
        with urllib.request.urlopen(f"{echo_url}/echo", timeout=TIMEOUT) as response:
            assert response.status == 200
    finally:
        opentracing.set_global_tracer(previous)
    [span] = reporter.spans
    assert span.service_name == "late"
    assert fasttrace.contrib.stats()["internal_errors"]["urllib"] == 1

# SPDX-License-Identifier: Apache-2.0
"""fasttrace.contrib.requests: real requests calls to a real server on loopback."""
import opentracing
import pytest

import fasttrace
from fasttrace.contrib import requests as ft_requests
from fasttrace.contrib import urllib as ft_urllib

from support.servers import free_port

requests = pytest.importorskip("requests")

TIMEOUT = 10


@pytest.fixture(autouse=True)
def clean():
    original = requests.Session.send
    yield
    ft_requests.uninstrument()
    ft_urllib.uninstrument()
    assert requests.Session.send is original


def test_client_span_child_of_active_span_and_injected(echo_url, tracer, reporter):
    ft_requests.instrument(tracer)
    with tracer.start_active_span("caller") as scope:
        echoed = requests.get(f"{echo_url}/echo?q=1", timeout=TIMEOUT).json()
    client, caller = sorted(reporter.spans, key=lambda s: s.operation_name)
    assert caller.operation_name == "caller" and client.operation_name == "HTTP GET"
    assert client.parent_id == scope.span.span_id and client.trace_id == caller.trace_id
    assert client.tags["span.kind"] == "client"
    assert client.tags["component"] == "requests"
    assert client.tags["http.method"] == "GET"
    assert client.tags["http.url"] == f"{echo_url}/echo?q=1"
    assert client.tags["http.status_code"] == 200
    assert client.tags["peer.ipv4"] == "127.0.0.1"
    assert client.tags["peer.port"] == int(echo_url.rsplit(":", 1)[1])
    assert "error" not in client.tags
    # the server received the client span's context
    assert echoed["traceparent"] == f"00-{client.trace_id:032x}-{client.span_id:016x}-01"


def test_session_post_and_root_span_without_an_active_one(echo_url, tracer, reporter):
    ft_requests.instrument(tracer)
    with requests.Session() as session:
        assert session.post(f"{echo_url}/echo", data=b"x", timeout=TIMEOUT).status_code == 200
    [span] = reporter.spans
    assert span.parent_id is None and span.tags["http.method"] == "POST"


def test_5xx_and_connection_errors_are_marked(echo_url, tracer, reporter):
    ft_requests.instrument(tracer)
    assert requests.get(f"{echo_url}/status/502", timeout=TIMEOUT).status_code == 502
    assert requests.get(f"{echo_url}/status/404", timeout=TIMEOUT).status_code == 404
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{free_port()}/", timeout=TIMEOUT)
    bad, missing, refused = reporter.spans
    assert bad.tags["error"] is True and bad.tags["http.status_code"] == 502
    assert "error" not in missing.tags and missing.tags["http.status_code"] == 404
    assert refused.tags["error"] is True and "http.status_code" not in refused.tags
    [(_, fields)] = refused.logs
    assert fields["event"] == "error" and fields["error.kind"] == "ConnectionError"


def test_redirects_are_children_of_the_first_request(echo_url, tracer, reporter):
    ft_requests.instrument(tracer)
    echoed = requests.get(f"{echo_url}/redirect", timeout=TIMEOUT).json()
    spans = reporter.spans
    assert len(spans) == 2
    inner = [s for s in spans if s.tags["http.url"].endswith("/echo")][0]
    outer = [s for s in spans if s.tags["http.url"].endswith("/redirect")][0]
    assert inner.parent_id == outer.span_id
    assert outer.tags["http.status_code"] == 200        # what the caller got, finally
    assert echoed["traceparent"].split("-")[2] == f"{inner.span_id:016x}"


def test_credentials_are_not_in_the_url_tag(echo_url, tracer, reporter):
    ft_requests.instrument(tracer)
    url = echo_url.replace("http://", "http://user:secret@") + "/echo"
    requests.get(url, timeout=TIMEOUT)
    [span] = reporter.spans
    assert "secret" not in span.tags["http.url"] and span.tags["http.url"] == f"{echo_url}/echo"


def test_instrument_twice_and_uninstrument(echo_url, tracer, reporter):
    original = requests.Session.send
    ft_requests.instrument(tracer)
    ft_requests.instrument(tracer)
    assert ft_requests.is_instrumented()
    requests.get(f"{echo_url}/echo", timeout=TIMEOUT)
    assert len(reporter.spans) == 1
    ft_requests.uninstrument()
    assert requests.Session.send is original and not ft_requests.is_instrumented()
    echoed = requests.get(f"{echo_url}/echo", timeout=TIMEOUT).json()
    assert "traceparent" not in echoed and len(reporter.spans) == 1
    ft_requests.uninstrument()                       # harmless


def test_uninstrument_under_someone_elses_wrapper(echo_url, tracer, reporter):
    original = requests.Session.send
    ft_requests.instrument(tracer)
    ours = requests.Session.send

    def theirs(self, request, **kwargs):
        return ours(self, request, **kwargs)
    requests.Session.send = theirs
    try:
        ft_requests.uninstrument()                   # cannot unwrap: becomes a pass-through
        assert requests.Session.send is theirs
        requests.get(f"{echo_url}/echo", timeout=TIMEOUT)
        assert reporter.spans == []
        ft_requests.instrument(tracer)               # again: one span, not two
        requests.get(f"{echo_url}/echo", timeout=TIMEOUT)
        assert len(reporter.spans) == 1
        ft_requests.uninstrument()
    finally:
        requests.Session.send = original


def test_global_tracer_at_call_time(echo_url, reporter):
    ft_requests.instrument()
    tracer = fasttrace.Tracer("late", reporter=reporter)
    previous = opentracing.global_tracer()
    opentracing.set_global_tracer(tracer)
    try:
        requests.get(f"{echo_url}/echo", timeout=TIMEOUT)
    finally:
        opentracing.set_global_tracer(previous)
    [span] = reporter.spans
    assert span.service_name == "late"


def test_with_urllib_instrumented_too_there_is_one_span(echo_url, tracer, reporter):
    ft_urllib.instrument(tracer)
    ft_requests.instrument(tracer)
    requests.get(f"{echo_url}/echo", timeout=TIMEOUT)
    assert [s.tags["component"] for s in reporter.spans] == ["requests"]


def test_a_broken_tracer_never_breaks_the_request(echo_url):
    class Broken(opentracing.Tracer):
        def start_span(self, *args, **kwargs):
            raise RuntimeError("tracer bug")

    import fasttrace.contrib
    fasttrace.contrib.reset_stats()
    ft_requests.instrument(Broken())
    assert requests.get(f"{echo_url}/echo", timeout=TIMEOUT).status_code == 200
    assert fasttrace.contrib.stats()["internal_errors"]["requests"] == 1


def test_span_is_active_during_the_request_for_hooks(echo_url, tracer, reporter):
    seen = []
    ft_requests.instrument(tracer)
    requests.get(f"{echo_url}/echo", timeout=TIMEOUT,
                 hooks={"response": lambda r, **kw: seen.append(tracer.active_span)})
    [span] = reporter.spans
    assert seen[0].span_id == span.span_id
    assert tracer.active_span is None

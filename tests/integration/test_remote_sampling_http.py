# SPDX-License-Identifier: Apache-2.0
"""RemoteSampler against a loopback sampling endpoint: the request, strategies applied from
the background thread and from poll_now(), failures (down, HTTP 500, garbage) keeping the
last good strategy, close, and a forked child polling again.  Polls are waited for on the
sampler's condition (wait_for_polls) with generous deadlines; nothing depends on timing."""
import json
import logging
import os
import traceback

import pytest

import fasttrace
from fasttrace import RemoteSampler
from support.forking import fork
from support.servers import free_port
from support.waits import wait_for

DEADLINE = 30.0
PROBABILISTIC = {"strategyType": "PROBABILISTIC",
                 "probabilisticSampling": {"samplingRate": 0.5}}
PER_OPERATION = {"strategyType": "PROBABILISTIC",
                 "probabilisticSampling": {"samplingRate": 0.5},
                 "operationSampling": {
                     "defaultSamplingProbability": 0.0,
                     "defaultLowerBoundTracesPerSecond": 1.0 / 600,
                     "perOperationStrategies": [
                         {"operation": "all", "probabilisticSampling": {"samplingRate": 1}},
                         {"operation": "none", "probabilisticSampling": {"samplingRate": 0}}]}}


class Endpoint:
    """What the sink answers, switchable while the sampler polls."""

    def __init__(self, document):
        self.answer = (200, {"Content-Type": "application/json"},
                       json.dumps(document).encode())

    def set(self, status, body):
        self.answer = (status, {"Content-Type": "application/json"}, body)

    def __call__(self, handler):
        return self.answer


@pytest.fixture
def endpoint(http_sink):
    current = Endpoint(PROBABILISTIC)
    sink = http_sink(current, path="/sampling")
    current.sink = sink
    return current


def test_polls_from_the_background_and_applies_the_strategy(endpoint):
    sampler = RemoteSampler("checkout", endpoint=endpoint.sink.url, polling_interval=3600)
    try:
        assert sampler.wait_for_polls(1, DEADLINE)
        assert sampler.strategy.describe() == {"type": "probabilistic", "rate": 0.5}
        request = endpoint.sink.requests[0]
        assert request.method == "GET" and request.path == "/sampling?service=checkout"
        assert sampler.stats()["updates"] == 1 and sampler.errors == 0
    finally:
        sampler.close()


def test_polls_again_at_the_interval(endpoint):
    sampler = RemoteSampler("svc", endpoint=endpoint.sink.url, polling_interval=0.001)
    try:
        assert sampler.wait_for_polls(1, DEADLINE)
        endpoint.set(200, json.dumps(PER_OPERATION).encode())
        n = sampler.polls
        assert sampler.wait_for_polls(n + 2, DEADLINE)      # a poll began after the switch
        assert sampler.strategy.kind_name == "per_operation"
    finally:
        sampler.close()
    thread = sampler._thread
    assert wait_for(lambda: not thread.is_alive(), DEADLINE)


def test_per_operation_strategy_through_the_tracer(endpoint):
    endpoint.set(200, json.dumps(PER_OPERATION).encode())
    sampler = RemoteSampler("svc", endpoint=endpoint.sink.url, start=False)
    assert sampler.poll_now()
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(service_name="svc", sampler=sampler, reporter=reporter)
    for _ in range(50):
        tracer.start_span("all").finish()
        tracer.start_span("none").finish()
        tracer.start_span("other").finish()       # learned: default 0 + the lower bound
    tracer.flush()
    names = [s.operation_name for s in reporter.spans]
    assert (names.count("all"), names.count("none"), names.count("other")) == (50, 1, 1)
    assert tracer.stats()["sampler"]["operations"] == 3
    tracer.close()


def test_failures_keep_the_last_good_strategy_counted_and_logged_once(endpoint, caplog):
    sampler = RemoteSampler("svc", endpoint=endpoint.sink.url, start=False)
    tracer = fasttrace.Tracer(service_name="svc", sampler=sampler,
                              reporter=fasttrace.InMemoryReporter())
    assert sampler.poll_now()
    good = sampler.strategy
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        endpoint.set(500, b"oops")
        assert not sampler.poll_now()
        endpoint.set(200, b"<html>not json</html>")
        assert not sampler.poll_now()
        endpoint.set(200, b'{"strategyType": "PROBABILISTIC", '
                          b'"probabilisticSampling": {"samplingRate": 7}}')
        assert not sampler.poll_now()
        endpoint.sink.close()                     # down: connection refused
        assert not sampler.poll_now()
    assert sampler.strategy is good
    assert sampler.stats()["poll_errors"] == {"unreachable": 1, "http_status": 1,
                                              "invalid": 2}
    assert tracer.stats()["sampler_errors"] == 4
    logged = [r for r in caplog.records if "remote sampling" in r.getMessage()]
    assert len(logged) == 1 and "HTTP 500" in logged[0].getMessage()
    tracer.close()


def test_endpoint_down_from_the_start_keeps_the_initial_strategy():
    sampler = RemoteSampler("svc", endpoint=f"http://127.0.0.1:{free_port()}/sampling",
                            polling_interval=3600, initial_sampling_rate=0.125)
    try:
        assert sampler.wait_for_polls(1, DEADLINE)
        assert sampler.strategy.describe() == {"type": "probabilistic", "rate": 0.125}
        assert sampler.stats()["poll_errors"]["unreachable"] == 1
    finally:
        sampler.close()


def test_tracer_close_stops_the_poller(endpoint):
    sampler = RemoteSampler("svc", endpoint=endpoint.sink.url, polling_interval=3600)
    tracer = fasttrace.Tracer(service_name="svc", sampler=sampler,
                              reporter=fasttrace.InMemoryReporter())
    assert sampler.wait_for_polls(1, DEADLINE)
    tracer.close()
    thread = sampler._thread
    assert wait_for(lambda: not thread.is_alive(), DEADLINE)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_child_polls_again(endpoint):
    sampler = RemoteSampler("svc", endpoint=endpoint.sink.url, polling_interval=3600)
    tracer = fasttrace.Tracer(service_name="svc", sampler=sampler,
                              reporter=fasttrace.InMemoryReporter())
    try:
        assert sampler.wait_for_polls(1, DEADLINE)
        endpoint.set(200, json.dumps(PER_OPERATION).encode())
        r, w = os.pipe()
        pid = fork()
        if pid == 0:                                          # the child
            os.close(r)
            try:
                before = (sampler.polls, sampler._thread is None)
                tracer.start_span("root").finish()            # restarts the poller
                polled = sampler.wait_for_polls(1, DEADLINE)
                payload = {"ok": [before, polled, sampler.strategy.kind_name]}
            except BaseException:
                payload = {"error": traceback.format_exc()}
            try:
                os.write(w, json.dumps(payload).encode())
            finally:
                os._exit(0)
        os.close(w)
        chunks = []
        while True:
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        payload = json.loads(b"".join(chunks) or b'{"error": "the child wrote nothing"}')
        assert "error" not in payload, payload.get("error")
        assert payload["ok"] == [[0, True], True, "per_operation"]
        assert sampler.strategy.kind_name == "probabilistic"   # the parent did not poll
        assert len(endpoint.sink.requests) == 2
    finally:
        tracer.close()

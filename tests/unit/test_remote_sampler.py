# SPDX-License-Identifier: Apache-2.0
"""RemoteSampler without a network: the documents parsed (checked against jaeger-client's
own parser), the decisions under each strategy, the bounded operation table, and the
OTEL_TRACES_SAMPLER=jaeger_remote configuration.  Polling over HTTP, failures and fork
are in tests/integration/test_remote_sampling_http.py."""
import logging
import random
import types

import pytest

import fasttrace
from fasttrace._remote import Bucket, Strategy
from fasttrace.config import init_tracer
from fasttrace.remote_sampling import RemoteSampler, StrategyError, parse_strategy

jaeger_sampler = pytest.importorskip("jaeger_client.sampler")

PROBABILISTIC = {"strategyType": "PROBABILISTIC",
                 "probabilisticSampling": {"samplingRate": 0.25}}
RATE_LIMITING = {"strategyType": "RATE_LIMITING",
                 "rateLimitingSampling": {"maxTracesPerSecond": 7}}
PER_OPERATION = {
    "strategyType": "PROBABILISTIC",
    "probabilisticSampling": {"samplingRate": 0.5},
    "operationSampling": {
        "defaultSamplingProbability": 0.01,
        "defaultLowerBoundTracesPerSecond": 0.2,
        "defaultUpperBoundTracesPerSecond": 9,
        "perOperationStrategies": [
            {"operation": "GET /health", "probabilisticSampling": {"samplingRate": 0}},
            {"operation": "POST /checkout", "probabilisticSampling": {"samplingRate": 1}},
            {"operation": "GET /orders", "probabilisticSampling": {"samplingRate": 0.3}},
            {"operation": "no rate", "probabilisticSampling": {}},
        ]}}
# what jaeger-client's parser rejects (its sampler stays as it was)
BAD = [
    {"strategyType": "PROBABILISTIC", "probabilisticSampling": {"samplingRate": 1.5}},
    {"strategyType": "PROBABILISTIC", "probabilisticSampling": {"samplingRate": -0.1}},
    {"strategyType": "RATE_LIMITING", "rateLimitingSampling": {"maxTracesPerSecond": 500}},
    {"strategyType": "RATE_LIMITING", "rateLimitingSampling": {"maxTracesPerSecond": -1}},
    {"strategyType": "LOTTERY"},
    {"operationSampling": {"defaultSamplingProbability": 2.0}},
    {"operationSampling": {"perOperationStrategies": [
        {"operation": "x", "probabilisticSampling": {"samplingRate": 3}}]}},
]


def sampler(**kwargs):
    return RemoteSampler("svc", endpoint="http://127.0.0.1:9/sampling", start=False,
                         **kwargs)


def jaeger_parse(document, max_operations=2000):
    """jaeger-client's RemoteControlledSampler after it received `document` (no IOLoop:
    it never polls; _update_sampler is what its poll callback calls)."""
    logging.getLogger("jaeger_tracing").disabled = True
    try:
        remote = jaeger_sampler.RemoteControlledSampler(
            types.SimpleNamespace(io_loop=None), "svc", max_operations=max_operations)
    finally:
        logging.getLogger("jaeger_tracing").disabled = False
    before = remote.sampler
    remote._update_sampler(document)
    return before, remote.sampler


# -- parsing, against jaeger-client's parser ----------------------------------------------

def test_probabilistic_parsed_as_jaeger_client_does():
    _, theirs = jaeger_parse(PROBABILISTIC)
    ours = parse_strategy(PROBABILISTIC)
    assert isinstance(theirs, jaeger_sampler.ProbabilisticSampler)
    assert ours.kind_name == "probabilistic" and ours.rate == theirs.rate == 0.25
    s = sampler()
    s._install(ours)
    rng = random.Random(7)
    for _ in range(2000):
        trace_id = rng.getrandbits(64)
        assert s.decide(trace_id, "op") == theirs.is_sampled(trace_id, "op")[0]


def test_rate_limiting_parsed_as_jaeger_client_does():
    _, theirs = jaeger_parse(RATE_LIMITING)
    ours = parse_strategy(RATE_LIMITING)
    assert isinstance(theirs, jaeger_sampler.RateLimitingSampler)
    assert ours.kind_name == "rate_limiting"
    assert ours.max_traces_per_second == theirs.traces_per_second == 7.0


def test_per_operation_parsed_as_jaeger_client_does():
    _, theirs = jaeger_parse(PER_OPERATION)
    ours = parse_strategy(PER_OPERATION)
    assert isinstance(theirs, jaeger_sampler.AdaptiveSampler)
    assert ours.kind_name == "per_operation"
    assert ours.rate == theirs.default_sampling_probability == 0.01
    assert ours.lower_bound == theirs.lower_bound == 0.2
    assert ours.upper_bound == 9.0
    assert set(ours.operations) == set(theirs.samplers)
    for name, sub in theirs.samplers.items():
        assert ours.operations[name] == (sub.rate, sub.lower_bound), name
        assert ours.operation(name).limiter.rate == sub.lower_bound_sampler.traces_per_second


def test_operations_a_strategy_does_not_name_get_the_defaults_as_in_jaeger_client():
    _, theirs = jaeger_parse(PER_OPERATION)
    s = sampler()
    s._install(parse_strategy(PER_OPERATION))
    theirs.is_sampled(1, "GET /new")
    s.decide(1, "GET /new")
    sub = theirs.samplers["GET /new"]
    assert s.strategy.operations["GET /new"] == (sub.rate, sub.lower_bound) == (0.01, 0.2)


def test_missing_fields_take_jaeger_clients_defaults():
    docs = [{"strategyType": "PROBABILISTIC"},
            {"strategyType": "PROBABILISTIC", "probabilisticSampling": {}},
            {"strategyType": "RATE_LIMITING"},
            {"operationSampling": {"perOperationStrategies": [{"operation": "a"}]}}]
    for doc in docs:
        _, theirs = jaeger_parse(doc)
        ours = parse_strategy(doc)
        if ours.kind_name == "probabilistic":
            assert ours.rate == theirs.rate
        elif ours.kind_name == "rate_limiting":
            assert ours.max_traces_per_second == theirs.traces_per_second
        else:
            assert ours.rate == theirs.default_sampling_probability
            assert ours.lower_bound == theirs.lower_bound
            assert ours.operations["a"] == (theirs.samplers["a"].rate,
                                            theirs.samplers["a"].lower_bound)


@pytest.mark.parametrize("doc", BAD)
def test_documents_jaeger_client_rejects_are_rejected(doc):
    before, after = jaeger_parse(doc)
    assert after is before                       # jaeger-client kept its sampler
    with pytest.raises(StrategyError):
        parse_strategy(doc)


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"null", b'"x"', b"{}",
                                  b'{"strategyType": true}', b'{"strategyType": [1]}',
                                  b'{"operationSampling": {"perOperationStrategies": 3}}',
                                  b'{"operationSampling": {"perOperationStrategies": [7]}}',
                                  b'{"strategyType": "PROBABILISTIC", '
                                  b'"probabilisticSampling": {"samplingRate": "0.5"}}',
                                  b'\xff\xfe'])
def test_garbage_is_rejected(body):
    with pytest.raises(StrategyError):
        parse_strategy(body)


def test_legacy_and_proto3_forms():
    assert parse_strategy({"strategyType": 0, "probabilisticSampling":
                           {"samplingRate": 0.5}}).rate == 0.5
    assert parse_strategy({"strategyType": 1, "rateLimitingSampling":
                           {"maxTracesPerSecond": 3}}).max_traces_per_second == 3
    # proto3 JSON leaves strategyType out when it is PROBABILISTIC (0)
    assert parse_strategy(b'{"probabilisticSampling": {"samplingRate": 0.2}}').rate == 0.2
    assert parse_strategy('{"rateLimitingSampling": {"maxTracesPerSecond": 2}}').kind_name \
        == "rate_limiting"


# -- decisions ------------------------------------------------------------------------------

def test_initial_strategy_is_probabilistic_at_the_initial_rate():
    s = sampler(initial_sampling_rate=0.5)
    assert s.strategy.describe() == {"type": "probabilistic", "rate": 0.5}
    ref = fasttrace.ProbabilisticSampler(0.5)
    rng = random.Random(1)
    for _ in range(1000):
        trace_id = rng.getrandbits(128)
        assert s.decide(trace_id) == ref.is_sampled(trace_id)[0]


def test_probabilistic_decides_by_trace_id():
    s = sampler()
    s._install(Strategy.probabilistic(0.25))
    bound = round(0.25 * 2 ** 64)
    assert s.decide(bound - 1) and not s.decide(bound)
    assert s.decide((123 << 64) | 5)         # the low 64 bits decide
    s._install(Strategy.probabilistic(1.0))
    assert s.decide(2 ** 64 - 1)
    s._install(Strategy.probabilistic(0.0))
    assert not s.decide(0)


def test_rate_limiting_takes_tokens():
    s = sampler()
    s._install(parse_strategy({"strategyType": "RATE_LIMITING",
                               "rateLimitingSampling": {"maxTracesPerSecond": 0.01}}))
    # a bucket of one token, refilled at 0.01/s: one trace now, then none for 100 s
    decisions = [s.decide(0, "op") for _ in range(50)]
    assert decisions[0] and not any(decisions[1:])


def test_bucket_refills_by_the_clock_it_is_given():
    b = Bucket(2.0)
    t = b._clock_ns() + 10 ** 9
    assert b._take_at(t) and b._take_at(t) and not b._take_at(t)   # 2 tokens, full
    assert not b._take_at(t + 400_000_000)                         # 0.8 token
    assert b._take_at(t + 500_000_000)                             # 1.0 token
    assert b._take_at(t + 10 ** 10) and b._take_at(t + 10 ** 10)   # capped at 2
    assert not b._take_at(t + 10 ** 10)
    assert b.updated(2.0) is b
    half = Bucket(4.0).updated(2.0)                   # full stays full, at the new size
    assert half.rate == 2.0 and half.balance == 2.0


def test_per_operation_probability_then_lower_bound():
    s = sampler()
    s._install(Strategy.per_operation(0.0, 1.0 / 600, 0.0,
                                      {"never": 0.0, "always": 1.0, "half": 0.5}))
    # rate 0: only the lower bound's bucket (one token, refilled every 600 s)
    never = [s.decide(i, "never") for i in range(100)]
    assert never[0] and not any(never[1:])
    assert all(s.decide(i * 7919, "always") for i in range(100))
    # sampled by id or not: the bucket is asked every time (and is empty after the first)
    half = s.strategy.operation("half")
    assert half.limiter.balance == 1.0
    assert s.decide(1, "half")                            # by id, takes the token too
    assert half.limiter.balance == 0.0
    assert not s.decide(2 ** 64 - 1, "half")              # not by id, no token
    assert s.decide(2 ** 62, "half")                      # by id
    # a name equal to a known one but another object (the identity cache misses)
    assert all(s.decide(i * 7919, "".join(["al", "ways"])) for i in range(10))


def test_learned_operations_are_bounded():
    s = sampler(max_operations=3)
    s._install(parse_strategy(PER_OPERATION, max_operations=3))
    assert len(s.strategy.operations) == 3               # the document's 4th did not fit
    s._install(Strategy.per_operation(0.0, 0.0, 0.0, {"a": 1.0}))
    s.decide(1, "b")
    s.decide(1, "c")
    assert set(s.strategy.operations) == {"a", "b", "c"}
    for i in range(10):
        # past the bound: the default probability (0.0), no bucket of its own
        assert not s.decide(2 ** 63 + i, f"new-{i}")
    assert set(s.strategy.operations) == {"a", "b", "c"}
    assert s.operations_over_limit == 10
    assert s.stats()["operations_over_limit"] == 10 and s.stats()["operations"] == 3


def test_an_update_keeps_learned_operations_and_unchanged_buckets():
    old = Strategy.per_operation(0.1, 0.5, 0.0, {"a": 0.2})
    s = sampler()
    s._install(old)
    s.decide(1, "learned")
    new = Strategy.per_operation(0.3, 0.5, 0.0, {"a": 0.4, "b": 0.9}, previous=s.strategy)
    assert new.operations == {"a": (0.4, 0.5), "b": (0.9, 0.5), "learned": (0.3, 0.5)}
    assert new.operation("a").limiter is old.operation("a").limiter
    assert new.operation("learned").limiter is old.operation("learned").limiter
    changed = Strategy.per_operation(0.3, 2.0, 0.0, {}, previous=new)
    assert changed.operation("a").limiter.rate == 2.0


def test_non_str_names_use_the_default():
    s = sampler()
    s._install(Strategy.per_operation(1.0, 0.0, 0.0, {}))
    assert s.decide(5, None) and s.decide(5, 42)
    assert s.strategy.operations == {}


def test_tracer_uses_it_from_c_and_reports_its_stats():
    s = sampler()
    s._install(Strategy.per_operation(0.0, 0.0, 0.0, {"in": 1.0, "out": 0.0}))
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(service_name="svc", sampler=s, reporter=reporter)
    for _ in range(20):
        tracer.start_span("in").finish()
        tracer.start_span("out").finish()
    tracer.flush()
    names = [sp.operation_name for sp in reporter.spans]
    assert names.count("in") == 20 and names.count("out") == 1   # the bucket's one token
    stats = tracer.stats()
    assert stats["sampler_errors"] == 0 and stats["sampler"]["strategy"]["type"] == \
        "per_operation"
    tracer.close()
    assert s._closed


def test_is_sampled_interface():
    s = sampler(initial_sampling_rate=1.0)
    assert s.is_sampled(5, "op") == (True, {"sampler.type": "probabilistic",
                                            "sampler.param": 1.0})
    assert fasttrace.RemoteSampler is RemoteSampler


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        RemoteSampler("svc", endpoint="ftp://x/sampling", start=False)
    with pytest.raises(ValueError):
        RemoteSampler("svc", polling_interval=0, start=False)
    with pytest.raises(ValueError):
        RemoteSampler("svc", initial_sampling_rate=2, start=False)
    with pytest.raises(TypeError):
        Strategy()


# -- configuration --------------------------------------------------------------------------

@pytest.fixture
def make(request):
    made = []

    def build(env):
        tracer = init_tracer(environ=dict(env, OTEL_TRACES_EXPORTER="none"),
                             set_global=False, service_name="cfg")
        made.append(tracer)
        return tracer
    yield build
    for tracer in made:
        tracer.close(0.1)


@pytest.mark.parametrize("name", ["jaeger_remote", "parentbased_jaeger_remote",
                                  "Jaeger_Remote"])
def test_config_builds_a_remote_sampler(make, name):
    tracer = make({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG":
                   "endpoint=http://127.0.0.1:9/api/sampling,pollingIntervalMs=5000,"
                   "initialSamplingRate=0.25"})
    s = tracer.sampler
    assert isinstance(s, RemoteSampler)
    assert (s.service_name, s.endpoint, s.polling_interval, s.strategy.rate) == (
        "cfg", "http://127.0.0.1:9/api/sampling", 5.0, 0.25)
    assert s._target == "/api/sampling?service=cfg"


def test_config_defaults(make):
    s = make({"OTEL_TRACES_SAMPLER": "jaeger_remote"}).sampler
    assert (s.endpoint, s.polling_interval, s.strategy.rate) == (
        "http://localhost:5778/sampling", 60.0, 0.001)


@pytest.mark.parametrize("arg,word", [
    ("endpoint=ftp://x", "endpoint"),
    ("pollingIntervalMs=soon", "pollingIntervalMs"),
    ("pollingIntervalMs=0", "pollingIntervalMs"),
    ("pollingIntervalMs=-5", "pollingIntervalMs"),
    ("pollingIntervalMs=inf", "pollingIntervalMs"),
    ("initialSamplingRate=2", "initialSamplingRate"),
    ("initialSamplingRate=many", "initialSamplingRate"),
    ("colour=blue", "colour"),
    ("0.5", "0.5"),
])
def test_config_bad_values_warn_and_fall_back(make, caplog, arg, word):
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        s = make({"OTEL_TRACES_SAMPLER": "jaeger_remote",
                  "OTEL_TRACES_SAMPLER_ARG": arg}).sampler
    assert isinstance(s, RemoteSampler)
    assert (s.endpoint, s.polling_interval, s.strategy.rate) == (
        "http://localhost:5778/sampling", 60.0, 0.001)
    assert [r for r in caplog.records if r.levelno == logging.WARNING
            and "OTEL_TRACES_SAMPLER_ARG" in r.getMessage() and word in r.getMessage()]

# SPDX-License-Identifier: Apache-2.0
"""Zipkin's remoteEndpoint, built by the compiled encoder from the peer.* tags, is the
plain-Python reference's, member for member and in the same order."""
import json

import pytest

import fasttrace
from fasttrace.exporters.zipkin import encode_spans_json

from support.zipkin_oracle import encode_spans_json_py

PEERS = [
    {"peer.service": "db", "peer.ipv4": "10.0.0.7", "peer.port": 5432},
    {"peer.hostname": "broker", "peer.ipv6": "2001:db8::1"},
    {"peer.service": "", "peer.hostname": "fallback"},
    {"peer.service": 0, "peer.hostname": "zero"},
    {"peer.service": True},
    {"peer.service": 1.5, "peer.port": True},
    {"peer.service": 1 << 70},
    {"peer.ipv4": "2001:db8::2", "peer.ipv6": "10.0.0.8"},          # swapped
    {"peer.ipv4": "10.0.0.1", "peer.ipv6": "10.0.0.2"},             # one key twice
    {"peer.ipv4": " 10.0.0.3 ", "peer.port": " 80 "},
    {"peer.ipv4": 167772167, "peer.port": 8.9},
    {"peer.ipv4": 2.5},
    {"peer.ipv4": "999.1.1.1", "peer.port": 0},
    {"peer.ipv4": "010.1.1.1", "peer.port": 65536},
    {"peer.ipv6": "fe80::1%eth0", "peer.port": 65535},
    {"peer.ipv6": "::ffff:1.2.3.4"},
    {"peer.ipv4": 1 << 80},
    {"peer.port": "not-a-port"},
    {"peer.port": -1},
    {"peer.service": "b\bf\fq\"\\\n\u00e9\U0001f600"},
    {"peer.service": "lone\ud800"},                                  # LONE
    {"peer.hostname": False, "peer.port": 1 << 70},
    {},
]


LONE = "s20"


def _pairs(data):
    """The spans of a JSON array, every object as its list of (key, value) pairs."""
    return json.loads(data, object_pairs_hook=list)


@pytest.fixture(scope="module")
def batch():
    batches = []

    class Keep(fasttrace.Reporter):
        def report(self, b):
            batches.append(b)

    tracer = fasttrace.Tracer(service_name="svc", reporter=Keep())
    for i, tags in enumerate(PEERS):
        span = tracer.start_span(f"s{i}", tags=dict(tags, **{"span.kind": "client"}))
        span.finish()
    tracer.flush()
    (b,) = batches
    return b


def test_remote_endpoint_matches_the_reference(batch):
    ours = _pairs(encode_spans_json(batch, {"serviceName": "svc"}))
    theirs = _pairs(encode_spans_json_py(batch, {"serviceName": "svc"}))
    assert len(ours) == len(PEERS)
    for mine, ref in zip(ours, theirs):
        if dict(mine)["name"] == LONE:
            continue        # the reference escapes it; the encoder writes UTF-8, "replace"
        assert dict(mine).get("remoteEndpoint") == dict(ref).get("remoteEndpoint"), \
            dict(mine)["name"]
        assert sorted(map(repr, mine)) == sorted(map(repr, ref))


def test_remote_endpoint_members(batch):
    spans = {s["name"]: s for s in json.loads(encode_spans_json(batch, {}))}
    assert spans["s0"]["remoteEndpoint"] == {"serviceName": "db", "ipv4": "10.0.0.7",
                                             "port": 5432}
    assert list(spans["s7"]["remoteEndpoint"]) == ["ipv6", "ipv4"]
    assert spans["s8"]["remoteEndpoint"] == {"ipv4": "10.0.0.2"}
    assert spans[LONE]["remoteEndpoint"] == {"serviceName": "lone?"}
    assert "remoteEndpoint" not in spans[f"s{len(PEERS) - 1}"]

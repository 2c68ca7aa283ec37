# SPDX-License-Identifier: Apache-2.0
"""Fixtures the integration tests share (the suite's own are in tests/conftest.py)."""
import pytest

from fasttrace import ConstSampler, InMemoryReporter, TailSampling


@pytest.fixture
def tail_tracer(make_tracer):
    """tail_tracer(policy kwargs...) -> a tracer that keeps only what its tail policy
    keeps: head sampler off, no baseline unless asked for, an InMemoryReporter."""
    def make(**policy):
        policy.setdefault("baseline_ratio", 0)
        return make_tracer(sampler=ConstSampler(False), reporter=InMemoryReporter(),
                           tail_sampling=TailSampling(**policy))
    return make

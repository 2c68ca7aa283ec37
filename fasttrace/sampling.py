# SPDX-License-Identifier: Apache-2.0
"""Samplers decide at the root span whether a trace is recorded.

- ConstSampler(decision): all or nothing.
- ProbabilisticSampler(rate): a fraction of traces, decided from the trace id, so every
  service in a trace makes the same decision (OpenTelemetry's TraceIdRatioBased rule).
- RateLimitingSampler(max_traces_per_second): a token bucket.
- RemoteSampler(service_name, endpoint=...): strategies polled from a Jaeger agent or
  collector (fasttrace/remote_sampling.py), exported from `fasttrace`.

Children follow their parent's decision; the `sampling.priority` tag overrides it as in
jaeger-client (> 0 forces sampled + debug, 0 unsamples).  Custom samplers subclass
`Sampler` and override `is_sampled(trace_id, operation_name) -> (bool, tags)`.
"""
from fasttrace._sampling import ConstSampler, ProbabilisticSampler, RateLimitingSampler, Sampler

__all__ = ["ConstSampler", "ProbabilisticSampler", "RateLimitingSampler", "Sampler"]

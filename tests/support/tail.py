# SPDX-License-Identifier: Apache-2.0
"""What the traceresponse tests read off a tail-sampling tracer."""
from fasttrace.propagation import codec_stats

__all__ = ["decisions", "malformed"]


def decisions(tracer):
    """{(operation name, sampling.decision)} of what the tracer exported, once flushed."""
    tracer.flush()
    return {(s.operation_name, s.tags.get("sampling.decision"))
            for s in tracer.reporter.spans}


def malformed():
    """How many traceresponse values the codec has refused so far."""
    return codec_stats()["malformed_traceresponse"]

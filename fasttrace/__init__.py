# SPDX-License-Identifier: Apache-2.0
"""fasttrace: an OpenTracing tracer with a Cython core.

    import fasttrace
    tracer = fasttrace.Tracer(service_name="checkout")
    with tracer.start_active_span("handle") as scope:
        scope.span.set_tag("user", 42)
"""
from fasttrace._version import __version__

try:
    from fasttrace import _tracer as _compiled_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "fasttrace's compiled core is missing or failed to load "
        f"({exc}). Install a wheel (pip install fasttrace) or build it from a checkout "
        "with `pip install -e .` (needs a C compiler)."
    ) from exc

from fasttrace.batch import FinishedSpan, SpanBatch
from fasttrace.config import init_tracer
from fasttrace.decorators import traced
from fasttrace.reporting import BatchReporter, Exporter, InMemoryReporter, Reporter
from fasttrace.sampling import ConstSampler, ProbabilisticSampler, RateLimitingSampler, Sampler
from fasttrace.span import Span, SpanContext
from fasttrace.tail import TailSampling
from fasttrace.tracer import Tracer

# typing.TYPE_CHECKING without importing typing (type checkers take any TYPE_CHECKING)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from fasttrace.remote_sampling import RemoteSampler


def __getattr__(name):
    # RemoteSampler's poller (http.client, json, a thread) loads when someone asks for it:
    # `import fasttrace` stays as cheap as it was without it
    if name == "RemoteSampler":
        from fasttrace.remote_sampling import RemoteSampler
        return RemoteSampler
    raise AttributeError(f"module 'fasttrace' has no attribute {name!r}")


#: Which implementation of the core is in use (there is one: the compiled one).
IMPLEMENTATION = "cython"

__all__ = [
    "BatchReporter",
    "ConstSampler",
    "Exporter",
    "FinishedSpan",
    "IMPLEMENTATION",
    "InMemoryReporter",
    "ProbabilisticSampler",
    "RateLimitingSampler",
    "RemoteSampler",
    "Reporter",
    "Sampler",
    "Span",
    "SpanBatch",
    "SpanContext",
    "TailSampling",
    "Tracer",
    "__version__",
    "init_tracer",
    "traced",
]

# SPDX-License-Identifier: Apache-2.0
"""A small, fully typed program using fasttrace's public API.

tests/packaging/test_packaging.py runs ``mypy --strict`` on it, so the stubs
(fasttrace/*.pyi) and py.typed are what a user's type checker sees.  It also runs as is:

    python examples/typed_usage.py
"""
from typing import Dict, List, Optional

import opentracing
from opentracing import Format
from opentracing.scope_managers import ThreadLocalScopeManager

import fasttrace
from fasttrace import FinishedSpan, SpanBatch
from fasttrace.testing import MockTracer, SpanRecord


class ListExporter(fasttrace.Exporter):
    """An exporter that keeps what it is given (the plugin interface, typed)."""

    def __init__(self) -> None:
        self.spans: List[FinishedSpan] = []

    def export(self, batch: SpanBatch) -> bool:
        self.spans.extend(batch)
        return True

    def shutdown(self) -> None:
        pass


def handle(tracer: fasttrace.Tracer, headers: Dict[str, str]) -> Optional[int]:
    """Continues the caller's trace, if any; returns the trace id it recorded into."""
    parent: Optional[fasttrace.SpanContext] = tracer.extract(Format.HTTP_HEADERS, headers)
    with tracer.start_active_span("handle", child_of=parent,
                                  tags={"http.method": "GET"}) as scope:
        span: fasttrace.Span = scope.span
        span.set_tag("user", 42).log_kv({"event": "cache.miss"})
        with tracer.start_span("db.query", tags={"db.type": "sql"}) as child:
            child.set_baggage_item("tenant", "acme")
        return span.trace_id


def main() -> None:
    exporter = ListExporter()
    tracer = fasttrace.Tracer(
        service_name="checkout",
        sampler=fasttrace.ProbabilisticSampler(1.0),
        reporter=fasttrace.BatchReporter(exporter, flush_interval=0.5),
        propagators=("tracecontext", "baggage"),
        tags={"deployment": "example"},
    )
    # an opentracing-typed library sees fasttrace objects as what they are
    generic: opentracing.Tracer = tracer

    carrier: Dict[str, str] = {}
    with generic.start_active_span("client") as scope:
        generic.inject(scope.span.context, Format.HTTP_HEADERS, carrier)
    trace_id = handle(tracer, carrier)

    delivered: bool = tracer.flush(timeout=5.0)
    tracer.close()
    names = sorted(span.operation_name for span in exporter.spans)
    durations = [span.duration_ns for span in exporter.spans]
    print(f"fasttrace {fasttrace.__version__}: delivered={delivered} trace={trace_id} "
          f"spans={names} all_timed={all(d >= 0 for d in durations)}")

    memory = fasttrace.InMemoryReporter()
    local = fasttrace.Tracer("local", reporter=memory, sampler=fasttrace.ConstSampler(True))
    local.start_span("one").finish()
    spans: List[FinishedSpan] = memory.spans
    assert [s.operation_name for s in spans] == ["one"]

    # tests written against opentracing's MockTracer
    mock = MockTracer(ThreadLocalScopeManager())
    with mock.start_active_span("parent"):
        mock.start_span("child").finish()
    records: List[SpanRecord] = mock.finished_spans()
    child, parent = records
    parent_id: Optional[int] = child.parent_id
    assert parent_id == parent.context.span_id and child.finish_time >= child.start_time
    mock.reset()


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: Apache-2.0
"""The package imports, says which core it uses, and records a span end to end."""
import opentracing

import fasttrace


def test_import_and_implementation():
    assert fasttrace.IMPLEMENTATION == "cython"
    assert isinstance(fasttrace.__version__, str) and fasttrace.__version__
    assert issubclass(fasttrace.Tracer, opentracing.Tracer)


def test_record_and_read_back():
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(service_name="smoke", reporter=reporter)
    with tracer.start_active_span("root", tags={"k": "v"}) as scope:
        scope.span.log_kv({"event": "hello"})
        with tracer.start_active_span("child") as child:
            child.span.set_tag("n", 7)
    spans = {s.operation_name: s for s in reporter.spans}
    assert set(spans) == {"root", "child"}
    root, child = spans["root"], spans["child"]
    assert isinstance(root, fasttrace.FinishedSpan)
    assert root.service_name == "smoke"
    assert root.tags == {"k": "v"}
    assert [fields for _, fields in root.logs] == [{"event": "hello"}]
    assert root.parent_id is None
    assert child.tags == {"n": 7}
    assert child.trace_id == root.trace_id and child.parent_id == root.span_id
    assert root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns
    assert root.duration_ns == root.end_ns - root.start_ns >= 0
    tracer.close()

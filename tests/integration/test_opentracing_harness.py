# SPDX-License-Identifier: Apache-2.0
"""The OpenTracing conformance harness against fasttrace's Tracer and scope managers."""
import asyncio
import threading

import pytest
from opentracing.harness.api_check import APICompatibilityCheckMixin
from opentracing.harness.scope_check import ScopeCompatibilityCheckMixin

import fasttrace
from fasttrace.scope import ContextVarsScopeManager, ThreadLocalScopeManager

pytestmark = pytest.mark.usefixtures("fresh_asyncio_policy")


class _TracerHarness(APICompatibilityCheckMixin):
    """One tracer per test: the harness calls tracer() several times in a test and
    expects the same tracer (e.g. inject with one call, extract with the next)."""

    def scope_manager_for_tracer(self):
        return None

    def setup_method(self, method):
        self.reporter = fasttrace.InMemoryReporter()
        self._tracer = fasttrace.Tracer(service_name="harness", reporter=self.reporter,
                                        scope_manager=self.scope_manager_for_tracer())

    def teardown_method(self, method):
        self._tracer.close()

    def tracer(self):
        return self._tracer

    def is_parent(self, parent, span):
        if parent is None:
            return span.parent_id is None
        return span.trace_id == parent.trace_id and span.parent_id == parent.span_id


class TestAPICompatibility(_TracerHarness):
    """Default scope manager (contextvars)."""

    def test_default_scope_manager_is_contextvars(self):
        assert isinstance(self.tracer().scope_manager, ContextVarsScopeManager)

    def test_is_parent_is_real(self):
        # the harness' parenting checks are only meaningful if is_parent can say no
        tracer = self.tracer()
        a = tracer.start_span("a")
        b = tracer.start_span("b")
        c = tracer.start_span("c", child_of=a)
        assert self.is_parent(None, a)
        assert self.is_parent(a, c)
        assert not self.is_parent(None, c)
        assert not self.is_parent(b, c)
        assert not self.is_parent(a, b)


class TestAPICompatibilityThreadLocal(_TracerHarness):
    """fasttrace.Tracer with opentracing's thread-local scope manager."""

    def scope_manager_for_tracer(self):
        return ThreadLocalScopeManager()

    def test_scope_manager_is_the_one_given(self):
        assert isinstance(self.tracer().scope_manager, ThreadLocalScopeManager)


class TestContextVarsScopeManager(ScopeCompatibilityCheckMixin):
    def scope_manager(self):
        return ContextVarsScopeManager()


class TestContextVarsScopeManagerInAsyncioTask(ScopeCompatibilityCheckMixin):
    """Each harness test body runs inside an asyncio task."""

    def scope_manager(self):
        return ContextVarsScopeManager()

    def run_test(self, test_fn):
        ran = []

        async def body():
            assert asyncio.current_task() is not None
            test_fn()
            ran.append(True)

        async def main():
            await asyncio.get_running_loop().create_task(body())

        asyncio.run(main())
        assert ran == [True]


class TestContextVarsScopeManagerInThread(ScopeCompatibilityCheckMixin):
    """Each harness test body runs in a fresh thread."""

    def scope_manager(self):
        return ContextVarsScopeManager()

    def run_test(self, test_fn):
        errors = []

        def body():
            try:
                test_fn()
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]


class TestThreadLocalScopeManager(ScopeCompatibilityCheckMixin):
    def scope_manager(self):
        return ThreadLocalScopeManager()


@pytest.mark.parametrize("manager_cls", [ContextVarsScopeManager, ThreadLocalScopeManager])
def test_harness_tracer_with_each_scope_manager_records_parenting(manager_cls):
    # beyond the harness: the recorded spans agree with what is_parent saw
    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(reporter=reporter, scope_manager=manager_cls())
    with tracer.start_active_span("Fry") as parent:
        with tracer.start_active_span("Farnsworth") as child:
            assert tracer.active_span is child.span
        assert tracer.active_span is parent.span
    assert tracer.active_span is None
    spans = {s.operation_name: s for s in reporter.spans}
    assert spans["Fry"].parent_id is None
    assert spans["Farnsworth"].parent_id == spans["Fry"].span_id
    assert spans["Farnsworth"].trace_id == spans["Fry"].trace_id
    tracer.close()

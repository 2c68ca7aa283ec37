# SPDX-License-Identifier: Apache-2.0
"""Tail sampling across os.fork(): the child's pending table and counters start empty
(the parent's pending spans are the parent's), the parent decides its own traces."""
import os

import pytest

from fasttrace import ConstSampler, InMemoryReporter, TailSampling

from test_fork import _collect, _in_child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")


def test_fork_child_starts_with_an_empty_pending_table(make_tracer):
    reporter = InMemoryReporter()
    tracer = make_tracer(sampler=ConstSampler(False), reporter=reporter,
                         tail_sampling=TailSampling())
    root = tracer.start_span("parent-root")
    tracer.start_span("pending-at-fork", child_of=root).finish()
    tracer.flush()                      # drained: pending in the tail stage
    dropped = tracer.start_span("dropped")
    dropped.finish()
    tracer.flush()
    assert tracer.stats()["tail_sampling"]["pending_spans"] == 1

    def child():
        before = tracer.stats()["tail_sampling"]
        # the parent's open root is a stale handle here: it records nothing
        root.set_tag("error", True)
        root.finish()
        mine = tracer.start_span("child-root", tags={"error": True})
        tracer.start_span("child-child", child_of=mine).finish()
        mine.finish()
        names = sorted(s.operation_name for s in reporter.spans)   # (drains)
        return {"before": before, "after": tracer.stats()["tail_sampling"], "names": names}

    pid, r = _in_child(child)
    result = _collect(pid, r)
    assert result["before"]["pending_spans"] == result["before"]["pending_traces"] == 0
    assert result["before"]["traces_discarded"] == 0
    assert result["names"] == ["child-child", "child-root"]
    assert result["after"]["kept"]["error"] == 1
    assert result["after"]["pending_spans"] == 0

    # the parent still holds its pending span and decides its trace itself
    assert tracer.stats()["tail_sampling"]["pending_spans"] == 1
    root.set_tag("error", True)
    root.finish()
    names = sorted(s.operation_name for s in reporter.spans)
    assert names == ["parent-root", "pending-at-fork"]
    assert {s.tags["sampling.decision"] for s in reporter.spans} == {"error"}

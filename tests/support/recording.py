# SPDX-License-Identifier: Apache-2.0
"""A reporter and an exporter that keep every batch they are given, for tests to read.

Both keep the SpanBatch objects themselves (no per-span work when called: cheap on the
reporter thread under load); ``spans`` turns them into FinishedSpans when read.
"""
import threading

import fasttrace
from fasttrace.reporting import Exporter


class RecordingReporter(fasttrace.Reporter):
    """Keeps every batch the tracer reports (``batches``), and the ``flush`` timeouts and
    ``close`` calls it gets (``flushes``, ``closed``); ``flush`` returns True."""

    def __init__(self):
        self.batches = []
        self.flushes = []
        self.closed = 0

    def report(self, batch):
        self.batches.append(batch)

    def flush(self, timeout=None):
        self.flushes.append(timeout)
        return True

    def close(self, timeout=None):
        self.closed += 1

    @property
    def spans(self):
        return [s for b in self.batches for s in b]


class RecordingExporter(Exporter):
    """Keeps every exported batch (``batches``) and the threads that exported them
    (``threads``), counts ``shutdowns``; with ``fail_every=n`` every n-th call fails
    (returns False, batch not kept).  ``rows`` decodes the batches into
    (span_id, parent_id, trace_id_lo, name)."""

    def __init__(self, fail_every=0):
        self.batches = []
        self.calls = 0
        self.fail_every = fail_every
        self.shutdowns = 0
        self.threads = set()
        self.lock = threading.Lock()

    def export(self, batch):
        with self.lock:
            self.calls += 1
            self.threads.add(threading.get_ident())
            if self.fail_every and self.calls % self.fail_every == 0:
                return False
            self.batches.append(batch)
        return True

    def shutdown(self):
        self.shutdowns += 1

    @property
    def spans(self):
        with self.lock:
            return [s for b in self.batches for s in b]

    @property
    def rows(self):
        out = []
        with self.lock:
            batches = list(self.batches)
        for batch in batches:
            out.extend(zip(batch.span_id.tolist(), batch.parent_id.tolist(),
                           batch.trace_id_lo.tolist(),
                           (batch.operation_name(i) for i in range(len(batch)))))
        return out

# SPDX-License-Identifier: Apache-2.0
"""Waiting for what another thread delivers: polled with a deadline, never a bare sleep."""
import time

TIMEOUT = 10


def wait_spans(reporter, count, timeout=TIMEOUT):
    """The reporter's spans once it has at least ``count`` (or whatever it has at the
    deadline: the caller's assertion then shows what arrived)."""
    deadline = time.monotonic() + timeout
    while True:
        spans = reporter.spans
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def wait_for(predicate, timeout=5.0):
    """True as soon as ``predicate()`` is; its last value at the deadline otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()

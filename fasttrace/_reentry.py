# SPDX-License-Identifier: Apache-2.0
"""Waiting and locking for state that tracer code can reach at any moment.

A span can finish inside a finalizer that a garbage collection runs in the middle of
any allocation, or inside a signal handler that runs between any two bytecodes of the
main thread -- including while that thread holds a reporter's lock.  A plain lock then
deadlocks the process.  The reporters use only these two primitives on paths tracer
code can reach:

- ``Signal``: a wake-up whose ``set()`` is a lock release, one C call that never waits.
- ``GuardedLock``: a lock that a thread which already holds it does not wait for:
  ``enter()`` says no, and the caller leaves its work (a batch appended to a deque) to
  the code that holds the lock, which loops until that work is done.
"""
import threading

__all__ = ["GuardedLock", "Signal"]


class Signal:
    """An auto-resetting wake-up: ``wait()`` returns True once per ``set()`` (several
    ``set()`` calls before a ``wait()`` count as one)."""

    __slots__ = ("_lock",)

    def __init__(self):
        self._lock = threading.Lock()
        self._lock.acquire()        # held: nothing to wake for

    def set(self):
        # Set already (the lock is free) is the common case under load -- a tracer
        # notifies again before the woken thread got the GIL -- and costs no exception.
        if not self._lock.locked():
            return
        try:
            self._lock.release()
        except RuntimeError:
            pass                    # set by another thread in between

    def wait(self, timeout=None):
        """Waits until set (consuming it) or `timeout` seconds; True when it was set."""
        if timeout is None:
            return self._lock.acquire()
        return self._lock.acquire(timeout=max(0.0, timeout))

    def take(self):
        """Consumes a pending set() without waiting; True when there was one."""
        return self._lock.acquire(blocking=False)


class GuardedLock:
    """A lock that never makes its own holder wait (see the module docstring)."""

    __slots__ = ("_lock",)

    def __init__(self):
        self._lock = threading.RLock()

    def held_here(self):
        return self._lock._is_owned()

    def enter(self, blocking=True):
        """Takes the lock; False, without waiting, when this thread holds it already
        (or, with blocking=False, when another thread does)."""
        if self._lock._is_owned():
            return False
        return self._lock.acquire(blocking)

    def exit(self):
        self._lock.release()

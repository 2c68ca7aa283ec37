# SPDX-License-Identifier: Apache-2.0
"""The one place that learns the process forked, and resets what must not be shared.

Two ways to learn it, one registry of what to reset:

- ``os.register_at_fork``: a fork through Python (``os.fork``, multiprocessing,
  gunicorn) runs ``run()`` in the child before anything else.
- ``check()``: a fork from C that skips Python's hooks (uwsgi without
  ``py-call-osafterfork``) is noticed by the pid, where the tracer next needs its
  reporter (a batch ready, a drain, a flush).  The arena notices it on its own, in C,
  at the next span start (src/ft_rand.h's pthread_atfork generation), so no span is ever
  recorded into the parent's slots.

Tracers register here; each one resets its reporter (the reporter its exporter), so the
order is always arena, reporter, exporter.  Every reset is idempotent.
"""
import gc
import os
import weakref

from fasttrace._lazy import logging

__all__ = ["check", "register"]

log = logging.getLogger("fasttrace")

_registered = weakref.WeakSet()
_pid = os.getpid()


def register(obj):
    """Calls ``obj._after_fork_in_child()`` in every forked child while obj lives."""
    _registered.add(obj)


def check():
    """Resets everything registered if this process is a child that was not told."""
    if os.getpid() != _pid:
        run()


def run():
    global _pid
    _pid = os.getpid()
    # The resets allocate; a collection they set off would run the finalizers of the
    # parent's garbage here, in the child, where the threads those finalizers wait for
    # do not exist (grpc's channels and servers join theirs: the child hangs).  The
    # application decides when its child collects, not the tracer's fork hook.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for obj in list(_registered):
            try:
                obj._after_fork_in_child()
            except Exception:
                log.exception("fasttrace: resetting %r after fork failed", obj)
    finally:
        if collecting:
            gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=run)

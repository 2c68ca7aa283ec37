# SPDX-License-Identifier: Apache-2.0
"""fasttrace.tracer.Closed, in a module of its own: it subclasses concurrent.futures.Future,
and `import fasttrace` does not import concurrent.futures (the first close() does)."""
import concurrent.futures

__all__ = ["Closed"]


class Closed(concurrent.futures.Future):
    """What Tracer.close() returns: a completed future of "every span was delivered".

    jaeger-client's close() returns a future that tornado code yields
    (``yield tracer.close()``); this one can be yielded the same way, awaited, or read
    as a bool (``if not tracer.close(5): ...``).
    """

    __module__ = "fasttrace.tracer"

    def __init__(self, delivered):
        super().__init__()
        self.set_result(bool(delivered))

    def __bool__(self):
        return self.result()

    def __await__(self):
        return self.result()
        yield  # pragma: no cover - makes this a generator: awaiting it never suspends

    def __repr__(self):
        return f"<fasttrace.Closed delivered={self.result()}>"

# SPDX-License-Identifier: Apache-2.0
"""The patching lifecycle of the client integrations: instrument() .. uninstrument()."""
import threading

from fasttrace._failures import log

__all__ = ["Patches"]


class _Generation:
    """One instrument() .. uninstrument() period; wrappers made in it check ``on``."""

    __slots__ = ("on", "tracer")

    def __init__(self, tracer):
        self.on = True
        self.tracer = tracer


class Patches:
    """The methods an integration replaced, so uninstrument() can put them back.

    ``make_wrapper(original, generation)`` builds each wrapper; a wrapper must act only
    while ``generation.on``.  If someone else wrapped the method after us,
    uninstrument() cannot take ours out of their chain: it switches its generation off,
    which makes it a pass-through (and a later instrument() starts a new generation, so
    spans are never doubled)."""

    def __init__(self):
        self.generation = None
        self._applied = []
        self._lock = threading.Lock()

    @property
    def instrumented(self):
        return self.generation is not None

    def instrument(self, tracer, targets):
        """targets: [(owner, name, make_wrapper)].  Returns False if already done (then
        only the tracer is updated)."""
        with self._lock:
            if self.generation is not None:
                self.generation.tracer = tracer
                return False
            generation = _Generation(tracer)
            for owner, name, make_wrapper in targets:
                had_own = name in owner.__dict__
                original = getattr(owner, name)
                wrapper = make_wrapper(original, generation)
                try:
                    wrapper.__wrapped__ = original
                except AttributeError:
                    pass
                setattr(owner, name, wrapper)
                self._applied.append((owner, name, original, wrapper, had_own))
            self.generation = generation
            return True

    def uninstrument(self):
        with self._lock:
            if self.generation is None:
                return False
            self.generation.on = False
            self.generation = None
            for owner, name, original, wrapper, had_own in reversed(self._applied):
                if owner.__dict__.get(name) is wrapper:
                    if had_own:
                        setattr(owner, name, original)
                    else:
                        delattr(owner, name)
                else:
                    log.warning("fasttrace.contrib: %s.%s was wrapped again after fasttrace "
                                "instrumented it; fasttrace's wrapper stays in that chain as a "
                                "pass-through", owner.__qualname__, name)
            self._applied = []
            return True

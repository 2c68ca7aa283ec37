# SPDX-License-Identifier: Apache-2.0
"""Stand-ins for the stdlib modules the core needs only when something goes wrong.

``import fasttrace`` must stay cheap (issue 16), and ``logging`` (with ``traceback``,
``string``, ``threading``) or ``traceback`` (with ``linecache``, ``tokenize``,
``textwrap``) cost more than the rest of the import together.  The core uses them to
warn once or to format an exception, so it imports them from here instead::

    from fasttrace._lazy import logging, traceback

    log = logging.getLogger("fasttrace")    # imports nothing yet
    log.warning(...)                        # imports logging, then logs as before
    traceback.format_tb(tb)                 # imports traceback

``logging.getLogger(name)`` returns a DeferredLogger: the real logger of that name, looked
up the first time one of its attributes is used, so handlers, levels and filters an
application sets on ``logging.getLogger("fasttrace")`` apply exactly as before.  Any other
attribute (``logging.WARNING``) is the real module's.
"""
import sys

__all__ = ["DeferredLogger", "LazyModule", "logging", "traceback"]


class LazyModule:
    """A module imported when one of its attributes is first used."""

    __slots__ = ("_name", "_module")

    def __init__(self, name):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        module = self._module
        if module is None:
            __import__(self._name)
            module = self._module = sys.modules[self._name]
        return getattr(module, attr)

    def __repr__(self):
        return f"<lazy module {self._name!r}>"


class DeferredLogger:
    """``logging.getLogger(name)``, imported and looked up at its first use."""

    __slots__ = ("name", "_logger")

    def __init__(self, name):
        self.name = name
        self._logger = None

    def __getattr__(self, attr):
        logger = self._logger
        if logger is None:
            import logging as _logging
            logger = self._logger = _logging.getLogger(self.name)
        return getattr(logger, attr)

    def __repr__(self):
        return f"<DeferredLogger {self.name!r}>"


class _Logging(LazyModule):
    __slots__ = ("_loggers",)

    def __init__(self):
        super().__init__("logging")
        self._loggers = {}

    def getLogger(self, name):  # noqa: N802 - logging's name
        logger = self._loggers.get(name)
        if logger is None:
            logger = self._loggers.setdefault(name, DeferredLogger(name))
        return logger


logging = _Logging()
traceback = LazyModule("traceback")

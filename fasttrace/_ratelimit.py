# SPDX-License-Identifier: Apache-2.0
"""RateLimitedLog: failures that repeat (a backend down, a reporter that raises) are
logged at most once per interval."""
import logging
import time

__all__ = ["RateLimitedLog"]

log = logging.getLogger("fasttrace")


class RateLimitedLog:
    """log.warning / log.exception at most once per `interval` seconds."""

    def __init__(self, interval=10.0):
        self.interval = interval
        self._last = float("-inf")

    def _due(self):
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False

    def warning(self, msg, *args):
        if self._due():
            log.warning(msg, *args)

    def exception(self, msg, *args):
        """Logs with the exception being handled (call it from an except block)."""
        if self._due():
            log.exception(msg, *args)

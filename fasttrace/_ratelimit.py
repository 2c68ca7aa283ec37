# SPDX-License-Identifier: Apache-2.0
"""RateLimitedLog: failures that repeat (a backend down, a reporter or an exporter that
raises) are logged at most once per interval, and the next message says how many were
left out meanwhile."""
import time

from fasttrace._lazy import logging

__all__ = ["RateLimitedLog"]

log = logging.getLogger("fasttrace")


class RateLimitedLog:
    """log.warning / log.error at most once per `interval` seconds; never raises."""

    def __init__(self, interval=10.0):
        self.interval = interval
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, msg, *args, exc_info=False):
        self._log(logging.WARNING, msg, args, exc_info)

    def exception(self, msg, *args):
        """Logs with the exception being handled (call it from an except block)."""
        self._log(logging.ERROR, msg, args, True)

    def _log(self, level, msg, args, exc_info):
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        self._last = now
        if self._suppressed:
            msg += " (%d similar messages suppressed)"
            args += (self._suppressed,)
            self._suppressed = 0
        try:
            log.log(level, msg, *args, exc_info=exc_info)
        except Exception:
            pass        # a broken handler must not fail the reporter's thread

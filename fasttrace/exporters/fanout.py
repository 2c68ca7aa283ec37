# SPDX-License-Identifier: Apache-2.0
"""FanOutExporter: one batch to several exporters (OTEL_TRACES_EXPORTER=otlp,zipkin)."""

from fasttrace._lazy import logging
from fasttrace.reporting import Exporter

log = logging.getLogger("fasttrace")

__all__ = ["FanOutExporter"]


class FanOutExporter(Exporter):
    """Exports each batch to several exporters; succeeds when all of them do."""

    def __init__(self, exporters):
        self.exporters = list(exporters)

    def __repr__(self):
        return f"<FanOutExporter {self.exporters!r}>"

    def export(self, batch):
        ok = True
        for exporter in self.exporters:
            try:
                ok = bool(exporter.export(batch)) and ok
            except Exception:
                log.debug("fasttrace: exporter %r raised", exporter, exc_info=True)
                ok = False
        return ok

    def shutdown(self):
        for exporter in self.exporters:
            try:
                exporter.shutdown()
            except Exception:
                log.debug("fasttrace: exporter %r failed to shut down", exporter,
                          exc_info=True)

    def _after_fork_in_child(self):
        for exporter in self.exporters:
            hook = getattr(exporter, "_after_fork_in_child", None)
            if hook is not None:
                hook()

# SPDX-License-Identifier: Apache-2.0
"""Exporters: send SpanBatches to a backend, in that backend's protocol.

    OTLPExporter        OTLP/HTTP protobuf (any OpenTelemetry Collector, Tempo, Jaeger >= 1.35)
    OTLPGrpcExporter    OTLP/gRPC, the same protobuf message (needs grpcio: the otlp-grpc extra)
    JaegerExporter      Thrift over UDP to an agent, or over HTTP to a collector
    ZipkinExporter      Zipkin v2 JSON
    JsonLinesExporter   one JSON object per span per line (`python -m fasttrace view`)
    ConsoleExporter     one human-readable line per span

Each is imported on first use, so `import fasttrace.exporters` costs nothing.  The base
class is `fasttrace.reporting.Exporter`.  `load_exporter(name)` finds an exporter class
by the name `OTEL_TRACES_EXPORTER` uses: a built-in one, else one registered by another
distribution under the entry-point group ``fasttrace.exporters``::

    [project.entry-points."fasttrace.exporters"]
    kafka = "mypkg.tracing:KafkaExporter"
"""
import importlib

from fasttrace.reporting import Exporter

__all__ = [
    "ConsoleExporter",
    "Exporter",
    "JaegerExporter",
    "JsonLinesExporter",
    "OTLPExporter",
    "OTLPGrpcExporter",
    "ZipkinExporter",
    "load_exporter",
]

ENTRY_POINT_GROUP = "fasttrace.exporters"

# class name -> module, for the lazy attribute access below
_CLASSES = {
    "OTLPExporter": "fasttrace.exporters.otlp",
    "OTLPGrpcExporter": "fasttrace.exporters.otlp_grpc",
    "JaegerExporter": "fasttrace.exporters.jaeger",
    "ZipkinExporter": "fasttrace.exporters.zipkin",
    "JsonLinesExporter": "fasttrace.exporters.jsonl",
    "ConsoleExporter": "fasttrace.exporters.console",
}

# OTEL_TRACES_EXPORTER name -> class name
BUILTIN = {
    "otlp": "OTLPExporter",
    "jaeger": "JaegerExporter",
    "zipkin": "ZipkinExporter",
    "jsonl": "JsonLinesExporter",
    "console": "ConsoleExporter",
}


def __getattr__(name):
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module 'fasttrace.exporters' has no attribute {name!r}")
    cls = getattr(importlib.import_module(module), name)
    globals()[name] = cls
    return cls


def __dir__():
    return sorted(set(globals()) | set(_CLASSES))


def load_exporter(name):
    """Returns the exporter class registered under `name`.

    Args:
        name: a built-in name (otlp, jaeger, zipkin, jsonl, console) or the name of an
            entry point in the group ``fasttrace.exporters``.

    Raises:
        LookupError: no exporter has that name.
        ImportError: the exporter's module failed to import.
    """
    key = name.strip().lower()
    if key in BUILTIN:
        return __getattr__(BUILTIN[key])
    from importlib.metadata import entry_points
    try:
        candidates = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10
        candidates = entry_points().get(ENTRY_POINT_GROUP, ())
    for ep in candidates:
        if ep.name.lower() == key:
            return ep.load()
    raise LookupError(f"no exporter named {name!r} (built-in: {', '.join(sorted(BUILTIN))}; "
                      f"others register under the entry-point group {ENTRY_POINT_GROUP!r})")

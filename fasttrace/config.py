# SPDX-License-Identifier: Apache-2.0
"""init_tracer(): a Tracer configured from the OpenTelemetry SDK's environment variables.

Operators set the same variables they would for an OpenTelemetry SDK
(https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/).
A value that cannot be used is reported with a warning on the ``fasttrace`` logger and
replaced by its default: configuration never raises.

==================================  =================================================
Variable                            Meaning (default)
==================================  =================================================
OTEL_SDK_DISABLED                   ``true``: a Tracer that samples nothing and exports
                                    nothing, but still propagates incoming context
                                    (a no-op ``opentracing.Tracer`` would drop it)
OTEL_SERVICE_NAME                   service name (else ``service.name`` from
                                    OTEL_RESOURCE_ATTRIBUTES, else ``unknown_service``)
OTEL_RESOURCE_ATTRIBUTES            ``k=v,k2=v2`` (percent-decoded): the tracer's tags
OTEL_TRACES_SAMPLER                 always_on, always_off, traceidratio,
                                    parentbased_always_on (default),
                                    parentbased_always_off, parentbased_traceidratio,
                                    jaeger_remote, parentbased_jaeger_remote
                                    (fasttrace.RemoteSampler).
                                    Children always follow their parent in fasttrace,
                                    so parentbased_* is the root sampler.
OTEL_TRACES_SAMPLER_ARG             the ratio for *traceidratio, in [0, 1] (1.0);
                                    for *jaeger_remote ``endpoint=URL,``
                                    ``pollingIntervalMs=N,initialSamplingRate=R``
                                    (http://localhost:5778/sampling, 60000, 0.001)
OTEL_PROPAGATORS                    tracecontext,baggage (default), jaeger, b3,
                                    b3multi, none; unknown names are skipped
OTEL_TRACES_EXPORTER                otlp (default), jaeger, zipkin, console, jsonl,
                                    none, or an entry point of ``fasttrace.exporters``;
                                    several, comma-separated, export to each
OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL     http/protobuf (default) or grpc (needs
                                    grpcio, the ``otlp-grpc`` extra)
OTEL_EXPORTER_OTLP_ENDPOINT         base URL; ``/v1/traces`` is appended
                                    (http://localhost:4318); with grpc used as is
                                    (http://localhost:4317)
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  full URL, used as is (wins over the above)
OTEL_EXPORTER_OTLP_[TRACES_]HEADERS ``k=v,k2=v2`` (percent-decoded); gRPC metadata
OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT milliseconds (10000)
OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION  gzip or none (none)
OTEL_EXPORTER_OTLP_[TRACES_]INSECURE     grpc only: true for plaintext to an endpoint
                                    without a scheme (``http://`` is plaintext,
                                    ``https://`` TLS, ``host:port`` TLS by default)
OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE  grpc only: PEM file of the CAs that verify
                                    the collector (the system's CAs)
OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY / _CLIENT_CERTIFICATE  grpc only: PEM files
                                    for mutual TLS (both or neither)
OTEL_EXPORTER_ZIPKIN_ENDPOINT       http://localhost:9411/api/v2/spans
OTEL_EXPORTER_JAEGER_AGENT_HOST     localhost
OTEL_EXPORTER_JAEGER_AGENT_PORT     6831
OTEL_EXPORTER_JAEGER_ENDPOINT       a collector's /api/traces URL (then HTTP, not UDP)
OTEL_BSP_SCHEDULE_DELAY             milliseconds between exports (1000: fasttrace's
                                    default, not the SDK's 5000)
OTEL_BSP_MAX_QUEUE_SIZE             spans waiting for export at most (65536)
OTEL_BSP_MAX_EXPORT_BATCH_SIZE      spans per export (512; at most the queue size)
OTEL_BSP_EXPORT_TIMEOUT             milliseconds: the exporter's timeout when no
                                    exporter-specific timeout is set
FASTTRACE_JSONL_PATH                the file of the jsonl exporter (fasttrace-spans.jsonl)
FASTTRACE_TAIL_SAMPLING             ``on``: tail-based sampling (fasttrace.TailSampling)
                                    with the variables below (off)
FASTTRACE_TAIL_ERRORS               keep traces with an ``error=True`` span (true)
FASTTRACE_TAIL_LATENCY_MS           keep traces whose local root took this long (off)
FASTTRACE_TAIL_BASELINE_RATIO       keep this fraction of traces by trace id, [0, 1] (0)
FASTTRACE_TAIL_KEEP_HEAD_SAMPLED    keep traces the head sampler sampled (true)
FASTTRACE_TAIL_MAX_PENDING_SPANS    the pending budget in spans (100000)
FASTTRACE_TAIL_MAX_PENDING_TRACES   the pending budget in traces (10000)
FASTTRACE_TAIL_MAX_PENDING_BYTES    the pending budget in estimated bytes (67108864)
FASTTRACE_CLOCK                     ``system``: time spans with clock_gettime, not the
                                    TSC (read once by the core at import, src/ft_clock.h)
==================================  =================================================

The ``*_TRACES_*`` form of an OTLP variable wins over the general one.
"""
import os

import opentracing

from fasttrace._lazy import logging
from fasttrace.exporters.fanout import FanOutExporter
from fasttrace.propagation import KNOWN_PROPAGATORS, parse_propagator_names
from fasttrace.reporting import BatchReporter, InMemoryReporter
from fasttrace.sampling import ConstSampler, ProbabilisticSampler

log = logging.getLogger("fasttrace")

__all__ = ["init_tracer"]

DEFAULT_PROPAGATORS = ("tracecontext", "baggage")
DEFAULT_OTLP_BASE = "http://localhost:4318"
DEFAULT_OTLP_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_ZIPKIN_ENDPOINT = "http://localhost:9411/api/v2/spans"
DEFAULT_JSONL_PATH = "fasttrace-spans.jsonl"
DEFAULT_SAMPLER = "parentbased_always_on"
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio", "jaeger_remote",
            "parentbased_jaeger_remote")
# OTEL_TRACES_SAMPLER_ARG of jaeger_remote: the OpenTelemetry specification's keys
REMOTE_ARG_KEYS = ("endpoint", "pollingIntervalMs", "initialSamplingRate")


def _warn(name, value, problem, default):
    log.warning("fasttrace: ignoring %s=%r (%s); using %r", name, value, problem, default)


class _Env:
    """Reads variables from a mapping, warning once per bad value."""

    def __init__(self, environ):
        self.environ = os.environ if environ is None else environ

    def str(self, name, default=None):
        value = self.environ.get(name)
        if value is None or not value.strip():
            return default
        return value.strip()

    def first(self, *names):
        """The first of `names` that is set (name, value), else (names[-1], None)."""
        for name in names:
            value = self.str(name)
            if value is not None:
                return name, value
        return names[-1], None

    # the words a boolean variable takes: OpenTelemetry's own take exactly true/false
    TRUE_FALSE = (("true",), ("false",))
    ON_OFF = (("on", "true", "1", "yes"), ("off", "false", "0", "no"))

    def bool(self, name, default=False, words=TRUE_FALSE):
        value = self.str(name)
        if value is None:
            return default
        yes, no = words
        word = value.lower()
        if word in yes:
            return True
        if word in no:
            return False
        _warn(name, value, f"not {yes[0]} or {no[0]}", yes[0] if default else no[0])
        return default

    def number(self, name, default, kind=int, minimum=None, maximum=None, value=None):
        raw = self.str(name) if value is None else value
        if raw is None:
            return default
        try:
            number = kind(raw)
        except ValueError:
            _warn(name, raw, f"not a{'n integer' if kind is int else ' number'}", default)
            return default
        if number != number or (minimum is not None and number < minimum) or (
                maximum is not None and number > maximum):
            bounds = f"[{minimum if minimum is not None else '-inf'}, " \
                     f"{maximum if maximum is not None else 'inf'}]"
            _warn(name, raw, f"outside {bounds}", default)
            return default
        return number

    def pairs(self, name, value=None):
        """``k=v,k2=v2`` with percent-decoded keys and values (W3C-baggage-like)."""
        raw = self.str(name) if value is None else value
        out = {}
        if raw is None:
            return out
        import urllib.parse  # here, not at the top: most configurations set no pairs
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            key = urllib.parse.unquote(key.strip())
            if not sep or not key:
                log.warning("fasttrace: ignoring the entry %r of %s (expected key=value)",
                            item.strip(), name)
                continue
            # properties after ';' (baggage syntax) carry nothing here
            val = val.split(";")[0].strip()
            out[key] = urllib.parse.unquote(val)
        return out

    def url(self, name, default, value=None):
        raw = self.str(name) if value is None else value
        if raw is None:
            return default
        import urllib.parse
        try:
            parts = urllib.parse.urlsplit(raw)
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            _warn(name, raw, f"not a URL: {exc}", default)
            return default
        if parts.scheme not in ("http", "https") or not parts.hostname:
            _warn(name, raw, "not an http(s) URL", default)
            return default
        return raw


def _tail_sampling(env):
    """The TailSampling policy FASTTRACE_TAIL_* describe, or None when it is off."""
    from fasttrace.tail import TailSampling

    if not env.bool("FASTTRACE_TAIL_SAMPLING", False, env.ON_OFF):
        return None
    defaults = TailSampling()
    latency = env.number("FASTTRACE_TAIL_LATENCY_MS", None, kind=float, minimum=0.0)
    if latency is not None and latency == float("inf"):
        _warn("FASTTRACE_TAIL_LATENCY_MS", env.str("FASTTRACE_TAIL_LATENCY_MS"),
              "not finite", None)
        latency = None
    return TailSampling(
        errors=env.bool("FASTTRACE_TAIL_ERRORS", True, env.ON_OFF),
        latency_ms=latency,
        baseline_ratio=env.number("FASTTRACE_TAIL_BASELINE_RATIO", 0.0, kind=float,
                                  minimum=0.0, maximum=1.0),
        keep_head_sampled=env.bool("FASTTRACE_TAIL_KEEP_HEAD_SAMPLED", True,
                                   env.ON_OFF),
        max_pending_spans=env.number("FASTTRACE_TAIL_MAX_PENDING_SPANS",
                                     defaults.max_pending_spans, minimum=1),
        max_pending_traces=env.number("FASTTRACE_TAIL_MAX_PENDING_TRACES",
                                      defaults.max_pending_traces, minimum=1),
        max_pending_bytes=env.number("FASTTRACE_TAIL_MAX_PENDING_BYTES",
                                     defaults.max_pending_bytes, minimum=1))


def _remote_sampler(env, service):
    """jaeger_remote: OTEL_TRACES_SAMPLER_ARG is ``endpoint=URL,pollingIntervalMs=N,
    initialSamplingRate=R`` (each optional; a bad one warns and takes its default)."""
    from fasttrace.remote_sampling import DEFAULT_ENDPOINT, RemoteSampler

    arg = "OTEL_TRACES_SAMPLER_ARG"
    pairs = env.pairs(arg)
    for key in pairs:
        if key not in REMOTE_ARG_KEYS:
            log.warning("fasttrace: ignoring the key %r of %s (known for jaeger_remote: %s)",
                        key, arg, ", ".join(REMOTE_ARG_KEYS))
    endpoint = DEFAULT_ENDPOINT
    if pairs.get("endpoint"):
        endpoint = env.url(f"{arg} endpoint", DEFAULT_ENDPOINT, value=pairs["endpoint"])
    interval_ms = 60000.0
    if "pollingIntervalMs" in pairs:
        interval_ms = env.number(f"{arg} pollingIntervalMs", 60000.0, float, 0.0,
                                 value=pairs["pollingIntervalMs"])
        if not (0 < interval_ms < float("inf")):
            _warn(f"{arg} pollingIntervalMs", pairs["pollingIntervalMs"],
                  "must be > 0 and finite", 60000)
            interval_ms = 60000.0
    rate = 0.001
    if "initialSamplingRate" in pairs:
        rate = env.number(f"{arg} initialSamplingRate", 0.001, float, 0.0, 1.0,
                          value=pairs["initialSamplingRate"])
    return RemoteSampler(service, endpoint=endpoint, polling_interval=interval_ms / 1000.0,
                         initial_sampling_rate=rate)


def _sampler(env, service="unknown_service"):
    name = env.str("OTEL_TRACES_SAMPLER", DEFAULT_SAMPLER).lower()
    if name not in SAMPLERS:
        _warn("OTEL_TRACES_SAMPLER", name, f"unknown sampler; known: {', '.join(SAMPLERS)}",
              DEFAULT_SAMPLER)
        name = DEFAULT_SAMPLER
    if name.endswith("always_on"):
        return ConstSampler(True)
    if name.endswith("always_off"):
        return ConstSampler(False)
    if name.endswith("jaeger_remote"):
        return _remote_sampler(env, service)
    ratio = env.number("OTEL_TRACES_SAMPLER_ARG", 1.0, float, 0.0, 1.0)
    return ProbabilisticSampler(ratio)


def _propagators(env):
    raw = env.str("OTEL_PROPAGATORS")
    if raw is None:
        return DEFAULT_PROPAGATORS
    return parse_propagator_names(raw, _warn_unknown_propagator, none_clears=True)


def _warn_unknown_propagator(name, key):
    log.warning("fasttrace: OTEL_PROPAGATORS: skipping unknown propagator %r "
                "(known: %s)", key, ", ".join(KNOWN_PROPAGATORS))


def _resource(env):
    tags = env.pairs("OTEL_RESOURCE_ATTRIBUTES")
    service = env.str("OTEL_SERVICE_NAME") or tags.get("service.name") or "unknown_service"
    tags.pop("service.name", None)
    return service, tags


def _export_timeout(env, *names):
    """Seconds from the first of `names` (ms) that is set, else OTEL_BSP_EXPORT_TIMEOUT."""
    name, raw = env.first(*names)
    if raw is not None:
        ms = env.number(name, None, float, 0.0, value=raw)
        if ms:
            return ms / 1000.0
        if ms is not None:
            _warn(name, raw, "must be > 0", 10000)
    ms = env.number("OTEL_BSP_EXPORT_TIMEOUT", None, float, 0.0)
    if ms:
        return ms / 1000.0
    return 10.0


OTLP_PROTOCOLS = ("http/protobuf", "grpc")


def _otlp(env):
    name, protocol = env.first("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                               "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = "http/protobuf" if protocol is None else protocol.lower()
    if protocol not in OTLP_PROTOCOLS:
        _warn(name, protocol, f"supported: {', '.join(OTLP_PROTOCOLS)}", "http/protobuf")
        protocol = "http/protobuf"
    name, raw = env.first("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    headers = env.pairs(name, raw)
    name, compression = env.first("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                                  "OTEL_EXPORTER_OTLP_COMPRESSION")
    if compression is not None:
        compression = compression.lower()
        if compression not in ("gzip", "none"):
            _warn(name, compression, "supported: gzip, none", "none")
            compression = None
        elif compression == "none":
            compression = None
    timeout = _export_timeout(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                              "OTEL_EXPORTER_OTLP_TIMEOUT")
    if protocol == "grpc":
        return _otlp_grpc(env, headers, timeout, compression)
    from fasttrace.exporters.otlp import OTLPExporter
    default = DEFAULT_OTLP_BASE + "/v1/traces"
    endpoint = env.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    if endpoint is None:
        base = env.url("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        endpoint = default if base is None else base.rstrip("/") + "/v1/traces"
    return OTLPExporter(endpoint=endpoint, headers=headers, timeout=timeout,
                        compression=compression)


def _readable_file(env, *names):
    """The path the first set of `names` gives, if it can be read; else None (warned)."""
    name, path = env.first(*names)
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        _warn(name, path, f"cannot be read: {exc.strerror or exc}", None)
        return None
    return path


def _otlp_grpc(env, headers, timeout, compression):
    """OTLP/gRPC: the endpoint used as is (no path), TLS from its scheme, *_INSECURE,
    and the certificate files, as the OpenTelemetry SDK's gRPC exporter reads them."""
    from fasttrace.exporters.otlp_grpc import OTLPGrpcExporter, parse_endpoint
    endpoint = DEFAULT_OTLP_GRPC_ENDPOINT
    name, raw = env.first("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if raw is not None:
        try:
            parse_endpoint(raw)
            endpoint = raw
        except ValueError as exc:
            _warn(name, raw, str(exc), DEFAULT_OTLP_GRPC_ENDPOINT)
    name, raw = env.first("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")
    insecure = None
    if raw is not None:
        word = raw.lower()
        if word in ("true", "false"):
            insecure = word == "true"
        else:
            _warn(name, raw, "not true or false", "the endpoint's scheme")
    ca = _readable_file(env, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                        "OTEL_EXPORTER_OTLP_CERTIFICATE")
    key = _readable_file(env, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                         "OTEL_EXPORTER_OTLP_CLIENT_KEY")
    cert = _readable_file(env, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                          "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")
    if (key is None) != (cert is None):
        log.warning("fasttrace: ignoring the OTLP client %s without a client %s "
                    "(OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY and _CLIENT_CERTIFICATE "
                    "go together)", *(("key", "certificate") if key else
                                      ("certificate", "key")))
        key = cert = None
    return OTLPGrpcExporter(endpoint=endpoint, insecure=insecure, headers=headers,
                            timeout=timeout, compression=compression, certificate_file=ca,
                            client_key_file=key, client_certificate_file=cert)


def _jaeger(env):
    from fasttrace.exporters import load_exporter
    cls = load_exporter("jaeger")
    collector = env.url("OTEL_EXPORTER_JAEGER_ENDPOINT", None)
    if collector is not None:
        return cls(collector_endpoint=collector)
    host = env.str("OTEL_EXPORTER_JAEGER_AGENT_HOST", "localhost")
    port = env.number("OTEL_EXPORTER_JAEGER_AGENT_PORT", 6831, int, 1, 65535)
    return cls(agent_host=host, agent_port=port)


def _zipkin(env):
    from fasttrace.exporters import load_exporter
    cls = load_exporter("zipkin")
    return cls(endpoint=env.url("OTEL_EXPORTER_ZIPKIN_ENDPOINT", DEFAULT_ZIPKIN_ENDPOINT))


def _jsonl(env):
    from fasttrace.exporters.jsonl import JsonLinesExporter
    return JsonLinesExporter(env.str("FASTTRACE_JSONL_PATH", DEFAULT_JSONL_PATH))


def _console(env):
    from fasttrace.exporters.console import ConsoleExporter
    return ConsoleExporter()


_FACTORIES = {"otlp": _otlp, "jaeger": _jaeger, "zipkin": _zipkin, "jsonl": _jsonl,
              "console": _console}


def _one_exporter(env, name):
    factory = _FACTORIES.get(name)
    try:
        if factory is not None:
            return factory(env)
        from fasttrace.exporters import load_exporter
        return load_exporter(name)()
    except Exception as exc:
        log.warning("fasttrace: OTEL_TRACES_EXPORTER: cannot create the %r exporter (%s: %s)",
                    name, type(exc).__name__, exc)
        return None


def _exporter(env):
    """The configured exporter; None for 'none'."""
    raw = env.str("OTEL_TRACES_EXPORTER", "otlp")
    names = []
    for name in raw.split(","):
        key = name.strip().lower()
        if key and key not in names:
            names.append(key)
    if "none" in names:
        if len(names) > 1:
            _warn("OTEL_TRACES_EXPORTER", raw, "'none' with other exporters", "none")
        return None
    exporters = [e for e in (_one_exporter(env, n) for n in names) if e is not None]
    if not exporters:
        log.warning("fasttrace: OTEL_TRACES_EXPORTER=%r gave no usable exporter; "
                    "using 'otlp'", raw)
        exporters = [_one_exporter(env, "otlp")]
    return exporters[0] if len(exporters) == 1 else FanOutExporter(exporters)


def _reporter(env, exporter):
    delay_ms = env.number("OTEL_BSP_SCHEDULE_DELAY", 1000.0, float, 0.0)
    if delay_ms <= 0:
        _warn("OTEL_BSP_SCHEDULE_DELAY", delay_ms, "must be > 0", 1000)
        delay_ms = 1000.0
    queue = env.number("OTEL_BSP_MAX_QUEUE_SIZE", 65536, int, 1)
    batch = env.number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, int, 1)
    if batch > queue:
        _warn("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch,
              f"larger than OTEL_BSP_MAX_QUEUE_SIZE={queue}", queue)
        batch = queue
    return BatchReporter(exporter, flush_interval=delay_ms / 1000.0, max_batch_size=batch,
                         max_queue_size=queue)


def init_tracer(environ=None, set_global=True, **overrides):
    """Builds a Tracer from OTEL_* environment variables (see the module docstring).

    Args:
        environ: the variables (default: os.environ).
        set_global: also install it with ``opentracing.set_global_tracer``.
        **overrides: Tracer arguments that win over the environment (service_name,
            sampler, reporter, propagators, tags, capacity, ...), plus ``exporter``: an
            Exporter to use instead of OTEL_TRACES_EXPORTER's.

    Returns:
        The fasttrace.Tracer.
    """
    from fasttrace.tracer import Tracer

    env = _Env(environ)
    exporter = overrides.pop("exporter", None)
    service, tags = _resource(env)
    kwargs = {"service_name": service, "tags": tags}
    if env.bool("OTEL_SDK_DISABLED"):
        # record nothing, export nothing, keep passing incoming context along
        kwargs.update(sampler=ConstSampler(False), reporter=InMemoryReporter(max_spans=0),
                      propagators=_propagators(env))
        kwargs.update(overrides)
    else:
        kwargs["propagators"] = _propagators(env)
        if "sampler" not in overrides:
            kwargs["sampler"] = _sampler(env, overrides.get("service_name", service))
        if "tail_sampling" not in overrides:
            kwargs["tail_sampling"] = _tail_sampling(env)
        if "reporter" not in overrides:
            if exporter is None:
                exporter = _exporter(env)
            if exporter is None:
                kwargs["reporter"] = InMemoryReporter(max_spans=0)
            else:
                kwargs["reporter"] = _reporter(env, exporter)
        kwargs.update(overrides)
    tracer = Tracer(**kwargs)
    if set_global:
        opentracing.set_global_tracer(tracer)
    return tracer

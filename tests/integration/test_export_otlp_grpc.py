# SPDX-License-Identifier: Apache-2.0
"""OTLPGrpcExporter end to end: a real grpcio server on loopback implementing
opentelemetry-proto's TraceService (support.grpc_collector), the received requests
decoded by the generated stubs and checked field by field against the FinishedSpans;
the retry policy by status code, the RetryInfo hint, gzip, metadata, TLS (a CA and
certificates generated here), shutdown, fork, and selection by the OTEL_* variables.

Nothing here depends on timing: retries are observed through the sequence of calls the
server recorded and the backoff delays the exporter asked for (its `_wait` is replaced
by a recorder that returns at once), and threads are awaited on conditions with
generous deadlines.
"""
import datetime
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc")
pytest.importorskip("google.rpc.error_details_pb2")

import fasttrace  # noqa: E402
from fasttrace.exporters import OTLPExporter, OTLPGrpcExporter  # noqa: E402
from fasttrace.exporters._grpc import retry_delay  # noqa: E402
from fasttrace.exporters.otlp_grpc import parse_endpoint  # noqa: E402
from fasttrace.reporting import BatchReporter  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb  # noqa: E402

from support.batches import make_batch  # noqa: E402
from support.grpc_collector import GrpcCollector, status_with_retry_info  # noqa: E402
from support.otlp import RESOURCE_TAGS, Tee, attrs, check_every_field, record_workload  # noqa: E402

Code = grpc.StatusCode
OK = pb.ExportTraceServiceResponse()
WAIT = 30


@pytest.fixture
def collector():
    made = []

    def make(*replies, **kwargs):
        c = GrpcCollector(*replies, **kwargs)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def recording_waits(exporter):
    """Replaces the exporter's backoff wait by a recorder that returns at once."""
    waits = []

    def wait(delay):
        waits.append(delay)
        return False
    exporter._sender._wait = wait
    return waits


def spans(n=3):
    return make_batch(n=n)


# -- what arrives ----------------------------------------------------------------------

def test_end_to_end_every_field_and_metadata(collector):
    c = collector()
    exporter = OTLPGrpcExporter(c.url, headers={"x-api-key": "secret", "X-Tenant": "t1"})
    tee = Tee(exporter)
    tracer = fasttrace.Tracer("checkout", reporter=BatchReporter(tee, flush_interval=60),
                              tags=RESOURCE_TAGS)
    record_workload(tracer)
    assert tracer.flush(WAIT)
    tracer.close(5)
    assert c.wait_calls(1)
    md = c.calls[0].metadata
    assert md["x-api-key"] == "secret" and md["x-tenant"] == "t1"
    assert md["user-agent"].startswith(f"fasttrace/{fasttrace.__version__} (OTLP/gRPC)")
    check_every_field(c.requests(), tee.finished)
    st = exporter.stats()
    assert (st["requests"], st["retries"], st["failed_exports"]) == (1, 0, 0)
    assert st["last_status"] == "OK" and st["last_error"] is None
    assert st["bytes_sent"] == c.requests()[0].ByteSize()


def test_many_batches_one_channel(collector):
    c = collector()
    exporter = OTLPGrpcExporter(c.url)
    tracer = fasttrace.Tracer("svc", reporter=BatchReporter(exporter, flush_interval=60,
                                                            max_batch_size=50))
    for i in range(500):
        with tracer.start_active_span(f"op{i % 7}") as scope:
            scope.span.set_tag("i", i)
    assert tracer.flush(WAIT)
    channel = exporter._sender._channel
    tracer.close(5)
    assert len(c.calls) >= 10
    assert sorted(attrs(s.attributes)["i"] for s in c.spans()) == list(range(500))
    assert channel is not None and exporter.stats()["requests"] == len(c.calls)


def test_partial_success_is_counted_and_logged_not_retried(collector, caplog):
    c = collector(pb.ExportTraceServiceResponse(
        partial_success={"rejected_spans": 2, "error_message": "too old"}))
    exporter = OTLPGrpcExporter(c.url)
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        assert exporter.export(spans()) is True
    st = exporter.stats()
    assert (st["rejected_spans"], st["partial_successes"], st["retries"]) == (2, 1, 0)
    assert any("rejected 2 spans: too old" in r.getMessage() for r in caplog.records)
    exporter.shutdown()


# -- retries ---------------------------------------------------------------------------

RETRYABLE = [Code.CANCELLED, Code.DEADLINE_EXCEEDED, Code.ABORTED, Code.OUT_OF_RANGE,
             Code.UNAVAILABLE, Code.DATA_LOSS]
NOT_RETRYABLE = [Code.UNKNOWN, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.ALREADY_EXISTS,
                 Code.PERMISSION_DENIED, Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION,
                 Code.UNIMPLEMENTED, Code.INTERNAL, Code.UNAUTHENTICATED]


@pytest.mark.parametrize("code", RETRYABLE, ids=lambda c: c.name)
def test_retryable_code_then_success(collector, code):
    c = collector(code, code, OK)
    exporter = OTLPGrpcExporter(c.url, timeout=30)
    waits = recording_waits(exporter)
    assert exporter.export(spans()) is True
    assert [call.code for call in c.calls] == [code, code, Code.OK]
    # the same request each time
    assert c.calls[0].request == c.calls[2].request
    st = exporter.stats()
    assert (st["requests"], st["retries"], st["failed_exports"]) == (3, 2, 0)
    assert st["last_error"] is None and st["last_status"] == "OK"
    # exponential backoff with jitter in [0.5, 1.5): 0.25 s, then 0.5 s
    assert len(waits) == 2
    assert 0.125 <= waits[0] < 0.375 and 0.25 <= waits[1] < 0.75
    exporter.shutdown()


@pytest.mark.parametrize("code", NOT_RETRYABLE, ids=lambda c: c.name)
def test_non_retryable_code_fails_at_once(collector, code):
    c = collector(code, OK)
    exporter = OTLPGrpcExporter(c.url, timeout=30)
    waits = recording_waits(exporter)
    assert exporter.export(spans()) is False
    assert [call.code for call in c.calls] == [code]
    st = exporter.stats()
    assert (st["requests"], st["retries"], st["failed_exports"]) == (1, 0, 1)
    assert st["last_status"] == code.name and code.name in st["last_error"]
    assert waits == []
    # the next export is a new one, and succeeds
    assert exporter.export(spans()) is True
    exporter.shutdown()


def test_retry_info_delay_is_honoured(collector):
    c = collector((Code.UNAVAILABLE, 2.5), (Code.RESOURCE_EXHAUSTED, 1.25), OK)
    exporter = OTLPGrpcExporter(c.url, timeout=30)
    waits = recording_waits(exporter)
    assert exporter.export(spans()) is True
    assert [call.code for call in c.calls] == [Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED,
                                               Code.OK]
    # the hint wins over the shorter backoff (at most 0.375 s, then 0.75 s)
    assert waits == [2.5, 1.25]
    assert exporter.stats()["retries"] == 2
    exporter.shutdown()


def test_retry_info_beyond_the_timeout_fails_without_waiting(collector):
    c = collector((Code.UNAVAILABLE, 600), OK)
    exporter = OTLPGrpcExporter(c.url, timeout=5)
    waits = recording_waits(exporter)
    assert exporter.export(spans()) is False
    assert len(c.calls) == 1 and waits == []
    st = exporter.stats()
    assert "no time left to retry" in st["last_error"] and st["retries"] == 0
    exporter.shutdown()


def test_retry_delay_parsing():
    trailer = status_with_retry_info(Code.UNAVAILABLE, 3.75)
    assert retry_delay([("grpc-status-details-bin", trailer)]) == 3.75
    from google.rpc import error_details_pb2
    bare = error_details_pb2.RetryInfo()
    bare.retry_delay.seconds = 4
    assert retry_delay([("google.rpc.retryinfo-bin", bare.SerializeToString())]) == 4.0
    assert retry_delay([("grpc-status-details-bin", b"\xff\xff")]) is None
    assert retry_delay([("other", "x")]) is None and retry_delay(None) is None


def test_unreachable_collector_is_retried_then_fails(collector):
    from support.servers import free_port
    exporter = OTLPGrpcExporter(f"http://127.0.0.1:{free_port()}", timeout=30)
    waits = iter([False, False, True])       # the third wait is "shut down"
    seen = []

    def wait(delay):
        seen.append(delay)
        return next(waits)
    exporter._sender._wait = wait
    assert exporter.export(spans()) is False
    st = exporter.stats()
    assert st["requests"] == 3 and st["retries"] == 3 and len(seen) == 3
    assert st["last_error"] == "shut down"
    exporter.shutdown()


# -- gzip, TLS -------------------------------------------------------------------------

def test_gzip(collector):
    plain = collector()
    no_gzip = collector(options=[("grpc.compression_enabled_algorithms_bitset", 1)])
    gz = OTLPGrpcExporter(plain.url, compression="gzip")
    assert gz.export(spans(50)) is True
    assert len(plain.spans()) == 50
    # a server that accepts only uncompressed messages refuses ours: they are gzipped
    refused = OTLPGrpcExporter(no_gzip.url, compression="gzip")
    waits = recording_waits(refused)
    assert refused.export(spans()) is False
    assert refused.stats()["last_status"] == "UNIMPLEMENTED"
    assert "gzip" in refused.stats()["last_error"] and waits == []
    assert OTLPGrpcExporter(no_gzip.url).export(spans()) is True
    assert len(no_gzip.spans()) == 3
    for e in (gz, refused):
        e.shutdown()


def _pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    x509 = pytest.importorskip(
        "cryptography.x509", reason="TLS tests need the cryptography package (test extra)")
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(key):
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("fasttrace test CA"))
          .issuer_name(name("fasttrace test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn, san, usage):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return pem_key(key), cert.public_bytes(serialization.Encoding.PEM)

    server = leaf("127.0.0.1", [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                x509.DNSName("localhost")], ExtendedKeyUsageOID.SERVER_AUTH)
    client = leaf("fasttrace client", None, ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    files = {}
    for label, data in (("ca.pem", ca_pem), ("client.key", client[0]),
                        ("client.pem", client[1])):
        path = tmp_path / label
        path.write_bytes(data)
        files[label] = str(path)
    return {"ca": ca_pem, "server": server, "client": client, "files": files}


def test_tls_with_a_ca_file(collector, tmp_path):
    pki = _pki(tmp_path)
    c = collector(tls=pki["server"])
    exporter = OTLPGrpcExporter(f"https://{c.target}",
                                certificate_file=pki["files"]["ca.pem"])
    assert not exporter.insecure
    assert exporter.export(spans()) is True
    assert len(c.spans()) == 3
    exporter.shutdown()
    # host:port without a scheme is TLS too
    exporter = OTLPGrpcExporter(c.target, certificate_file=pki["files"]["ca.pem"])
    assert exporter.export(spans()) is True
    exporter.shutdown()


def test_tls_refuses_an_unknown_ca_and_plaintext(collector, tmp_path):
    pki = _pki(tmp_path)
    c = collector(tls=pki["server"])
    for exporter in (OTLPGrpcExporter(f"https://{c.target}"),   # the system's CAs
                     OTLPGrpcExporter(c.url)):                   # plaintext
        waits = iter([False, True])
        exporter._sender._wait = lambda delay: next(waits)
        assert exporter.export(spans()) is False
        assert exporter.stats()["last_status"] == "UNAVAILABLE"
        exporter.shutdown()
    assert c.calls == []


def test_mutual_tls(collector, tmp_path):
    pki = _pki(tmp_path)
    c = collector(tls=(*pki["server"], pki["ca"]))
    f = pki["files"]
    exporter = OTLPGrpcExporter(f"https://{c.target}", certificate_file=f["ca.pem"],
                                client_key_file=f["client.key"],
                                client_certificate_file=f["client.pem"])
    assert exporter.export(spans()) is True
    exporter.shutdown()
    without = OTLPGrpcExporter(f"https://{c.target}", certificate_file=f["ca.pem"])
    waits = iter([False, True])
    without._sender._wait = lambda delay: next(waits)
    assert without.export(spans()) is False
    without.shutdown()
    assert len(c.calls) == 1


# -- lifecycle -------------------------------------------------------------------------

def test_export_after_shutdown_is_refused(collector):
    c = collector()
    exporter = OTLPGrpcExporter(c.url)
    exporter.shutdown()
    assert exporter.export(spans()) is False
    assert c.calls == []
    exporter.shutdown()        # twice is fine


def test_shutdown_aborts_a_backoff_wait(collector):
    c = collector((Code.UNAVAILABLE, 600), OK)
    exporter = OTLPGrpcExporter(c.url, timeout=3600)
    result = []
    t = threading.Thread(target=lambda: result.append(exporter.export(spans())))
    t.start()
    assert c.wait_calls(1)
    exporter.shutdown()
    t.join(WAIT)
    assert not t.is_alive() and result == [False]
    assert exporter.stats()["last_error"] == "shut down"
    assert len(c.calls) == 1


def test_shutdown_cancels_a_call_in_flight(collector):
    release = threading.Event()
    entered = threading.Event()

    def hang(request, context):
        entered.set()
        release.wait(WAIT)
        return OK
    c = collector(hang)
    exporter = OTLPGrpcExporter(c.url, timeout=3600)
    result = []
    t = threading.Thread(target=lambda: result.append(exporter.export(spans())))
    t.start()
    assert entered.wait(WAIT)
    exporter.shutdown()
    t.join(WAIT)
    release.set()
    assert not t.is_alive() and result == [False]


def test_channel_opens_at_the_first_export_and_again_after_the_fork_hook(collector):
    c = collector()
    exporter = OTLPGrpcExporter(c.url)
    assert exporter._sender._channel is None           # nothing opened by the constructor
    assert exporter.export(spans()) is True
    parent_channel = exporter._sender._channel
    assert parent_channel is not None
    exporter._after_fork_in_child()
    assert exporter._sender._channel is None and exporter.stats()["requests"] == 0
    assert exporter.export(spans()) is True
    assert exporter._sender._channel not in (None, parent_channel)
    parent_channel.close()
    exporter.shutdown()


_FORK_SCRIPT = textwrap.dedent("""
    import os, sys
    import fasttrace
    from fasttrace.exporters import OTLPGrpcExporter
    from fasttrace.reporting import BatchReporter
    exporter = OTLPGrpcExporter(sys.argv[1])
    tracer = fasttrace.Tracer("forks", reporter=BatchReporter(exporter, flush_interval=60))
    tracer.start_span("parent-before").finish()
    assert tracer.flush(30)
    before = exporter._sender._channel
    pid = os.fork()
    if pid == 0:
        ok = exporter._sender._channel is None
        tracer.start_span("child").finish()
        ok = tracer.flush(30) and ok and exporter.stats()["requests"] == 1
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    tracer.start_span("parent-after").finish()
    assert tracer.flush(30) and exporter._sender._channel is before
    tracer.close(5)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_exports_through_its_own_channel(collector):
    c = collector()
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="true")
    proc = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, c.url], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(s.name for s in c.spans()) == ["child", "parent-after", "parent-before"]


# -- arguments and configuration -------------------------------------------------------

@pytest.mark.parametrize("endpoint,insecure,expected", [
    ("http://collector:4317", None, ("collector:4317", False)),
    ("https://collector:4317", None, ("collector:4317", True)),
    ("https://collector:4317", True, ("collector:4317", True)),     # https is always TLS
    ("http://collector:4317", False, ("collector:4317", True)),
    ("collector:4317", None, ("collector:4317", True)),
    ("collector:4317", True, ("collector:4317", False)),
    ("http://u:p@[::1]:4317/ignored/path", None, ("[::1]:4317", False)),
])
def test_parse_endpoint(endpoint, insecure, expected):
    assert parse_endpoint(endpoint, insecure) == expected


@pytest.mark.parametrize("kwargs", [
    {"endpoint": "ftp://x:4317"}, {"endpoint": ""}, {"endpoint": "http://x:99999"},
    {"endpoint": "x:4317/path"}, {"compression": "zstd"}, {"timeout": 0},
    {"certificate_file": "/nonexistent/ca.pem"}, {"client_key_file": "/nonexistent/k"},
])
def test_bad_arguments(kwargs):
    kwargs = dict({"endpoint": "http://localhost:4317"}, **kwargs)
    with pytest.raises(ValueError):
        OTLPGrpcExporter(**kwargs)


def make_from_env(env):
    return fasttrace.init_tracer(environ=env, set_global=False)


def test_config_selects_grpc(collector):
    c = collector()
    tracer = make_from_env({
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": c.url,
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,X-Tenant=t1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
    })
    e = tracer.reporter.exporter
    assert isinstance(e, OTLPGrpcExporter)
    assert (e.target, e.insecure, e.timeout, e.compression) == (c.target, True, 2.5, "gzip")
    assert e.headers == {"api-key": "s ecret", "x-tenant": "t1"}
    tracer.start_span("from-env").finish()
    assert tracer.flush(WAIT)
    tracer.close(5)
    assert [s.name for s in c.spans()] == ["from-env"]
    assert c.calls[0].metadata["api-key"] == "s ecret"


def test_config_traces_variables_win(collector):
    tracer = make_from_env({
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4317",
        "OTEL_EXPORTER_OTLP_INSECURE": "false",
        "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true",
    })
    e = tracer.reporter.exporter
    assert isinstance(e, OTLPGrpcExporter)
    assert (e.target, e.insecure) == ("collector:4317", True)
    tracer.close(1)
    tracer = make_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    e = tracer.reporter.exporter
    assert (e.target, e.insecure, e.timeout) == ("localhost:4317", True, 10.0)
    tracer.close(1)
    # the HTTP exporter stays the default
    tracer = make_from_env({})
    assert isinstance(tracer.reporter.exporter, OTLPExporter)
    tracer.close(1)


def test_config_tls_files(collector, tmp_path):
    pki = _pki(tmp_path)
    c = collector(tls=(*pki["server"], pki["ca"]))
    f = pki["files"]
    tracer = make_from_env({
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"https://{c.target}",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": f["ca.pem"],
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": f["client.key"],
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": f["client.pem"],
    })
    assert not tracer.reporter.exporter.insecure
    tracer.start_span("over-mtls").finish()
    assert tracer.flush(WAIT)
    tracer.close(5)
    assert [s.name for s in c.spans()] == ["over-mtls"]


def warned(caplog, text):
    return any(text in r.getMessage() for r in caplog.records
               if r.levelno >= logging.WARNING)


@pytest.mark.parametrize("env,warning,check", [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL",
     lambda e: isinstance(e, OTLPExporter)),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "carrier-pigeon"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", lambda e: isinstance(e, OTLPExporter)),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x:1"},
     "OTEL_EXPORTER_OTLP_ENDPOINT", lambda e: e.target == "localhost:4317"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:notaport"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", lambda e: e.target == "localhost:4317"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "maybe",
      "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
     "OTEL_EXPORTER_OTLP_INSECURE", lambda e: not e.insecure),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"},
     "OTEL_EXPORTER_OTLP_CERTIFICATE", lambda e: isinstance(e, OTLPGrpcExporter)),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
      "OTEL_EXPORTER_OTLP_CLIENT_KEY": __file__},
     "without a client certificate", lambda e: isinstance(e, OTLPGrpcExporter)),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
     "OTEL_EXPORTER_OTLP_TIMEOUT", lambda e: e.timeout == 10.0),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
     "OTEL_EXPORTER_OTLP_COMPRESSION", lambda e: e.compression is None),
])
def test_config_bad_values_warn_and_fall_back(caplog, env, warning, check):
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        tracer = make_from_env(env)
    assert warned(caplog, warning), [r.getMessage() for r in caplog.records]
    assert check(tracer.reporter.exporter)
    tracer.close(1)


def test_config_without_grpcio_warns_and_exports_nothing(caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)       # import grpc -> ImportError
    with caplog.at_level(logging.WARNING, logger="fasttrace"):
        tracer = make_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert warned(caplog, "fasttrace[otlp-grpc]")
    assert isinstance(tracer.reporter, fasttrace.InMemoryReporter)
    tracer.close(1)


def test_import_fasttrace_does_not_import_grpc():
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys, fasttrace, fasttrace.exporters, fasttrace.config;"
         "from fasttrace.exporters import OTLPGrpcExporter;"
         "print('grpc' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"

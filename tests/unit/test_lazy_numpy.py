# SPDX-License-Identifier: Apache-2.0
"""numpy is imported only by code that asks for numpy arrays.

Drained batches keep their columns in C memory (fasttrace._columns); recording spans,
reading them back and encoding them never import numpy.  A batch's column attributes are
numpy arrays over that same memory: what is written through them is what the encoders
read."""
import json
import subprocess
import sys
import textwrap

import pytest

import fasttrace
from fasttrace import _columns
from fasttrace._otlp import encode_export_request
from fasttrace.exporters.zipkin import encode_spans_json

from support.recording import RecordingReporter

np = pytest.importorskip("numpy")

_RECORD = """
import sys
import opentracing
import fasttrace
from fasttrace import _thrift
from fasttrace._otlp import encode_export_request
from fasttrace.exporters.zipkin import encode_spans_json

class Capture(fasttrace.Reporter):
    def __init__(self):
        self.batches = []
    def report(self, batch):
        self.batches.append(batch)
    def flush(self, timeout=None):
        return True

def record(tracer):
    root = tracer.start_span("root", tags={"s": "v", "i": 3, "f": 1.5, "b": True,
                                            "big": 1 << 70})
    root.log_kv({"event": "e", "n": 1})
    child = tracer.start_span("child", child_of=root)
    child.set_tag("error", True)
    child.log_kv({"message": "m"})
    child.finish()
    follower = tracer.start_span("follower", references=[opentracing.follows_from(root.context)])
    follower.finish()
    root.finish()
"""


def _run(code):
    proc = subprocess.run([sys.executable, "-c", _RECORD + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_does_not_import_numpy():
    assert _run("print('numpy' in sys.modules)").split() == ["False"]


def test_recording_reading_and_encoding_do_not_import_numpy():
    out = _run("""
        reporter = fasttrace.InMemoryReporter()
        tracer = fasttrace.Tracer(service_name="x", reporter=reporter)
        record(tracer)
        spans = reporter.spans
        assert [s.operation_name for s in spans] == ["child", "follower", "root"], spans
        root = spans[2]
        assert root.tags == {"s": "v", "i": 3, "f": 1.5, "b": True, "big": 1 << 70}, root.tags
        assert [f for _, f in root.logs] == [{"event": "e", "n": 1}]
        assert spans[0].tags == {"error": True} and spans[0].parent_id == root.span_id

        capture = Capture()
        tracer = fasttrace.Tracer(service_name="x", reporter=capture)
        record(tracer)
        tracer.flush()
        (batch,) = capture.batches
        assert len(batch) == 3
        assert [s.operation_name for s in batch] == ["child", "follower", "root"]
        assert batch[-1].tags["f"] == 1.5 and batch.tags(2)["big"] == 1 << 70
        part = batch.slice(1, 3)
        assert len(part) == 2 and part[0].operation_name == "follower"
        assert part.logs(1) == batch.logs(2)
        encode_export_request([batch, part])
        encode_spans_json(batch, {})
        data, offsets = _thrift.encode_spans(batch, _thrift.PROTOCOL_COMPACT)
        assert len(offsets) == 4 and offsets[3] == len(data)
        _thrift.encode_spans(part, _thrift.PROTOCOL_BINARY)
        print("numpy" in sys.modules)
    """)
    assert out.split() == ["False"]


def test_the_tail_stage_keeping_whole_batches_does_not_import_numpy():
    out = _run("""
        from fasttrace.sampling import ConstSampler
        from fasttrace.tail import TailSampling
        capture = Capture()
        tracer = fasttrace.Tracer(service_name="x", reporter=capture,
                                  sampler=ConstSampler(True),
                                  tail_sampling=TailSampling())
        record(tracer)
        tracer.flush()
        spans = [s for b in capture.batches for s in b]
        assert sorted(s.operation_name for s in spans) == ["child", "follower", "root"]
        assert {s.tags["sampling.decision"] for s in spans} == {"error"}, spans
        encode_export_request(capture.batches)
        print("numpy" in sys.modules)
    """)
    assert out.split() == ["False"]


def test_reading_a_column_imports_numpy_and_returns_arrays():
    out = _run("""
        capture = Capture()
        tracer = fasttrace.Tracer(service_name="x", reporter=capture)
        record(tracer)
        tracer.flush()
        (batch,) = capture.batches
        before = "numpy" in sys.modules
        ids = batch.span_id
        print(before, "numpy" in sys.modules, type(ids).__name__, ids.dtype,
              batch.span_id is ids)
    """)
    assert out.split() == ["False", "True", "ndarray", "uint64", "True"]


def _batch():
    capture = RecordingReporter()
    tracer = fasttrace.Tracer(service_name="svc", reporter=capture)
    span = tracer.start_span("op", tags={"n": 5, "f": 2.5})
    span.log_kv({"event": "e"})
    span.finish()
    tracer.flush()
    (batch,) = capture.batches
    return batch


def _zipkin(batch):
    (span,) = json.loads(encode_spans_json(batch, {}))
    return span


def test_drained_columns_are_c_memory_that_numpy_wraps_without_a_copy():
    batch = _batch()
    raw = batch.__dict__["span_id"]
    assert type(raw) is _columns.Column and raw.format == "Q" and len(raw) == 1
    ids = batch.span_id
    assert isinstance(ids, np.ndarray) and ids.base.obj is raw     # a memoryview of it
    assert np.shares_memory(ids, np.asarray(raw))
    assert batch.__dict__["span_id"] is ids      # cached: later readers see the array
    for name, dtype in (("trace_id_hi", np.uint64), ("start_ns", np.int64),
                        ("flags", np.uint8), ("name_id", np.uint32),
                        ("tag_offsets", np.int32), ("tag_key", np.uint32),
                        ("tag_type", np.uint8), ("tag_num", np.int64),
                        ("log_offsets", np.int32), ("log_ts", np.int64)):
        assert getattr(batch, name).dtype == dtype, name


def test_writes_through_the_numpy_columns_reach_the_encoders():
    batch = _batch()
    span_id = int(batch.span_id[0])
    batch.span_id[0] = 0x1234
    batch.start_ns[0] += 7_000
    batch.end_ns[0] += 7_000
    batch.tag_num[batch.tag_type == fasttrace.batch.TAG_INT] = 6
    batch.tag_float[batch.tag_type == fasttrace.batch.TAG_FLOAT] = 3.5
    assert span_id != 0x1234
    zipkin = _zipkin(batch)
    assert zipkin["id"] == "0000000000001234"
    assert zipkin["tags"]["n"] == "6" and zipkin["tags"]["f"] == "3.5"
    assert batch[0].span_id == 0x1234 and batch[0].tags == {"n": 6, "f": 3.5}
    pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    request = pb.ExportTraceServiceRequest.FromString(encode_export_request(batch))
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert span.span_id == (0x1234).to_bytes(8, "big")
    assert span.start_time_unix_nano == int(batch.start_ns[0])
    attrs = {kv.key: kv.value for kv in span.attributes}
    assert attrs["n"].int_value == 6 and attrs["f"].double_value == 3.5


def test_in_place_flag_writes_reach_the_encoders():
    batch = _batch()
    flags = batch.flags
    flags &= np.uint8(0)         # in place: the same memory
    assert batch.flags is flags and int(batch.__dict__["flags"][0]) == 0
    assert batch[0].sampled is False
    pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    request = pb.ExportTraceServiceRequest.FromString(encode_export_request(batch))
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert span.flags & 0xFF == 0


def test_a_replaced_column_is_what_the_encoders_read():
    batch = _batch()
    batch.span_id = np.array([0xABCDEF], dtype=np.uint64)
    assert _zipkin(batch)["id"] == "0000000000abcdef"
    assert batch.slice(0, 1)[0].span_id == 0xABCDEF


def test_columns_slice_index_and_list_without_numpy_semantics_changing():
    col = _columns.empty("q", 4)
    view = np.asarray(col)
    view[:] = [-1, 2, 3, 1 << 62]
    assert col.tolist() == [-1, 2, 3, 1 << 62] and list(col) == col.tolist()
    assert col[-1] == 1 << 62 and len(col) == 4
    part = col[1:3]
    assert part.tolist() == [2, 3] and part.owner is col.owner
    np.asarray(part)[0] = 20
    assert view[1] == 20
    with pytest.raises(IndexError):
        col[4]
    assert col[5:2].tolist() == [] and np.asarray(col[5:2]).shape == (0,)
    assert _columns.as_float(int(np.float64(0.25).view(np.int64))) == 0.25
    with pytest.raises(ValueError):
        _columns.empty("d", 1)

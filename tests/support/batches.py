# SPDX-License-Identifier: Apache-2.0
"""SpanBatches built by hand from columns (no tracer involved), for exporter tests."""
import numpy as np

from fasttrace.batch import SpanBatch


def make_batch(n=3, names=("a", "b"), keys=("k",), tags=None, logs=None, extras=None,
               service="svc", resource=None):
    """A SpanBatch built by hand from columns (no tracer involved)."""
    tags = tags or [[] for _ in range(n)]
    logs = logs or [[] for _ in range(n)]
    tag_rows = [t for row in tags for t in row]
    log_rows = [entry for row in logs for entry in row]
    cols = {
        "trace_id_hi": np.arange(1, n + 1, dtype=np.uint64),
        "trace_id_lo": np.arange(100, 100 + n, dtype=np.uint64),
        "span_id": np.arange(1000, 1000 + n, dtype=np.uint64),
        "parent_id": np.zeros(n, dtype=np.uint64),
        "start_ns": np.arange(n, dtype=np.int64) * 10,
        "end_ns": np.arange(n, dtype=np.int64) * 10 + 5,
        "flags": np.ones(n, dtype=np.uint8),
        "name_id": np.array([i % len(names) for i in range(n)], dtype=np.uint32),
        "operation_names": list(names),
        "tag_offsets": np.cumsum([0] + [len(r) for r in tags]).astype(np.int32),
        "tag_key": np.array([r[0] for r in tag_rows], dtype=np.uint32),
        "tag_type": np.array([r[1] for r in tag_rows], dtype=np.uint8),
        "tag_num": np.array([r[2] for r in tag_rows], dtype=np.int64),
        "tag_obj": [r[3] for r in tag_rows],
        "tag_keys": list(keys),
        "log_offsets": np.cumsum([0] + [len(r) for r in logs]).astype(np.int32),
        "log_ts": np.array([e[0] for e in log_rows], dtype=np.int64),
        "log_fields": [e[1] for e in log_rows],
        "extras": extras or [None] * n,
    }
    return SpanBatch(cols, service, resource)

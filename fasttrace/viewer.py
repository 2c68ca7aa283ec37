# SPDX-License-Identifier: Apache-2.0
"""Traces as a waterfall in the terminal: one row per span, bars on a shared time axis.

The picture of the OpenTracing specification's timeline, drawn from real spans::

    trace 1ef982148de5000622632c203edb7ef2 · 7 spans · 100.00 ms · gateway, inventory · 2 errors
    service    operation             0                  50 ms               100 ms
                                     ┬──────────────────┬───────────────────┬> time
    gateway    GET /checkout         ███████████████████████████████████████  100.00 ms
    gateway      HTTP GET               █████████████                          30.00 ms
    inventory      GET /stock/{sku}      ███████████                           26.00 ms
    inventory        db.query               █████                              10.00 ms
    gateway      Reserve                                █████████████████      40.00 ms  ✗ error
                   ✗ NOT_FOUND: 'durian'
    inventory      Reserve                                █████████████        30.00 ms  ✗ error
                     ✗ KeyError: 'durian' is not in stock · rpc.grpc.status_code=5
    gateway      ⇢ publish                                                ░░    5.00 ms

Rows are in tree order (children under their parent, by start time, indented two
columns per level); bars are scaled to the trace; a span whose parent is a
``follows_from`` reference is marked ``⇢`` and drawn ``░``; a span tagged ``error=true``
ends with ``✗ error`` and is followed by a line with the error message from its logs
and its tags.  A trace kept by tail sampling (its spans tagged ``sampling.decision``)
says why on its header line (``kept: error``; each decision with its services when
they differ) and each span carrying the tag shows it after its duration (``[error]``);
a trace without the tag shows as before.  Without a UTF-8 stdout the same picture is drawn in ASCII (``#``, ``=``,
``>>``, ``!``).  Names come from requests: control characters are shown escaped, never
sent to the terminal.

`load_jsonl` reads the files ``JsonLinesExporter`` writes (skipping, and counting,
lines that are not spans); `render_traces` draws them.

This module gathers the viewer's public names; the code is in
`fasttrace.exporters._jsonl_read` (the reader), `fasttrace.view.model` (traces, tree
order, errors), `fasttrace.view.terminal` (this waterfall) and `fasttrace.view.html`.
"""
from fasttrace.exporters._jsonl_read import LoadResult, load_jsonl, span_from_json
from fasttrace.view.model import (decision, error_message, filter_traces, format_duration,
                                  group_traces, has_error, is_follows_from, kept_summary,
                                  tree_order)
from fasttrace.view.terminal import (Style, render_traces, render_waterfall,
                                     stream_supports_unicode)

__all__ = ["render_waterfall", "render_traces", "group_traces", "tree_order", "load_jsonl",
           "span_from_json", "filter_traces", "error_message", "has_error", "is_follows_from",
           "format_duration", "Style", "stream_supports_unicode", "LoadResult", "decision",
           "kept_summary"]

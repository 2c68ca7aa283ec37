# SPDX-License-Identifier: Apache-2.0
"""What the tests share besides fixtures (those are in tests/conftest.py).

``tests/`` is on sys.path (``pythonpath`` in pyproject.toml), so any test imports these
as ``from support.servers import free_port``:

- ``servers``: loopback HTTP/UDP sinks (``HttpSink``, ``OTLPSink``, ``UDPSink``, ``echo``,
  ``Serving``), ``free_port``, ``blackhole``, and the reliability suite's ``report``,
  ``scale`` and ``read_rss_bytes``;
- ``recording``: ``RecordingReporter`` and ``RecordingExporter``, which keep every batch
  they are given;
- ``waits``: ``wait_spans`` (an InMemoryReporter's spans, once there are enough) and
  ``wait_for`` (a predicate, polled until a deadline);
- ``batches``: ``make_batch``, a SpanBatch built by hand from columns;
- ``waterfall``: ``parse_waterfall``, the printed waterfall of ``python -m fasttrace view``
  read back;
- scripts the tests run in a subprocess: ``gevent_patterns.py`` (the testbed patterns
  under gevent.monkey.patch_all()) and ``w3c_harness_server.py`` (the test service for
  the W3C Trace Context validation service; also imported by its test).
"""

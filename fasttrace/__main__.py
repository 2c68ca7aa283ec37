# SPDX-License-Identifier: Apache-2.0
"""Command line: `python -m fasttrace demo`."""
import argparse
import sys


def _demo(args):
    """Records a small trace in this process and prints it as a waterfall."""
    import threading
    import time

    import fasttrace
    from fasttrace.viewer import render_waterfall

    reporter = fasttrace.InMemoryReporter()
    tracer = fasttrace.Tracer(service_name="demo", reporter=reporter)
    with tracer.start_active_span("GET /checkout", tags={"span.kind": "server"}) as scope:
        scope.span.set_tag("http.method", "GET")
        with tracer.start_active_span("load-cart"):
            time.sleep(0.002)
        parent = tracer.active_span

        def charge():
            with tracer.start_active_span("charge-card", child_of=parent) as s:
                s.span.log_kv({"event": "authorised", "amount": 42})
                time.sleep(0.003)

        worker = threading.Thread(target=charge)
        worker.start()
        worker.join()
        try:
            with tracer.start_active_span("send-receipt"):
                time.sleep(0.001)
                raise TimeoutError("mail server did not answer")
        except TimeoutError:
            pass
    tracer.flush()
    spans = reporter.spans
    print(render_waterfall(spans), end="")
    stats = tracer.stats()
    print(f"\n{stats['started']} spans started, {stats['reported']} reported, "
          f"{sum(stats['dropped'].values())} dropped")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fasttrace")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="record a small trace and show it as a waterfall")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())

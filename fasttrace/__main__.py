# SPDX-License-Identifier: Apache-2.0
"""Command line.

    python -m fasttrace demo [--out FILE] [--html OUT] [--no-color]
    python -m fasttrace view FILE [--trace ID]... [--html OUT] [--width N] [--no-color]
"""
import argparse
import os
import sys


def _add_display_options(parser):
    parser.add_argument("--html", metavar="OUT",
                        help="also write a self-contained HTML waterfall to OUT")
    parser.add_argument("--width", type=int, metavar="N",
                        help="line width (default: the terminal's)")
    parser.add_argument("--no-color", action="store_true",
                        help="no ANSI colors (they are only used on a terminal anyway)")
    parser.add_argument("--ascii", action="store_true",
                        help="ASCII bars even when the output is UTF-8")


def _style(args):
    from fasttrace.viewer import Style
    return Style.for_stream(sys.stdout, color=False if args.no_color else None,
                            unicode=False if args.ascii else None)


def _write_html(spans, out, source):
    from fasttrace.view.html import render_html
    text = render_html(spans, title="fasttrace traces", source=source)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


def _view(args):
    from fasttrace.viewer import filter_traces, group_traces, load_jsonl, render_waterfall

    try:
        result = load_jsonl(sys.stdin if args.file == "-" else args.file)
    except OSError as exc:
        print(f"fasttrace view: cannot read {args.file}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    if result.skipped:
        first = ", ".join(f"line {n}: {why}" for n, why in result.skipped[:3])
        more = f" (and {len(result.skipped) - 3} more)" if len(result.skipped) > 3 else ""
        print(f"fasttrace view: skipped {len(result.skipped)} malformed line"
              f"{'s' if len(result.skipped) != 1 else ''} in {args.file}: {first}{more}",
              file=sys.stderr)
    traces = group_traces(result.spans)
    shown = filter_traces(traces, args.trace)
    if not traces:
        print(f"fasttrace view: no spans in {args.file}", file=sys.stderr)
    elif not shown:
        print(f"fasttrace view: no trace id in {args.file} starts with "
              f"{' or '.join(args.trace)} ({len(traces)} trace"
              f"{'s' if len(traces) != 1 else ''} in the file)",
              file=sys.stderr)
        return 1
    style = _style(args)
    out = [render_waterfall(spans, width=args.width, style=style) for spans in shown.values()]
    sys.stdout.write("\n".join(out))
    if args.html:
        spans = [s for t in shown.values() for s in t]
        try:
            _write_html(spans, args.html, args.file)
        except OSError as exc:
            print(f"fasttrace view: cannot write {args.html}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        print(f"fasttrace view: wrote {len(shown)} trace{'s' if len(shown) != 1 else ''} "
              f"to {args.html}", file=sys.stderr)
    return 0


def _demo(args):
    from fasttrace.demo import run_demo
    for path in (args.out, args.html):
        if path is not None:
            try:
                open(path, "a").close()
            except OSError as exc:
                print(f"fasttrace demo: cannot write {path}: {exc.strerror or exc}",
                      file=sys.stderr)
                return 1
    return run_demo(out=args.out, html=args.html, style=_style(args), width=args.width)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fasttrace",
        description="fasttrace command line: a demo, and a viewer for JSON-lines traces.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="run a gateway -> inventory example on loopback and show its traces",
        description="Starts a gateway (WSGI) and an inventory service (HTTP, and gRPC when "
                    "grpcio is installed) on 127.0.0.1, each with its own tracer, sends a "
                    "few requests through them, records the spans to a JSON-lines file and "
                    "prints the traces as a waterfall.  Then a tail-sampling run: 200 "
                    "requests through tracers that keep 1% of traces by trace id and every "
                    "error, one failing deep in the inventory; it prints what each service "
                    "kept and the failing request's trace.")
    demo.add_argument("--out", metavar="FILE",
                      help="JSON-lines file for the spans (overwritten; default: a new "
                           "temporary file, kept)")
    _add_display_options(demo)
    view = sub.add_parser(
        "view", help="show the traces of a JSON-lines file as waterfalls",
        description="Shows the traces of a file written by JsonLinesExporter (or "
                    "OTEL_TRACES_EXPORTER=jsonl) as waterfalls; malformed lines are "
                    "skipped and counted on stderr.")
    view.add_argument("file", metavar="FILE", help="a JSON-lines file; - reads stdin")
    view.add_argument("--trace", action="append", metavar="ID",
                      help="only the trace(s) whose id starts with ID (repeatable)")
    _add_display_options(view)
    args = parser.parse_args(argv)
    if getattr(args, "width", None) is not None and args.width < 40:
        parser.error("--width must be at least 40")
    try:
        if args.command == "demo":
            return _demo(args)
        return _view(args)
    except BrokenPipeError:
        # `python -m fasttrace view FILE | head`: stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: Apache-2.0
"""The command line: `python -m fasttrace {demo,view}` arguments, exit codes, pipes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fasttrace
from fasttrace.__main__ import main
from fasttrace.exporters.jsonl import JsonLinesExporter

ROOT = Path(fasttrace.__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8")


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "fasttrace", *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8", env=ENV,
                          timeout=60, **kwargs)


def test_no_command_is_a_usage_error():
    proc = cli()
    assert proc.returncode == 2
    assert "usage: python -m fasttrace" in proc.stderr and "COMMAND" in proc.stderr


def test_help_lists_the_commands_and_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "view" in out
    with pytest.raises(SystemExit):
        main(["view", "--help"])
    out = capsys.readouterr().out
    for option in ("--trace", "--html", "--width", "--no-color", "FILE"):
        assert option in out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--out", "--html", "--no-color"):
        assert option in out


@pytest.mark.parametrize("args", [["view"], ["view", "f", "--width", "10"],
                                  ["view", "f", "--width", "x"], ["demo", "--bogus"],
                                  ["frobnicate"]])
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def _many_traces(path, n):
    tracer = fasttrace.Tracer("svc", reporter=fasttrace.BatchReporter(
        JsonLinesExporter(path), flush_interval=60))
    for i in range(n):
        with tracer.start_active_span(f"request {i}"):
            with tracer.start_active_span("work"):
                pass
    tracer.close(5)


def test_output_into_a_closed_pipe_is_quiet(tmp_path):
    """`python -m fasttrace view FILE | head -3` stops without a traceback."""
    path = tmp_path / "many.jsonl"
    _many_traces(path, 2000)
    proc = subprocess.Popen([sys.executable, "-m", "fasttrace", "view", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    head = proc.stdout.readline()
    proc.stdout.close()                       # the reader goes away
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0
    assert head.startswith(b"trace ")
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_view_reads_a_file_by_relative_path(tmp_path):
    path = tmp_path / "one.jsonl"
    _many_traces(path, 1)
    proc = cli("view", "one.jsonl", "--no-color", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("trace ") and "request 0" in proc.stdout
    assert proc.stderr == ""


def test_html_to_an_unwritable_place(tmp_path, capsys):
    path = tmp_path / "one.jsonl"
    _many_traces(path, 1)
    code = main(["view", str(path), "--html", str(tmp_path / "no" / "such" / "dir.html")])
    assert code == 1
    assert "cannot write" in capsys.readouterr().err


def test_console_script_entry_point_is_main():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["fasttrace"] == "fasttrace.__main__:main"

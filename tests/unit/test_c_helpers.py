# SPDX-License-Identifier: Apache-2.0
"""The byte-level helpers of src/ft_codec.h, both builds: with SSE2 (x86-64) and the
portable word-at-a-time fallback (what aarch64, 32-bit x86 and others compile), each
checked against the scalar reference over two million random inputs."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "unit" / "c" / "codec_helpers_check.c"
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")

pytestmark = [
    pytest.mark.skipif(CC is None or sys.platform == "win32", reason="needs a C compiler"),
    # the sdist ships no .c file (MANIFEST.in): this runs from a checkout
    pytest.mark.skipif(not SOURCE.exists(), reason="needs the source tree"),
]

BUILDS = {"default": []}
if platform.machine().lower() in ("x86_64", "amd64"):
    # hide SSE2 from the preprocessor: the fallback paths are compiled instead
    BUILDS["no-sse2"] = ["-U__SSE2__"]


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_codec_helpers_match_the_scalar_reference(tmp_path, build):
    exe = tmp_path / "check"
    subprocess.run([CC, "-O2", "-std=c99", "-Wall", "-Werror", *BUILDS[build],
                    "-I", str(ROOT / "src"), str(SOURCE), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("OK"), run.stdout + run.stderr

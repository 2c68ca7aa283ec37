# SPDX-License-Identifier: Apache-2.0
"""Packaging (issue 6): wheels and sdist, portable C headers, type stubs, one version.

- the cibuildwheel plan, read from pyproject.toml, for linux, macos and windows;
- each src/*.h compiles on its own (gcc, clang, and MinGW for the Windows branches,
  whichever are installed) with -std=c99 -Wall -Wextra -pedantic -Werror;
- the modules keep the GIL on free-threaded CPython (Py_mod_gil);
- mypy --strict on examples/typed_usage.py, and stubtest of the .pyi files;
- (slow) `python -m build` from a copy of the tree: sdist contents, wheel contents, and
  the wheel installed into a fresh venv with no compiler and no Cython, where
  tests/packaging/smoke_wheel.py records a trace into a JSON-lines file.
"""
import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import fasttrace

ROOT = Path(__file__).resolve().parents[2]
MODULES = tuple(sorted(p.stem for p in (ROOT / "fasttrace").glob("*.pyx")))   # as setup.py
HEADERS = sorted(p.name for p in (ROOT / "src").glob("ft_*.h"))
PYTHONS = ("cp39", "cp310", "cp311", "cp312", "cp313", "cp314")
IS_CHECKOUT = (ROOT / "setup.py").is_file() and (ROOT / "pyproject.toml").is_file()

needs_checkout = pytest.mark.skipif(not IS_CHECKOUT, reason="needs the source tree")


def clean_env(**extra):
    """os.environ without CIBW_* (the wheel workflow sets some) plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBW_")}
    env.update(extra)
    return env


# -- cibuildwheel plan --------------------------------------------------------------

EXPECTED_BUILDS = {
    "linux": {f"{py}-{libc}_{arch}" for py in PYTHONS
              for libc in ("manylinux", "musllinux") for arch in ("x86_64", "aarch64")},
    "macos": {f"{py}-macosx_{arch}" for py in PYTHONS for arch in ("x86_64", "arm64")},
    "windows": {f"{py}-win_amd64" for py in PYTHONS},
}


@needs_checkout
@pytest.mark.parametrize("platform", sorted(EXPECTED_BUILDS))
def test_cibuildwheel_build_identifiers(platform, tmp_path):
    pytest.importorskip("cibuildwheel")
    proc = subprocess.run(
        [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers",
         "--platform", platform, str(ROOT)],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == EXPECTED_BUILDS[platform]
    # free-threaded builds are skipped on purpose (the core needs the GIL)
    assert not any(re.match(r"cp3\d+t-", ident) for ident in proc.stdout.split())


# -- portable C ---------------------------------------------------------------------

def _compilers():
    found = []
    if os.name == "nt":   # MSVC builds the wheels there; cl takes other flags
        return found
    for cc in ("gcc", "clang"):
        if shutil.which(cc):
            found.append(cc)
    if not found and shutil.which("cc"):
        found.append("cc")
    return found


STRICT = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
MINGW = "x86_64-w64-mingw32-gcc"


@needs_checkout
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_on_its_own(header, tmp_path):
    """Each header first in its translation unit, as strict C99, with every compiler
    found; MinGW (if installed) compiles the Windows branches."""
    compilers = _compilers()
    if shutil.which(MINGW) and header != "ft_pyutil.h":
        compilers.append(MINGW)
    if not compilers:
        pytest.skip("no C compiler")
    src = tmp_path / "t.c"
    src.write_text(f'#include "{header}"\nint main(void) {{ return 0; }}\n')
    include = ["-I", str(ROOT / "src"), "-I", sysconfig.get_paths()["include"]]
    for cc in compilers:
        proc = subprocess.run([cc, *STRICT, *include, "-c", str(src), "-o",
                               str(tmp_path / "t.o")],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{cc} {header}:\n{proc.stderr}"


C_PROGRAM = textwrap.dedent(r"""
    #include "ft_clock.h"
    #include "ft_rand.h"
    #include "ft_hex.h"
    #include "ft_codec.h"
    #include <stdio.h>
    int main(void) {
        char hex[17] = {0};
        uint64_t a, b;
        ft_clock_init();
        ft_rng_init();
        a = ft_rand_nonzero();
        b = ft_rand_nonzero();
        ft_u64_to_hex(0x0123456789abcdefULL, hex);
        printf("%lld %lld %d %s %d\n", (long long)ft_now_ns(), (long long)ft_monotonic_ns(),
               a != b && a != 0 && b != 0, hex, ft_hex_value('F', 1));
        return 0;
    }
""")


@needs_checkout
def test_headers_together_build_and_run(tmp_path):
    """All headers in one program: links without extra libraries and behaves."""
    compilers = _compilers()
    if not compilers:
        pytest.skip("no C compiler")
    import time
    src = tmp_path / "all.c"
    src.write_text(C_PROGRAM)
    for cc in compilers:
        exe = tmp_path / f"all-{cc}"
        proc = subprocess.run([cc, *STRICT, "-O2", "-I", str(ROOT / "src"), str(src),
                               "-o", str(exe)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{cc}:\n{proc.stderr}"
        out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30,
                             check=True).stdout.split()
        assert abs(int(out[0]) - time.time_ns()) < 5 * 10**9   # the wall clock, in ns
        assert int(out[1]) > 0
        assert out[2:] == ["1", "0123456789abcdef", "-1"]


# -- free-threaded CPython ----------------------------------------------------------

@needs_checkout
def test_modules_keep_the_gil_on_free_threaded_python():
    """The core is not free-threading safe (process-global RNG, clock and arena state
    rely on the GIL), so no module may declare Py_mod_gil = Py_MOD_GIL_NOT_USED."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    directives = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "directives"
                        for t in node.targets)):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant):
                    directives[key.value] = value
    assert directives, "setup.py no longer has a `directives = {...}` literal"
    value = directives.get("freethreading_compatible")
    assert value is None or (isinstance(value, ast.Constant) and value.value is False), \
        "the core needs the GIL: freethreading_compatible must stay False"
    assert "CYTHON_FREETHREADING_COMPATIBLE" not in (ROOT / "setup.py").read_text()
    generated = [ROOT / "fasttrace" / f"{name}.c" for name in MODULES]
    generated = [p for p in generated if p.is_file()]
    if not generated:
        pytest.skip("no generated C in the tree (build with pip install -e . first)")
    for path in generated:
        text = path.read_text(errors="replace")
        assert "{Py_mod_gil, __Pyx_FREETHREADING_COMPATIBLE}" in text, path
        # Cython's default form: GIL_USED unless CYTHON_FREETHREADING_COMPATIBLE is set;
        # freethreading_compatible=True would define NOT_USED unconditionally
        assert "#ifdef CYTHON_FREETHREADING_COMPATIBLE" in text, path


# -- version ------------------------------------------------------------------------

def test_version_has_one_source():
    from fasttrace import _version
    assert fasttrace.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", fasttrace.__version__)
    if IS_CHECKOUT:
        pyproject = (ROOT / "pyproject.toml").read_text()
        assert 'version = { attr = "fasttrace._version.__version__" }' in pyproject
        assert 'dynamic = ["version"]' in pyproject
        changelog = (ROOT / "CHANGELOG.md").read_text()
        assert f"## [{fasttrace.__version__}]" in changelog


# -- types --------------------------------------------------------------------------

def _mypy_config(tmp_path):
    lines = ["[mypy]", f"cache_dir = {tmp_path / '.mypy_cache'}"]
    try:
        from importlib.metadata import distribution
        distribution("types-opentracing")
    except Exception:
        # without typeshed's opentracing stubs (the test extra has them), opentracing's
        # types are Any: fasttrace's own types are still checked
        lines += ["[mypy-opentracing,opentracing.*]", "ignore_missing_imports = True"]
    return "\n".join(lines) + "\n"


def _mypy_env():
    env = dict(os.environ)
    package_parent = Path(fasttrace.__file__).resolve().parent.parent
    site_dirs = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"],
                                             sysconfig.get_paths()["platlib"])}
    if package_parent not in site_dirs:
        # a checkout (editable or PYTHONPATH): show mypy the package itself; an installed
        # wheel is found through site-packages and its py.typed marker
        env["MYPYPATH"] = str(package_parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(package_parent), env.get("PYTHONPATH")) if p)
    return env


def _mypy(args, tmp_path, cwd):
    pytest.importorskip("mypy")
    env = _mypy_env()
    config = tmp_path / "mypy.ini"
    config.write_text(_mypy_config(tmp_path) + textwrap.dedent("""
        [mypy-fasttrace,fasttrace.*]
        # what a user gets from an installed package: its types, not its errors
        # (test_stubs_match_the_runtime checks the stubs themselves)
        ignore_errors = True
    """))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config),
         "--python-executable", sys.executable, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@needs_checkout
def test_mypy_strict_on_typed_example(tmp_path):
    proc = _mypy(["--strict", "--follow-imports=silent",
                  str(ROOT / "examples" / "typed_usage.py")], tmp_path, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_sees_real_types_not_any(tmp_path):
    """The stubs type the API: mistakes in user code are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        import fasttrace
        tracer = fasttrace.Tracer(service_name="x", capacity="big")
        span = tracer.start_span(123)
        span.set_tag("k", object())
        n: str = span.span_id
        ok: str = tracer.flush()
    """))
    proc = _mypy(["--strict", "--follow-imports=silent", str(bad)], tmp_path, tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    for line in (3, 4, 5, 6, 7):
        assert f"bad.py:{line}: error" in out, out


STUBBED = [f"fasttrace.{name}" for name in MODULES] + [
    "fasttrace.batch", "fasttrace.reporting", "fasttrace.tracer", "fasttrace.config",
    "fasttrace.testing"]
# Cython classes are "disjoint bases" (PEP 800); marking that needs a newer
# typing_extensions than users of older mypy have, so it is not required here.
# ScopeManagerCore has only a __cinit__, so its runtime __init__ is object's (*args).
STUBTEST_IGNORED = ("is a disjoint base at runtime",
                    "fasttrace._scope.ScopeManagerCore.__init__ is inconsistent")


@needs_checkout
def test_stubs_match_the_runtime(tmp_path):
    """mypy's stubtest: every name and signature in the .pyi files exists at runtime."""
    pytest.importorskip("mypy")
    for name in MODULES:
        assert (Path(fasttrace.__file__).parent / f"{name}.pyi").is_file(), name
    config = tmp_path / "mypy.ini"
    config.write_text(_mypy_config(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(config),
         "--ignore-missing-stub", *STUBBED],
        cwd=tmp_path, env=_mypy_env(), capture_output=True, text=True, timeout=600)
    errors = [block for block in re.split(r"\n(?=error)", proc.stdout)
              if block.startswith("error") and not block.startswith("error: not checking")
              and not any(s in block for s in STUBTEST_IGNORED)]
    if "not checking stubs due to mypy build errors" in proc.stdout:
        errors.append(proc.stdout)
    assert not errors, "\n\n".join(errors)


# -- build: sdist, wheel, fresh venv ------------------------------------------------

COPY_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.pyd", "*.c",
    "*.html", ".pytest_cache", ".benchmarks", ".hypothesis", ".mypy_cache", ".venv",
    "venv", ".tox", "wheelhouse")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """sdist and wheel from `python -m build` on a copy of the tree (the wheel is built
    from the sdist, so a file missing from the sdist fails the build)."""
    if not IS_CHECKOUT:
        pytest.skip("needs the source tree")
    pytest.importorskip("build")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    extra_cfg = tmp / "build_ext.cfg"
    extra_cfg.write_text(f"[build_ext]\nparallel = {os.cpu_count() or 2}\n")
    dist = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
        cwd=tmp, env=clean_env(DIST_EXTRA_CONFIG=str(extra_cfg)),
        capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    sdists = list(dist.glob("fasttrace-*.tar.gz"))
    wheels = list(dist.glob("fasttrace-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, list(dist.iterdir())
    return {"tmp": tmp, "src": src, "sdist": sdists[0], "wheel": wheels[0]}


@pytest.mark.slow
def test_sdist_has_sources_not_generated_files(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for name in MODULES:
        assert f"fasttrace/{name}.pyx" in names
        assert f"fasttrace/{name}.pyi" in names
    for pxd in (ROOT / "fasttrace").glob("*.pxd"):
        assert f"fasttrace/{pxd.name}" in names
    for header in HEADERS:
        assert f"src/{header}" in names
    for needed in ("setup.py", "pyproject.toml", "README.md", "CHANGELOG.md", "PKG-INFO",
                   "fasttrace/py.typed", "tests/packaging/smoke_wheel.py"):
        assert needed in names
    generated = [n for n in names if n.endswith((".c", ".so", ".pyd", ".html", ".pyc"))]
    assert not generated, generated


@pytest.mark.slow
def test_wheel_has_compiled_modules_and_stubs_only(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = set(whl.namelist())
    suffixes = (".so", ".pyd")
    for name in MODULES:
        assert any(n.startswith(f"fasttrace/{name}.") and n.endswith(suffixes)
                   for n in names), name
        assert f"fasttrace/{name}.pyi" in names
    assert "fasttrace/py.typed" in names
    assert "fasttrace/__init__.py" in names
    assert "fasttrace/exporters/jsonl.py" in names
    assert not [n for n in names if n.endswith((".pyx", ".pxd", ".c", ".h"))]
    assert not [n for n in names if n.startswith(("tests/", "src/", "benchmarks/"))]
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)


@pytest.mark.slow
def test_wheel_works_in_fresh_venv_without_compiler(built):
    tmp = built["tmp"]
    venv_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True, timeout=300)
    bindir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    python = str(bindir / ("python.exe" if os.name == "nt" else "python"))
    # any attempt to compile fails loudly
    env = clean_env(CC="false", CXX="false", LDSHARED="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    pip = [python, "-m", "pip", "install", "-q"]
    proc = subprocess.run([*pip, "--no-build-isolation", "--no-deps", "--no-index",
                           str(built["wheel"])],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the runtime dependencies, as wheels only (nothing may be built here)
    proc = subprocess.run([*pip, "--only-binary", ":all:", "opentracing", "numpy"],
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "opentracing" in proc.stdout + proc.stderr:
        # opentracing 2.4 is published as an sdist only: pure Python, no compiler needed
        proc = subprocess.run([*pip, "--only-binary", "numpy", "opentracing", "numpy"],
                              env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    no_cython = subprocess.run([python, "-I", "-c", "import Cython"], env=env,
                               capture_output=True, text=True, cwd=tmp)
    assert no_cython.returncode != 0, "Cython is present in the fresh venv"
    out = tmp / "spans.jsonl"
    proc = subprocess.run(
        [python, "-I", str(ROOT / "tests" / "packaging" / "smoke_wheel.py"), "--out", str(out),
         "--not-under", str(ROOT), "--not-under", str(built["src"])],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke_wheel: OK" in proc.stdout
    assert len(out.read_text().splitlines()) == 2


@needs_checkout
def test_one_module_owns_the_span_clock():
    """src/ft_clock.h keeps its TSC calibration in static variables: every extension
    module that includes it has its own copy, and one that reads ft_now_ns() without
    having called ft_clock_init() reads clock_gettime instead, and is not the clock the
    span's other timestamp came from.  So only _span.pyx reads it; the rest call its
    now_ns()."""
    users = sorted(p.name for p in (ROOT / "fasttrace").glob("*.pyx")
                   if re.search(r"\bft_(now_ns|clock_init)\b", p.read_text()))
    assert users == ["_span.pyx"]
    assert re.search(r"^ft_clock_init\(\)", (ROOT / "fasttrace" / "_span.pyx").read_text(), re.M)


def test_ddtrace_pytest_plugin_is_blocked(pytestconfig):
    """ddtrace (a benchmark peer, in the test extra) registers a pytest11 plugin whose
    import pulls in ddtrace itself and hooks sys.meta_path; pyproject.toml's addopts
    blocks it, so no test session imports ddtrace (the benchmarks' ddtrace factory
    imports it lazily, only for its own cases)."""
    pm = pytestconfig.pluginmanager
    assert pm.is_blocked("ddtrace")
    assert not pm.has_plugin("ddtrace")
    if "ddtrace" in sys.modules:  # only the benchmarks may have imported it, by name
        assert any("benchmarks" in str(a) for a in pytestconfig.args), "ddtrace imported by tests/"

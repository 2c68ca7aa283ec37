# SPDX-License-Identifier: Apache-2.0
# Only the extension list lives here; metadata is in pyproject.toml.
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTTRACE_CYTHON_DEBUG") == "1"

directives = {
    "language_level": 3,
    "embedsignature": True,
    # plain method descriptors: CPython 3.11+ specialises calls to them, not to
    # Cython's binding functions (~100 instructions a call)
    "binding": False,
    # the core's state (ids, clock, arena) relies on the GIL: on free-threaded CPython
    # importing fasttrace keeps the GIL enabled (Py_mod_gil = USED)
    "freethreading_compatible": False,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}
if DEBUG:
    directives["linetrace"] = True

# every .pyx in the package is one extension module
MODULES = sorted(p.stem for p in Path(__file__).parent.joinpath("fasttrace").glob("*.pyx"))

extensions = [
    Extension(
        f"fasttrace.{name}",
        [f"fasttrace/{name}.pyx"],
        include_dirs=["src"],
        define_macros=[("FASTTRACE_DEBUG", "1" if DEBUG else "0")],
        extra_compile_args=[] if os.name == "nt" else ["-O2"],
    )
    for name in MODULES
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))

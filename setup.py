"""Build of ebsfast's native modules.

Environment switches (read at build time):
  EBSFAST_DEBUG=1     -O0 -g, C asserts on, Cython line tracing (for coverage and debuggers)
  EBSFAST_SANITIZE=1  AddressSanitizer + UndefinedBehaviorSanitizer (see ci/sanitize.sh)
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("EBSFAST_DEBUG") == "1"
SANITIZE = os.environ.get("EBSFAST_SANITIZE") == "1"

SHA256_SOURCES = ["ebsfast/_csrc/sha256.c", "ebsfast/_csrc/sha256_shani.c"]
SIGV4_SOURCES = ["ebsfast/_csrc/sigv4.c"]

compile_args = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"]
link_args = []
macros = []
directives = {"language_level": "3", "embedsignature": True}

if DEBUG or SANITIZE:
    compile_args += ["-O0" if DEBUG else "-O1", "-g", "-UNDEBUG", "-fno-omit-frame-pointer"]
else:
    compile_args += ["-O2", "-DNDEBUG"]
if DEBUG:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    directives["linetrace"] = True
if SANITIZE:
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    compile_args += flags
    link_args += flags


def ext(name, sources):
    return Extension(
        name,
        sources=sources,
        include_dirs=["ebsfast/_csrc", numpy.get_include()],
        define_macros=macros + [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


extensions = [
    ext("ebsfast._sha256", ["ebsfast/_sha256.pyx"] + SHA256_SOURCES),
    ext("ebsfast._sigv4", ["ebsfast/_sigv4.pyx"] + SIGV4_SOURCES + SHA256_SOURCES),
    ext("ebsfast._http", ["ebsfast/_http.pyx", "ebsfast/_csrc/http.c"] + SHA256_SOURCES),
    ext("ebsfast._pages", ["ebsfast/_pages.pyx", "ebsfast/_csrc/pages.c"]),
    ext("ebsfast._lane", ["ebsfast/_lane.pyx", "ebsfast/_csrc/lane.c"] + SIGV4_SOURCES
        + SHA256_SOURCES),
]

# Developers may build one module while another is in progress: EBSFAST_BUILD_ONLY=_sha256
only = os.environ.get("EBSFAST_BUILD_ONLY")
if only:
    extensions = [e for e in extensions if e.name.split(".")[-1] in only.split(",")]

# Each build mode keeps its own object files: setuptools reuses .o files by timestamp, and a
# sanitizer object linked into a release module makes it unloadable without libasan.
mode = "sanitize" if SANITIZE else ("debug" if DEBUG else "release")

setup(
    options={"build": {"build_temp": os.path.join("build", f"temp-{mode}")}},
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        force=DEBUG or SANITIZE,
    ),
)

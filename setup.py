"""Builds rnnlab's fused CPU kernels (rnnlab._C) with torch's C++ extension tooling.

Needs torch at build time, so install with `pip install --no-build-isolation -e .` after
`pip install torch==2.13.0` (the Makefile does this). RNNLAB_NO_EXT=1 skips the extension; the
layers then use the reference path.

When oneDNN v3.2's headers are installed in this environment (the wheels
`onednn-devel-cpu-gomp==2023.2.0` + `onednn-cpu-gomp`, which the Makefile installs first), the
extension also gets the oneDNN RNN-primitive path (`csrc/onednn.cpp`), linked against the wheel's
`libdnnl.so.3` with an rpath to it. RNNLAB_NO_ONEDNN=1 leaves it out.

Build time (the issue asks for under 3 minutes on 2 cores). Measured on a 2-core AMD EPYC: a fresh
`setup.py build_ext` took 3 min 3 s when the sources compiled one after another with the `-g` that
Python's own CFLAGS add (`pip install -e .`: 4 min 10 s); ninja with two jobs made it 2 min 27 s,
and `-g0` halves each source (register.cpp 32.7 → 12.5 s, lstm.cpp 36.0 → 16.6 s; GCC's code is the
same with or without debug information): 1 min 27 s (`pip install -e .`: 1 min 26 s), and the
library shrinks from 25 MB to 1.3 MB. So: ninja when it is on the PATH or beside this Python (the
Makefile installs the `ninja` wheel), one job per core unless MAX_JOBS says otherwise, and no debug
information unless RNNLAB_DEBUG_INFO=1. Without ninja, torch's BuildExtension warns and compiles
the sources one after another.
"""

import os
import sys
from pathlib import Path

from setuptools import setup

ext_modules, cmdclass = [], {}
if not os.environ.get("RNNLAB_NO_EXT"):
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    src = "rnnlab/kernels/csrc"
    # -fopenmp: at::parallel_for in the kernels runs on torch's OpenMP pool (the same libgomp.so.1,
    # already loaded by libtorch); without it ATen's header compiles parallel_for to a serial loop
    flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-mprefer-vector-width=512"]
    if not os.environ.get("RNNLAB_DEBUG_INFO"):
        flags.append("-g0")  # after Python's CFLAGS (-g): the last one wins
    # the ninja a venv's `pip install ninja` put beside this interpreter, when PATH lacks it
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))  # ninja's default is cores + 2
    files = ("register.cpp", "rnn.cpp", "lstm.cpp", "gru.cpp", "step.cpp", "cell_train.cpp", "both.cpp",
             "cache.cpp", "layer_train.cpp", "module_calls.cpp")
    sources = [f"{src}/{f}" for f in files]
    extra: dict = {"include_dirs": [], "library_dirs": [], "libraries": [], "extra_link_args": ["-fopenmp"]}
    prefix = Path(sys.prefix)
    version_h = prefix / "include" / "oneapi" / "dnnl" / "dnnl_version.h"
    found = version_h.exists() and (prefix / "lib" / "libdnnl.so.3").exists()
    if found and not os.environ.get("RNNLAB_NO_ONEDNN"):
        # the wheel's headers must come before torch's include folder, which has newer oneDNN headers
        sources += [f"{src}/onednn.cpp", f"{src}/matmul.cpp"]
        flags = [*flags, "-DRNNLAB_ONEDNN"]
        extra = {
            "include_dirs": [str(prefix / "include")],
            "library_dirs": [str(prefix / "lib")],
            "libraries": [":libdnnl.so.3"],
            "extra_link_args": ["-fopenmp", f"-Wl,-rpath,{prefix / 'lib'}"],
        }
    ext_modules = [CppExtension("rnnlab._C", sources, extra_compile_args=flags, **extra)]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=True)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)

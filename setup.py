"""Builds rnnlab's fused CPU kernels (rnnlab._C) with torch's C++ extension tooling.

Needs torch at build time, so install with `pip install --no-build-isolation -e .` after
`pip install torch==2.13.0` (the Makefile does this). RNNLAB_NO_EXT=1 skips the extension; the
layers then use the reference path.
"""

import os

from setuptools import setup

ext_modules, cmdclass = [], {}
if not os.environ.get("RNNLAB_NO_EXT"):
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    src = "rnnlab/kernels/csrc"
    flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-mprefer-vector-width=512"]
    ext_modules = [
        CppExtension(
            "rnnlab._C",
            [f"{src}/{f}" for f in ("register.cpp", "rnn.cpp", "lstm.cpp", "gru.cpp", "step.cpp")],
            extra_compile_args=flags,
        )
    ]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)

"""Builds the ``focuskern._C`` extension; the package metadata is in ``pyproject.toml``.

``focuskern._C`` (``csrc/``) is built with ``torch.utils.cpp_extension`` when torch is importable at
build time (``pip install --no-build-isolation``): the C++ backend always, the CUDA backend too when
torch has CUDA and ``nvcc`` is found.  Environment:

* ``FOCUSKERN_NO_EXT=1``: build no extension (the package works without it: torch/triton backends);
* ``FOCUSKERN_CUDA_ARCHS``: CUDA targets, e.g. ``"9.0"`` or ``"8.0;9.0"`` (default: the local GPU,
  else torch's defaults); sets ``TORCH_CUDA_ARCH_LIST``.
"""
import glob
import os
import runpy

from setuptools import setup


def extension_build():
    """``(ext_modules, cmdclass)`` for focuskern._C, or empty when the extension is not built."""
    if os.environ.get("FOCUSKERN_NO_EXT", "0") not in ("", "0"):
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # e.g. an isolated build environment without torch: pure-Python install
        return [], {}
    cxx = ["-O3", "-fopenmp", "-std=c++20"]  # OpenMP: at::parallel_for over rows
    # The table layout's C++ enums, generated from its one definition (focuskern/ops/layout.py).
    generated = os.path.dirname(runpy.run_path("focuskern/ops/layout.py")["write_header"]("build/generated"))
    include_dirs = [os.path.abspath(generated)]
    sources = ["csrc/module.cpp", "csrc/focus_cpu.cpp"]
    with_cuda = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if with_cuda:
        if os.environ.get("FOCUSKERN_CUDA_ARCHS"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ["FOCUSKERN_CUDA_ARCHS"]
        extension = cpp_extension.CUDAExtension(
            "focuskern._C", sources + sorted(glob.glob("csrc/*.cu")),
            define_macros=[("FOCUSKERN_WITH_CUDA", "1")], include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]},
            extra_link_args=["-fopenmp"])
    else:
        extension = cpp_extension.CppExtension("focuskern._C", sources, extra_compile_args=cxx,
                                               include_dirs=include_dirs, extra_link_args=["-fopenmp"])
    return [extension], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=False)}


ext_modules, cmdclass = extension_build()

# Metadata, dependencies and entry points: pyproject.toml.
setup(ext_modules=ext_modules, cmdclass=cmdclass)

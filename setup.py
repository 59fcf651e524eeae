"""Builds the ``focuskern._C`` extension; the package metadata is in ``pyproject.toml``.

``focuskern._C`` (``csrc/``) is built with ``torch.utils.cpp_extension`` against the torch that is
importable at build time (``pip install --no-build-isolation``): the C++ backend always, the CUDA
backend too when torch has CUDA and ``nvcc`` is found.  Without torch at build time (an isolated
build), without a C++ compiler, or when the build fails, the package installs pure Python (the
PyTorch and Triton backends; ``focuskern.backends()`` says why ``cpp`` is missing) and the build
prints one ``focuskern: ...`` line saying so.  Environment:

* ``FOCUSKERN_NO_EXT=1``: build no extension;
* ``FOCUSKERN_REQUIRE_EXT=1``: a missing compiler or a failed build is an error (``make install``);
* ``FOCUSKERN_CUDA_ARCHS``: CUDA targets, e.g. ``"9.0"`` or ``"8.0;9.0"`` (default: the local GPU,
  else torch's defaults); sets ``TORCH_CUDA_ARCH_LIST``.
"""
import glob
import os
import runpy
import shutil
import sys

from setuptools import setup

REQUIRED = os.environ.get("FOCUSKERN_REQUIRE_EXT", "0") not in ("", "0")
# pip runs this file for metadata too (egg_info, dist_info): say it once, where a build happens.
BUILDING = any(cmd in sys.argv for cmd in ("build_ext", "build", "bdist_wheel", "editable_wheel", "install", "develop"))


def skip(why: str):
    """Say (one line) why focuskern._C is not built, or fail under FOCUSKERN_REQUIRE_EXT=1."""
    if REQUIRED:
        raise SystemExit(f"focuskern: FOCUSKERN_REQUIRE_EXT=1 but {why}")
    if BUILDING:
        print(f"focuskern: {why}; installing without the C++ extension (pure Python: torch/triton backends)",
              file=sys.stderr)
    return [], {}


def extension_build():
    """``(ext_modules, cmdclass)`` for focuskern._C, or empty when the extension is not built."""
    if os.environ.get("FOCUSKERN_NO_EXT", "0") not in ("", "0"):
        return skip("FOCUSKERN_NO_EXT is set")
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # an isolated build environment: pip install --no-build-isolation builds _C
        return skip("torch is not importable at build time (pip install --no-build-isolation builds it)")
    compiler = os.environ.get("CXX", "c++").split()[0]
    if shutil.which(compiler) is None:
        return skip(f"no C++ compiler ({compiler!r} not found)")
    cxx = ["-O3", "-fopenmp", "-std=c++20"]  # OpenMP: at::parallel_for over rows
    # The table layout's C++ enums, generated from its one definition (focuskern/ops/layout.py).
    generated = os.path.dirname(runpy.run_path("focuskern/ops/layout.py")["write_header"]("build/generated"))
    include_dirs = [os.path.abspath(generated)]
    sources = ["csrc/module.cpp", "csrc/focus_cpu.cpp", "csrc/compile_cpu.cpp"]
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

    class BuildExtension(cpp_extension.BuildExtension):
        """torch's build_ext; a failed build leaves a pure-Python install (one line says why)."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as e:  # compiler or linker error, unsupported compiler, missing headers
                self.extensions = []
                skip(f"building focuskern._C failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")

    return [extension], {"build_ext": BuildExtension.with_options(use_ninja=False)}


ext_modules, cmdclass = extension_build()

# Metadata, dependencies and entry points: pyproject.toml.
setup(ext_modules=ext_modules, cmdclass=cmdclass)

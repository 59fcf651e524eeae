"""Every Triton kernel configuration the launchers can pick, specialized as ``kernel[grid](...)`` would.

Each Triton backend module (``dispatch``'s ``(op, "triton")`` entries) has ``compile_launches(arch)``:
the :class:`~focuskern.ops._triton_common.Launch` objects its launcher builds for each configuration it
can pick on a GPU of compute capability ``arch`` (dtype, head dim, tile sizes, warps, stages, constexpr
flags), with ``MockTensor`` arguments.
:func:`specialize` runs Triton's own argument binder on one of them for a GPU target, so the signature,
constants (ints equal to 1), divisibility attributes (pointers and ints that are multiples of 16) and
options are those a launch on that GPU compiles with; :func:`compile_launch` compiles it without a
device.  Used by ``benchmarks/gpu_compile.py`` (``make gpu-compile``) and its test.
"""
from __future__ import annotations

import importlib
from typing import Iterator

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from ._triton_common import Launch
from .dispatch import _OP_MODULES

WARP_SIZE = 32


def triton_modules() -> dict[str, str]:
    """Op family -> module of its Triton backend."""
    return {family: module for (family, backend), module in _OP_MODULES.items() if backend == "triton"}


def launches(arch: int) -> Iterator[tuple[str, str, Launch]]:
    """(op family, label, launch) for every configuration of every Triton launcher on compute capability
    ``arch`` (e.g. 90)."""
    for family, module in triton_modules().items():
        for label, launch in importlib.import_module(module).compile_launches(arch):
            yield family, label, launch


def kernel_name(launch: Launch) -> str:
    return launch.kernel.fn.__name__


def specialize(launch: Launch, arch: int) -> tuple[dict, dict, dict, object]:
    """(signature, constexprs, attrs, options) of ``launch`` on compute capability ``arch`` (e.g. 90),
    from Triton's binder: the same specialization as a launch with these argument values."""
    backend = make_backend(GPUTarget("cuda", arch, WARP_SIZE))
    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, options, bound, specialization, options)
    return signature, constexprs, attrs, options


def compile_key(launch: Launch, arch: int) -> str:
    """Two launches with the same key compile to the same binary."""
    signature, constexprs, attrs, options = specialize(launch, arch)
    src = ASTSource(launch.kernel, signature, constexprs, attrs)
    return f"{src.hash()}-{options.hash()}"


def compile_launch(launch: Launch, arch: int):
    """Compile ``launch`` for ``sm_<arch>`` (no GPU needed); the ``CompiledKernel`` holds PTX and cubin."""
    signature, constexprs, attrs, options = specialize(launch, arch)
    return triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs),
                          target=GPUTarget("cuda", arch, WARP_SIZE), options=options.__dict__)

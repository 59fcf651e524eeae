"""Which kernel backends exist on this machine, and which one ``backend="auto"`` picks.

Backends: ``torch`` (reference, any device), ``triton`` (CUDA tensors; CPU tensors only under
``TRITON_INTERPRET=1``), ``cpp`` / ``cuda`` (the ``focuskern._C`` extension built from ``csrc/``,
planned in a later issue).  ``FOCUSKERN_BACKEND`` overrides the automatic choice.
Nothing here touches CUDA at import time.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

NAMES = ("torch", "triton", "cpp", "cuda")


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _triton_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if triton_interpreted():
        return None
    if not torch.cuda.is_available():
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU)"
    return None


def _extension_reason(name: str) -> str:
    return f"{name}: focuskern._C is not built (csrc/ backends arrive with the C++/CUDA extension)"


def backends() -> dict[str, str]:
    """Map every backend name to ``"available"`` or the reason it is not."""
    triton_reason = _triton_reason()
    return {
        "torch": "available",
        "triton": triton_reason or "available",
        "cpp": _extension_reason("cpp"),
        "cuda": _extension_reason("cuda"),
    }


def resolve(backend: str, device: torch.device) -> str:
    """Turn ``backend`` (a name or ``"auto"``) into the backend that will run on ``device``."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get("FOCUSKERN_BACKEND", "auto") or "auto"
        if backend == "auto":
            if device.type == "cuda" and _triton_reason() is None:
                return "triton"
            return "torch"
    if backend not in NAMES:
        raise ValueError(f"backend: unknown backend {backend!r}; expected 'auto' or one of {NAMES}")
    status = backends()[backend]
    if status != "available":
        raise ValueError(f"backend: {backend!r} is not available: {status}")
    if backend == "triton" and device.type != "cuda" and not triton_interpreted():
        raise ValueError("backend: 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)")
    return backend


# Modules that register each op family's backends as ``torch.ops.focuskern.<family>_<backend>_``.
_OP_MODULES = {
    ("focus_logits", "torch"): "focuskern.ops.focus_logits_torch",
    ("focus_logits", "triton"): "focuskern.ops.focus_logits_triton",
    ("focus_state", "torch"): "focuskern.ops.focus_state_torch",
    ("focus_state", "triton"): "focuskern.ops.focus_state_triton",
    ("focus_attention", "torch"): "focuskern.ops.focus_attention_torch",
    ("focus_attention", "triton"): "focuskern.ops.focus_attention_triton",
}


@torch.compiler.assume_constant_result
def op_name(family: str, backend: str, device: torch.device) -> str:
    """Resolve ``backend`` for ``device``, import (register) that backend lazily, return the op's name.

    A constant for ``torch.compile``: it runs once at trace time, so the traced graph holds the op."""
    backend = resolve(backend, device)
    module = _OP_MODULES.get((family, backend))
    if module is None:
        raise ValueError(f"backend: {family} has no {backend!r} implementation yet")
    importlib.import_module(module)
    return f"{family}_{backend}_"


def get_op(family: str, backend: str, device: torch.device):
    return getattr(torch.ops.focuskern, op_name(family, backend, device))

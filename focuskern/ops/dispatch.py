"""Which kernel backends exist on this machine, and which one ``backend="auto"`` picks.

Backends: ``torch`` (reference, any device), ``triton`` (CUDA tensors; CPU tensors only under
``TRITON_INTERPRET=1``), ``cpp`` (CPU tensors) and ``cuda`` (CUDA tensors) from the ``focuskern._C``
extension built from ``csrc/`` (``focus_logits`` and ``focus_state``; ``focus_attention`` has ``torch``
and ``triton`` only).  ``auto`` takes, for the tensor's device, the first
backend of ``AUTO_ORDER`` that is available and implements the op; ``FOCUSKERN_BACKEND`` overrides
that choice for the ops it implements.  Nothing here touches CUDA at import time.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

NAMES = ("torch", "triton", "cpp", "cuda")
# cpp beats eager torch on CPU at every benchmarked size (benchmarks/results/cpu_logits*.json); on
# CUDA triton stays first until the cuda backend has been measured on a GPU.
AUTO_ORDER = {"cpu": ("cpp", "torch"), "cuda": ("triton", "cuda", "torch")}


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


@functools.lru_cache(maxsize=None)
def extension():
    """``(focuskern._C, None)``, or ``(None, why it cannot be loaded)``; loading registers the ops."""
    try:
        from .. import _C
    except ImportError as e:
        return None, (f"focuskern._C is not built ({e}); build it with torch installed: "
                      "pip install --no-build-isolation -e .")
    return _C, None


def _cuda_extension_reason() -> str | None:
    ext, reason = extension()
    if ext is None:
        return reason
    if not ext.has_cuda:
        return "focuskern._C was built without CUDA (torch without CUDA, or no nvcc, at build time)"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def backends() -> dict[str, str]:
    """Map every backend name to ``"available"`` or the reason it is not."""
    return {
        "torch": "available",
        "triton": _triton_reason() or "available",
        "cpp": extension()[1] or "available",
        "cuda": _cuda_extension_reason() or "available",
    }


def _device_reason(backend: str, device: torch.device) -> str | None:
    """Why ``backend`` cannot run on tensors of ``device`` (None if it can)."""
    if backend == "triton" and device.type != "cuda" and not triton_interpreted():
        return "'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
    if backend == "cpp" and device.type != "cpu":
        return "'cpp' needs CPU tensors"
    if backend == "cuda" and device.type != "cuda":
        return "'cuda' needs CUDA tensors"
    return None


def available_backends(family: str, device: torch.device) -> list[str]:
    """Backends that implement op ``family`` and can run on ``device`` here."""
    status = backends()
    return [b for b in NAMES if status[b] == "available" and (family, b) in _OP_MODULES
            and _device_reason(b, torch.device(device)) is None]


def resolve(backend: str, device: torch.device, family: str) -> str:
    """Turn ``backend`` (a name or ``"auto"``) into the backend that runs op ``family`` on ``device``."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        usable = available_backends(family, device)
        forced = os.environ.get("FOCUSKERN_BACKEND", "auto") or "auto"
        if forced != "auto" and (family, forced) in _OP_MODULES:
            backend = forced
        else:
            return next((b for b in AUTO_ORDER.get(device.type, ()) if b in usable), "torch")
    if backend not in NAMES:
        raise ValueError(f"backend: unknown backend {backend!r}; expected 'auto' or one of {NAMES}")
    status = backends()[backend]
    if status != "available":
        raise ValueError(f"backend: {backend!r} is not available: {status}")
    if (family, backend) not in _OP_MODULES:
        raise ValueError(f"backend: {family} has no {backend!r} implementation")
    reason = _device_reason(backend, device)
    if reason is not None:
        raise ValueError(f"backend: {reason}")
    return backend


# Modules that register each op family's backends as ``torch.ops.focuskern.<family>_<backend>_``.
_OP_MODULES = {
    ("focus_logits", "torch"): "focuskern.ops.focus_logits_torch",
    ("focus_logits", "triton"): "focuskern.ops.focus_logits_triton",
    ("focus_state", "torch"): "focuskern.ops.focus_state_torch",
    ("focus_state", "triton"): "focuskern.ops.focus_state_triton",
    ("focus_attention", "torch"): "focuskern.ops.focus_attention_torch",
    ("focus_attention", "triton"): "focuskern.ops.focus_attention_triton",
    ("focus_logits", "cpp"): "focuskern.ops.native",
    ("focus_logits", "cuda"): "focuskern.ops.native",
    ("focus_state", "cpp"): "focuskern.ops.native",
    ("focus_state", "cuda"): "focuskern.ops.native",
}


@torch.compiler.assume_constant_result
def op_name(family: str, backend: str, device: torch.device) -> str:
    """Resolve ``backend`` for ``device``, import (register) that backend lazily, return the op's name.

    A constant for ``torch.compile``: it runs once at trace time, so the traced graph holds the op."""
    backend = resolve(backend, device, family)
    importlib.import_module(_OP_MODULES[(family, backend)])
    return f"{family}_{backend}_"


def get_op(family: str, backend: str, device: torch.device):
    return getattr(torch.ops.focuskern, op_name(family, backend, device))

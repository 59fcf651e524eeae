"""Argument checks shared by the public ops: every failure names the offending argument."""
from __future__ import annotations

from typing import Sequence

import torch

LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_tensor(
    name: str,
    t,
    dtypes: Sequence[torch.dtype],
    shape: Sequence[int | None],
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check type, dtype, rank/shape (``None`` = any size) and device of ``t``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        want = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must be {want}, got {str(t.dtype).removeprefix('torch.')}")
    if t.dim() != len(shape) or any(w is not None and w != got for w, got in zip(shape, t.shape)):
        want = "[" + ", ".join("*" if w is None else str(w) for w in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (the logits' device)")
    return t


def check_values(name: str, ok: torch.Tensor, what: str) -> None:
    """Raise ``ValueError`` unless every element of the boolean tensor ``ok`` is true."""
    if ok.numel() and not bool(ok.all()):
        bad = int((~ok).nonzero()[0, 0]) if ok.dim() else 0
        raise ValueError(f"{name}: {what} (first offending index {bad})")

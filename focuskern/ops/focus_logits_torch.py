"""PyTorch backend (the reference) of ``focus_logits_``: runs on any device, no [B, V] temporaries.

The blend is one in-place multiply, then every entry is added with ``index_put_(accumulate=True)``
(duplicated ids add up; in fp16/bf16 that rounds twice, like the Triton kernel); entries whose id lies
outside ``[0, V)`` are skipped, like every backend does.  On CPU the multiply
is skipped when no row blends (the check is free there); on CUDA it would need a sync, so rows with
``alpha = 0`` are multiplied by exactly 1.0, which leaves them bitwise unchanged.
"""
from __future__ import annotations

import torch

from ..decay import decay_strength
from ._registry import define_mutating_op
from .focus_logits import FOCUS_LOGITS_SCHEMA


def entry_rows(row_offsets: torch.Tensor, nnz: int) -> torch.Tensor:
    """Row index of every CSR entry, [nnz] int64, without a host sync."""
    counts = (row_offsets[1:] - row_offsets[:-1]).long()
    rows = torch.arange(counts.shape[0], device=row_offsets.device)
    # A valid CSR has row_offsets[0] = 0 and row_offsets[B] = nnz; output_size avoids a device sync.
    return torch.repeat_interleave(rows, counts, output_size=nnz)


def focus_logits_reference_(logits, row_offsets, token_ids, token_bias, alpha, decay, step) -> None:
    strength = decay_strength(decay, step)
    if logits.device.type != "cpu" or bool((alpha != 0).any()):
        logits.mul_((1.0 - strength * alpha).unsqueeze(1))
    V = logits.shape[1]
    if V == 0:
        return
    rows = entry_rows(row_offsets, token_ids.shape[0])
    ids = token_ids.long()
    inside = (ids >= 0) & (ids < V)  # ids outside [0, V) are skipped, as by every backend (issue 21)
    add = torch.where(token_bias == float("-inf"), token_bias, strength[rows] * token_bias)
    # -0.0 is the additive identity (x + -0.0 == x, -0.0 included): a skipped entry changes nothing.
    add = torch.where(inside, add, -0.0)
    logits.index_put_((rows, torch.where(inside, ids, 0)), add.to(logits.dtype), accumulate=True)


focus_logits_op = define_mutating_op("focus_logits_torch_", FOCUS_LOGITS_SCHEMA, focus_logits_reference_)

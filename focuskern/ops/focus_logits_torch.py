"""PyTorch backend (the reference) of ``focus_logits_``: runs on any device, no [B, V] temporaries.

Every listed entry is computed once in float32 from the original logit and rounded once to the
logits' dtype; duplicated ids are summed first (sort + segment sum, O(nnz log nnz) extra memory).
"""
from __future__ import annotations

import torch

from ..decay import decay_strength


def entry_rows(row_offsets: torch.Tensor, nnz: int) -> torch.Tensor:
    """Row index of every CSR entry, [nnz] int64, without a host sync."""
    counts = (row_offsets[1:] - row_offsets[:-1]).long()
    rows = torch.arange(counts.shape[0], device=row_offsets.device)
    # A valid CSR has row_offsets[0] = 0 and row_offsets[B] = nnz; output_size avoids a device sync.
    return torch.repeat_interleave(rows, counts, output_size=nnz)


def focus_logits_reference_(logits, row_offsets, token_ids, token_bias, alpha, decay, step) -> None:
    B, V = logits.shape
    strength = decay_strength(decay, step)
    scale = 1.0 - strength * alpha
    nnz = token_ids.shape[0]
    ids = token_ids.long()
    bias = token_bias
    rows = entry_rows(row_offsets, nnz)
    add = torch.where(bias == float("-inf"), bias, strength[rows] * bias)
    # Sum duplicated (row, id) pairs: every entry learns the total of its group.
    key = rows * V + ids
    sorted_key, order = torch.sort(key)
    group = torch.searchsorted(sorted_key, sorted_key)
    totals = torch.zeros(nnz, dtype=torch.float32, device=logits.device).index_add_(0, group, add[order])
    total = torch.empty_like(totals).index_copy_(0, order, totals[group])
    original = logits[rows, ids].float()
    # On CPU the blend test costs nothing; on CUDA it would be a sync, so rows with scale 1 are
    # multiplied by exactly 1.0 (bitwise unchanged) instead.
    if logits.device.type != "cpu" or bool((scale != 1.0).any()):
        logits.mul_(scale.unsqueeze(1))
    logits.index_put_((rows, ids), (scale[rows] * original + total).to(logits.dtype))


@torch.library.custom_op("focuskern::focus_logits_torch_", mutates_args=("logits",))
def focus_logits_op(
    logits: torch.Tensor,
    row_offsets: torch.Tensor,
    token_ids: torch.Tensor,
    token_bias: torch.Tensor,
    alpha: torch.Tensor,
    decay: torch.Tensor,
    step: torch.Tensor,
) -> None:
    focus_logits_reference_(logits, row_offsets, token_ids, token_bias, alpha, decay, step)


@focus_logits_op.register_fake
def _(logits, row_offsets, token_ids, token_bias, alpha, decay, step) -> None:
    return None

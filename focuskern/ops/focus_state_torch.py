"""PyTorch backend (the reference) of the FocusState op: vectorized over rows, padded to the largest
program (``max_slots`` slots, ``max_closure`` closure entries), no host sync, no [B, V] temporaries."""
from __future__ import annotations

from typing import Optional

import torch

from ..decay import decay_strength
from ._registry import define_mutating_op
from .focus_state import (FOCUS_STATE_SCHEMA, F_ALPHA, F_BIAS, F_CONT, F_FLOOR, I_N_SLOTS, I_NODE_BASE, I_ONCE, I_PHRASE,
                          I_SLOT_BASE, I_STARTS_IN_MATCH)


def _any_bit(masks: torch.Tensor, sat: torch.Tensor) -> torch.Tensor:
    """masks [..., W] & ~sat [B, W] (broadcast over the middle dims) has a bit set -> [...] bool."""
    while sat.dim() < masks.dim():
        sat = sat.unsqueeze(1)
    return ((masks & ~sat) != 0).any(-1)


def focus_state_reference_(logits, last_tokens, prog, node, sat, step, prog_f32, prog_i32, node_mask,
                           node_out, clo_start, clo_end, clo_slot, clo_child, slot_token, slot_first,
                           slot_root_child, max_slots, max_closure, blend) -> None:
    B = logits.shape[0]
    dev = logits.device
    active = prog >= 0
    p = prog.clamp_min(0).long()
    params_i = prog_i32[p].long()
    params_f = prog_f32[p]
    node_base, slot_base, n_slots = params_i[:, I_NODE_BASE], params_i[:, I_SLOT_BASE], params_i[:, I_N_SLOTS]
    phrase, once, starts = params_i[:, I_PHRASE] != 0, params_i[:, I_ONCE] != 0, params_i[:, I_STARTS_IN_MATCH] != 0

    # Padded slot view [B, max_slots]; padding repeats slot 0 so duplicate writes carry equal values.
    lane = torch.arange(max_slots, device=dev)
    slot_valid = lane < n_slots[:, None]
    lane = torch.where(slot_valid, lane, 0).expand(B, max_slots)
    slot = slot_base[:, None] + lane
    tokens = slot_token[slot].long()

    def closure(local_node):
        g = node_base + local_node
        start, end = clo_start[g].long(), clo_end[g].long()
        idx = start[:, None] + torch.arange(max_closure, device=dev)
        valid = idx < end[:, None]
        idx = torch.where(valid, idx, 0).clamp_max(max(clo_slot.shape[0] - 1, 0))
        return valid, clo_slot[idx].long(), clo_child[idx].long()

    u = node.long()
    if last_tokens is not None:
        hit_slot = slot_valid & (tokens == last_tokens.long()[:, None])
        has = hit_slot.any(1)
        k = hit_slot.int().argmax(1)
        valid, cslot, cchild = closure(u)
        hit = valid & (cslot == k[:, None]) & has[:, None]
        first_hit = hit.int().argmax(1)
        root_child = slot_root_child[slot_base + k].long()
        u_next = torch.where(hit.any(1), cchild.gather(1, first_hit[:, None]).squeeze(1),
                             torch.where(has, root_child, torch.zeros_like(u)))
        u = torch.where(active, u_next, u)
        reached = node_out[node_base + u]
        sat.copy_(torch.where((active & once)[:, None], sat | reached, sat))
        node.copy_(u)
        step.add_(active.int())

    valid, cslot, cchild = closure(u)
    alive = valid & _any_bit(node_mask[node_base[:, None] + cchild], sat) & (phrase & active)[:, None]
    in_match = alive.any(1)
    cont = torch.zeros(B, max_slots + 1, dtype=torch.bool, device=dev)
    cont.scatter_(1, torch.where(alive, cslot, max_slots), True)
    cont = cont.gather(1, lane)
    first = _any_bit(slot_first[slot], sat) & (active & (starts | ~in_match))[:, None]
    neg = torch.tensor(float("-inf"), device=dev)
    val = torch.maximum(torch.where(first, params_f[:, F_BIAS:F_BIAS + 1], neg),
                        torch.where(cont, params_f[:, F_CONT:F_CONT + 1], neg))

    strength = decay_strength(params_f[:, F_ALPHA + 1:F_FLOOR + 1], step)
    scale = torch.where(active, 1.0 - strength * params_f[:, F_ALPHA], 1.0)
    row_idx = torch.arange(B, device=dev)[:, None].expand(B, max_slots)
    original = logits[row_idx, tokens].float()
    if blend:
        logits.mul_(scale[:, None])
    boosted = val > float("-inf")
    scaled = scale[:, None] * original
    # where, not "+ 0": adding zero would turn a -0.0 logit into +0.0.
    new = torch.where(boosted, scaled + strength[:, None] * val, scaled)
    logits.index_put_((row_idx, tokens), new.to(logits.dtype))


focus_state_op = define_mutating_op("focus_state_torch_", FOCUS_STATE_SCHEMA, focus_state_reference_)

"""PyTorch backend (the reference) of the FocusState op: vectorized over rows, padded to the largest
program (``limits`` = max slots, closure entries, entity-list entries, completed entities per node), no
host sync, no host-to-device copy, no [B, V] temporaries.

An entity list ``[lo, hi)`` holds an unsatisfied entity iff the prefix sums of "entry is unsatisfied"
over the row's program lists differ at ``lo`` and ``hi``: one pass over the program's lists per row.
"""
from __future__ import annotations

import torch

from ..decay import decay_strength
from ._registry import define_mutating_op
from .focus_state import FOCUS_STATE_SCHEMA
from .layout import C, F, I, N_, S_

WORD_BITS = 32


def _set_bits(sat: torch.Tensor, ents: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``sat`` [B, W] int32 with the bits of ``ents`` [B, n] (where ``valid``) set."""
    B, W = sat.shape
    bits = torch.arange(WORD_BITS, device=sat.device)
    flags = ((sat[:, :, None] >> bits) & 1).bool().view(B, W * WORD_BITS)
    # Invalid lanes write into one extra column, dropped after: scatter targets stay unambiguous.
    flags = torch.nn.functional.pad(flags, (0, 1))
    flags.scatter_(1, torch.where(valid, ents.long(), W * WORD_BITS), True)
    words = (flags[:, :-1].reshape(B, W, WORD_BITS).long() << bits).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).int()


def _popcount(sat: torch.Tensor) -> torch.Tensor:
    """[B] number of set bits of each row of ``sat`` [B, W] int32."""
    bits = torch.arange(WORD_BITS, device=sat.device)
    return ((sat[:, :, None] >> bits) & 1).sum((1, 2))


def budget_urgency(params_f, params_i, sat, step, active, once) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] urgency in [0, 1], [B] bool: damp end-of-text) of the budget policy (op step 4)."""
    unsaid = torch.where(active & once, params_i[:, I.N_ENTITIES] - _popcount(sat), 0)
    budget = params_f[:, F.BUDGET]
    pressing = (budget > 0) & (unsaid > 0)
    left = (budget - step.float()).clamp_min(1.0)
    urgency = (1.0 - left / (unsaid.float() * params_f[:, F.SLACK])).clamp(0.0, 1.0)
    return torch.where(pressing, urgency, 0.0), pressing & (params_i[:, I.EOS] >= 0)


def _unsat_prefix(sat: torch.Tensor, ents: torch.Tensor, ent_base: torch.Tensor, max_ents: int) -> torch.Tensor:
    """[B, max_ents + 1] prefix counts of unsatisfied entries over each row's program entity lists."""
    idx = ent_base[:, None] + torch.arange(max_ents, device=sat.device)
    e = ents[idx.clamp_max(ents.shape[0] - 1)].long()
    word = sat.gather(1, e // WORD_BITS)
    unsat = ((word >> (e % WORD_BITS)) & 1) == 0
    return torch.nn.functional.pad(unsat.int().cumsum(1), (1, 0))


def focus_state_reference_(logits, last_tokens, prog, node, sat, step, prog_f32, prog_i32, node_table,
                           slot_table, closure, ents, limits, blend) -> None:
    max_slots, max_closure, max_ents, max_out = limits
    B = logits.shape[0]
    dev = logits.device
    active = prog >= 0
    p = prog.clamp_min(0).long()
    params_i = prog_i32[p].long()
    params_f = prog_f32[p]
    node_base, slot_base, n_slots = params_i[:, I.NODE_BASE], params_i[:, I.SLOT_BASE], params_i[:, I.N_SLOTS]
    ent_base = params_i[:, I.ENT_BASE]
    phrase, once, starts = params_i[:, I.PHRASE] != 0, params_i[:, I.ONCE] != 0, params_i[:, I.STARTS_IN_MATCH] != 0

    # Padded slot view [B, max_slots]; padding repeats slot 0 so duplicate writes carry equal values.
    lane = torch.arange(max_slots, device=dev)
    slot_valid = lane < n_slots[:, None]
    lane = torch.where(slot_valid, lane, 0).expand(B, max_slots)
    slots = slot_table[(slot_base[:, None] + lane).clamp_max(max(slot_table.shape[0] - 1, 0))].long()
    tokens = slots[..., S_.TOKEN]

    def node_rows(local_node):
        """Node-table rows of program-local nodes [B] or [B, n]."""
        base = node_base if local_node.dim() == 1 else node_base[:, None]
        return node_table[(base + local_node).clamp_max(max(node_table.shape[0] - 1, 0))].long()

    def closure_of(nodes):
        idx = nodes[:, N_.CLO_LO, None] + torch.arange(max_closure, device=dev)
        valid = idx < nodes[:, N_.CLO_HI, None]
        entries = closure[torch.where(valid, idx, 0).clamp_max(closure.shape[0] - 1)].long()
        return valid, entries[..., C.SLOT], entries[..., C.CHILD]

    u = node.long()
    if last_tokens is not None:
        hit_slot = slot_valid & (tokens == last_tokens.long()[:, None])
        has = hit_slot.any(1)
        k = hit_slot.int().argmax(1)
        valid, cslot, cchild = closure_of(node_rows(u))
        hit = valid & (cslot == k[:, None]) & has[:, None]
        first_hit = hit.int().argmax(1)  # entries sorted by slot, deepest first: the AC transition
        root_child = slots[torch.arange(B, device=dev), k, S_.ROOT_CHILD]
        u_next = torch.where(hit.any(1), cchild.gather(1, first_hit[:, None]).squeeze(1),
                             torch.where(has, root_child, torch.zeros_like(u)))
        u = torch.where(active, u_next, u)
        reached = node_rows(u)
        idx = reached[:, N_.OUT_LO, None] + torch.arange(max_out, device=dev)
        valid = (idx < reached[:, N_.OUT_HI, None]) & (active & once)[:, None]
        sat.copy_(_set_bits(sat, ents[torch.where(valid, idx, 0).clamp_max(ents.shape[0] - 1)], valid))
        node.copy_(u)
        step.add_(active.int())

    valid, cslot, cchild = closure_of(node_rows(u))
    children = node_rows(cchild)  # [B, max_closure, N_.WIDTH]
    through_lo, through_hi = children[..., N_.THROUGH_LO], children[..., N_.THROUGH_HI]
    phrase_rows = (phrase & active)[:, None]

    # Step 2a: continuations whose logit is -inf (banned by the decoding) give up the entities through
    # them (a dead entry's are all set already: no aliveness test).  Marked list positions: a +1/-1
    # difference array over each row's program lists.
    row_idx = torch.arange(B, device=dev)[:, None].expand(B, max_slots)
    original = logits[row_idx, tokens].float()  # read before any write of this step
    banned = valid & phrase_rows & (original.gather(1, cslot.clamp(0, max_slots - 1)) == float("-inf"))
    diff = torch.zeros(B, max_ents + 1, dtype=torch.int32, device=dev)
    diff.scatter_add_(1, torch.where(banned, through_lo - ent_base[:, None], max_ents), banned.int())
    diff.scatter_add_(1, torch.where(banned, through_hi - ent_base[:, None], max_ents), -banned.int())
    marked = diff.cumsum(1)[:, :max_ents] > 0
    listed = ents[(ent_base[:, None] + torch.arange(max_ents, device=dev)).clamp_max(ents.shape[0] - 1)]
    sat.copy_(_set_bits(sat, listed, marked))

    prefix = _unsat_prefix(sat, ents, ent_base, max_ents)

    def unsat(lo, hi):
        """Does the list [lo, hi) (global bounds, [B, n]) hold an unsatisfied entity?"""
        lo_local = (lo - ent_base[:, None]).clamp(0, max_ents)
        hi_local = (hi - ent_base[:, None]).clamp(0, max_ents)
        return (prefix.gather(1, hi_local) - prefix.gather(1, lo_local)) > 0

    alive = valid & unsat(through_lo, through_hi) & phrase_rows
    in_match = alive.any(1)
    cont = torch.zeros(B, max_slots + 1, dtype=torch.bool, device=dev)
    cont.scatter_(1, torch.where(alive, cslot, max_slots), True)
    cont = cont.gather(1, lane)
    first = unsat(slots[..., S_.FIRST_LO], slots[..., S_.FIRST_HI]) & (active & (starts | ~in_match))[:, None]
    val = torch.maximum(torch.where(first, params_f[:, F.BIAS:F.BIAS + 1], float("-inf")),
                        torch.where(cont, params_f[:, F.CONT:F.CONT + 1], float("-inf")))

    strength = decay_strength(params_f[:, F.KIND:F.FLOOR + 1], step)
    scale = torch.where(active, 1.0 - strength * params_f[:, F.ALPHA], 1.0)
    if blend:
        logits.mul_(scale[:, None])
    urgency, damp_eos = budget_urgency(params_f, params_i, sat, step, active, once)
    boosted = val > float("-inf")
    scaled = scale[:, None] * original
    # where, not "+ 0": adding zero would turn a -0.0 logit into +0.0.
    pushed = scaled + strength[:, None] * val + (urgency * params_f[:, F.FORCE])[:, None]
    logits.index_put_((row_idx, tokens), torch.where(boosted, pushed, scaled).to(logits.dtype))
    # End-of-text damped after the slots (it may be one): rows that damp nothing write their value back.
    rows, eos = torch.arange(B, device=dev), params_i[:, I.EOS].clamp_min(0)
    x_eos = logits[rows, eos]
    damped = (x_eos.float() - params_f[:, F.EOS_DAMP]).to(logits.dtype)
    logits.index_put_((rows, eos), torch.where(damp_eos, damped, x_eos))


focus_state_op = define_mutating_op("focus_state_torch_", FOCUS_STATE_SCHEMA, focus_state_reference_)

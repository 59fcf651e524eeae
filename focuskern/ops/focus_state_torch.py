"""PyTorch backend (the reference) of the FocusState op: vectorized over rows, padded to the largest
program (``limits`` = max slots, closure entries, entity-list entries, completed entities per node,
symbols per token, trie depth), no host sync, no host-to-device copy, no [B, V] temporaries.

The byte walk (docs/text-tracking.md section 2) loops over a token's symbols (``max_token_len``) and,
per symbol, builds each row's fail chain (``max_depth`` gathers) and binary-searches the child ranges
of all its nodes at once: ``delta(u, s)`` = the child on ``s`` of the first chain node that has one,
else the root.  An entity list ``[lo, hi)`` holds an unsatisfied entity iff the prefix sums of "entry
is unsatisfied" over the row's program lists differ at ``lo`` and ``hi``.
"""
from __future__ import annotations

import torch

from ..decay import decay_strength
from ._registry import define_mutating_op
from .focus_state import FOCUS_STATE_SCHEMA
from .layout import (BC_CONT, BC_DIGIT, BC_OPEN, BC_SENT_END, BC_SENT_KEEP, BC_WORD, CTX_PREV_DIGIT, CTX_PREV_WORD,
                     CTX_SENTENCE, CTX_SHIFT, CTX_SPACED, MAX_EOS, NODE_MASK, SYM_DIGITS_END, SYM_WORD_START, C,
                     F, I, N_, S_)

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
    """([B] urgency in [0, 1], [B] bool: entities unsaid under a budget, i.e. damp end-of-text) of the
    budget policy (op step 4)."""
    unsaid = torch.where(active & once, params_i[:, I.N_ENTITIES] - _popcount(sat), 0)
    budget = params_f[:, F.BUDGET]
    pressing = (budget > 0) & (unsaid > 0)
    left = (budget - step.float()).clamp_min(1.0)
    urgency = (1.0 - left / (unsaid.float() * params_f[:, F.SLACK])).clamp(0.0, 1.0)
    return torch.where(pressing, urgency, 0.0), pressing


def _unsat_prefix(sat: torch.Tensor, ents: torch.Tensor, ent_base: torch.Tensor, max_ents: int) -> torch.Tensor:
    """[B, max_ents + 1] prefix counts of unsatisfied entries over each row's program entity lists."""
    idx = ent_base[:, None] + torch.arange(max_ents, device=sat.device)
    e = ents[idx.clamp_max(ents.shape[0] - 1)].long()
    word = sat.gather(1, e // WORD_BITS)
    unsat = ((word >> (e % WORD_BITS)) & 1) == 0
    return torch.nn.functional.pad(unsat.int().cumsum(1), (1, 0))


def _bound(t: torch.Tensor, static: int) -> int:
    """A loop bound: ``static`` on an accelerator (no host sync), the tight ``max(t)`` on the CPU, where
    reading a value costs no device synchronization."""
    return static if t.device.type != "cpu" else int(t.max()) if t.numel() else 0


def _any(t: torch.Tensor) -> bool:
    """Is the work ``t`` guards needed?  Always on an accelerator (no host sync); on the CPU, where the
    read is free, only if some row needs it (skipping a dozen tiny ops: the reference's step cost)."""
    return t.device.type != "cpu" or bool(t.any())


def _delta(node_table, node_base, u, sym, max_depth: int, search_steps: int):
    """``delta(u, sym)`` per row (program-local nodes ``u`` [B], symbols ``sym`` [B])."""
    chain = [u]
    for _ in range(max_depth):
        if _bound(chain[-1], 1) == 0:  # every chain at the root (CPU only; a GPU runs max_depth steps)
            break
        chain.append(node_table[node_base + chain[-1], N_.FAIL].long())
    chain = torch.stack(chain, 1)  # [B, depth + 1], ends at the root (its fail is itself)
    rows = node_table[node_base[:, None] + chain].long()
    # child ranges as global table rows: no per-step base addition inside the search
    end = rows[..., N_.CHILD_HI] + node_base[:, None]
    lo, hi = rows[..., N_.CHILD_LO] + node_base[:, None], end
    search_steps = min(search_steps, _bound(hi - lo, search_steps).bit_length())
    target, last, sym_col = sym[:, None], node_table.shape[0] - 1, node_table[:, N_.SYM]
    for _ in range(search_steps):  # lower bound: the first child whose SYM >= target
        mid = (lo + hi) // 2
        more = lo < hi
        right = more & (sym_col[mid.clamp_max(last)] < target)
        lo, hi = torch.where(right, mid + 1, lo), torch.where(more & ~right, mid, hi)
    found = (lo < end) & (sym_col[lo.clamp_max(last)] == target)
    first = found.int().argmax(1, keepdim=True)
    return torch.where(found.any(1), lo.gather(1, first).squeeze(1) - node_base, 0)


def _class_event(byte, sym, ctx, byte_class):
    """``(pre, pre_sym, ctx)``: which rows (``byte``: those fed a byte ``sym``) step on ``B``/``D``
    (``pre_sym``) before it, and the context after it (docs/text-tracking.md section 2)."""
    c = byte_class[sym.clamp(0, 255)].long()
    bearing = byte & (c & BC_CONT == 0)
    word, digit = (c & BC_WORD) != 0, (c & BC_DIGIT) != 0
    need_b = bearing & word & (ctx & CTX_PREV_WORD == 0)
    need_d = bearing & (ctx & CTX_PREV_DIGIT != 0) & ~digit
    sentence = ((c & BC_SENT_END) != 0) | ((ctx & CTX_SENTENCE != 0) & (c & BC_SENT_KEEP != 0))
    new_ctx = (torch.where(word, CTX_PREV_WORD, 0) | torch.where(digit, CTX_PREV_DIGIT, 0)
               | torch.where((c & BC_OPEN) != 0, 0, CTX_SPACED) | torch.where(sentence, CTX_SENTENCE, 0))
    return need_b | need_d, torch.where(need_b, SYM_WORD_START, SYM_DIGITS_END), torch.where(bearing, new_ctx, ctx)


def _walk(last_tokens, active, u, ctx, node_table, node_base, tok_off, tok_sym, byte_class, max_token_len: int,
          max_depth: int):
    """Feed each row its token's symbols (docs/text-tracking.md section 2).  Returns ``(fed, u, ctx,
    visited)``: ``visited`` [B, <= 2 * max_token_len] holds every node entered (-1 = none), whose out
    lists are then marked."""
    V = tok_off.shape[0] - 1
    t = last_tokens.long()
    fed = active & (t >= 0) & (t < V)
    t = torch.where(fed, t, 0)
    start = tok_off[t].long()
    length = torch.where(fed, tok_off[t + 1].long() - start, 0)
    search_steps = max(node_table.shape[0], 1).bit_length()
    visited = []
    for j in range(_bound(length, max_token_len)):
        live = j < length
        sym = tok_sym[(start + j).clamp_max(tok_sym.shape[0] - 1)].long()
        byte = live & (sym < 256)  # a byte, not an opaque token's symbol: its class event first
        if _any(byte):
            pre, pre_sym, ctx = _class_event(byte, sym, ctx, byte_class)
            if _any(pre):
                u = torch.where(pre, _delta(node_table, node_base, u, pre_sym, max_depth, search_steps), u)
                visited.append(torch.where(pre, u, -1))
        u = torch.where(live, _delta(node_table, node_base, u, sym, max_depth, search_steps), u)
        visited.append(torch.where(live, u, -1))
    empty = torch.full((u.shape[0], 0), -1, dtype=torch.long, device=u.device)
    return fed, u, ctx, torch.stack(visited, 1) if visited else empty


def _mid_character(node_rows, u, byte_class) -> torch.Tensor:
    """[B] bool: are the children of node ``u`` UTF-8 continuation bytes (``u`` is inside a character)?
    A banned continuation there gives nothing up (docs/text-tracking.md section 4)."""
    row = node_rows(u)
    has = row[:, N_.CHILD_HI] > row[:, N_.CHILD_LO]
    sym = node_rows(torch.where(has, row[:, N_.CHILD_LO], 0))[:, N_.SYM]
    return has & (sym >= 0) & (sym < 256) & (byte_class[sym.clamp(0, 255)] & BC_CONT != 0)


def focus_state_reference_(logits, last_tokens, prog, node, sat, step, prog_f32, prog_i32, node_table,
                           slot_table, closure, ents, tok_off, tok_sym, byte_class, limits, blend) -> None:
    max_slots, max_closure, max_ents, max_out, max_token_len, max_depth = limits
    B = logits.shape[0]
    V = tok_off.shape[0] - 1
    dev = logits.device
    active = prog >= 0
    p = prog.clamp_min(0).long()
    params_i = prog_i32[p].long()
    params_f = prog_f32[p]
    node_base, slot_base, n_slots = params_i[:, I.NODE_BASE], params_i[:, I.SLOT_BASE], params_i[:, I.N_SLOTS]
    ent_base = params_i[:, I.ENT_BASE]
    phrase, once, starts = params_i[:, I.PHRASE] != 0, params_i[:, I.ONCE] != 0, params_i[:, I.STARTS_IN_MATCH] != 0

    # Padded slot view [B, max_slots]: padding and slots whose token is outside [0, V) repeat the row's
    # first ``ok`` lane (a slot with a token in [0, V)), so duplicate writes carry equal values; a row
    # without one writes column 0's own value back from every lane.
    lane = torch.arange(max_slots, device=dev).expand(B, max_slots)
    last_slot = max(slot_table.shape[0] - 1, 0)
    raw = slot_table[(slot_base[:, None] + lane).clamp_max(last_slot), S_.TOKEN].long()
    ok = (lane < n_slots[:, None]) & (raw >= 0) & (raw < V)
    lane = torch.where(ok, lane, ok.int().argmax(1, keepdim=True))
    slots = slot_table[(slot_base[:, None] + lane).clamp_max(last_slot)].long()
    live = ok.gather(1, lane)
    tokens = torch.where(live, slots[..., S_.TOKEN], 0)

    def node_rows(local_node):
        """Node-table rows of program-local nodes [B] or [B, n]."""
        base = node_base if local_node.dim() == 1 else node_base[:, None]
        return node_table[(base + local_node).clamp_max(max(node_table.shape[0] - 1, 0))].long()

    word = node.long()
    u, ctx = word & NODE_MASK, word >> CTX_SHIFT
    if last_tokens is not None:
        base = torch.where(active, node_base, 0)
        fed, u, ctx, visited = _walk(last_tokens, active, torch.where(active, u, 0), ctx, node_table, base,
                                     tok_off, tok_sym, byte_class, max_token_len, max_depth)
        # out(v) of every node v entered, marked at once (satisfy="once")
        reached = node_rows(visited.clamp_min(0))  # [B, n, N_.WIDTH]
        idx = reached[..., N_.OUT_LO, None] + torch.arange(max_out, device=dev)
        valid = (idx < reached[..., N_.OUT_HI, None]) & (visited >= 0)[..., None] & (fed & once)[:, None, None]
        if _any(valid):
            marks = ents[torch.where(valid, idx, 0).clamp_max(ents.shape[0] - 1)].reshape(B, -1)
            sat.copy_(_set_bits(sat, marks, valid.reshape(B, -1)))
        node.copy_(torch.where(active, u | (ctx << CTX_SHIFT), word).int())
        step.add_(fed.int())

    idx = node_rows(u)[:, N_.CLO_LO, None] + torch.arange(max_closure, device=dev)
    valid = (idx < node_rows(u)[:, N_.CLO_HI, None]) & active[:, None]
    entries = closure[torch.where(valid, idx, 0).clamp_max(closure.shape[0] - 1)].long()
    cslot, cchild = entries[..., C.SLOT].clamp(0, max_slots - 1), entries[..., C.CHILD]
    children = node_rows(cchild)  # [B, max_closure, N_.WIDTH]
    through_lo, through_hi = children[..., N_.THROUGH_LO], children[..., N_.THROUGH_HI]
    phrase_rows = (phrase & active)[:, None]

    prefix = _unsat_prefix(sat, ents, ent_base, max_ents)

    def unsat(prefix, lo, hi):
        """Does the list [lo, hi) (global bounds, [B, n]) hold an unsatisfied entity?"""
        lo_local = (lo - ent_base[:, None]).clamp(0, max_ents)
        hi_local = (hi - ent_base[:, None]).clamp(0, max_ents)
        return (prefix.gather(1, hi_local) - prefix.gather(1, lo_local)) > 0

    # Step 2a: an entry whose token's logit is -inf (banned by the decoding) is banned; when no alive
    # entry of the node is unbanned and the node is not inside a character, the entities through the
    # banned entries are given up (a dead entry's are all set already).  Marked list positions: a +1/-1
    # difference array over the lists.
    row_idx = torch.arange(B, device=dev)[:, None].expand(B, max_slots)
    original = logits[row_idx, tokens].float()  # read before any write of this step
    entry_ok = valid & phrase_rows & ok.gather(1, cslot)
    banned = entry_ok & (original.gather(1, cslot) == float("-inf"))
    if _any(banned):
        open_ = (entry_ok & ~banned & unsat(prefix, through_lo, through_hi)).any(1, keepdim=True)
        banned &= ~(open_ | _mid_character(node_rows, u, byte_class)[:, None])
        diff = torch.zeros(B, max_ents + 1, dtype=torch.int32, device=dev)
        diff.scatter_add_(1, torch.where(banned, through_lo - ent_base[:, None], max_ents), banned.int())
        diff.scatter_add_(1, torch.where(banned, through_hi - ent_base[:, None], max_ents), -banned.int())
        marked = diff.cumsum(1)[:, :max_ents] > 0
        listed = ents[(ent_base[:, None] + torch.arange(max_ents, device=dev)).clamp_max(ents.shape[0] - 1)]
        sat.copy_(_set_bits(sat, listed, marked))
        prefix = _unsat_prefix(sat, ents, ent_base, max_ents)

    alive = valid & unsat(prefix, through_lo, through_hi) & phrase_rows
    in_match = alive.any(1)
    cont = torch.zeros(B, max_slots + 1, dtype=torch.bool, device=dev)
    cont.scatter_(1, torch.where(alive, cslot, max_slots), True)
    cont = cont.gather(1, lane)
    pc = torch.where(ctx & CTX_SPACED != 0, 2, 0) + torch.where(ctx & CTX_SENTENCE != 0, 1, 0)
    first_col = (S_.FIRST_LO0 + 2 * pc)[:, None, None].expand(B, max_slots, 1)
    first_lo, first_hi = slots.gather(2, first_col).squeeze(2), slots.gather(2, first_col + 1).squeeze(2)
    first = unsat(prefix, first_lo, first_hi) & (active & (starts | ~in_match))[:, None]
    val = torch.maximum(torch.where(first, params_f[:, F.BIAS:F.BIAS + 1], float("-inf")),
                        torch.where(cont, params_f[:, F.CONT:F.CONT + 1], float("-inf")))
    val = torch.where(live, val, float("-inf"))

    strength = decay_strength(params_f[:, F.KIND:F.FLOOR + 1], step)
    scale = torch.where(active, 1.0 - strength * params_f[:, F.ALPHA], 1.0)
    if blend:
        logits.mul_(scale[:, None])
    urgency, pressing = budget_urgency(params_f, params_i, sat, step, active, once)
    boosted = val > float("-inf")
    scaled = scale[:, None] * original
    # where, not "+ 0": adding zero would turn a -0.0 logit into +0.0.
    pushed = scaled + strength[:, None] * val + (urgency * params_f[:, F.FORCE])[:, None]
    logits.index_put_((row_idx, tokens), torch.where(boosted, pushed, scaled).to(logits.dtype))
    # End-of-text damped after the slots (an id may be a slot), each listed id once: every lane of a row
    # whose id is outside [0, V) repeats its first valid lane, so a scatter's duplicate writes (an id
    # listed twice, or padding) carry equal values; rows that damp nothing write their values back.
    if not _any(pressing):
        return
    eos = params_i[:, I.EOS0:I.EOS0 + MAX_EOS]
    valid = (eos >= 0) & (eos < V)
    lane = torch.where(valid, torch.arange(MAX_EOS, device=dev), valid.int().argmax(1, keepdim=True))
    valid = valid.gather(1, lane)  # False only in rows without a valid id
    ids = torch.where(valid, eos.gather(1, lane), 0)
    x_eos = logits.gather(1, ids)
    damped = (x_eos.float() - params_f[:, F.EOS_DAMP, None]).to(logits.dtype)
    logits.scatter_(1, ids, torch.where(valid & pressing[:, None], damped, x_eos))


focus_state_op = define_mutating_op("focus_state_torch_", FOCUS_STATE_SCHEMA, focus_state_reference_)

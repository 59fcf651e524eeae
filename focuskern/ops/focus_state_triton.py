"""Triton backend of the FocusState op (formulas in :mod:`focuskern.ops.focus_state`, the byte walk in
``docs/text-tracking.md``).

Grid ``(B,)``: one program per row walks the symbols of the row's last token through its automaton
(scalar loops: a runtime-bounded loop over the symbols, a while loop over fail links around a binary
search of a node's child range), gives up banned attempts, scales the row if it blends, then writes
its boosted slots (distinct token ids, so the writes never collide).  The row is not split across
programs because the state is updated in place: a second program of the same row could read the state
after the first had already advanced it.  (A blended row at small B therefore streams through one SM;
splitting it needs double-buffered state, left for later.)

Entity lists are scanned entry by entry for a block of slots at once, each entry testing one bit of
the row's satisfied set, so a step costs the program's list entries, not entities x nodes.  Ids are
checked before use (issue 21): a last token outside ``[0, V)`` is not fed, slot and end-of-text ids
outside it are neither read nor written.

Tiles (checked by ``make gpu-compile``: no spill on sm_80/90/100): ``BLOCK_S = 16`` slots per block,
four warps, 40 registers.  ptxas spilled a few bytes at 40-56 registers with wider slot blocks, a
different one per arch: 64 slots 8 bytes on sm_90 (none on sm_80), 32 slots 16 bytes on sm_80 (none
on sm_90).  A sparse row boosts about 20 slots, two trips of 16.  The 32-byte stack frame left is not
a spill: it is the scratch array of libdevice's ``cosf`` slow path (arguments above about 1e5, never
taken: the cosine decay's argument lies in ``[0, pi]``), as in the logits kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._registry import define_mutating_op
from ._triton_common import DTYPES, Launch, MockTensor, blend_range, decay_strength, dtype_name
from .focus_state import FOCUS_STATE_SCHEMA
from . import layout
from .layout import C, F, I, N_, S_

BLOCK_V = 2048
BLOCK_S = 16  # slots per block; 32 and 64 spilled (module docstring)
BLOCK_C = 32
BLOCK_E = 64

# Column indices and constants from the one layout definition, as Triton compile-time constants.
F_BIAS, F_CONT, F_ALPHA, F_KIND, F_WIDTH = (tl.constexpr(v) for v in (F.BIAS, F.CONT, F.ALPHA, F.KIND, F.WIDTH))
F_BUDGET, F_SLACK, F_FORCE, F_EOS_DAMP = (tl.constexpr(v) for v in (F.BUDGET, F.SLACK, F.FORCE, F.EOS_DAMP))
I_NODE_BASE, I_SLOT_BASE, I_N_SLOTS, I_PHRASE, I_ONCE, I_STARTS, I_WIDTH = (tl.constexpr(v) for v in (
    I.NODE_BASE, I.SLOT_BASE, I.N_SLOTS, I.PHRASE, I.ONCE, I.STARTS_IN_MATCH, I.WIDTH))
I_N_ENTITIES, I_EOS0, MAX_EOS_ = tl.constexpr(I.N_ENTITIES), tl.constexpr(I.EOS0), tl.constexpr(layout.MAX_EOS)
N_CLO_LO, N_CLO_HI, N_THROUGH_LO, N_THROUGH_HI, N_OUT_LO, N_OUT_HI, N_WIDTH = (tl.constexpr(v) for v in (
    N_.CLO_LO, N_.CLO_HI, N_.THROUGH_LO, N_.THROUGH_HI, N_.OUT_LO, N_.OUT_HI, N_.WIDTH))
N_FAIL, N_CHILD_LO, N_CHILD_HI, N_SYM = (tl.constexpr(v) for v in (N_.FAIL, N_.CHILD_LO, N_.CHILD_HI, N_.SYM))
S_TOKEN, S_FIRST_LO0, S_FIRST_HI0, S_WIDTH = (tl.constexpr(v) for v in (
    S_.TOKEN, S_.FIRST_LO0, S_.FIRST_HI0, S_.WIDTH))
C_SLOT, C_CHILD, C_WIDTH = (tl.constexpr(v) for v in (C.SLOT, C.CHILD, C.WIDTH))
SYM_B, SYM_D = tl.constexpr(layout.SYM_WORD_START), tl.constexpr(layout.SYM_DIGITS_END)
BC_WORD, BC_DIGIT, BC_CONT, BC_OPEN, BC_SENT_END, BC_SENT_KEEP = (tl.constexpr(v) for v in (
    layout.BC_WORD, layout.BC_DIGIT, layout.BC_CONT, layout.BC_OPEN, layout.BC_SENT_END, layout.BC_SENT_KEEP))
CTX_PREV_WORD, CTX_PREV_DIGIT, CTX_SPACED, CTX_SENTENCE = (tl.constexpr(v) for v in (
    layout.CTX_PREV_WORD, layout.CTX_PREV_DIGIT, layout.CTX_SPACED, layout.CTX_SENTENCE))
CTX_SHIFT, NODE_MASK = tl.constexpr(layout.CTX_SHIFT), tl.constexpr(layout.NODE_MASK)
# The FIRST lists of push context pc are the columns FIRST_LO0 + 2 * pc and FIRST_HI0 + 2 * pc.
assert S_.FIRST_HI0 == S_.FIRST_LO0 + 1 and S_.FIRST_LO3 == S_.FIRST_LO0 + 6


@triton.jit
def _child_on(node_ptr, node_base, u, sym):
    """Child of node ``u`` on symbol ``sym`` (binary search of its child range, sorted by SYM), -1 if none."""
    end = tl.load(node_ptr + (node_base + u) * N_WIDTH + N_CHILD_HI)
    lo = tl.load(node_ptr + (node_base + u) * N_WIDTH + N_CHILD_LO)
    hi = end
    while lo < hi:
        mid = lo + (hi - lo) // 2
        right = tl.load(node_ptr + (node_base + mid) * N_WIDTH + N_SYM) < sym
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(right, hi, mid)
    at = tl.load(node_ptr + (node_base + lo) * N_WIDTH + N_SYM, mask=lo < end, other=-1)
    return tl.where((lo < end) & (at == sym), lo, -1)


@triton.jit
def _feed(node_ptr, ents_ptr, sat_row, node_base, u, sym, once, BLOCK_E: tl.constexpr):
    """One symbol of the walk: ``u <- delta(u, sym)`` (fail links until a child on ``sym``, else the
    root), then the entities completed at ``u`` are said (satisfy="once")."""
    child = _child_on(node_ptr, node_base, u, sym)
    while (child < 0) & (u != 0):
        u = tl.load(node_ptr + (node_base + u) * N_WIDTH + N_FAIL)
        child = _child_on(node_ptr, node_base, u, sym)
    u = tl.maximum(child, 0)
    o_lo = tl.load(node_ptr + (node_base + u) * N_WIDTH + N_OUT_LO)
    o_hi = tl.where(once != 0, tl.load(node_ptr + (node_base + u) * N_WIDTH + N_OUT_HI), o_lo)
    for e0 in range(o_lo, o_hi, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        ent = tl.load(ents_ptr + e, mask=e < o_hi, other=0)
        tl.atomic_or(sat_row + ent // 32, (1 << (ent % 32)).to(tl.int32), mask=e < o_hi)
    return u


@triton.jit
def _walk(node_ptr, ents_ptr, sat_row, tok_off_ptr, tok_sym_ptr, byte_class_ptr, n_tokens, node_base, word,
          token, once, BLOCK_E: tl.constexpr):
    """Step 1 for one row: feed token ``token``'s symbols to the state word ``word``, return the new word.
    A class-bearing byte first inserts B (a word starts) and D (a digit run ended) as its class and the
    context say, then updates the context; an id past the token table has no symbols."""
    u = word & NODE_MASK
    ctx = (word >> CTX_SHIFT) & 15
    known = token < n_tokens
    sym_lo = tl.load(tok_off_ptr + token, mask=known, other=0)
    sym_hi = tl.load(tok_off_ptr + token + 1, mask=known, other=0)
    for i in range(sym_lo, sym_hi):
        b = tl.load(tok_sym_ptr + i)
        c = tl.load(byte_class_ptr + b, mask=(b >= 0) & (b < 256), other=BC_CONT)  # symbols >= 256: class-less
        event = (c & BC_CONT) == 0
        if event & ((c & BC_WORD) != 0) & ((ctx & CTX_PREV_WORD) == 0):
            u = _feed(node_ptr, ents_ptr, sat_row, node_base, u, SYM_B, once, BLOCK_E)
        if event & ((ctx & CTX_PREV_DIGIT) != 0) & ((c & BC_DIGIT) == 0):
            u = _feed(node_ptr, ents_ptr, sat_row, node_base, u, SYM_D, once, BLOCK_E)
        sentence = ((c & BC_SENT_END) != 0) | (((ctx & CTX_SENTENCE) != 0) & ((c & BC_SENT_KEEP) != 0))
        new_ctx = (tl.where((c & BC_WORD) != 0, CTX_PREV_WORD, 0) | tl.where((c & BC_DIGIT) != 0, CTX_PREV_DIGIT, 0)
                   | tl.where((c & BC_OPEN) != 0, 0, CTX_SPACED) | tl.where(sentence, CTX_SENTENCE, 0))
        ctx = tl.where(event, new_ctx, ctx)
        u = _feed(node_ptr, ents_ptr, sat_row, node_base, u, b, once, BLOCK_E)
    return u | (ctx << CTX_SHIFT)


@triton.jit
def _said(sat_row_ptr, W, BLOCK_W: tl.constexpr):
    """Set bits of the row's satisfied set (a SWAR popcount per 32-bit word)."""
    total = 0
    for w0 in range(0, W, BLOCK_W):
        w = w0 + tl.arange(0, BLOCK_W)
        v = tl.load(sat_row_ptr + w, mask=w < W, other=0).to(tl.uint32, bitcast=True)
        v = v - ((v >> 1) & 0x55555555)
        v = (v & 0x33333333) + ((v >> 2) & 0x33333333)
        v = (v + (v >> 4)) & 0x0F0F0F0F
        total += tl.sum(((v * 0x01010101) >> 24).to(tl.int32))
    return total


@triton.jit
def _budget_urgency(pf, step, unsaid):
    """Step 4 (the budget policy): clamp(1 - max(budget - step, 1) / (unsaid * slack), 0, 1), 0 without."""
    budget = tl.load(pf + F_BUDGET)
    left = tl.maximum(budget - step.to(tl.float32), 1.0)
    u = tl.minimum(tl.maximum(1.0 - left / (tl.maximum(unsaid, 1).to(tl.float32) * tl.load(pf + F_SLACK)), 0.0), 1.0)
    return tl.where((budget > 0) & (unsaid > 0), u, 0.0)


@triton.jit
def _lists_unsat(ents_ptr, sat_row_ptr, lo, hi, mask):
    """Per lane: does the entity list ``[lo, hi)`` hold an entity whose satisfied bit is clear?"""
    found = tl.zeros(lo.shape, dtype=tl.int32)
    longest = tl.max(tl.where(mask, hi - lo, 0))
    for j in range(0, longest):
        inside = mask & (lo + j < hi)
        ent = tl.load(ents_ptr + lo + j, mask=inside, other=0)
        word = tl.load(sat_row_ptr + ent // 32, mask=inside, other=-1)
        found = tl.maximum(found, (((word >> (ent % 32)) & 1) == 0).to(tl.int32) * inside.to(tl.int32))
    return found


@triton.jit
def _alive_entries(node_ptr, closure_ptr, ents_ptr, sat_row_ptr, node_base, c, valid):
    """Closure entries ``c`` whose child has an unsatisfied entity -> (alive int32, slot) per lane."""
    cslot = tl.load(closure_ptr + c * C_WIDTH + C_SLOT, mask=valid, other=-1)
    child = tl.load(closure_ptr + c * C_WIDTH + C_CHILD, mask=valid, other=0)
    row = (node_base + child) * N_WIDTH
    lo = tl.load(node_ptr + row + N_THROUGH_LO, mask=valid, other=0)
    hi = tl.load(node_ptr + row + N_THROUGH_HI, mask=valid, other=0)
    return _lists_unsat(ents_ptr, sat_row_ptr, lo, hi, valid), cslot


@triton.jit
def _mid_character(node_ptr, byte_class_ptr, node_base, u):
    """1 if node ``u``'s children are UTF-8 continuation bytes (it is inside a character), else 0."""
    first = tl.load(node_ptr + (node_base + u) * N_WIDTH + N_CHILD_LO)
    has = tl.load(node_ptr + (node_base + u) * N_WIDTH + N_CHILD_HI) > first
    sym = tl.load(node_ptr + (node_base + first) * N_WIDTH + N_SYM, mask=has, other=-1)
    c = tl.load(byte_class_ptr + sym, mask=has & (sym >= 0) & (sym < 256), other=0)
    return tl.where((c & BC_CONT) != 0, 1, 0)


@triton.jit
def _give_up(node_ptr, closure_ptr, ents_ptr, sat_row_ptr, node_base, c, banned):
    """Set the bits of every entity through the children of the closure entries ``c`` where ``banned``."""
    child = tl.load(closure_ptr + c * C_WIDTH + C_CHILD, mask=banned, other=0)
    lo = tl.load(node_ptr + (node_base + child) * N_WIDTH + N_THROUGH_LO, mask=banned, other=0)
    hi = tl.load(node_ptr + (node_base + child) * N_WIDTH + N_THROUGH_HI, mask=banned, other=0)
    longest = tl.max(tl.where(banned, hi - lo, 0))
    for j in range(0, longest):
        inside = banned & (lo + j < hi)
        ent = tl.load(ents_ptr + lo + j, mask=inside, other=0)
        tl.atomic_or(sat_row_ptr + ent // 32, (1 << (ent % 32)).to(tl.int32), mask=inside)


@triton.jit
def _banned(closure_ptr, slot_ptr, slot_base, row_ptr, stride_col, V, c, valid):
    """(banned, writable) closure entries ``c``: their token's logit is -inf / is not (read before this
    step's writes); a token outside ``[0, V)`` is never read and is neither."""
    cslot = tl.load(closure_ptr + c * C_WIDTH + C_SLOT, mask=valid, other=0)
    tok = tl.load(slot_ptr + (slot_base + cslot) * S_WIDTH + S_TOKEN, mask=valid, other=-1)
    readable = valid & (tok >= 0) & (tok < V)
    x = tl.load(row_ptr + tok.to(tl.int64) * stride_col, mask=readable, other=0.0).to(tl.float32)
    return readable & (x == float("-inf")), readable & (x != float("-inf"))


@triton.jit
def _focus_state_kernel(
    x_ptr, stride_row, stride_col, V,
    last_ptr,
    prog_ptr, node_state_ptr, sat_ptr, step_ptr,
    prog_f32_ptr, prog_i32_ptr, node_ptr, slot_ptr, closure_ptr, ents_ptr,
    tok_off_ptr, tok_sym_ptr, byte_class_ptr, n_tokens,
    W,
    HAS_LAST: tl.constexpr,
    BLOCK_V: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_E: tl.constexpr,
):
    row = tl.program_id(0)
    p = tl.load(prog_ptr + row)
    if p >= 0:
        pi = prog_i32_ptr + p * I_WIDTH
        pf = prog_f32_ptr + p * F_WIDTH
        node_base = tl.load(pi + I_NODE_BASE)
        slot_base = tl.load(pi + I_SLOT_BASE)
        n_slots = tl.load(pi + I_N_SLOTS)
        phrase = tl.load(pi + I_PHRASE)
        once = tl.load(pi + I_ONCE)
        starts_in_match = tl.load(pi + I_STARTS)
        bias = tl.load(pf + F_BIAS)
        cont_bias = tl.load(pf + F_CONT)
        alpha = tl.load(pf + F_ALPHA)
        sat_row = sat_ptr + row * W
        word = tl.load(node_state_ptr + row)
        step = tl.load(step_ptr + row)

        if HAS_LAST:
            token = tl.load(last_ptr + row)
            if (token >= 0) & (token < V):  # a token outside [0, V) is not fed (held rows: -1)
                word = _walk(node_ptr, ents_ptr, sat_row, tok_off_ptr, tok_sym_ptr, byte_class_ptr, n_tokens,
                             node_base, word, token, once, BLOCK_E)
                tl.debug_barrier()  # the tests below read the bits just set
                step = step + 1
                tl.store(node_state_ptr + row, word)
                tl.store(step_ptr + row, step)

        u = word & NODE_MASK
        ctx = (word >> CTX_SHIFT) & 15
        pc = tl.where((ctx & CTX_SPACED) != 0, 2, 0) + tl.where((ctx & CTX_SENTENCE) != 0, 1, 0)
        strength = decay_strength(pf + F_KIND, step)
        row_ptr = x_ptr + row.to(tl.int64) * stride_row
        c_lo = tl.load(node_ptr + (node_base + u) * N_WIDTH + N_CLO_LO)
        c_hi = tl.where(phrase != 0, tl.load(node_ptr + (node_base + u) * N_WIDTH + N_CLO_HI), c_lo)
        # Step 2a, before any write: a banned continuation aborts its attempt; the entities through the
        # banned entries are given up only when no entry can continue (alive and writable; bits only grow,
        # so the order does not matter) and ``u`` is not inside a character (_mid_character).  Not open:
        # the give-up loop runs, else it has no trips.
        open_ = _mid_character(node_ptr, byte_class_ptr, node_base, u)
        for c0 in range(c_lo, c_hi, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            valid = c < c_hi
            banned, writable = _banned(closure_ptr, slot_ptr, slot_base, row_ptr, stride_col, V, c, valid)
            alive, cslot = _alive_entries(node_ptr, closure_ptr, ents_ptr, sat_row, node_base, c, writable)
            open_ = tl.maximum(open_, tl.max(alive))
        for c0 in range(c_lo, tl.where(open_ == 0, c_hi, c_lo), BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            valid = c < c_hi
            banned, writable = _banned(closure_ptr, slot_ptr, slot_base, row_ptr, stride_col, V, c, valid)
            _give_up(node_ptr, closure_ptr, ents_ptr, sat_row, node_base, c, banned)
        tl.debug_barrier()  # the bits are visible to the tests below
        lo, hi = blend_range(row_ptr, stride_col, V, 0, V, 1.0 - strength * alpha, BLOCK_V)

        in_match = 0
        for c0 in range(c_lo, c_hi, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            alive, cslot = _alive_entries(node_ptr, closure_ptr, ents_ptr, sat_row, node_base, c, c < c_hi)
            in_match = tl.maximum(in_match, tl.max(alive))
        starts_ok = (starts_in_match != 0) | (in_match == 0)
        budgeted = (once != 0) & (tl.load(pf + F_BUDGET) > 0)
        # Unbudgeted rows count no words (a zero-trip loop rather than a branch that defines a value).
        unsaid = tl.where(budgeted, tl.load(pi + I_N_ENTITIES) - _said(sat_row, tl.where(budgeted, W, 0), BLOCK_E), 0)
        push = _budget_urgency(pf, step, unsaid) * tl.load(pf + F_FORCE)

        if hi > lo:  # [lo, hi) lies in [0, V): slot tokens outside it are skipped
            for s0 in range(0, n_slots, BLOCK_S):
                s = s0 + tl.arange(0, BLOCK_S)
                srow = (slot_base + s) * S_WIDTH
                tok = tl.load(slot_ptr + srow + S_TOKEN, mask=s < n_slots, other=0)
                mine = (s < n_slots) & (tok >= lo) & (tok < hi)
                f_lo = tl.load(slot_ptr + srow + S_FIRST_LO0 + 2 * pc, mask=mine, other=0)
                f_hi = tl.load(slot_ptr + srow + S_FIRST_HI0 + 2 * pc, mask=mine, other=0)
                first = (_lists_unsat(ents_ptr, sat_row, f_lo, f_hi, mine) != 0) & starts_ok
                cont = tl.zeros([BLOCK_S], dtype=tl.int32)
                for c0 in range(c_lo, tl.where(in_match != 0, c_hi, c_lo), BLOCK_C):
                    c = c0 + tl.arange(0, BLOCK_C)
                    alive, cslot = _alive_entries(node_ptr, closure_ptr, ents_ptr, sat_row, node_base, c, c < c_hi)
                    hit = (s[:, None] == cslot[None, :]) & (alive[None, :] != 0)
                    cont = tl.maximum(cont, tl.max(hit.to(tl.int32), axis=1))
                val = tl.maximum(tl.where(first, bias, float("-inf")), tl.where(cont != 0, cont_bias, float("-inf")))
                boost = mine & (val > float("-inf"))
                ptrs = row_ptr + tok.to(tl.int64) * stride_col
                x = tl.load(ptrs, mask=boost)
                tl.store(ptrs, (x.to(tl.float32) + strength * val + push).to(x.dtype), mask=boost)
        if unsaid > 0:  # end-of-text damped after the slots (it may be one)
            tl.debug_barrier()
            for i in tl.static_range(MAX_EOS_):
                eos = tl.load(pi + I_EOS0 + i)
                fresh = (eos >= 0) & (eos < V)  # in the row, and not listed before (each id damped once)
                for j in tl.static_range(i):
                    fresh = fresh & (tl.load(pi + I_EOS0 + j) != eos)
                eos_ptr = row_ptr + eos.to(tl.int64) * stride_col
                x_eos = tl.load(eos_ptr, mask=fresh)
                tl.store(eos_ptr, (x_eos.to(tl.float32) - tl.load(pf + F_EOS_DAMP)).to(x_eos.dtype), mask=fresh)


def state_launch(logits, last_tokens, prog, node, sat, step, prog_f32, prog_i32, node_table, slot_table, closure,
                 ents, tok_off, tok_sym, byte_class) -> Launch:
    B, V = logits.shape
    return Launch(_focus_state_kernel, (B,), (
        logits, logits.stride(0), logits.stride(1), V,
        last_tokens if last_tokens is not None else step,
        prog, node, sat, step,
        prog_f32, prog_i32, node_table, slot_table, closure, ents,
        tok_off, tok_sym, byte_class, tok_off.shape[0] - 1,
        sat.shape[1],
    ), dict(HAS_LAST=last_tokens is not None, BLOCK_V=BLOCK_V, BLOCK_S=BLOCK_S, BLOCK_C=BLOCK_C, BLOCK_E=BLOCK_E))


def launch_focus_state(logits, last_tokens, prog, node, sat, step, prog_f32, prog_i32, node_table, slot_table,
                       closure, ents, tok_off, tok_sym, byte_class, limits, blend) -> None:
    if logits.shape[0] == 0:
        return
    state_launch(logits, last_tokens, prog, node, sat, step, prog_f32, prog_i32, node_table, slot_table, closure,
                 ents, tok_off, tok_sym, byte_class)()


def compile_launches(arch: int):
    """(label, launch) for every configuration the launcher can pick on any ``arch`` (ahead-of-time
    compilation): per logits dtype, with int32 / int64 / no last tokens (the tiles are fixed, the same on
    every arch); 8 rows of 151936 logits."""
    i32, i64, f32 = MockTensor(torch.int32), MockTensor(torch.int64), MockTensor(torch.float32)
    for dtype in DTYPES:
        for last in (None, i32, i64):
            yield f"{dtype_name(dtype)} last_tokens={None if last is None else last.dtype}", state_launch(
                MockTensor(dtype, [8, 151936]), last, i32, i32, MockTensor(torch.int32, [8, 4]), i32, f32, i32, i32,
                i32, i32, i32, MockTensor(torch.int32, [151937]), i32, MockTensor(torch.int32, [256]))


focus_state_op = define_mutating_op("focus_state_triton_", FOCUS_STATE_SCHEMA, launch_focus_state)

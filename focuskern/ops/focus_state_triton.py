"""Triton backend of the FocusState op (formulas in :mod:`focuskern.ops.focus_state`).

Grid ``(B,)``: one program per row advances the row's automaton, scales the row if it blends, then
writes its boosted slots (distinct token ids, so the writes never collide).  The row is not split
across programs because the state is updated in place: a second program of the same row could read
the state after the first had already advanced it.  (A blended row at small B therefore streams
through one SM; splitting it needs double-buffered state, left for later.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._registry import define_mutating_op
from .focus_state import FOCUS_STATE_SCHEMA
from ._triton_common import blend_range, decay_strength

BLOCK_V = 2048
BLOCK_S = 64
BLOCK_C = 32
NOT_FOUND = 2**30


@triton.jit
def _alive(node_mask_ptr, node_base, child, valid, sat, w_offs, W):
    """Children whose node has an entity not yet satisfied -> int32 [BLOCK_C]."""
    ptrs = node_mask_ptr + (node_base + child)[:, None] * W + w_offs[None, :]
    masks = tl.load(ptrs, mask=valid[:, None] & (w_offs[None, :] < W), other=0)
    return tl.max(((masks & ~sat[None, :]) != 0).to(tl.int32), axis=1) * valid.to(tl.int32)


@triton.jit
def _focus_state_kernel(
    x_ptr, stride_row, stride_col, V,
    last_ptr,
    prog_ptr, node_ptr, sat_ptr, step_ptr,
    prog_f32_ptr, prog_i32_ptr, node_mask_ptr, node_out_ptr, clo_start_ptr, clo_end_ptr,
    clo_slot_ptr, clo_child_ptr, slot_token_ptr, slot_first_ptr, slot_root_child_ptr,
    W,
    HAS_LAST: tl.constexpr, W_BLOCK: tl.constexpr,
    BLOCK_V: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0)
    p = tl.load(prog_ptr + row)
    if p >= 0:
        node_base = tl.load(prog_i32_ptr + p * 6 + 0)
        slot_base = tl.load(prog_i32_ptr + p * 6 + 1)
        n_slots = tl.load(prog_i32_ptr + p * 6 + 2)
        phrase = tl.load(prog_i32_ptr + p * 6 + 3)
        once = tl.load(prog_i32_ptr + p * 6 + 4)
        starts_in_match = tl.load(prog_i32_ptr + p * 6 + 5)
        bias = tl.load(prog_f32_ptr + p * 6 + 0)
        cont_bias = tl.load(prog_f32_ptr + p * 6 + 1)
        alpha = tl.load(prog_f32_ptr + p * 6 + 2)
        w_offs = tl.arange(0, W_BLOCK)
        u = tl.load(node_ptr + row)
        step = tl.load(step_ptr + row)
        sat = tl.load(sat_ptr + row * W + w_offs, mask=w_offs < W, other=0)

        if HAS_LAST:
            token = tl.load(last_ptr + row)
            k = NOT_FOUND
            for s0 in range(0, n_slots, BLOCK_S):
                s = s0 + tl.arange(0, BLOCK_S)
                tok = tl.load(slot_token_ptr + slot_base + s, mask=s < n_slots, other=-1)
                k = tl.minimum(k, tl.min(tl.where(tok == token, s, NOT_FOUND)))
            found = NOT_FOUND
            c_lo = tl.load(clo_start_ptr + node_base + u)
            c_hi = tl.load(clo_end_ptr + node_base + u)
            for c0 in range(c_lo, c_hi, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                cslot = tl.load(clo_slot_ptr + c, mask=c < c_hi, other=-1)
                found = tl.minimum(found, tl.min(tl.where(cslot == k, c, NOT_FOUND)))
            if found < NOT_FOUND:
                u = tl.load(clo_child_ptr + found)
            elif k < NOT_FOUND:
                u = tl.load(slot_root_child_ptr + slot_base + k)
            else:
                u = 0
            if once != 0:
                sat = sat | tl.load(node_out_ptr + (node_base + u) * W + w_offs, mask=w_offs < W, other=0)
            step = step + 1
            tl.store(node_ptr + row, u)
            tl.store(step_ptr + row, step)
            tl.store(sat_ptr + row * W + w_offs, sat, mask=w_offs < W)

        strength = decay_strength(prog_f32_ptr + p * 6 + 3, step)
        row_ptr = x_ptr + row.to(tl.int64) * stride_row
        lo, hi = blend_range(row_ptr, stride_col, V, 0, V, 1.0 - strength * alpha, BLOCK_V)

        c_lo = tl.load(clo_start_ptr + node_base + u)
        c_hi = tl.where(phrase != 0, tl.load(clo_end_ptr + node_base + u), c_lo)
        in_match = 0
        for c0 in range(c_lo, c_hi, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            child = tl.load(clo_child_ptr + c, mask=c < c_hi, other=0)
            in_match = tl.maximum(in_match, tl.max(_alive(node_mask_ptr, node_base, child, c < c_hi, sat, w_offs, W)))
        starts_ok = (starts_in_match != 0) | (in_match == 0)

        if hi > lo:
            for s0 in range(0, n_slots, BLOCK_S):
                s = s0 + tl.arange(0, BLOCK_S)
                tok = tl.load(slot_token_ptr + slot_base + s, mask=s < n_slots, other=0)
                mine = (s < n_slots) & (tok >= lo) & (tok < hi)
                firsts = tl.load(slot_first_ptr + (slot_base + s)[:, None] * W + w_offs[None, :],
                                 mask=mine[:, None] & (w_offs[None, :] < W), other=0)
                first = (tl.max(((firsts & ~sat[None, :]) != 0).to(tl.int32), axis=1) > 0) & starts_ok
                cont = tl.zeros([BLOCK_S], dtype=tl.int32)
                for c0 in range(c_lo, c_hi, BLOCK_C):
                    c = c0 + tl.arange(0, BLOCK_C)
                    cslot = tl.load(clo_slot_ptr + c, mask=c < c_hi, other=-1)
                    child = tl.load(clo_child_ptr + c, mask=c < c_hi, other=0)
                    alive = _alive(node_mask_ptr, node_base, child, c < c_hi, sat, w_offs, W)
                    hit = (s[:, None] == cslot[None, :]) & (alive[None, :] != 0)
                    cont = tl.maximum(cont, tl.max(hit.to(tl.int32), axis=1))
                val = tl.maximum(tl.where(first, bias, float("-inf")), tl.where(cont != 0, cont_bias, float("-inf")))
                boost = mine & (val > float("-inf"))
                ptrs = row_ptr + tok.to(tl.int64) * stride_col
                x = tl.load(ptrs, mask=boost)
                tl.store(ptrs, (x.to(tl.float32) + strength * val).to(x.dtype), mask=boost)


def launch_focus_state(logits, last_tokens, prog, node, sat, step, prog_f32, prog_i32, node_mask, node_out,
                       clo_start, clo_end, clo_slot, clo_child, slot_token, slot_first, slot_root_child,
                       max_slots, max_closure, blend) -> None:
    B, V = logits.shape
    if B == 0:
        return
    W = sat.shape[1]
    _focus_state_kernel[(B,)](
        logits, logits.stride(0), logits.stride(1), V,
        last_tokens if last_tokens is not None else step,
        prog, node, sat, step,
        prog_f32, prog_i32, node_mask, node_out, clo_start, clo_end,
        clo_slot, clo_child, slot_token, slot_first, slot_root_child,
        W,
        HAS_LAST=last_tokens is not None, W_BLOCK=triton.next_power_of_2(W),
        BLOCK_V=BLOCK_V, BLOCK_S=BLOCK_S, BLOCK_C=BLOCK_C,
    )


focus_state_op = define_mutating_op("focus_state_triton_", FOCUS_STATE_SCHEMA, launch_focus_state)

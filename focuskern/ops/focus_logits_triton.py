"""Triton backend of ``focus_logits_``: one launch for the whole batch.

Grid ``(B, splits)``.  A row whose blend factor ``1 - s*alpha`` is 1 is handled by its first program
alone and only its listed entries are read and written (cost O(nnz)); a blended row is split into
``splits`` column ranges, each scaled and then patched with the entries that fall inside it.
Duplicated ids are summed inside a chunk with an equality matrix and chunks are applied in order,
so no atomics are needed (16-bit atomics are not portable, e.g. under the interpreter).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._registry import define_mutating_op
from .focus_logits import FOCUS_LOGITS_SCHEMA
from ._triton_common import DTYPES, Launch, MockTensor, blend_range, decay_strength, dtype_name, launch_shape

BLOCK_V = 2048
BLOCK_K = 32


@triton.jit
def _focus_logits_kernel(
    x_ptr, stride_row, stride_col, V,
    row_offsets_ptr, ids_ptr, bias_ptr, alpha_ptr, decay_ptr, step_ptr,
    cols_per_program,
    BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0)
    split = tl.program_id(1)
    strength = decay_strength(decay_ptr + row * 3, tl.load(step_ptr + row))
    scale = 1.0 - strength * tl.load(alpha_ptr + row)
    row_ptr = x_ptr + row.to(tl.int64) * stride_row
    lo, hi = blend_range(row_ptr, stride_col, V, split, cols_per_program, scale, BLOCK_V)
    if hi > lo:
        first = tl.load(row_offsets_ptr + row)
        last = tl.load(row_offsets_ptr + row + 1)
        for chunk in range(first, last, BLOCK_K):
            j = chunk + tl.arange(0, BLOCK_K)
            ids = tl.load(ids_ptr + j, mask=j < last, other=-1)
            bias = tl.load(bias_ptr + j, mask=j < last, other=0.0)
            mine = (j < last) & (ids >= lo) & (ids < hi)  # [lo, hi) lies in [0, V): bad ids are skipped
            add = tl.where(mine, tl.where(bias == float("-inf"), bias, strength * bias), 0.0)
            same = (ids[:, None] == ids[None, :]) & mine[None, :]
            total = tl.sum(tl.where(same, add[None, :], 0.0), axis=1)
            ptrs = row_ptr + ids.to(tl.int64) * stride_col
            x = tl.load(ptrs, mask=mine)
            tl.store(ptrs, (x.to(tl.float32) + total).to(x.dtype), mask=mine)
            tl.debug_barrier()  # the next chunk may hold the same ids


def logits_launch(logits, small, splits: int, cols_per_program: int) -> Launch:
    """The launch over ``logits`` [B, V] with ``small`` = (row_offsets, token_ids, token_bias, alpha,
    decay, step), dense."""
    B, V = logits.shape
    return Launch(_focus_logits_kernel, (B, splits), (logits, logits.stride(0), logits.stride(1), V, *small,
                                                      cols_per_program), dict(BLOCK_V=BLOCK_V, BLOCK_K=BLOCK_K))


def launch_focus_logits(logits, row_offsets, token_ids, token_bias, alpha, decay, step) -> None:
    B, V = logits.shape
    if B == 0:
        return
    # Whether a row blends is only known on the device: every row gets the splits, and the programs of
    # an unblended row (all but its first) exit at once.
    splits, cols_per_program = launch_shape(logits, BLOCK_V)
    # The kernel indexes the per-row and per-entry tensors as dense arrays: any strides are accepted
    # and made dense here, once (a no-op for the usual contiguous inputs; logits keep their strides).
    small = [t.contiguous() for t in (row_offsets, token_ids, token_bias, alpha, decay, step)]
    logits_launch(logits, small, splits, cols_per_program)()


def compile_launches(arch: int):
    """(label, launch) for every configuration the launcher can pick on any ``arch``: the tiles are fixed
    (the same on every arch), so one per logits dtype (B = 8 rows of a 151936-token vocabulary, contiguous, 4 column splits)."""
    i32, f32 = MockTensor(torch.int32), MockTensor(torch.float32)
    for dtype in DTYPES:
        logits = MockTensor(dtype, [8, 151936])
        yield dtype_name(dtype), logits_launch(logits, (i32, i32, f32, f32, f32, i32), 4, 38 * BLOCK_V)


focus_logits_op = define_mutating_op("focus_logits_triton_", FOCUS_LOGITS_SCHEMA, launch_focus_logits)

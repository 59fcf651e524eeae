"""Triton helpers shared by the focus kernels (imported only by Triton backends)."""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl
from triton.runtime import jit

from .dispatch import triton_interpreted

# The dtypes of the tensors the kernels scale, add into or attend over; ahead-of-time compilation
# (``focuskern/ops/triton_configs.py``) enumerates each.
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class MockTensor(jit.MockTensor):
    """A contiguous stand-in tensor (dtype and shape; 16-byte aligned) for ahead-of-time compilation.
    (Triton's own ``MockTensor.stride`` multiplies the sizes from the wrong end.)"""

    def stride(self, dim: int | None = None):
        strides = [1]
        for size in reversed(self.shape[1:]):
            strides.insert(0, strides[0] * size)
        return tuple(strides) if dim is None else strides[dim]


class Launch(NamedTuple):
    """One kernel launch as a launcher builds it: the ``@triton.jit`` kernel, its grid, its positional
    arguments and its constexpr/option keywords (``num_warps``, ``num_stages``).  Launchers run it;
    :mod:`focuskern.ops.triton_configs` builds the same object with ``MockTensor`` arguments to compile
    every configuration ahead of time, so what is compiled is what is launched."""

    kernel: Any
    grid: tuple
    args: tuple
    kwargs: dict

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.kwargs)


@triton.jit
def decay_strength(decay_row_ptr, step):
    """s = floor + (1 - floor) * f(step) for one row; mirrors :func:`focuskern.decay.decay_strength`."""
    kind = tl.load(decay_row_ptr)
    horizon = tl.load(decay_row_ptr + 1)
    floor = tl.load(decay_row_ptr + 2)
    t = step.to(tl.float32)
    ratio = t / tl.where(horizon > 0, horizon, 1.0)
    f = tl.where(kind == 1, tl.maximum(1.0 - ratio, 0.0), 1.0)
    f = tl.where(kind == 2, tl.exp2(-ratio), f)
    f = tl.where(kind == 3, 0.5 * (1.0 + tl.cos(3.141592653589793 * tl.minimum(ratio, 1.0))), f)
    f = tl.where(kind == 4, tl.where(t < horizon, 1.0, 0.0), f)
    f = tl.where(kind == 5, tl.minimum(ratio, 1.0), f)
    return floor + (1.0 - floor) * f


@triton.jit
def scale_columns(row_ptr, col_stride, lo, hi, scale, BLOCK: tl.constexpr):
    """row[lo:hi] *= scale, computed in float32, rounded once to the row's dtype."""
    for start in range(lo, hi, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        inside = cols < hi
        ptrs = row_ptr + cols.to(tl.int64) * col_stride
        x = tl.load(ptrs, mask=inside)
        tl.store(ptrs, (x.to(tl.float32) * scale).to(x.dtype), mask=inside)


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.lru_cache(maxsize=None)
def device_arch(device_index: int) -> int:
    """Compute capability of a CUDA device as ``major * 10 + minor`` (90 on an H100), queried once."""
    major, minor = torch.cuda.get_device_capability(device_index)
    return major * 10 + minor


def column_splits(device: torch.device, rows: int, cols: int, block: int) -> int:
    """Programs per row for a dense pass: enough to fill the device, at least one block each."""
    if device.type != "cuda" or triton_interpreted():
        return 1
    target = 4 * sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return max(1, min(triton.cdiv(target, max(rows, 1)), triton.cdiv(cols, block)))


@triton.jit
def blend_range(row_ptr, col_stride, V, split, cols_per_program, scale, BLOCK_V: tl.constexpr):
    """Scale this program's column range of a blended row and return the range whose sparse entries it
    owns.  A row with scale 1 is never read densely: its first program owns every column."""
    if scale != 1.0:
        lo = split * cols_per_program
        hi = tl.minimum(lo + cols_per_program, V)
        scale_columns(row_ptr, col_stride, lo, hi, scale, BLOCK_V)
        tl.debug_barrier()  # the sparse pass reads the scaled values
    else:
        lo = 0
        hi = tl.where(split == 0, V, 0)
    return lo, hi


def launch_shape(logits: torch.Tensor, block: int) -> tuple[int, int]:
    """(splits per row, columns per program) for a kernel using :func:`blend_range`."""
    B, V = logits.shape
    splits = column_splits(logits.device, B, V, block)
    return splits, triton.cdiv(triton.cdiv(V, splits), block) * block

"""Tiles of the Triton attention kernel (``focus_attention_triton``) per GPU architecture.

:func:`launch_config` is the one place that picks them: the launcher calls it with the compute
capability of the tensor's device, and ``make gpu-compile`` (``compile_launches(arch)``) with each
target's, so what is compiled and checked for spills on sm_80/90/100 is what runs there.
"""
from __future__ import annotations

import triton

SPLIT_MAX_LQ = 16  # split-KV path only for short query blocks (decode, speculative verification)
DEFAULT_ARCH = 90  # compute capability whose tiles run off CUDA and under the interpreter


def arch_family(arch: int) -> int:
    """Whose tiles a compute capability takes: 80 (sm_80-89), 90 (sm_90-99) or 100 (sm_100 and newer)."""
    return 80 if arch < 90 else 90 if arch < 100 else 100


def launch_config(R: int, Lq: int, block_d: int, elem: int, readout: bool = False, target: bool = False,
                  arch: int = DEFAULT_ARCH) -> dict:
    """Tile sizes and launch options for ``R = G * Lq`` rows per (batch, KV head) on compute capability
    ``arch`` (:func:`arch_family`), chosen so that no configuration spills registers on sm_80, sm_90 or
    sm_100 (``make gpu-compile``; numbers from its ``ptxas -v``, triton 3.6.0).

    sm_90:

    * float32: ``tl.dot`` with ``input_precision="ieee"`` runs on the CUDA cores (FMA), where every
      thread holds its rows of ``q`` and its columns of ``K``/``V`` along the whole reduction dim, so
      registers grow with the tile's *sides*: 16 x 16 tiles over eight warps (179 registers at D = 128
      with a target and 64 groups).  64 x 32 over four warps spilled up to 48 KB at D = 128, 32 x 16
      over four 316 B, 16 x 16 over four 60 B with a target.
    * float16/bfloat16 (tensor cores): 128-row tiles for prefill (64 at D = 256), 64 rows for short
      query blocks; eight warps for 64-row tiles at D = 256 (four spilled 140 B, bfloat16 prefill).
      A ``target`` (a second accumulator) or a ``readout`` (group sums in registers: a float32
      ``p @ onehot`` FMA dot over the key block and a ``[BLOCK_M, 64]`` accumulator): at most 64 rows
      over eight warps (the 128-row target tile spilled 112 B at D = 128; 64 x 64 with 64 groups over
      four spilled at D = 64, over eight it holds 207 registers); both at D = 128, and a target at
      D = 256: 16 x 32 tiles (198 and 168 registers; at D = 128 32 and 64 rows spilled 36 and 156 B, at
      D = 256 64 rows 124 B, 32 rows held 254 registers, too close to the limit).

    sm_80 and sm_100 start from sm_90's tiles and change only what spilled there.  ``ptxas`` caps some
    eight-warp kernels at 128 registers (room for a second block per SM) and spills a few bytes rather
    than use more; lifting the cap with ``maxnreg=255`` made it spill elsewhere (bfloat16 D = 64 with
    a target and groups, sm_80: 255 registers and 20 B instead of 204 and none), so the tiles change:

    * sm_80, float32 with a target or group sums: three stages (two spilled 4-8 B at D = 64 with a
      target and groups, capped at 128 registers; three hold 150-186 registers at D = 64 to 256; without
      them three stages spilled in the prefill with a bias, two do not).  Without them at D = 256: four
      warps and one stage (sm_90's eight warps and two stages spilled 8 B in the prefill and the
      many-group readout, capped at 80; four and two stages 4-12 B in the split verification, capped at
      96-128; eight and three stages 16 B in the prefill with a bias, eight and one 8-12 B in the prefill
      and the readout; four and one hold 124-148 registers, 128 in the split decode/verification).
    * sm_100, float32: with a target or group sums one stage (two spilled 12 B at D = 64, capped at
      128, and 48 B at D = 256, at 255; three 36 B there; one holds 157-172 registers); without them
      four warps (eight spilled 24 B at D = 256 in the split decode, capped at 128; four hold 138; one
      or three stages over eight spilled 4-16 B at D = 128/256 with a bias, capped at 64-80).
    * sm_100, float16/bfloat16, 64-row tiles at D = 256: one stage (two spilled 4 B in the split
      verification, capped at 128; one holds 153).  Short query blocks at D = 256 on at most 32 rows
      (the verification's 64 x 32 over eight warps and one stage was capped at 128 and spilled 8 B
      without a bias; 32 x 32 over four warps and two stages holds 178-214, as in the MQA decode).
      A target or group sums at D = 64 over 32 keys (64 x 64 over three stages was capped at 128 and
      spilled 8-12 B with a target and many groups, verification and prefill; 64 x 32 holds 106-110
      registers there, 184-194 with group sums).
    * sm_80, float16/bfloat16 (``mma.sync``: both operands of every dot pass through registers): group
      sums in registers on 16 rows (64 x 64 spilled 172-180 B at D = 64 with a target, 32 x 64 24 B,
      32 x 32 8 B; 16 x 64 holds 200-204); a target without them on at most 32 rows (64 x 64 spilled
      36-40 B at D = 128; 32 x 64 holds 212); 128-row tiles at D = 128 over 32 keys (128 x 64 spilled
      20 B with a bias, 198 registers over 32 keys); eight warps for every 64-row tile (in the
      many-group readout four held 255 registers and spilled 16 B at D = 128, eight 179; four were
      capped at 168 and spilled 8 B at D = 64, float16 verification, eight hold 152).

    Group sums in registers at D = 256 do not fit in any tile (float32 16 x 16 spilled 96 B over four
    warps, 28 B over eight, 20 B over sixteen at their 128-register cap; bfloat16 16 x 32 over eight
    24 B): :func:`plan` reads them out with the score-only pass there."""
    family = arch_family(arch)
    heavy = readout or target
    if elem == 4:
        if family == 90 or (family == 80 and not heavy and block_d <= 128):
            warps, stages = 8, 2
        elif family == 80:
            warps, stages = (8, 3) if heavy else (4, 1)
        else:
            warps, stages = (8, 1) if heavy else (4, 2)
        return dict(BLOCK_M=16, BLOCK_N=16, num_warps=warps, num_stages=stages)
    small = Lq <= SPLIT_MAX_LQ
    block_m = min(64 if small or block_d > 128 or heavy else 128, max(16, triton.next_power_of_2(R)))
    block_n = 32 if block_d > 128 else 64
    if (readout and block_d >= 128) or (target and block_d > 128):
        block_m, block_n = 16, 32
    if family == 80:
        block_m = 16 if readout else min(block_m, 32) if target else block_m
        block_n = 32 if block_m >= 128 and block_d >= 128 else block_n
    if family == 100:
        block_m = min(block_m, 32) if small and block_d > 128 else block_m
        block_n = 32 if heavy and block_d <= 64 else block_n
    wide = block_m >= 128 or (block_m >= 64 and (block_d > 128 or family == 80)) or heavy
    stages = 3 if block_d <= 128 else 1 if family == 100 and block_m >= 64 else 2
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=8 if wide else 4, num_stages=stages)


def mass_launch_options(cfg: dict, elem: int, arch: int = DEFAULT_ARCH) -> dict:
    """Warps and stages of the score-only pass (``_mass_scores_kernel``) after the main pass of tiles
    ``cfg``: the main pass's warps and Triton's default three stages, but two for float32 on sm_80
    (three spilled 12 B at 48 registers over eight warps at D = 64 with a target, 32 query heads per KV
    head; two hold 40-56 registers)."""
    return dict(num_warps=cfg["num_warps"], num_stages=2 if elem == 4 and arch_family(arch) == 80 else 3)

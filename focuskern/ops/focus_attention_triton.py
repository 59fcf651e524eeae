"""Triton backend of ``focus_attention``: FlashAttention-2-style online softmax with a per-key bias.

Layout.  One program owns ``BLOCK_M`` *rows* of one (batch, KV head): the ``G = Hq // Hkv`` query heads
that share the KV head are packed query-major, row ``r = i * G + g`` is query ``i`` of head
``hkv * G + g``, so every K/V tile loaded serves all G heads (GQA/MQA without repeating K/V, and a
causal block bound that stays tight).  Scores are kept in base 2: ``s2 = (q.k) * sm_scale * log2(e) +
head_scale[h] * log2(e) * key_bias[b, j]`` and ``exp2`` everywhere, which is the natural-log formula
exactly.  Nothing of size Lq x Lk is ever built; the extra memory traffic of the bias is one float32
per key and tile.

Key loop.  The visible keys of a row block are ``[key_start[b], hi)`` with ``hi = Lk`` (or the causal
bound of its last query).  The loop runs in three parts: a masked block for an unaligned ``key_start``,
unmasked blocks that every row of the tile sees completely, then masked blocks on the causal diagonal
and at the end of the sequence.  Masked scores are ``-inf``; a row that has seen no visible key keeps
``m = -inf`` and uses 0 as its shift (no ``inf - inf``), and a row that saw none at all outputs zeros.

Groups (``focus_attention_<backend>_mass``).  ``TARGET`` keeps two online softmaxes: ``m0, l0, acc0``
over group 0 and ``m, l, acc`` over the other visible keys, each with its own running max, so
``mu = l0 2^m0 / (l0 2^m0 + l 2^m)`` and the steered output ``(e^delta 2^m0 acc0 + 2^m acc) / (e^delta
2^m0 l0 + 2^m l)`` come out of the one pass (combined in float32 at the end).  A shared max would round
group 0's P to the input dtype relative to the other keys: where mu is tiny (e.g. 1e-6, the case
steering is for) those weights are float16 subnormals, and e^delta then amplifies their rounding into
the output.  The readout of
``G <= MAX_REG_GROUPS`` groups is one more register accumulator ``[BLOCK_M, G]`` updated per key block
as ``p @ onehot(key_group)`` (rescaled like ``l``); for more groups (per-token maps) the main pass
stores each row's final log-sum-exp and delta and a score-only pass (``q.k``, no V) adds
``exp2(s + delta [group 0] - lse)`` into the mass with atomics.  Grouped calls never take the
split-KV path (one program sees a row's whole key range, so the split sums need no merge).

Split-KV (flash-decoding).  For ``Lq <= SPLIT_MAX_LQ`` when the (row block, batch, KV head) programs
do not fill the GPU, the keys are cut into ``splits`` chunks (a multiple of ``BLOCK_N`` each, at least
``MIN_SPLIT_BLOCKS`` blocks); every program writes its normalized partial output and its base-2
log-sum-exp to a float32 workspace and a second kernel merges the chunks of each row, reading 16 splits
at a time (one compiled merge for every split count, which grows with the keys during a decode).

Ahead-of-time compilation.  :func:`compile_launches` yields the launches of every configuration
:func:`launch_config` (per architecture: ``focus_attention_tiles``) and the call options can produce on
one architecture (built by :func:`attention_launches`, the code that launches them), which ``make
gpu-compile`` compiles for sm_80/90/100 and checks for spills.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .dispatch import triton_interpreted
from ._registry import define_op
from ._triton_common import DTYPES, Launch, MockTensor, device_arch, dtype_name, sm_count
from .focus_attention_tiles import DEFAULT_ARCH, SPLIT_MAX_LQ, launch_config, mass_launch_options
from .focus_attention_triton_parts import _attend_blocks, _mass_scores_kernel, _merge_splits_kernel, _row_tile
from .focus_attention import (FOCUS_ATTENTION_MASS_SCHEMA, FOCUS_ATTENTION_SCHEMA, focus_attention_fake,
                              focus_attention_mass_fake)

LOG2E = math.log2(math.e)
MAX_HEAD_DIM = 256
MIN_SPLIT_BLOCKS = 4  # keys per split >= MIN_SPLIT_BLOCKS * BLOCK_N on a GPU (1 under the interpreter)
MAX_SPLITS = 128
INTERPRETER_SMS = 2  # stand-in SM count under TRITON_INTERPRET, so small test shapes take the split path
FORCE_KV_SPLITS = None  # tests: an int forces the number of KV splits (when Lq <= SPLIT_MAX_LQ)
MAX_REG_GROUPS = 64  # readout groups kept in registers; more take the score-only pass
MERGE_BLOCK_S = 16  # KV splits the merge reads at a time


@triton.jit
def _focus_attention_kernel(
    q_ptr, k_ptr, v_ptr, kb_ptr, hs_ptr, ks_ptr, kg_ptr, tm_ptr, out_ptr, part_o_ptr, part_lse_ptr,
    mass_ptr, stat_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    Hkv, G, Lq, Lk, D, qk_scale, split_len, n_splits, num_groups, max_delta,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_HEAD_SCALE: tl.constexpr, HAS_KEY_START: tl.constexpr,
    SPLIT: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    TARGET: tl.constexpr, NGP: tl.constexpr, STATS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    b = pid_bh // Hkv
    hkv = pid_bh % Hkv
    R = G * Lq  # rows of this (batch, KV head)
    offs_m, row_ok, qi, head, rows_pos, offs_d, d_ok, q, hs2, key_lo, hi, full_hi = _row_tile(
        q_ptr, hs_ptr, ks_ptr, stride_qb, stride_qh, stride_qm, stride_qd, pid_m, b, hkv, G, Lq, Lk, D,
        BLOCK_M, BLOCK_D, CAUSAL, HAS_HEAD_SCALE, HAS_KEY_START, DOT_F32)
    b64 = b.to(tl.int64)
    k_base = k_ptr + b64 * stride_kb + hkv.to(tl.int64) * stride_kh
    v_base = v_ptr + b64 * stride_vb + hkv.to(tl.int64) * stride_vh
    kb_base = kb_ptr + b64 * Lk
    kg_base = kg_ptr + b64 * Lk

    # Visible key range of the tile, then clipped to this program's split.
    full_hi = (tl.maximum(full_hi, 0) // BLOCK_N) * BLOCK_N
    lo = key_lo
    if SPLIT:
        lo = tl.maximum(lo, pid_s * split_len)
        hi = tl.minimum(hi, pid_s * split_len + split_len)
    hi = tl.maximum(hi, lo)
    start = (lo // BLOCK_N) * BLOCK_N
    full_lo = tl.cdiv(lo, BLOCK_N) * BLOCK_N
    full_hi = tl.maximum(tl.minimum(full_hi, hi), full_lo)
    first_stop = tl.where(hi > lo, tl.minimum(full_lo, hi), start)

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    acc0 = 0.0
    l0 = 0.0
    m0 = 0.0
    macc = 0.0
    if TARGET:
        acc0 = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        l0 = tl.zeros([BLOCK_M], dtype=tl.float32)
        m0 = tl.full([BLOCK_M], float("-inf"), tl.float32)
    if NGP > 0:
        macc = tl.zeros([BLOCK_M, NGP], dtype=tl.float32)
    # An unaligned key_start (one masked block), blocks every row sees whole, then the causal diagonal
    # and the end of the keys.
    acc, l_i, m_i, acc0, l0, m0, macc = _attend_blocks(
        acc, l_i, m_i, acc0, l0, m0, macc, q, hs2, rows_pos, k_base, v_base, kb_base, kg_base, stride_kn,
        stride_kd, stride_vn, stride_vd, offs_d, d_ok, key_lo, Lk, qk_scale, start, first_stop,
        BLOCK_N, True, CAUSAL, HAS_BIAS, EVEN_D, PRECISION, DOT_F32, TARGET, NGP)
    acc, l_i, m_i, acc0, l0, m0, macc = _attend_blocks(
        acc, l_i, m_i, acc0, l0, m0, macc, q, hs2, rows_pos, k_base, v_base, kb_base, kg_base, stride_kn,
        stride_kd, stride_vn, stride_vd, offs_d, d_ok, key_lo, Lk, qk_scale, full_lo, full_hi,
        BLOCK_N, False, CAUSAL, HAS_BIAS, EVEN_D, PRECISION, DOT_F32, TARGET, NGP)
    acc, l_i, m_i, acc0, l0, m0, macc = _attend_blocks(
        acc, l_i, m_i, acc0, l0, m0, macc, q, hs2, rows_pos, k_base, v_base, kb_base, kg_base, stride_kn,
        stride_kd, stride_vn, stride_vd, offs_d, d_ok, key_lo, Lk, qk_scale, full_hi, hi,
        BLOCK_N, True, CAUSAL, HAS_BIAS, EVEN_D, PRECISION, DOT_F32, TARGET, NGP)

    delta = tl.zeros([BLOCK_M], dtype=tl.float32)
    if TARGET:  # delta = min(cap, max(0, logit(p) - logit(mu))), natural log; then merge the two parts
        p_h = tl.load(tm_ptr + head, mask=row_ok, other=0.0)
        ok = (l0 > 0) & (l_i > 0) & (p_h > 0)  # logit(mu) = ln(l0 2^m0) - ln(l 2^m)
        d = tl.log(tl.where(ok, p_h, 0.5) / (1.0 - p_h)) - tl.log(tl.where(ok, l0, 1.0)) \
            + tl.log(tl.where(ok, l_i, 1.0)) - (tl.where(ok, m0, 0.0) - tl.where(ok, m_i, 0.0)) * 0.6931471805599453
        delta = tl.where(ok, tl.minimum(tl.maximum(d, 0.0), max_delta), 0.0)
        e0 = m0 + delta * 1.4426950408889634  # group 0's max after steering, base 2
        m_all = tl.maximum(m_i, e0)
        top = tl.where(m_all == float("-inf"), 0.0, m_all)
        c_r = tl.exp2(m_i - top)
        c_0 = tl.exp2(e0 - top)
        acc = acc * c_r[:, None] + acc0 * c_0[:, None]
        if NGP > 0:
            macc = macc * c_r[:, None] + tl.where(tl.arange(0, NGP)[None, :] == 0, (l0 * c_0)[:, None], 0.0)
        l_i = l_i * c_r + l0 * c_0
        m_i = m_all
    seen = l_i > 0
    inv = 1.0 / tl.where(seen, l_i, 1.0)
    o = acc * inv[:, None]  # rows without a visible key: acc = 0 -> zeros
    if NGP > 0:
        g = tl.arange(0, NGP)
        m_rows = ((b64 * (Hkv * G) + head) * Lq + qi) * num_groups
        tl.store(mass_ptr + m_rows[:, None] + g[None, :], macc * inv[:, None],
                 mask=row_ok[:, None] & (g[None, :] < num_groups))
    if STATS:  # for the score-only mass pass: base-2 log-sum-exp of the steered row, delta in base 2
        lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("inf"))
        stat = (pid_bh.to(tl.int64) * R + offs_m) * 2
        tl.store(stat_ptr + stat, lse, mask=row_ok)
        tl.store(stat_ptr + stat + 1, delta * 1.4426950408889634, mask=row_ok)
    if SPLIT:
        part = pid_bh.to(tl.int64) * n_splits + pid_s
        lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + part * R + offs_m, lse, mask=row_ok)
        o_ptrs = part_o_ptr + (part * R + offs_m[:, None]) * BLOCK_D + offs_d[None, :]
        tl.store(o_ptrs, o, mask=row_ok[:, None])
    else:
        o_rows = out_ptr + b64 * stride_ob + head.to(tl.int64) * stride_oh + qi.to(tl.int64) * stride_om
        tl.store(o_rows[:, None] + offs_d[None, :] * stride_od, o.to(out_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])


def _device(device: torch.device) -> tuple[int, int]:
    """(SM count, compute capability ``major * 10 + minor``) of a tensor's device, each queried once per
    device (host calls, no sync); off CUDA and under the interpreter a stand-in SM count and sm_90."""
    if device.type != "cuda" or triton_interpreted():
        return INTERPRETER_SMS, DEFAULT_ARCH
    index = device.index if device.index is not None else torch.cuda.current_device()
    return sm_count(index), device_arch(index)


def kv_splits(sms: int, interpreted: bool, programs: int, Lq: int, Lk: int, block_n: int) -> int:
    """Flash-decoding heuristic: split the keys when few programs would run (short Lq only), so that
    about four programs per SM run, each over at least ``MIN_SPLIT_BLOCKS`` key blocks."""
    if Lq > SPLIT_MAX_LQ:
        return 1
    if FORCE_KV_SPLITS is not None:
        return max(1, int(FORCE_KV_SPLITS))
    min_blocks = 1 if interpreted else MIN_SPLIT_BLOCKS
    target = 4 * sms
    if programs * 2 > target:
        return 1
    return max(1, min(triton.cdiv(target, programs), triton.cdiv(triton.cdiv(Lk, block_n), min_blocks), MAX_SPLITS))


class Plan(NamedTuple):
    """What the launcher picks for one call: tiles (:func:`launch_config`), KV splits, readout path."""

    R: int
    block_d: int
    cfg: dict
    row_blocks: int
    splits: int
    split_len: int
    reg_groups: bool  # per-group sums in registers (num_groups <= MAX_REG_GROUPS, D <= 128)
    stats: bool  # many groups: the main pass stores lse/delta, the score-only pass reads out the mass
    mass_cfg: dict  # warps and stages of the score-only pass (mass_launch_options)


def plan(q_shape, Hkv: int, Lk: int, elem: int, sms: int, interpreted: bool, grouped: bool, num_groups: int,
         return_mass: bool, target: bool = False, arch: int = DEFAULT_ARCH) -> Plan:
    """The launch plan of a call with ``q`` of shape [B, Hq, Lq, D] over Hkv heads of Lk keys (``target``:
    a target mass is given) on a GPU of ``sms`` SMs and compute capability ``arch``."""
    B, Hq, Lq, D = q_shape
    R = Hq // Hkv * Lq
    block_d = max(16, triton.next_power_of_2(D))
    # Group sums in registers spill at D = 256 (launch_config): the score-only pass reads them out there.
    reg_groups = return_mass and num_groups <= MAX_REG_GROUPS and block_d <= 128
    cfg = launch_config(R, Lq, block_d, elem, reg_groups, target, arch)
    row_blocks = triton.cdiv(R, cfg["BLOCK_M"])
    splits = 1 if grouped else kv_splits(sms, interpreted, row_blocks * B * Hkv, Lq, Lk, cfg["BLOCK_N"])
    split_len = triton.cdiv(triton.cdiv(Lk, splits), cfg["BLOCK_N"]) * cfg["BLOCK_N"]
    return Plan(R, block_d, cfg, row_blocks, triton.cdiv(Lk, split_len),  # no empty trailing split
                split_len, reg_groups, return_mass and not reg_groups, mass_launch_options(cfg, elem, arch))


def attention_launches(p: Plan, q, k, v, out, mass, part_o, part_lse, stat, key_bias, head_scale, key_start,
                       key_group, target_mass, causal: bool, sm_scale: float, num_groups: int,
                       max_target_bias: float, dot_f32: bool) -> list[Launch]:
    """The main pass, then the merge of the KV splits or the score-only mass pass where ``p`` has them.
    Optional tensors are None when absent (``q`` stands in: the kernel does not read them)."""
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    kb, hs, ks, kg, tm = (t if t is not None else q for t in (key_bias, head_scale, key_start, key_group, target_mass))
    flags = dict(BLOCK_M=p.cfg["BLOCK_M"], BLOCK_N=p.cfg["BLOCK_N"], BLOCK_D=p.block_d, CAUSAL=causal,
                 HAS_BIAS=key_bias is not None,
                 HAS_HEAD_SCALE=head_scale is not None and key_bias is not None,
                 HAS_KEY_START=key_start is not None,
                 PRECISION="ieee" if q.dtype == torch.float32 or dot_f32 else "tf32", DOT_F32=dot_f32)
    warps = dict(num_warps=p.cfg["num_warps"])
    launches = [Launch(_focus_attention_kernel, (p.row_blocks, B * Hkv, p.splits), (
        q, k, v, kb, hs, ks, kg, tm, out, part_o, part_lse, mass, stat,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        Hkv, G, Lq, Lk, D, sm_scale * LOG2E, p.split_len, p.splits, num_groups, max_target_bias,
    ), dict(SPLIT=p.splits > 1, EVEN_D=p.block_d == D, TARGET=target_mass is not None,
            NGP=max(16, triton.next_power_of_2(num_groups)) if p.reg_groups else 0, STATS=p.stats,
            num_stages=p.cfg["num_stages"], **warps, **flags))]
    if p.splits > 1:
        launches.append(Launch(_merge_splits_kernel, (p.R, B * Hkv), (
            part_o, part_lse, out, *out.stride(), Hkv, G, Lq, D, p.splits,
        ), dict(BLOCK_S=MERGE_BLOCK_S, BLOCK_D=p.block_d, num_warps=4)))
    if p.stats:
        launches.append(Launch(_mass_scores_kernel, (p.row_blocks, B * Hkv), (
            q, k, kb, hs, ks, kg, stat, mass, *q.stride(), *k.stride(), Hkv, G, Lq, Lk, D, sm_scale * LOG2E,
            num_groups,
        ), dict(**p.mass_cfg, **flags)))
    return launches


def launch_focus_attention_mass(q, k, v, key_bias, head_scale, key_start, causal: bool, sm_scale: float,
                                key_group, num_groups: int, return_mass: bool, target_mass, max_target_bias: float):
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    if D > MAX_HEAD_DIM:
        raise ValueError(f"q: head dim D={D} > {MAX_HEAD_DIM} is not supported by the triton backend")
    out = torch.empty_like(q)
    mass = torch.zeros(B, Hq, Lq, num_groups if return_mass else 0, device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, mass
    if Lk == 0:
        return out.zero_(), mass
    interpreted = q.device.type != "cuda" or triton_interpreted()
    sms, arch = _device(q.device)
    p = plan(q.shape, Hkv, Lk, q.element_size(), sms, interpreted, key_group is not None, num_groups, return_mass,
             target_mass is not None, arch)
    f32 = dict(device=q.device, dtype=torch.float32)
    part_o = torch.empty(B * Hkv * p.splits * p.R * p.block_d, **f32) if p.splits > 1 else out  # unused if 1
    part_lse = torch.empty(B * Hkv * p.splits * p.R, **f32) if p.splits > 1 else out
    stat = torch.empty(B * Hkv * p.R * 2, **f32) if p.stats else out
    optional = (t.contiguous() if t is not None else None
                for t in (key_bias, head_scale, key_start, key_group, target_mass))
    # The interpreter multiplies bfloat16 dot operands as raw uint16 (triton 3.6): upcast them there.
    dot_f32 = q.dtype == torch.bfloat16 and triton_interpreted()
    for launch in attention_launches(p, q, k, v, out, mass, part_o, part_lse, stat, *optional, causal, sm_scale,
                                     num_groups, max_target_bias, dot_f32):
        launch()
    return out, mass


def launch_focus_attention(q, k, v, key_bias, head_scale, key_start, causal: bool, sm_scale: float):
    return launch_focus_attention_mass(q, k, v, key_bias, head_scale, key_start, causal, sm_scale,
                                       None, 0, False, None, 0.0)[0]


# Ahead-of-time compilation (focuskern/ops/triton_configs.py): head dims, and one shape per tile size
# launch_config picks -- BLOCK_M 16 (decode, 4 query heads per KV head), 32 (decode, MQA over 32
# heads), 64 (speculative verification of 16 tokens) and 128 (prefill); see launch_config for the rest.
COMPILE_HEAD_DIMS = (64, 80, 128, 256)  # 80: below its block (masked loads along D); D <= 32 is not compiled
COMPILE_SHAPES = (("decode", 1, 32, 8, 16383), ("decode-mqa", 1, 32, 1, 16383), ("verify", 16, 32, 8, 16383),
                  ("prefill", 4096, 32, 8, 4096))  # (name, Lq, Hq, Hkv, Lk); B = 1
COMPILE_SMS = 132  # an H100 SXM / H200: the split-KV heuristic splits the decode shapes
# call -> (causal with key bias, head scale and key start; readout groups; a target): no bias; the bias
# (split-KV where the heuristic splits); + a target over 64 groups in registers (the most accumulators);
# + a target over 1000 groups (stats and the score-only pass); 1000 groups alone (every flag off in the
# score-only pass; the tiles of calls without a target).  D = 80 takes the bias call only (the tiles of
# D = 128; only the loads along D differ).
COMPILE_CALLS = {"plain": (False, 0, False), "bias": (True, 0, False), "mass": (True, MAX_REG_GROUPS, True),
                 "mass-many": (True, 1000, True), "readout-many": (False, 1000, False)}


def compile_launches(arch: int):
    """(label, launch) for every configuration the launcher can pick on compute capability ``arch``: each
    dtype x head dim x shape x call of the constants above (a call with every optional input holds the
    most live values of its path; the flags it sets only add code)."""
    f32, i32 = MockTensor(torch.float32), MockTensor(torch.int32)
    for dtype in DTYPES:
        for D in COMPILE_HEAD_DIMS:
            for shape, Lq, Hq, Hkv, Lk in COMPILE_SHAPES:
                q, kv = MockTensor(dtype, [1, Hq, Lq, D]), MockTensor(dtype, [1, Hkv, Lk, D])
                for call, (biased, groups, target) in COMPILE_CALLS.items():
                    if D == 80 and call != "bias":
                        continue
                    p = plan(q.shape, Hkv, Lk, dtype.itemsize, COMPILE_SMS, False, groups > 0, groups, groups > 0,
                             target, arch)
                    opt = (f32, f32, i32) if biased else (None, None, None)
                    grouped = (i32 if groups else None, f32 if target else None)
                    for launch in attention_launches(p, q, kv, kv, q, f32, f32, f32, f32, *opt, *grouped, biased,
                                                     D ** -0.5, groups, 10.0, False):
                        yield f"{dtype_name(dtype)} D={D} {shape} {call}", launch


focus_attention_op = define_op("focus_attention_triton", FOCUS_ATTENTION_SCHEMA, launch_focus_attention,
                               focus_attention_fake)
focus_attention_mass_op = define_op("focus_attention_triton_mass", FOCUS_ATTENTION_MASS_SCHEMA,
                                    launch_focus_attention_mass, focus_attention_mass_fake)

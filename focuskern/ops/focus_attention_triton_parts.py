"""Triton pieces of ``focus_attention`` beside its main kernel (:mod:`.focus_attention_triton`): the row
tile every attention program starts from, the merge of split-KV partial outputs, and the score-only
pass that reads out the mass of many key groups (``G > MAX_REG_GROUPS``)."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _row_tile(
    q_ptr, hs_ptr, ks_ptr, stride_qb, stride_qh, stride_qm, stride_qd, pid_m, b, hkv, G, Lq, Lk, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, HAS_HEAD_SCALE: tl.constexpr,
    HAS_KEY_START: tl.constexpr, DOT_F32: tl.constexpr,
):
    """The rows of program ``pid_m`` (row ``r = i * G + g`` is query ``i`` of head ``hkv * G + g``): their
    queries, base-2 head scales, positions, and the tile's visible key range ``[key_lo, hi)`` plus
    ``full_hi`` (keys below it are seen by every row of the tile)."""
    R = G * Lq
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < R
    qi = offs_m // G
    head = hkv * G + offs_m % G
    rows_pos = (Lk - Lq) + qi  # absolute position of each row's query
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_rows = q_ptr + b.to(tl.int64) * stride_qb + head.to(tl.int64) * stride_qh + qi.to(tl.int64) * stride_qm
    q = tl.load(q_rows[:, None] + offs_d[None, :] * stride_qd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    hs2 = tl.full([BLOCK_M], 1.4426950408889634, tl.float32)
    if HAS_HEAD_SCALE:
        hs2 = tl.load(hs_ptr + head, mask=row_ok, other=0.0) * 1.4426950408889634
    key_lo = 0
    if HAS_KEY_START:
        key_lo = tl.load(ks_ptr + b)
    i_first = (pid_m * BLOCK_M) // G
    i_last = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // G, Lq - 1)
    if CAUSAL:
        hi = tl.minimum(Lk, (Lk - Lq) + i_last + 1)
        full_hi = (Lk - Lq) + i_first + 1  # seen by the tile's first row
    else:
        hi = Lk
        full_hi = Lk
    return offs_m, row_ok, qi, head, rows_pos, offs_d, d_ok, q, hs2, key_lo, hi, full_hi


@triton.jit
def _mass_scores_kernel(
    q_ptr, k_ptr, kb_ptr, hs_ptr, ks_ptr, kg_ptr, stat_ptr, mass_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    Hkv, G, Lq, Lk, D, qk_scale, num_groups,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_HEAD_SCALE: tl.constexpr, HAS_KEY_START: tl.constexpr,
    PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):
    """Readout of many groups: ``mass[row, key_group[j]] += exp2(s2[j] + delta2 [group 0] - lse2)`` over the
    row's visible keys (scores only, no V), with the row's final lse2/delta2 from the main pass."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // Hkv
    hkv = pid_bh % Hkv
    R = G * Lq
    offs_m, row_ok, qi, head, rows_pos, offs_d, d_ok, q, hs2, key_lo, hi, full_hi = _row_tile(
        q_ptr, hs_ptr, ks_ptr, stride_qb, stride_qh, stride_qm, stride_qd, pid_m, b, hkv, G, Lq, Lk, D,
        BLOCK_M, BLOCK_D, CAUSAL, HAS_HEAD_SCALE, HAS_KEY_START, DOT_F32)
    b64 = b.to(tl.int64)
    k_base = k_ptr + b64 * stride_kb + hkv.to(tl.int64) * stride_kh
    stat = (pid_bh.to(tl.int64) * R + offs_m) * 2
    lse = tl.load(stat_ptr + stat, mask=row_ok, other=float("inf"))
    delta2 = tl.load(stat_ptr + stat + 1, mask=row_ok, other=0.0)
    m_rows = ((b64 * (Hkv * G) + head) * Lq + qi) * num_groups
    for n0 in range((key_lo // BLOCK_N) * BLOCK_N, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < Lk
        k = tl.load(k_base + offs_n[None, :].to(tl.int64) * stride_kn + offs_d[:, None] * stride_kd,
                    mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
        s = tl.dot(q, k, input_precision=PRECISION) * qk_scale
        if HAS_BIAS:
            s += hs2[:, None] * tl.load(kb_ptr + b64 * Lk + offs_n, mask=n_ok, other=0.0)[None, :]
        kg = tl.load(kg_ptr + b64 * Lk + offs_n, mask=n_ok, other=-1)
        s += tl.where(kg[None, :] == 0, delta2[:, None], 0.0)
        keep = (offs_n[None, :] >= key_lo) & (kg[None, :] >= 0) & row_ok[:, None]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= rows_pos[:, None])
        p = tl.exp2(tl.where(keep, s, float("-inf")) - lse[:, None])
        tl.atomic_add(mass_ptr + m_rows[:, None] + tl.where(keep, kg[None, :], 0), p, mask=keep)


@triton.jit
def _merge_splits_kernel(
    part_o_ptr, part_lse_ptr, out_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    Hkv, G, Lq, D, n_splits,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[row] = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M), M = max_s lse_s (zeros if every split is
    empty for the row)."""
    r = tl.program_id(0)
    pid_bh = tl.program_id(1)
    R = G * Lq
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < n_splits
    parts = pid_bh.to(tl.int64) * n_splits + offs_s
    lse = tl.load(part_lse_ptr + parts * R + r, mask=s_ok, other=float("-inf"))
    m = tl.max(lse, 0)
    w = tl.where(lse == float("-inf"), 0.0, tl.exp2(lse - tl.where(m == float("-inf"), 0.0, m)))
    o = tl.load(part_o_ptr + (parts[:, None] * R + r) * BLOCK_D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    total = tl.sum(w, 0)
    res = tl.sum(w[:, None] * o, 0) / tl.where(total > 0, total, 1.0)
    b = pid_bh // Hkv
    head = (pid_bh % Hkv) * G + r % G
    o_row = out_ptr + b.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh + (r // G).to(tl.int64) * stride_om
    tl.store(o_row + offs_d * stride_od, res.to(out_ptr.dtype.element_ty), mask=offs_d < D)

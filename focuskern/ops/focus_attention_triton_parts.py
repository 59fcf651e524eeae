"""Triton pieces of ``focus_attention`` beside its main kernel (:mod:`.focus_attention_triton`): the row
tile every attention program starts from, the online-softmax update over a range of key blocks, the merge of split-KV partial outputs, and the score-only
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
def _attend_blocks(
    acc, l_i, m_i, acc0, l0, m0, macc, q, hs2, rows_pos,
    k_base, v_base, kb_base, kg_base, stride_kn, stride_kd, stride_vn, stride_vd,
    offs_d, d_ok, key_lo, Lk, qk_scale, start, stop,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    EVEN_D: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    TARGET: tl.constexpr, NGP: tl.constexpr,
):
    """Online-softmax update of (acc, l, m) with key blocks ``start, start + BLOCK_N, ... < stop``; with
    ``TARGET`` (acc, l, m) cover the keys outside group 0 and (acc0, l0, m0) group 0, with its own max;
    with ``NGP > 0`` also the per-group sums ``macc`` (of the keys in acc).

    ``MASKED=False`` blocks are visible to every row of the tile (no bound checks at all)."""
    for n0 in range(start, stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[None, :].to(tl.int64) * stride_kn + offs_d[:, None] * stride_kd
        v_ptrs = v_base + offs_n[:, None].to(tl.int64) * stride_vn + offs_d[None, :] * stride_vd
        if MASKED:
            n_ok = offs_n < Lk
            if EVEN_D:
                k = tl.load(k_ptrs, mask=n_ok[None, :], other=0.0)
                v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
            else:
                k = tl.load(k_ptrs, mask=n_ok[None, :] & d_ok[:, None], other=0.0)
                v = tl.load(v_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        else:
            if EVEN_D:
                k = tl.load(k_ptrs)
                v = tl.load(v_ptrs)
            else:
                k = tl.load(k_ptrs, mask=d_ok[:, None], other=0.0)
                v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        if DOT_F32:  # interpreter: bf16 operands (exact in float32; products are exact either way)
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k, input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N], base-2 units
        if HAS_BIAS:
            if MASKED:
                kb = tl.load(kb_base + offs_n, mask=n_ok, other=0.0)
            else:
                kb = tl.load(kb_base + offs_n)
            s += hs2[:, None] * kb[None, :]
        if MASKED:
            visible = (offs_n[None, :] >= key_lo) & n_ok[None, :]
            if CAUSAL:
                visible = visible & (offs_n[None, :] <= rows_pos[:, None])
            s = tl.where(visible, s, float("-inf"))
        if TARGET or NGP > 0:
            if MASKED:
                kg = tl.load(kg_base + offs_n, mask=n_ok, other=-1)
            else:
                kg = tl.load(kg_base + offs_n)
        if TARGET:  # two running maxes: group 0's P is never rounded relative to the other keys' max
            in0 = kg[None, :] == 0
            m_new = tl.maximum(m_i, tl.max(tl.where(in0, float("-inf"), s), 1))
            m0_new = tl.maximum(m0, tl.max(tl.where(in0, s, float("-inf")), 1))
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing of the part seen yet
            shift0 = tl.where(m0_new == float("-inf"), 0.0, m0_new)
            p_all = tl.exp2(s - tl.where(in0, shift0[:, None], shift[:, None]))
            p = tl.where(in0, 0.0, p_all)
            p0 = tl.where(in0, p_all, 0.0)
            alpha0 = tl.exp2(m0 - shift0)
            l0 = l0 * alpha0 + tl.sum(p0, 1)
            p0 = p0.to(k_base.dtype.element_ty)
            if DOT_F32:
                p0 = p0.to(tl.float32)
            acc0 = tl.dot(p0, v, acc0 * alpha0[:, None], input_precision=PRECISION)
            m0 = m0_new
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            if MASKED:
                shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
            else:
                shift = m_new
            p = tl.exp2(s - shift[:, None])
        alpha = tl.exp2(m_i - shift)
        l_i = l_i * alpha + tl.sum(p, 1)
        if NGP > 0:  # per-group sums of the float32 weights: p @ onehot(key_group)
            onehot = (kg[:, None] == tl.arange(0, NGP)[None, :]).to(tl.float32)
            macc = tl.dot(p, onehot, macc * alpha[:, None], input_precision="ieee")
        p = p.to(k_base.dtype.element_ty)  # P is rounded to the input dtype, as on the GPU
        if DOT_F32:
            p = p.to(tl.float32)
        acc = tl.dot(p, v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i, acc0, l0, m0, macc


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
    empty for the row).  The splits are read ``BLOCK_S`` at a time, so one compiled kernel serves every
    split count (the count grows with the keys during a decode)."""
    r = tl.program_id(0)
    pid_bh = tl.program_id(1)
    R = G * Lq
    offs_d = tl.arange(0, BLOCK_D)
    first = pid_bh.to(tl.int64) * n_splits
    m = tl.full([BLOCK_S], float("-inf"), tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        m = tl.maximum(m, tl.load(part_lse_ptr + (first + offs_s) * R + r, mask=offs_s < n_splits, other=float("-inf")))
    top = tl.max(m, 0)
    top = tl.where(top == float("-inf"), 0.0, top)
    total = tl.zeros([BLOCK_S], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        s_ok = offs_s < n_splits
        lse = tl.load(part_lse_ptr + (first + offs_s) * R + r, mask=s_ok, other=float("-inf"))
        w = tl.where(lse == float("-inf"), 0.0, tl.exp2(lse - top))
        o = tl.load(part_o_ptr + ((first + offs_s)[:, None] * R + r) * BLOCK_D + offs_d[None, :], mask=s_ok[:, None],
                    other=0.0)
        total += w
        acc += tl.sum(w[:, None] * o, 0)
    total_all = tl.sum(total, 0)
    res = acc / tl.where(total_all > 0, total_all, 1.0)
    b = pid_bh // Hkv
    head = (pid_bh % Hkv) * G + r % G
    o_row = out_ptr + b.to(tl.int64) * stride_ob + head.to(tl.int64) * stride_oh + (r // G).to(tl.int64) * stride_om
    tl.store(o_row + offs_d * stride_od, res.to(out_ptr.dtype.element_ty), mask=offs_d < D)

"""PyTorch backend (the reference) of ``focus_attention``: float32 math on any device.

GQA by viewing the ``Hq`` query heads as ``[Hkv, G]`` (query head ``h`` uses KV head ``h // G``), so
K/V are never repeated.  The scores of a chunk of queries are materialized ([B, Hq, chunk, Lk] float32,
chunked so that one chunk stays under ``MAX_SCORE_ELEMENTS``), with a [B, 1, 1, chunk, Lk] boolean
visibility mask: this backend is the reference and the CPU fallback, the Triton kernels never build
Lq x Lk tensors.

Groups: the chunk's unnormalized weights ``p = exp(s - m)`` give ``l0`` (group 0) and ``l`` (all) as row
sums, hence ``mu = l0 / l`` and ``delta``; group 0's weights are multiplied by ``e^delta`` in place
and the mass is a scatter-add of ``p / l'`` over the key groups -- still one chunk x Lk of scores.
"""
from __future__ import annotations

import torch

from ._registry import define_op
from .focus_attention import (FOCUS_ATTENTION_MASS_SCHEMA, FOCUS_ATTENTION_SCHEMA, focus_attention_fake,
                              focus_attention_mass_fake, visible_mask)

MAX_SCORE_ELEMENTS = 1 << 26  # 256 MiB of float32 scores per query chunk


def target_delta(l0: torch.Tensor, l_all: torch.Tensor, target: torch.Tensor, cap: float) -> torch.Tensor:
    """``min(cap, max(0, logit(p) - logit(mu)))`` with ``mu = l0 / l_all``; 0 where ``mu = 0``, ``p = 0``
    or ``mu = 1`` (broadcasting shapes; ``log(p/(1-p)) - log(l0/lr)``, computed without dividing by 0)."""
    rest = l_all - l0
    ok = (l0 > 0) & (rest > 0) & (target > 0)
    one = torch.ones_like(l0)
    delta = (torch.log(torch.where(ok, target, 0.5) / (1 - target)) - torch.log(torch.where(ok, l0, one))
             + torch.log(torch.where(ok, rest, one)))
    return torch.where(ok, delta.clamp(0.0, cap), 0.0)


def focus_attention_mass_reference(q, k, v, key_bias, head_scale, key_start, causal: bool, sm_scale: float,
                                   key_group, num_groups: int, return_mass: bool, target_mass,
                                   max_target_bias: float):
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    out = torch.empty_like(q)
    mass = torch.zeros(B, Hq, Lq, num_groups if return_mass else 0, device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, mass
    if Lk == 0:
        return out.zero_(), mass
    kf = k.float()[:, :, None]  # [B, Hkv, 1, Lk, D]
    vf = v.float()[:, :, None]
    bias = None
    if key_bias is not None:
        hs = torch.ones(Hq, device=q.device) if head_scale is None else head_scale.float()
        bias = hs.view(1, Hkv, G, 1, 1) * key_bias.float().view(B, 1, 1, 1, Lk)  # [B, Hkv, G, 1, Lk]
    in0 = target = index = None
    if key_group is not None:
        grp = key_group.long().view(B, 1, 1, 1, Lk)
        in0 = grp == 0
        # Keys in no group go to an extra column, dropped at the end.
        index = grp.masked_fill(grp < 0, num_groups)
    if target_mass is not None:
        target = target_mass.float().view(1, Hkv, G, 1, 1)
    chunk = max(1, MAX_SCORE_ELEMENTS // max(1, B * Hq * Lk))
    for lo in range(0, Lq, chunk):
        hi = min(Lq, lo + chunk)
        qf = q[:, :, lo:hi].float().view(B, Hkv, G, hi - lo, D)
        # In place on the one score tensor: fresh [B, Hq, chunk, Lk] temporaries per step cost 3-4x the
        # time on CPU (allocation and page faults), for bit-identical results.
        s = torch.matmul(qf, kf.transpose(-1, -2)).mul_(sm_scale)  # [B, Hkv, G, n, Lk]
        if bias is not None:
            s.add_(bias)
        s.masked_fill_(~visible_mask(B, Lq, Lk, lo, hi, causal, key_start, q.device), float("-inf"))
        m = s.amax(dim=-1, keepdim=True)
        m.masked_fill_(torch.isinf(m), 0.0)  # rows without a visible key
        p = s.sub_(m).exp_()
        denom = p.sum(dim=-1, keepdim=True)
        if target is not None:
            l0 = torch.where(in0, p, 0.0).sum(dim=-1, keepdim=True)
            grow = target_delta(l0, denom, target, max_target_bias).exp_()  # e^delta, [B, Hkv, G, n, 1]
            p = torch.where(in0, p * grow, p)
            denom = denom + l0 * (grow - 1)
        denom.masked_fill_(denom == 0, 1.0)
        if return_mass:
            share = torch.zeros(B, Hkv, G, hi - lo, num_groups + 1, device=q.device)
            share.scatter_add_(-1, index.expand(B, Hkv, G, hi - lo, Lk), p)
            mass[:, :, lo:hi] = share[..., :num_groups].div_(denom).view(B, Hq, hi - lo, num_groups)
        o = torch.matmul(p, vf).div_(denom)
        out[:, :, lo:hi] = o.view(B, Hq, hi - lo, D).to(q.dtype)
    return out, mass


def focus_attention_reference(q, k, v, key_bias, head_scale, key_start, causal: bool, sm_scale: float):
    return focus_attention_mass_reference(q, k, v, key_bias, head_scale, key_start, causal, sm_scale,
                                          None, 0, False, None, 0.0)[0]


focus_attention_op = define_op("focus_attention_torch", FOCUS_ATTENTION_SCHEMA, focus_attention_reference,
                               focus_attention_fake)
focus_attention_mass_op = define_op("focus_attention_torch_mass", FOCUS_ATTENTION_MASS_SCHEMA,
                                    focus_attention_mass_reference, focus_attention_mass_fake)

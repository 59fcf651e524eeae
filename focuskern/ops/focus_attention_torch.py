"""PyTorch backend (the reference) of ``focus_attention``: float32 math on any device.

GQA by viewing the ``Hq`` query heads as ``[Hkv, G]`` (query head ``h`` uses KV head ``h // G``), so
K/V are never repeated.  The scores of a chunk of queries are materialized ([B, Hq, chunk, Lk] float32,
chunked so that one chunk stays under ``MAX_SCORE_ELEMENTS``), with a [B, 1, 1, chunk, Lk] boolean
visibility mask: this backend is the reference and the CPU fallback, the Triton kernels never build
Lq x Lk tensors.
"""
from __future__ import annotations

import torch

from ._registry import define_op
from .focus_attention import FOCUS_ATTENTION_SCHEMA, focus_attention_fake, visible_mask

MAX_SCORE_ELEMENTS = 1 << 26  # 256 MiB of float32 scores per query chunk


def focus_attention_reference(q, k, v, key_bias, head_scale, key_start, causal: bool, sm_scale: float):
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    out = torch.empty_like(q)
    if out.numel() == 0:
        return out
    if Lk == 0:
        return out.zero_()
    kf = k.float()[:, :, None]  # [B, Hkv, 1, Lk, D]
    vf = v.float()[:, :, None]
    bias = None
    if key_bias is not None:
        hs = torch.ones(Hq, device=q.device) if head_scale is None else head_scale.float()
        bias = hs.view(1, Hkv, G, 1, 1) * key_bias.float().view(B, 1, 1, 1, Lk)  # [B, Hkv, G, 1, Lk]
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
        o = torch.matmul(p, vf).div_(denom.masked_fill_(denom == 0, 1.0))
        out[:, :, lo:hi] = o.view(B, Hq, hi - lo, D).to(q.dtype)
    return out


focus_attention_op = define_op("focus_attention_torch", FOCUS_ATTENTION_SCHEMA, focus_attention_reference,
                               focus_attention_fake)

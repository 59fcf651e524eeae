"""Public entry point of the attention-focus op: attention with a per-key additive bias in the scores.

For batch ``b``, query head ``h`` (KV head ``h // (Hq // Hkv)``), query ``i`` and key ``j``::

    s[b, h, i, j] = sm_scale * <q[b, h, i], k[b, h // G, j]> + head_scale[h] * key_bias[b, j]
    visible(b, i, j) = key_start[b] <= j  and  (not causal  or  j <= Lk - Lq + i)
    out[b, h, i]   = sum_j softmax_j(s[b, h, i, j] over visible j) * v[b, h // G, j]

with ``G = Hq // Hkv``.  Query ``i`` sits at absolute position ``Lk - Lq + i`` (bottom-right aligned
causal mask: decode with ``Lq = 1`` sees every key); a query with no visible key outputs zeros.
``key_bias`` is in natural-log units: a bias ``beta`` multiplies the key's unnormalized attention
weight by ``e^beta`` (PASTA's post-softmax scaling by ``alpha`` off the emphasized set equals
``key_bias = -log(alpha)`` on the emphasized keys).  GPU kernels never build anything of size Lq x Lk.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from .dispatch import op_name
from ._checks import check_tensor, check_values

ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Shared by every backend's registered op ``focuskern::focus_attention_<backend>``.
FOCUS_ATTENTION_SCHEMA = ("(Tensor q, Tensor k, Tensor v, Tensor? key_bias, Tensor? head_scale, "
                          "Tensor? key_start, bool causal, float sm_scale) -> Tensor")


def focus_attention_fake(q, k, v, key_bias, head_scale, key_start, causal, sm_scale):
    """Result metadata for tracing; every backend returns ``torch.empty_like(q)`` filled in."""
    return torch.empty_like(q)


def visible_mask(B, Lq, Lk, q_lo, q_hi, causal, key_start, device) -> torch.Tensor:
    """[B, 1, 1, q_hi - q_lo, Lk] bool: may query ``i`` (rows ``q_lo:q_hi``) of batch ``b`` see key ``j``."""
    j = torch.arange(Lk, device=device)
    i = torch.arange(q_lo, q_hi, device=device)
    mask = torch.ones(1, q_hi - q_lo, Lk, dtype=torch.bool, device=device)
    if causal:
        mask = mask & (j[None, :] <= (Lk - Lq) + i[:, None])
    if key_start is not None:
        mask = mask & (j[None, None, :] >= key_start.to(device=device, dtype=torch.long)[:, None, None])
    return mask.expand(B, q_hi - q_lo, Lk)[:, None, None]


def _check_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (q's device)")


def validate_focus_attention_args(q, k, v, key_bias=None, head_scale=None, *, causal=True, sm_scale=None,
                                  key_start=None) -> None:
    """Check shapes, dtypes, devices and values; raises ``TypeError``/``ValueError`` naming the argument.

    Reads ``key_bias``, ``head_scale`` and ``key_start`` values, so on CUDA it synchronizes: validate once
    per batch (e.g. when the bias is built), not in every layer of every decoding step.
    """
    check_tensor("q", q, ATTENTION_DTYPES, (None, None, None, None))
    dev = q.device
    B, Hq, Lq, D = q.shape
    check_tensor("k", k, ATTENTION_DTYPES, (None, None, None, None))
    check_tensor("v", v, ATTENTION_DTYPES, (None, None, None, None))
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {str(q.dtype).removeprefix('torch.')}, "
                            f"got {str(t.dtype).removeprefix('torch.')}")
        _check_device(name, t, dev)
    Hkv, Lk = k.shape[1], k.shape[2]
    check_tensor("k", k, ATTENTION_DTYPES, (B, None, None, D))
    check_tensor("v", v, ATTENTION_DTYPES, tuple(k.shape))
    if D == 0:
        raise ValueError("q: head dim D must be >= 1, got 0")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"k: the number of KV heads Hkv={Hkv} must divide q's number of heads Hq={Hq}")
    if key_bias is not None:
        check_tensor("key_bias", key_bias, (torch.float32,), (B, Lk))
        _check_device("key_bias", key_bias, dev)
        check_values("key_bias", torch.isfinite(key_bias), "must be finite (NaN and +-inf are rejected)")
    if head_scale is not None:
        check_tensor("head_scale", head_scale, (torch.float32,), (Hq,))
        _check_device("head_scale", head_scale, dev)
        check_values("head_scale", torch.isfinite(head_scale), "must be finite (NaN and +-inf are rejected)")
    if key_start is not None:
        check_tensor("key_start", key_start, (torch.int32,), (B,))
        _check_device("key_start", key_start, dev)
        check_values("key_start", (key_start >= 0) & (key_start <= Lk), f"must lie in [0, Lk={Lk}]")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if sm_scale is not None:
        if isinstance(sm_scale, bool) or not isinstance(sm_scale, numbers.Real):
            raise TypeError(f"sm_scale must be a real number or None, got {type(sm_scale).__name__}")
        if not math.isfinite(sm_scale):
            raise ValueError(f"sm_scale must be finite, got {sm_scale}")


def focus_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_bias: Optional[torch.Tensor] = None,
    head_scale: Optional[torch.Tensor] = None,
    *,
    causal: bool = True,
    sm_scale: Optional[float] = None,
    key_start: Optional[torch.Tensor] = None,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """Scaled dot-product attention with a per-key bias ``head_scale[h] * key_bias[b, j]`` in the scores.

    ``out = softmax(sm_scale * q @ k^T + head_scale[h] * key_bias[b, j] + mask) @ v`` (see the module
    docstring for the exact mask); GQA/MQA without repeating ``k``/``v``.

    Parameters
    ----------
    q : [B, Hq, Lq, D] float32 / float16 / bfloat16 (any strides).
    k, v : [B, Hkv, Lk, D], q's dtype and device, ``Hq % Hkv == 0``.
    key_bias : [B, Lk] float32, finite, natural-log units; ``None`` = no bias.
    head_scale : [Hq] float32, multiplies ``key_bias`` per query head (0 leaves a head untouched);
        ``None`` = 1 for every head.
    causal : query ``i`` (absolute position ``Lk - Lq + i``) sees keys ``j <= Lk - Lq + i``.
    sm_scale : score scale, default ``1 / sqrt(D)``.
    key_start : [B] int32 in ``[0, Lk]``; keys ``j < key_start[b]`` are invisible (left padding).
    backend : ``"auto"``, ``"torch"`` or ``"triton"``.
    validate : check arguments first (reads values: a host sync on CUDA; pass ``False`` in hot loops
        once the inputs are known to be good, and under ``torch.compile``).

    Returns
    -------
    out : [B, Hq, Lq, D] in q's dtype, laid out like ``torch.empty_like(q)``; rows of queries that see
    no key are zero.
    """
    if validate:
        validate_focus_attention_args(q, k, v, key_bias, head_scale, causal=causal, sm_scale=sm_scale,
                                      key_start=key_start)
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    # op_name registers the backend and spells op names the mutating way ("<family>_<backend>_"); this
    # op is functional, so its registered name has no trailing underscore.
    op = getattr(torch.ops.focuskern, op_name("focus_attention", backend, q.device).removesuffix("_"))
    return op(q, k, v, key_bias, head_scale, key_start, causal, scale)

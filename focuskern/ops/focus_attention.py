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

Readout and target mass (``key_group`` [B, Lk] int32 in ``[-1, num_groups)``, -1 = in no group)::

    mu[b, h, i]   = sum_{visible j, group 0} softmax_j(s) ,   p_h = target_mass[h] in [0, 1)
    delta[b,h,i]  = min(max_target_bias, max(0, logit(p_h) - logit(mu)))   (0 where mu = 0 or p_h = 0)
    s'            = s + delta * [key_group[b, j] == 0]          (the steered share of group 0 is max(mu, p_h))
    mass[b,h,i,g] = sum_{visible j, group g} softmax_j(s')      [B, Hq, Lq, G] float32

computed in one pass: with split running sums of the online softmax, ``l0, A0`` over group 0 and
``lr, Ar`` over the other visible keys, ``mu = l0 / (l0 + lr)`` and
``out = (e^delta A0 + Ar) / (e^delta l0 + lr)`` -- no second attention pass for any delta.
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
# ``focuskern::focus_attention_<backend>_mass``: the same op with groups, readout and target mass.  A
# second op (not optional outputs on the first) keeps one fixed return type per schema for tracing.
FOCUS_ATTENTION_MASS_SCHEMA = ("(Tensor q, Tensor k, Tensor v, Tensor? key_bias, Tensor? head_scale, "
                               "Tensor? key_start, bool causal, float sm_scale, Tensor? key_group, "
                               "int num_groups, bool return_mass, Tensor? target_mass, float max_target_bias) "
                               "-> (Tensor, Tensor)")


def focus_attention_fake(q, k, v, key_bias, head_scale, key_start, causal, sm_scale):
    """Result metadata for tracing; every backend returns ``torch.empty_like(q)`` filled in."""
    return torch.empty_like(q)


def focus_attention_mass_fake(q, k, v, key_bias, head_scale, key_start, causal, sm_scale, key_group,
                              num_groups, return_mass, target_mass, max_target_bias):
    """``(empty_like(q), mass)``: mass [B, Hq, Lq, num_groups] float32 (``num_groups = 0`` when
    ``return_mass`` is false)."""
    B, Hq, Lq, _ = q.shape
    return torch.empty_like(q), q.new_empty(B, Hq, Lq, num_groups if return_mass else 0, dtype=torch.float32)


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
                                  key_start=None, key_group=None, num_groups=None, return_mass=False,
                                  target_mass=None, max_target_bias=20.0) -> None:
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
    _validate_groups(B, Hq, Lk, dev, key_group, num_groups, return_mass, target_mass, max_target_bias)


def _validate_groups(B, Hq, Lk, dev, key_group, num_groups, return_mass, target_mass, max_target_bias) -> None:
    if not isinstance(return_mass, bool):
        raise TypeError(f"return_mass must be a bool, got {type(return_mass).__name__}")
    if key_group is None:
        if return_mass or target_mass is not None:
            raise ValueError("key_group: return_mass and target_mass need key_group (and num_groups)")
        if num_groups is not None:
            raise ValueError("num_groups: given without key_group")
    else:
        if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral):
            raise TypeError(f"num_groups must be an int when key_group is given, got {type(num_groups).__name__}")
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        check_tensor("key_group", key_group, (torch.int32,), (B, Lk))
        _check_device("key_group", key_group, dev)
        check_values("key_group", (key_group >= -1) & (key_group < num_groups),
                     f"must lie in [-1, num_groups={num_groups})")
    if target_mass is not None:
        check_tensor("target_mass", target_mass, (torch.float32,), (Hq,))
        _check_device("target_mass", target_mass, dev)
        check_values("target_mass", (target_mass >= 0) & (target_mass < 1), "must lie in [0, 1)")
    if isinstance(max_target_bias, bool) or not isinstance(max_target_bias, numbers.Real):
        raise TypeError(f"max_target_bias must be a real number, got {type(max_target_bias).__name__}")
    if not (math.isfinite(max_target_bias) and max_target_bias >= 0):
        raise ValueError(f"max_target_bias must be finite and >= 0, got {max_target_bias}")


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
    key_group: Optional[torch.Tensor] = None,
    num_groups: Optional[int] = None,
    return_mass: bool = False,
    target_mass: Optional[torch.Tensor] = None,
    max_target_bias: float = 20.0,
    backend: str = "auto",
    validate: bool = True,
):
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
    key_group : [B, Lk] int32 in ``[-1, num_groups)`` (-1: in no group); needed by the two below.
    num_groups : G >= 1 (may be as large as Lk, e.g. one group per key for a decode step's map).
    return_mass : also return ``mass`` [B, Hq, Lq, G] float32, the share of each query's attention on the
        visible keys of each group, after every bias (target steering included).
    target_mass : [Hq] float32 in ``[0, 1)``: raise group 0's share to at least ``target_mass[h]`` by
        ``delta = min(max_target_bias, max(0, logit(p_h) - logit(mu)))`` on its keys (module docstring);
        0 leaves a head alone.
    max_target_bias : cap on ``delta`` (natural-log units, >= 0).
    backend : ``"auto"``, ``"torch"`` or ``"triton"``.
    validate : check arguments first (reads values: a host sync on CUDA; pass ``False`` in hot loops
        once the inputs are known to be good, and under ``torch.compile``).

    Returns
    -------
    out : [B, Hq, Lq, D] in q's dtype, laid out like ``torch.empty_like(q)``; rows of queries that see
    no key are zero.  With ``return_mass``: ``(out, mass)`` (mass rows of such queries are zero too).
    """
    if validate:
        validate_focus_attention_args(q, k, v, key_bias, head_scale, causal=causal, sm_scale=sm_scale,
                                      key_start=key_start, key_group=key_group, num_groups=num_groups,
                                      return_mass=return_mass, target_mass=target_mass,
                                      max_target_bias=max_target_bias)
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    # op_name registers the backend and spells op names the mutating way ("<family>_<backend>_"); this
    # op is functional, so its registered name has no trailing underscore.
    name = op_name("focus_attention", backend, q.device).removesuffix("_")
    if key_group is None:
        return getattr(torch.ops.focuskern, name)(q, k, v, key_bias, head_scale, key_start, causal, scale)
    out, mass = getattr(torch.ops.focuskern, name + "_mass")(
        q, k, v, key_bias, head_scale, key_start, causal, scale, key_group, int(num_groups), return_mass,
        target_mass, float(max_target_bias))
    return (out, mass) if return_mass else out

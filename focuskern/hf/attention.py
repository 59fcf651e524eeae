"""Hugging Face drop-in for attention focus: ``attn_implementation="focus"`` and :func:`attention_focus`.

Importing this module registers an attention function and its mask function under the name ``"focus"``
(``transformers.AttentionInterface`` / ``AttentionMaskInterface``)::

    import focuskern.hf.attention                                # registers "focus"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="focus")
    pos = entity_positions(tok, texts, ["Paris"])                # positions in the padded batch
    bias = positions_to_key_bias(pos, inputs["input_ids"].shape[1], beta=2.0)
    with attention_focus(model, key_bias=bias, layers=range(8, 24)):
        model.generate(**inputs)

Every attention layer computes, with ``focuskern.ops.focus_attention``::

    out[b, h, i] = softmax_j(scaling * q[b, h, i] . k[b, h // G, j] + head_scale[h] * bias[b, j] + mask) v

where ``bias[b, j]`` is the ``key_bias`` of the active :func:`attention_focus` block for the prompt's keys
``j < L0`` and a constant for keys generated after it, and ``head_scale`` is 1 on the chosen heads of a
chosen layer and 0 elsewhere (outside a block, or in a layer that is not chosen: no bias at all, and
``"focus"`` computes what ``"sdpa"`` computes).

Masks.  The mask function returns one of three things, so that padding reaches the kernel in O(B)
memory and never as an Lq x Lk tensor in the usual cases:

* ``None``: plain causal attention (query ``i`` at absolute position ``Lk - Lq + i``), no padding;
* ``key_start`` [B] int32: causal attention, keys ``j < key_start[b]`` invisible (left padding) -- the
  2-D padding mask of a dynamic cache had the form ``mask[b, j] = (j >= key_start[b])``;
* a [B, 1, Lq, Lk] bool mask (``transformers``' own ``sdpa_mask``) for everything the kernel cannot
  express: right padding or holes in the 2-D mask, sliding windows, packed sequences, bidirectional
  layers, static caches (whose keys past the current position are empty).  The attention function then
  falls back to float32 SDPA with a float mask that holds the bias (O(Lq x Lk) memory, on any device).

On CUDA the first two go to the Triton kernel for every query length.  On CPU, decoding steps go to
the op's torch backend and prefill (Lq > 1) takes the dense SDPA route too: the torch backend is a
reference that materializes the scores in several passes, 2.5-4x slower than SDPA's fused CPU kernel
at the prompt lengths of ``focuskern eval lost-in-middle``.  Layers that steer by target mass
(``attention_focus(..., target_mass=...)``) or record a readout (:mod:`focuskern.hf.readout`) always go
through the op, prefill included (on CPU its torch backend, chunk x Lk scores at a time, never Lq x Lk).

Checking that a 2-D mask is left padding reads it on the host: one sync per forward pass (not per
layer), as ``transformers``' own ``sdpa`` and flash masks do.  Growing the bias as the cache grows,
and repeating it for beams, happen on the device without syncs.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, sdpa_mask

from ..positions import pasta_head_scale
from ..ops import focus_attention
from ..ops.focus_attention import visible_mask

NAME = "focus"
_STATE = "_focuskern_attention_focus"  # attribute of an attention module while a block is active
READOUT = "_focuskern_attention_readout"  # attribute of an attention module while a readout records it
GENERATED_MODES = ("zero", "boost")
UNSUPPORTED_KWARGS = ("softcap", "s_aux")  # score soft-capping (Gemma 2), attention sinks (gpt-oss)


class LayerFocus(NamedTuple):
    """What an :func:`attention_focus` block sets on one layer: the bias and its head scale, and the
    target (``target`` [Hq] float32 or None) with its span (key group 0, as a grown int32 row)."""
    bias: Optional["KeyRow"]
    head_scale: Optional[torch.Tensor]
    span: Optional["KeyRow"]
    target: Optional[torch.Tensor]


class KeyRow:
    """One value per prompt key, grown to the keys a layer sees: an :func:`attention_focus` block's
    ``key_bias`` (float32), its target span or a readout's key groups (int32).

    Parameters
    ----------
    prompt : [B0, L0] on the model's device, one row per prompt.
    generated : [B0, 1] of prompt's dtype, the value of every key at position ``>= L0`` (generated tokens).
    name : the user's argument it came from (``key_bias``, ``target_keys``, ``key_group``), for errors.

    ``num_beams`` / ``num_return_sequences`` = n turn prompt ``p`` into rows ``p*n .. p*n+n-1``; all rows
    of one prompt get the prompt's bias.  Beam search reorders rows only within a prompt's group, and the
    bias of a generated key does not depend on the token, so the rows of a group stay interchangeable.
    """

    def __init__(self, prompt: torch.Tensor, generated: torch.Tensor, name: str = "key_bias"):
        self.prompt = prompt
        self.generated = generated
        self.name = name
        self._cached: Optional[tuple[int, int, torch.Tensor]] = None

    def __call__(self, rows: int, num_keys: int) -> torch.Tensor:
        """[rows, num_keys] of prompt's dtype; built once per decoding step (shapes are host ints: no sync)."""
        if self._cached is not None and self._cached[:2] == (rows, num_keys):
            return self._cached[2]
        prompts, prompt_len = self.prompt.shape
        if num_keys < prompt_len:
            raise ValueError(f"{self.name}: covers {prompt_len} positions but the model sees {num_keys} keys; "
                             "it must have the padded prompt's length (input_ids.shape[1])")
        if rows % prompts:
            raise ValueError(f"{self.name}: {prompts} rows do not divide the batch of {rows} rows (expected one "
                             "row per prompt; beams/return sequences are expanded automatically)")
        bias = torch.cat([self.prompt, self.generated.expand(prompts, num_keys - prompt_len)], dim=1)
        if rows != prompts:
            bias = bias.repeat_interleave(rows // prompts, dim=0)
        self._cached = (rows, num_keys, bias)
        return bias


def focus_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset: int = 0,
               mask_function=causal_mask_function, attention_mask: Optional[torch.Tensor] = None,
               **kwargs) -> Optional[torch.Tensor]:
    """Mask function of ``"focus"`` (called once per forward pass by ``create_causal_mask`` & co.).

    Parameters
    ----------
    batch_size, q_length, kv_length, q_offset, kv_offset, mask_function : as for ``sdpa_mask``.
    attention_mask : [B, >= kv_offset + kv_length] bool 2-D padding mask, or None.
    **kwargs : forwarded to ``sdpa_mask`` when a dense mask is needed.

    Returns
    -------
    ``None`` (causal, no padding), ``key_start`` [B] int32 (causal + left padding), or a dense
    [B, 1, Lq, Lk] bool mask for any other pattern (see the module docstring).
    """
    # Plain causal over the whole cache: the kernel's bottom-right alignment (query i at Lk - Lq + i)
    # holds when the queries are the last keys, i.e. q_offset + q_length == kv_length.  A static cache
    # passes q_offset as a tensor (to avoid graph breaks) and has empty slots: dense mask.
    if (mask_function is causal_mask_function and kv_offset == 0 and isinstance(q_offset, int)
            and q_offset + q_length == kv_length):
        if attention_mask is None:
            return None
        if attention_mask.shape[-1] == kv_length:
            pad = attention_mask.bool()
            key_start = (~pad).sum(-1, dtype=torch.int32)
            left = torch.arange(kv_length, device=pad.device)[None, :] >= key_start[:, None]
            if bool((pad == left).all()):  # the one host sync per forward pass
                return key_start
    for key in ("allow_is_causal_skip", "allow_is_bidirectional_skip"):
        kwargs.pop(key, None)
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                     allow_is_causal_skip=False, allow_is_bidirectional_skip=False, **kwargs)


def _dense_attention(query, key, value, key_bias, head_scale, mask, scaling) -> torch.Tensor:
    """Fallback for masks the kernel cannot express: float32 SDPA with the bias folded into a float
    [B, H, Lq, Lk] mask (``H`` = 1 unless ``head_scale`` is set); fully masked rows give zeros."""
    B, Hq, Lq, _ = query.shape
    Lk = key.shape[2]
    mask = mask[:, :, :, :Lk]
    add = torch.zeros((), device=query.device)
    if key_bias is not None:
        hs = torch.ones(1, device=query.device) if head_scale is None else head_scale
        add = hs.view(1, -1, 1, 1) * key_bias.view(B, 1, 1, Lk)
    if mask.dtype == torch.bool:
        add = torch.where(mask, add, float("-inf"))
    else:  # a user's additive 4-D mask, passed through by transformers as it is
        add = add + mask.float()
    out = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=add,
                                         scale=scaling, enable_gqa=key.shape[1] != Hq)
    return out.to(query.dtype)


def focus_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                            scaling: Optional[float] = None, is_causal: Optional[bool] = None,
                            **kwargs) -> tuple[torch.Tensor, None]:
    """Attention function of ``"focus"``.

    Parameters
    ----------
    module : the attention layer (its active :func:`attention_focus` state, if any, is read from it).
    query : [B, Hq, Lq, D] after RoPE; key, value : [B, Hkv, Lk, D] after the cache update.
    attention_mask : what :func:`focus_mask` returned (or a user's 4-D mask).
    scaling : score scale (``1/sqrt(D)`` if None).
    is_causal : overrides ``module.is_causal`` when the mask is ``None``/``key_start``.

    Returns
    -------
    (out [B, Lq, Hq, D] contiguous, None) -- attention weights are never materialized.
    """
    if dropout:
        raise ValueError(f"dropout: attention focus has no dropout (got {dropout}); use it in eval mode")
    for name in UNSUPPORTED_KWARGS:
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"{name}: not supported by the focus attention implementation")
    focus = getattr(module, _STATE, None)
    readout = getattr(module, READOUT, None)
    B, _, Lq, _ = query.shape
    rows, Lk = B, key.shape[2]
    key_bias = head_scale = target = key_group = None
    num_groups = 1
    if focus is not None:
        head_scale = focus.head_scale
        key_bias = None if focus.bias is None else focus.bias(rows, Lk)
        if focus.target is not None:
            target, key_group = focus.target, focus.span(rows, Lk)
    record = readout is not None and readout.wants(Lq)
    if record:  # its group 0 is the target's span when both are active (checked when they meet)
        key_group, num_groups = readout.groups(rows, Lk), readout.num_groups
    small = attention_mask is None or (attention_mask.dim() == 1 and attention_mask.dtype == torch.int32)
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    if key_group is not None:
        if not small:
            raise NotImplementedError("attention_mask: target mass and readout need causal attention with "
                                      "at most left padding (the kernel's masks), not a dense mask")
        out = focus_attention(query, key, value, key_bias, head_scale, causal=causal, sm_scale=scaling,
                              key_start=attention_mask, key_group=key_group, num_groups=num_groups,
                              return_mass=record, target_mass=target, validate=False)
        if record:
            out, mass = out
            readout.record(module.layer_idx, mass)
        return out.transpose(1, 2).contiguous(), None
    if small and query.device.type == "cpu" and Lq > 1:
        # CPU prefill: SDPA's fused CPU kernel with the bias in a float mask, rather than the op's torch
        # backend (a reference that materializes the scores in several passes); same formula.
        attention_mask = visible_mask(B, Lq, key.shape[2], 0, Lq, causal, attention_mask, query.device)[:, 0]
        small = False
    if small:
        out = focus_attention(query, key, value, key_bias, head_scale, causal=causal, sm_scale=scaling,
                              key_start=attention_mask, validate=False)
    else:
        out = _dense_attention(query, key, value, key_bias, head_scale, attention_mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def register(name: str = NAME) -> None:
    """Register the attention and mask functions under ``name`` (done for ``"focus"`` on import)."""
    AttentionInterface.register(name, focus_attention_forward)
    AttentionMaskInterface.register(name, focus_mask)


register()


def attention_layers(model: torch.nn.Module) -> dict[int, torch.nn.Module]:
    """``{layer_idx: attention module}``: every submodule whose class name ends in ``Attention`` and that
    carries an int ``layer_idx`` (how transformers' decoder models name their self-attention)."""
    return {m.layer_idx: m for m in model.modules()
            if type(m).__name__.endswith("Attention") and isinstance(getattr(m, "layer_idx", None), int)}


def _head_map(layers, heads, num_layers: int, num_heads: int) -> dict[int, list[int]]:
    """Normalize ``layers`` / ``heads`` to ``{layer: [heads]}`` (see :func:`attention_focus`)."""
    if isinstance(heads, Mapping):
        if layers is not None:
            raise ValueError("layers: give either layers or a {layer: heads} mapping in heads, not both")
        return {int(layer): list(range(num_heads)) if hs is None else [int(h) for h in hs]
                for layer, hs in heads.items()}
    chosen = range(num_layers) if layers is None else layers
    if isinstance(chosen, (str, bytes)) or not isinstance(chosen, Iterable):
        raise TypeError(f"layers must be an iterable of layer indices or None, got {type(layers).__name__}")
    if heads is not None and (isinstance(heads, (str, bytes)) or not isinstance(heads, Iterable)):
        raise TypeError(f"heads must be None, a list of head indices or a {{layer: heads}} mapping, "
                        f"got {type(heads).__name__}")
    row = list(range(num_heads)) if heads is None else [int(h) for h in heads]
    return {int(layer): row for layer in chosen}


def focus_layers(model: torch.nn.Module) -> dict[int, torch.nn.Module]:
    """:func:`attention_layers` of a model that uses ``attn_implementation="focus"`` (else ValueError)."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != NAME:
        raise ValueError(f"model: uses attn_implementation={impl!r}; load it with attn_implementation="
                         f"'{NAME}' (or call model.set_attn_implementation('{NAME}')) after importing "
                         "focuskern.hf.attention")
    modules = attention_layers(model)
    if not modules:
        raise ValueError("model: no attention module with a layer_idx found")
    return modules


def _target(target_mass, target_keys, key_bias, num_heads: int, device) -> tuple[KeyRow, torch.Tensor]:
    """(span as grown int32 groups: 0 on the span, -1 elsewhere and on generated keys; [num_heads] target)."""
    if target_keys is None:
        if key_bias is None:
            raise ValueError("target_keys: needed when target_mass is given without key_bias")
        target_keys = key_bias != 0
    if not isinstance(target_keys, torch.Tensor) or target_keys.dtype != torch.bool or target_keys.dim() != 2:
        raise ValueError("target_keys must be a [batch, prompt_len] bool tensor")
    if key_bias is not None and target_keys.shape != key_bias.shape:
        raise ValueError(f"target_keys: shape {list(target_keys.shape)} differs from key_bias's "
                         f"{list(key_bias.shape)}")
    if isinstance(target_mass, torch.Tensor):
        target = target_mass.detach().to(device=device, dtype=torch.float32).reshape(-1)
        if target.numel() != num_heads:
            raise ValueError(f"target_mass: expected a float or {num_heads} values, got {target.numel()}")
    elif isinstance(target_mass, (int, float)) and not isinstance(target_mass, bool):
        target = torch.full((num_heads,), float(target_mass), device=device)
    else:
        raise TypeError(f"target_mass must be a float or a tensor, got {type(target_mass).__name__}")
    if not bool(((target >= 0) & (target < 1)).all()):
        raise ValueError("target_mass: must lie in [0, 1)")
    groups = torch.where(target_keys.to(device), 0, -1).to(torch.int32)
    return KeyRow(groups, groups.new_full((groups.shape[0], 1), -1), "target_keys"), target


def check_compatible(module: torch.nn.Module) -> None:
    """A layer that both steers by target and records a readout makes one op call whose key group 0 is
    the target's span: the readout's group 0 must be exactly that span (over the prompt)."""
    focus, readout = getattr(module, _STATE, None), getattr(module, READOUT, None)
    if focus is None or focus.target is None or readout is None:
        return
    span, groups = focus.span.prompt, readout.groups.prompt
    if span.shape != groups.shape or not bool(((span == 0) == (groups == 0)).all()):
        raise ValueError("key_group: with target_mass active, the readout's group 0 must be the target's "
                         "span (target_keys) exactly")


def _generated_value(key_bias: torch.Tensor, generated: Union[str, float]) -> torch.Tensor:
    """[B, 1] bias of generated keys: 0 (``"zero"``), the row's largest bias (``"boost"``: PASTA counts
    generated keys as emphasized, so they get ``-log alpha`` like the emphasized ones) or a number."""
    if isinstance(generated, str):
        if generated not in GENERATED_MODES:
            raise ValueError(f"generated must be one of {GENERATED_MODES} or a number, got {generated!r}")
        if generated == "zero":
            return key_bias.new_zeros(key_bias.shape[0], 1)
        return key_bias.amax(dim=1, keepdim=True).clamp_min(0.0)
    if isinstance(generated, bool) or not isinstance(generated, (int, float)) or not math.isfinite(generated):
        raise TypeError(f"generated must be 'zero', 'boost' or a finite number, got {generated!r}")
    return key_bias.new_full((key_bias.shape[0], 1), float(generated))


@contextlib.contextmanager
def attention_focus(model: torch.nn.Module, key_bias: Optional[torch.Tensor] = None, *,
                    layers: Optional[Iterable[int]] = None,
                    heads: Optional[Union[Sequence[int], Mapping[int, Optional[Sequence[int]]]]] = None,
                    generated: Union[str, float] = "zero",
                    target_mass: Optional[Union[float, torch.Tensor]] = None,
                    target_keys: Optional[torch.Tensor] = None):
    """Add ``key_bias`` to the attention scores of the chosen layers/heads while the block is active,
    and/or steer them by target mass.

    Parameters
    ----------
    model : a transformers model loaded (or switched) with ``attn_implementation="focus"``.
    key_bias : [B, L0] float, natural-log units, one row per prompt of the padded batch given to
        ``generate``/``forward`` (``L0`` = ``input_ids.shape[1]``), e.g. from
        :func:`focuskern.positions.positions_to_key_bias` or :func:`~focuskern.positions.pasta_key_bias`.
        Moved to the model's device; ``num_beams``/``num_return_sequences`` rows are handled.
    layers : layer indices that get the bias (None = every layer).
    heads : None (every head of the chosen layers), a list of query heads (in every chosen layer), or
        ``{layer: [heads] or None}`` (PASTA's head set; then ``layers`` must be None).
    generated : bias of keys after the prompt -- ``"zero"`` (entity boost), ``"boost"`` (each row's
        largest bias: PASTA's behaviour, see :func:`focuskern.positions.pasta_focus`) or a number.
    target_mass : a share ``p`` in ``[0, 1)`` (every chosen head) or ``[num_heads]`` per head: in the
        chosen layers/heads the share of attention on ``target_keys`` is raised to at least ``p`` by
        ``delta = min(20, max(0, logit(p) - logit(current share)))`` on those keys, per query
        (``focus_attention``'s ``target_mass``; generated keys are outside the span).
    target_keys : [B, L0] bool, the span; default ``key_bias != 0``.

    Yields
    ------
    The model.  Blocks nest (the inner one wins and the outer one is restored on exit).
    """
    modules = focus_layers(model)
    if key_bias is None and target_mass is None:
        raise ValueError("key_bias: give key_bias, target_mass or both")
    if key_bias is not None:
        if not isinstance(key_bias, torch.Tensor):
            raise TypeError(f"key_bias must be a torch.Tensor, got {type(key_bias).__name__}")
        if key_bias.dim() != 2 or not key_bias.is_floating_point():
            raise ValueError(f"key_bias must be a [batch, prompt_len] float tensor, got {key_bias.dtype} "
                             f"{list(key_bias.shape)}")
        if not bool(torch.isfinite(key_bias).all()):
            raise ValueError("key_bias: must be finite (NaN and +-inf are rejected)")
    device = next(model.parameters()).device
    num_heads = model.config.get_text_config().num_attention_heads
    scales = pasta_head_scale(_head_map(layers, heads, len(modules), num_heads), len(modules), num_heads)
    bias = span = targets = None
    if key_bias is not None:
        key_bias = key_bias.to(device=device, dtype=torch.float32)
        bias = KeyRow(key_bias, _generated_value(key_bias, generated))
    if target_mass is not None:
        span, target = _target(target_mass, target_keys, key_bias, num_heads, device)
        targets = {idx: (target * scales[idx].to(device)) for idx in scales}
    saved = {idx: getattr(m, _STATE, None) for idx, m in modules.items()}
    try:
        for idx, m in modules.items():
            if idx in scales:
                # All heads on: no head_scale (the kernel skips the multiply), same result.
                hs = None if bool(scales[idx].all()) else scales[idx].to(device)
                setattr(m, _STATE, LayerFocus(bias, hs, span, None if targets is None else targets[idx]))
                check_compatible(m)
            else:
                setattr(m, _STATE, None)
        yield model
    finally:
        for idx, m in modules.items():
            setattr(m, _STATE, saved[idx])

"""Attention readout for Hugging Face models: :func:`attention_readout` records, for every chosen layer,
the share of each query's attention on each key group -- ``focus_attention``'s ``mass`` -- for the
prompt and every generated token, without ``output_attentions`` and without any Lq x Lk tensor::

    groups = torch.where(entity_mask, 0, -1).int()                 # [B, L0]: one group, the entity
    with attention_readout(model, groups) as readout:
        model.generate(**inputs, max_new_tokens=20)
    readout.prompt(10)      # [B, Hq, L0, G]  share of each prompt query's attention on each group
    readout.generated(10)   # [B, Hq, T, G]   the same for the T generated tokens that were fed back

``mass[b, h, i, g] = sum_{visible j with key_group[b, j] = g} softmax_j(s[b, h, i, j])``, after every
bias of an active :func:`~focuskern.hf.attention.attention_focus` block (target steering included).
Memory: ``layers x B x heads x (L0 + T) x G`` float32 (O(L) for a fixed number of groups); with one
group per prompt token (``G = L0``, the "where did the answer look" strip) pass ``prompt_rows="none"``
so that only decoding steps (1 query each) are recorded.  Generated keys are in no group.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Optional

import torch

from .attention import READOUT, KeyRow, check_compatible, focus_layers

PROMPT_ROWS = ("all", "last", "none")


class Readout:
    """The masses recorded by one :func:`attention_readout` block.

    ``groups`` grows the prompt's key groups ([B0, L0] int32) to the keys a layer sees (generated keys
    -1); ``steps[layer]`` holds one [B, Hq, rows, G] float32 tensor per forward pass (prefill first)."""

    def __init__(self, key_group: torch.Tensor, num_groups: int, layers: list[int], prompt_rows: str, heads: int):
        self.groups = KeyRow(key_group, key_group.new_full((key_group.shape[0], 1), -1), "key_group")
        self.num_groups = num_groups
        self.heads = heads
        self.prompt_rows = prompt_rows
        self.steps: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def wants(self, Lq: int) -> bool:
        """Record this forward pass?  Prefill (Lq > 1) only unless ``prompt_rows="none"``."""
        return Lq == 1 or self.prompt_rows != "none"

    def record(self, layer: int, mass: torch.Tensor) -> None:
        if mass.shape[2] > 1 and self.prompt_rows == "last":
            mass = mass[:, :, -1:]
        self.steps[layer].append(mass)

    @property
    def layers(self) -> list[int]:
        return sorted(self.steps)

    def prompt(self, layer: int) -> torch.Tensor:
        """[B, Hq, rows, G]: the prefill pass (rows = L0, 1 with ``prompt_rows="last"``)."""
        if self.prompt_rows == "none" or not self.steps[layer]:
            raise ValueError("prompt_rows: the prompt was not recorded")
        return self.steps[layer][0]

    def generated(self, layer: int) -> torch.Tensor:
        """[B, Hq, T, G]: one row per decoding step (the tokens fed back after the prompt)."""
        steps = self.steps[layer][0 if self.prompt_rows == "none" else 1:]
        if not steps:  # the answer ended at its first token: no step was fed back
            return torch.zeros(self.groups.prompt.shape[0], self.heads, 0, self.num_groups)
        return torch.cat(steps, dim=2)

    def stacked(self, part: str = "generated") -> torch.Tensor:
        """[layers, B, Hq, rows, G] of :meth:`generated` or :meth:`prompt` over the recorded layers."""
        fn = self.generated if part == "generated" else self.prompt
        return torch.stack([fn(layer) for layer in self.layers])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for steps in self.steps.values() for t in steps)


@contextlib.contextmanager
def attention_readout(model: torch.nn.Module, key_group: torch.Tensor, num_groups: Optional[int] = None, *,
                      layers: Optional[Iterable[int]] = None, prompt_rows: str = "all"):
    """Record the attention share on each key group in the chosen layers while the block is active.

    Parameters
    ----------
    model : a transformers model with ``attn_implementation="focus"``.
    key_group : [B, L0] integer, one row per prompt of the padded batch, values in ``[-1, G)`` (-1: no
        group); ``num_beams``/``num_return_sequences`` rows are expanded like ``attention_focus``'s bias.
    num_groups : G (default ``key_group.max() + 1``).
    layers : layer indices to record (None = every layer).
    prompt_rows : ``"all"`` (every prompt query), ``"last"`` (the last prompt query: what the first
        generated token saw) or ``"none"`` (decoding steps only; the prompt is then not grouped at all).

    Yields
    ------
    :class:`Readout`.  Combines with :func:`~focuskern.hf.attention.attention_focus` (either nesting);
    with ``target_mass`` active, group 0 must be the target's span.
    """
    modules = focus_layers(model)
    if not isinstance(key_group, torch.Tensor) or key_group.dim() != 2 or key_group.is_floating_point():
        raise ValueError("key_group must be a [batch, prompt_len] integer tensor")
    if prompt_rows not in PROMPT_ROWS:
        raise ValueError(f"prompt_rows: expected one of {PROMPT_ROWS}, got {prompt_rows!r}")
    G = int(key_group.max()) + 1 if num_groups is None else num_groups
    if isinstance(G, bool) or not isinstance(G, int) or G < 1:
        raise ValueError(f"num_groups must be an int >= 1, got {G!r}")
    if key_group.numel() and not bool(((key_group >= -1) & (key_group < G)).all()):
        raise ValueError(f"key_group: values must lie in [-1, num_groups={G})")
    chosen = sorted(modules) if layers is None else sorted({int(layer) for layer in layers})
    if any(layer not in modules for layer in chosen):
        raise ValueError(f"layers: the model has layers 0..{len(modules) - 1}, got {chosen}")
    device = next(model.parameters()).device
    readout = Readout(key_group.to(device=device, dtype=torch.int32), G, chosen, prompt_rows,
                      model.config.num_attention_heads)
    saved = {idx: getattr(m, READOUT, None) for idx, m in modules.items()}
    try:
        for idx in chosen:
            setattr(modules[idx], READOUT, readout)
            check_compatible(modules[idx])
        yield readout
    finally:
        for idx, m in modules.items():
            setattr(m, READOUT, saved[idx])

"""Hugging Face drop-in: :class:`FocusLogitsProcessor`, a ``transformers.LogitsProcessor``.

    proc = FocusLogitsProcessor(FocusSpec(["healthcare", "autonomous driving"]), tokenizer,
                                generation_config=model.generation_config)
    model.generate(**inputs, logits_processor=LogitsProcessorList([proc]))

The attention lever is :mod:`focuskern.hf.attention` (not imported from here).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import torch
from transformers import LogitsProcessor

from ..spec import FocusSpec
from ..state import FocusState


_HASH_BASE = 1_000_003  # odd: multiplication by it is invertible modulo 2^64


def _with_eos(specs: list, generation_config) -> list:
    """``specs`` with ``generation_config.eos_token_id`` (an int, a list or a tensor of ids) filled in
    where a spec has none; errors name ``generation_config`` (or ``eos_token_id``, from the spec)."""
    if generation_config is None:
        return specs
    if not hasattr(generation_config, "eos_token_id"):
        raise TypeError("generation_config must have an eos_token_id (a transformers.GenerationConfig), got "
                        f"{type(generation_config).__name__}")
    eos = generation_config.eos_token_id
    if isinstance(eos, torch.Tensor):
        eos = eos.tolist()
    if isinstance(eos, (list, tuple)) and len(eos) == 1:
        eos = eos[0]
    if eos is None:
        return specs
    return [spec if spec is None or spec.eos_token_id is not None
            else dataclasses.replace(spec, eos_token_id=list(eos) if isinstance(eos, (list, tuple)) else eos)
            for spec in specs]


class FocusLogitsProcessor(LogitsProcessor):
    """Steer ``generate`` toward each row's entities with one :class:`FocusState` launch per step.

    Parameters
    ----------
    spec_or_specs : one :class:`FocusSpec` for every row, or one per prompt (``None`` = untouched).
        With ``num_return_sequences`` / ``num_beams`` = k, prompt ``i`` owns rows ``i*k .. i*k+k-1``.
    tokenizer : tokenizes string entities.
    backend : kernel backend (``"auto"`` picks, per device, the first available of ``cpp``, ``torch`` on
        CPU and ``triton``, ``cuda``, ``torch`` on CUDA: :data:`focuskern.ops.dispatch.AUTO_ORDER`).
    generation_config : the model's ``GenerationConfig`` (``model.generation_config``), or anything with
        an ``eos_token_id``: specs without an ``eos_token_id`` take its end-of-text id(s), an int or a
        list (Qwen2.5 and Llama 3 list several); a spec's own ``eos_token_id`` wins.

    Only tokens generated after the prompt feed the automata.  Beam search reorders rows between
    steps; every step the processor matches each row's generated prefix to the previous step's rows
    (within its prompt's group, on the device, no sync) and lets rows inherit their parents' state.
    Rows are matched by a 64-bit polynomial hash of their generated tokens: O(B·t) to hash, O(B·k)
    to compare within groups of k rows (B x B for one spec broadcast to every row), a few device ops
    on the host whatever B is.  A call whose input is not one token longer than the last one starts a
    new generation.
    """

    def __init__(self, spec_or_specs: Union[FocusSpec, Sequence[Optional[FocusSpec]]], tokenizer=None,
                 *, backend: str = "auto", generation_config=None):
        specs = [spec_or_specs] if isinstance(spec_or_specs, FocusSpec) else list(spec_or_specs)
        for spec in specs:
            if spec is not None and not isinstance(spec, FocusSpec):
                raise TypeError(f"spec_or_specs must hold FocusSpec or None, got {type(spec).__name__}")
        specs = _with_eos(specs, generation_config)
        for spec in specs:
            if spec is not None:
                spec.token_variants(tokenizer)  # tokenization errors surface now, not mid-generation
        self.specs = specs
        self.broadcast = isinstance(spec_or_specs, FocusSpec)
        self.tokenizer = tokenizer
        self.backend = backend
        self.state: Optional[FocusState] = None
        self._prompt_len = 0
        self._generated_len = 0
        self._hashes: Optional[torch.Tensor] = None  # [B] int64: hash of each row's generated tokens
        self._powers = torch.ones(1, dtype=torch.int64)

    def reset(self) -> None:
        """Forget the current generation (done automatically when a new one starts)."""
        self.state = None

    def _start(self, input_ids: torch.Tensor, scores: torch.Tensor) -> None:
        rows = input_ids.shape[0]
        if self.broadcast:
            specs = self.specs * rows
        else:
            if rows % len(self.specs):
                raise ValueError(f"spec_or_specs: {len(self.specs)} specs do not divide a batch of {rows} rows")
            k = rows // len(self.specs)
            specs = [s for s in self.specs for _ in range(k)]
        self._group = rows // (1 if self.broadcast else len(self.specs))
        self.state = FocusState(specs, scores.shape[1], scores.device, self.tokenizer, backend=self.backend)
        self._prompt_len = input_ids.shape[1]
        self._generated_len = 0
        self.generated = input_ids[:, self._prompt_len:]
        self._hashes = torch.zeros(rows, dtype=torch.int64, device=input_ids.device)
        self._identity = torch.eye(self._group, dtype=torch.int32, device=input_ids.device)
        self._group_start = torch.arange(0, rows, self._group, device=input_ids.device)[:, None]

    def _hash(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B] int64: sum_i (tokens[:, i] + 1) * P^(n-1-i), wrapping modulo 2^64."""
        n = tokens.shape[1]
        if self._powers.numel() < n or self._powers.device != tokens.device:
            size = max(2 * n, 64)  # doubling: powers are rebuilt O(log t) times per generation
            powers = torch.full((size,), _HASH_BASE, dtype=torch.int64, device=tokens.device)
            powers[0] = 1
            self._powers = powers.cumprod(0)
        return ((tokens.long() + 1) * self._powers[:n].flip(0)).sum(-1)

    def _parents(self, prefix_hashes: torch.Tensor) -> torch.Tensor:
        """Index of the previous row whose generated tokens hash to ``prefix_hashes`` (identity preferred)."""
        g = self._group
        same = (prefix_hashes.view(-1, g, 1) == self._hashes.view(-1, 1, g)).int() * 2 + self._identity
        return (same.argmax(-1) + self._group_start).view(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        if self.state is None or length != self._prompt_len + self._generated_len + 1 \
                or input_ids.shape[0] != len(self.state):
            self._start(input_ids, scores)
            return self.state.apply_(scores)
        generated = input_ids[:, self._prompt_len:]
        prefix_hashes = self._hash(generated[:, :-1])
        self.state.reorder_(self._parents(prefix_hashes))
        last = generated[:, -1]
        self._hashes = prefix_hashes * _HASH_BASE + (last + 1)
        self._generated_len += 1
        self.generated = generated  # a view, for inspection: the tokens behind each row's state
        return self.state.apply_(scores, last)

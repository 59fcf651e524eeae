"""Hugging Face drop-in: :class:`FocusLogitsProcessor`, a ``transformers.LogitsProcessor``.

    proc = FocusLogitsProcessor(FocusSpec(["healthcare", "autonomous driving"]), tokenizer)
    model.generate(**inputs, logits_processor=LogitsProcessorList([proc]))

The attention lever is :mod:`focuskern.hf.attention` (not imported from here).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from transformers import LogitsProcessor

from ..spec import FocusSpec
from ..state import FocusState


class FocusLogitsProcessor(LogitsProcessor):
    """Steer ``generate`` toward each row's entities with one :class:`FocusState` launch per step.

    Parameters
    ----------
    spec_or_specs : one :class:`FocusSpec` for every row, or one per prompt (``None`` = untouched).
        With ``num_return_sequences`` / ``num_beams`` = k, prompt ``i`` owns rows ``i*k .. i*k+k-1``.
    tokenizer : tokenizes string entities.
    backend : kernel backend (``"auto"`` picks Triton on CUDA, PyTorch elsewhere).

    Only tokens generated after the prompt feed the automata.  Beam search reorders rows between
    steps; every step the processor matches each row's generated prefix to the previous step's rows
    (within its prompt's group, on the device, no sync) and lets rows inherit their parents' state.
    A call whose input is not one token longer than the last one starts a new generation.
    """

    def __init__(self, spec_or_specs: Union[FocusSpec, Sequence[Optional[FocusSpec]]], tokenizer=None,
                 *, backend: str = "auto"):
        specs = [spec_or_specs] if isinstance(spec_or_specs, FocusSpec) else list(spec_or_specs)
        for spec in specs:
            if spec is not None:
                if not isinstance(spec, FocusSpec):
                    raise TypeError(f"spec_or_specs must hold FocusSpec or None, got {type(spec).__name__}")
                spec.token_variants(tokenizer)  # tokenization errors surface now, not mid-generation
        self.specs = specs
        self.broadcast = isinstance(spec_or_specs, FocusSpec)
        self.tokenizer = tokenizer
        self.backend = backend
        self.state: Optional[FocusState] = None
        self._prompt_len = 0
        self._generated: Optional[torch.Tensor] = None

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
        self._generated = input_ids[:, self._prompt_len:]

    def _parents(self, prefix: torch.Tensor) -> torch.Tensor:
        """Index of the previous row whose generated tokens equal ``prefix`` (identity preferred)."""
        rows, n = prefix.shape
        g = self._group if rows % self._group == 0 else rows
        cur = prefix.view(rows // g, g, 1, n)
        prev = self._generated.view(rows // g, 1, g, n)
        same = (cur == prev).all(-1).int() * 2 + torch.eye(g, dtype=torch.int32, device=prefix.device)
        return (same.argmax(-1) + torch.arange(0, rows, g, device=prefix.device)[:, None]).view(rows)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        length = input_ids.shape[1]
        if self.state is None or length != self._prompt_len + self._generated.shape[1] + 1 \
                or input_ids.shape[0] != len(self.state):
            self._start(input_ids, scores)
            return self.state.apply_(scores)
        generated = input_ids[:, self._prompt_len:]
        self.state.reorder_(self._parents(generated[:, :-1]))
        self._generated = generated
        return self.state.apply_(scores, generated[:, -1])

"""The seed's decoding for the experiments (demo and ``eval coverage``), with a progress bar that
moves every decoding step, so that long ``generate`` calls show an ETA."""
from __future__ import annotations

import dataclasses

import torch
from transformers import LogitsProcessor, LogitsProcessorList


@dataclasses.dataclass(frozen=True)
class Decoding:
    """Seed 000's decoding: ``max_new_tokens``, ``repetition_penalty``, ``no_repeat_ngram_size``; sampled
    answers use ``temperature`` and ``top_p``."""
    max_new_tokens: int = 200
    repetition_penalty: float = 1.05
    no_repeat_ngram_size: int = 2
    temperature: float = 0.7
    top_p: float = 0.9


class StepProgress(LogitsProcessor):
    """Advances a tqdm bar by one per decoding step; the scores pass through untouched."""

    def __init__(self, bar):
        self.bar, self.steps = bar, 0

    def __call__(self, input_ids, scores):
        self.bar.update(1)
        self.steps += 1
        return scores


def generate(model, tok, inputs, processors: list[LogitsProcessor], decoding: Decoding, seed=None, *,
             num_return_sequences: int = 1, bar=None) -> torch.Tensor:
    """New tokens (rows x steps; pads after an answer's end) of one batch.  ``seed=None``: greedy; else
    sampled after ``torch.manual_seed(seed)``, ``num_return_sequences`` rows per prompt.  ``bar`` (tqdm)
    advances ``max_new_tokens`` in all, also when every row ends early."""
    progress = [StepProgress(bar)] if bar is not None else []
    kw = dict(max_new_tokens=decoding.max_new_tokens, repetition_penalty=decoding.repetition_penalty,
              no_repeat_ngram_size=decoding.no_repeat_ngram_size, pad_token_id=tok.pad_token_id,
              logits_processor=LogitsProcessorList(list(processors) + progress))
    if seed is None:
        kw.update(do_sample=False)
    else:
        torch.manual_seed(seed)
        kw.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p,
                  num_return_sequences=num_return_sequences)
    out = model.generate(**inputs, **kw)[:, inputs["input_ids"].shape[1]:]
    if bar is not None:
        bar.update(decoding.max_new_tokens - progress[0].steps)
    return out

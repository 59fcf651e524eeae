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
             num_return_sequences: int = 1, bar=None) -> tuple[torch.Tensor, list[float]]:
    """``(tokens, fluency)`` of one batch.  ``tokens``: rows x steps, pads after an answer's end.
    ``fluency``: per row, the mean log-probability of its non-pad tokens under the unmodified model,
    ``mean_t log softmax(z_t)[y_t]`` with ``z_t`` the model's raw logits at step t (before any
    processor: the same numbers as scoring the answer again, without a second forward pass); NaN for
    an empty answer.  ``seed=None``: greedy; else sampled after ``torch.manual_seed(seed)``,
    ``num_return_sequences`` rows per prompt.  ``bar`` (tqdm) advances ``max_new_tokens`` in all,
    also when every row ends early."""
    progress = [StepProgress(bar)] if bar is not None else []
    kw = dict(max_new_tokens=decoding.max_new_tokens, repetition_penalty=decoding.repetition_penalty,
              no_repeat_ngram_size=decoding.no_repeat_ngram_size, pad_token_id=tok.pad_token_id,
              logits_processor=LogitsProcessorList(list(processors) + progress),
              return_dict_in_generate=True, output_logits=True)
    if seed is None:
        kw.update(do_sample=False)
    else:
        torch.manual_seed(seed)
        kw.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p,
                  num_return_sequences=num_return_sequences)
    result = model.generate(**inputs, **kw)
    out = result.sequences[:, inputs["input_ids"].shape[1]:]
    if bar is not None:
        bar.update(decoding.max_new_tokens - progress[0].steps)
    token_lp = torch.stack([torch.log_softmax(z.float(), -1).gather(1, out[:, i:i + 1]).squeeze(1)
                            for i, z in enumerate(result.logits)], 1)
    return out, mean_logprobs(token_lp, out != tok.pad_token_id)


def mean_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Per row, the mean of ``token_logprobs`` (rows x steps) where ``mask``; NaN where the mask is empty."""
    n = mask.sum(1)
    means = (token_logprobs * mask).sum(1) / n.clamp(min=1)
    return [float(m) if c else float("nan") for m, c in zip(means, n)]


@torch.no_grad()
def unmodified_logprobs(model, inputs, out: torch.Tensor, pad_id: int) -> list[float]:
    """Per answer row, its mean log-prob under the model without any focus (one forward pass)."""
    n = out.shape[0]
    ids, mask = inputs["input_ids"].expand(n, -1), inputs["attention_mask"].expand(n, -1)
    answer = out != pad_id
    logits = model(input_ids=torch.cat([ids, out], 1), attention_mask=torch.cat([mask, answer.long()], 1)).logits
    L = ids.shape[1]
    lp = torch.log_softmax(logits[:, L - 1:-1].float(), -1).gather(2, out[..., None]).squeeze(2)
    return mean_logprobs(lp, answer)


def budget_of(model, max_new_tokens: int) -> dict:
    """FocusSpec's budget arguments for a generation: its length and the model's (first) end-of-text id
    (not the tokenizer's: SmolLM2's .gguf tokenizer names <|im_start|> as eos, answers end on <|im_end|>)."""
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    return {"max_new_tokens": max_new_tokens, "eos_token_id": eos}

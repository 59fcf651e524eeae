"""Metrics of the demo: keyword coverage, doubled words, broken fragments and fluency."""
from __future__ import annotations

import re

import torch

from .prompts import keyword_counts

_DOUBLED = re.compile(r"\b(\w+)(?:\s+\1\b)+", re.IGNORECASE)


def doubled_words(text: str) -> list[str]:
    """Immediately repeated words ("customer customer")."""
    return [m.group(0) for m in _DOUBLED.finditer(text)]


def broken_fragments(token_ids: list[int], variants: list[list[tuple[int, ...]]], tokenizer) -> int:
    """Occurrences of an entity's first sub-token (a word piece whose word continues in the next token)
    not followed by the rest of any variant that starts with it."""
    starts: dict[int, list[tuple[int, ...]]] = {}
    for entity in variants:
        for v in entity:
            if len(v) > 1 and not tokenizer.decode([v[1]]).startswith(" "):
                starts.setdefault(v[0], []).append(v)
    broken = 0
    for i, t in enumerate(token_ids):
        if t in starts and not any(tuple(token_ids[i:i + len(v)]) == v for v in starts[t]):
            broken += 1
    return broken


@torch.no_grad()
def mean_logprob(model, prompt_ids: torch.Tensor, output_ids: torch.Tensor, pad_id: int) -> float:
    """Mean log-probability of ``output_ids`` (one row) under the unmodified model."""
    out = output_ids[output_ids != pad_id]
    if out.numel() == 0:
        return float("nan")
    ids = torch.cat([prompt_ids, out]).unsqueeze(0)
    logp = torch.log_softmax(model(ids).logits[0, prompt_ids.numel() - 1:-1].float(), -1)
    return float(logp.gather(1, out.unsqueeze(1)).mean())


def score_text(text: str, keywords: list[str]) -> dict:
    counts = keyword_counts(text, keywords)
    return {"counts": counts, "coverage": sum(c > 0 for c in counts.values()), "doubled": doubled_words(text)}

"""Key groups and head sets shared by the lost-in-the-middle evaluation, its readout and head selection:
which prompt tokens belong to which key-value pair (:func:`pair_groups`), and the ``{layer: [heads]}``
sets chosen from a head response (:func:`top_heads`, :func:`as_pairs`, :func:`as_map`).  Depends on
nothing else in ``experiments`` (the modules above it import it)."""
from __future__ import annotations

import torch

from ..positions import entity_positions


def pair_groups(tok, texts: list[str], pairs: list[list[tuple[str, str]]], seq_len: int,
                keys_only: bool = False) -> torch.Tensor:
    """[B, seq_len] int32: pair index ``t`` on the tokens of the ``t``-th JSON line of each row (only its
    key's tokens with ``keys_only``), -1 elsewhere (left-padded batch)."""
    lines = [[f'"{key}"' if keys_only else f'"{key}": "{value}"' for key, value in row] for row in pairs]
    groups = torch.full((len(texts), seq_len), -1, dtype=torch.int32)
    for b, (text, row) in enumerate(zip(texts, lines)):
        pos = entity_positions(tok, [text], [row], padding_side="left", per_occurrence=True)[0]
        pad = seq_len - len(tok(text)["input_ids"])
        for t, occurrences in enumerate(pos):
            groups[b, [pad + j for j in occurrences[0]]] = t
    return groups


def top_heads(response: torch.Tensor, count: int) -> dict[int, list[int]]:
    """``{layer: [heads]}`` of the ``count`` largest entries of ``response`` [layers, heads]."""
    layers, heads = response.shape
    if not 1 <= count <= layers * heads:
        raise ValueError(f"count: expected 1..{layers * heads} heads, got {count}")
    chosen: dict[int, list[int]] = {}
    for flat in response.flatten().topk(count).indices.tolist():
        chosen.setdefault(flat // heads, []).append(flat % heads)
    return {layer: sorted(hs) for layer, hs in sorted(chosen.items())}


def as_pairs(chosen: dict[int, list[int]]) -> tuple[tuple[int, int], ...]:
    """``{layer: [heads]}`` -> sorted ``((layer, head), ...)`` (hashable, for settings and JSON)."""
    return tuple((layer, h) for layer, hs in sorted(chosen.items()) for h in hs)


def as_map(pairs) -> dict[int, list[int]]:
    """Inverse of :func:`as_pairs`."""
    chosen: dict[int, list[int]] = {}
    for layer, h in pairs:
        chosen.setdefault(int(layer), []).append(int(h))
    return chosen

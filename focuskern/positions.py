"""Where the entities are in a prompt, and the ``key_bias`` / ``head_scale`` that make attention look there.

Two forms of the same lever (``focuskern.ops.focus_attention`` adds ``head_scale[h] * key_bias[b, j]``
to the scaled score of key ``j``):

* boost: ``key_bias = beta`` on the entity tokens (multiplies their unnormalized attention weight by
  ``e^beta`` in every chosen head), 0 elsewhere; keys generated later get 0.
* PASTA (Zhang et al. 2023, Eq. 2): in the heads of a head set, the post-softmax weights of the
  non-emphasized keys are multiplied by ``alpha`` and every row is renormalized.  That is the same as
  ``key_bias = -log(alpha)`` on the emphasized keys with ``head_scale`` 1 in the chosen heads and 0
  elsewhere.  PASTA's code only scales *prompt* keys, so keys generated after the prompt count as
  emphasized: they get ``-log(alpha)`` too (``generated="boost"`` in
  :func:`focuskern.hf.attention.attention_focus`).

Positions are token indices of the tokenized batch exactly as ``tokenizer(texts, padding=True, ...)``
returns it (left padding shifts them), so the bias lines up with the ``input_ids`` given to
``generate``.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence, Union

import torch

Positions = list  # per row: per entity: sorted token indices (see entity_positions)
HeadSet = Union[Mapping[int, Sequence[int]], Sequence[int]]


def _occurrences(text: str, entity: str, ignore_case: bool, whole_words: bool) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of every (possibly overlapping) occurrence of ``entity``."""
    body = re.escape(entity)
    if whole_words:
        body = (r"(?<!\w)" if entity[:1].isalnum() or entity[:1] == "_" else "") + body \
            + (r"(?!\w)" if entity[-1:].isalnum() or entity[-1:] == "_" else "")
    pattern = re.compile(f"(?=({body}))", re.IGNORECASE if ignore_case else 0)
    return [(m.start(1), m.end(1)) for m in pattern.finditer(text)]


def _span_tokens(offsets: Sequence[Sequence[int]], start: int, end: int) -> list[int]:
    """Token indices whose character offsets overlap ``[start, end)`` (pads/specials have empty offsets)."""
    return [t for t, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def entity_positions(
    tokenizer,
    texts: Union[str, Sequence[str]],
    entities: Union[Sequence[str], Sequence[Sequence[str]]],
    *,
    ignore_case: bool = False,
    whole_words: bool = False,
    per_occurrence: bool = False,
    **tokenizer_kwargs,
) -> list:
    """Token positions of every occurrence of every entity in every text.

    Parameters
    ----------
    tokenizer : a fast Hugging Face tokenizer (needs ``return_offsets_mapping``).
    texts : one string or a batch of strings, exactly as they will be tokenized for the model (e.g.
        after the chat template).
    entities : one list of entity strings shared by every row, or one list per row.
    ignore_case : match case-insensitively.
    whole_words : only match occurrences not glued to word characters on either side.
    per_occurrence : if true, return for each entity a list of occurrences (each a list of token
        positions) instead of one merged, sorted list.
    **tokenizer_kwargs : forwarded to ``tokenizer(texts, ...)`` (``padding=True`` by default, so
        positions index the padded batch on the tokenizer's ``padding_side``; pass ``padding_side``,
        ``add_special_tokens`` etc. exactly as for the model inputs).

    Returns
    -------
    positions : ``positions[row][entity]`` = sorted token indices of all occurrences (tokens that
        overlap an occurrence's characters, so a token straddling its edge counts); with
        ``per_occurrence`` a list of such index lists, one per occurrence in text order.  An entity
        that does not occur gets ``[]``.
    """
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts: empty batch")
    texts = list(texts)
    if isinstance(entities, str) or not isinstance(entities, Sequence):
        raise TypeError(f"entities must be a list of strings (or one list per row), got {type(entities).__name__}")
    entities = list(entities)
    if all(isinstance(e, str) for e in entities):
        per_row = [entities] * len(texts)
    elif all(isinstance(e, Sequence) and not isinstance(e, str) and all(isinstance(x, str) for x in e)
             for e in entities):
        per_row = [list(e) for e in entities]
        if len(per_row) != len(texts):
            raise ValueError(f"entities: {len(per_row)} lists for {len(texts)} texts")
    else:
        raise TypeError("entities must be a list of strings or one list of strings per text")
    for row in per_row:
        if any(e == "" for e in row):
            raise ValueError("entities: empty entity string")
    tokenizer_kwargs.setdefault("padding", True)
    enc = tokenizer(texts, return_offsets_mapping=True, **tokenizer_kwargs)
    result = []
    for r, text in enumerate(texts):
        offsets = [tuple(o) for o in enc["offset_mapping"][r]]
        row = []
        for entity in per_row[r]:
            occ = [_span_tokens(offsets, s, e) for s, e in _occurrences(text, entity, ignore_case, whole_words)]
            occ = [o for o in occ if o]
            row.append(occ if per_occurrence else sorted({t for o in occ for t in o}))
        result.append(row)
    return result


def _flatten(row) -> list[int]:
    """All positions of one row, whether given flat, per entity, or per entity per occurrence."""
    out: list[int] = []
    stack = [row]
    while stack:
        item = stack.pop()
        if isinstance(item, (int,)) or (torch.is_tensor(item) and item.dim() == 0):
            out.append(int(item))
        else:
            stack.extend(list(item))
    return out


def positions_to_key_bias(
    positions: Sequence,
    seq_len: int,
    beta: Union[float, Sequence[float]] = 2.0,
    *,
    device: Optional[Union[str, torch.device]] = None,
) -> torch.Tensor:
    """Boost form: ``key_bias[b, j] = beta`` on the given positions, 0 elsewhere.

    Parameters
    ----------
    positions : per row, the output of :func:`entity_positions` for that row (per entity lists, per
        occurrence lists or a flat list of token indices).
    seq_len : length ``Lk`` of the prompt (the padded batch's sequence length).
    beta : the boost in natural-log units (each focused key's unnormalized weight times ``e^beta``);
        a sequence gives one value per entity (``positions[row]`` must then be per entity) and a token
        shared by two entities gets the larger one.
    device : where to put the result.

    Returns
    -------
    key_bias : [B, seq_len] float32.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
        raise ValueError(f"seq_len must be a non-negative int, got {seq_len!r}")
    per_entity = not isinstance(beta, (int, float))
    betas = [float(b) for b in beta] if per_entity else [float(beta)]
    if not all(math.isfinite(b) for b in betas):
        raise ValueError(f"beta must be finite, got {beta!r}")
    bias = torch.full((len(positions), seq_len), float("-inf"), dtype=torch.float32)
    for r, row in enumerate(positions):
        groups = list(row) if per_entity else [row]
        if per_entity and len(groups) != len(betas):
            raise ValueError(f"beta: {len(betas)} values for {len(groups)} entities in row {r}")
        for g, b in zip(groups, betas):
            idx = sorted(set(_flatten(g)))
            if idx and (idx[0] < 0 or idx[-1] >= seq_len):
                raise ValueError(f"positions: row {r} has a position outside [0, {seq_len})")
            if idx:
                sel = torch.tensor(idx, dtype=torch.long)
                bias[r, sel] = bias[r, sel].clamp_min(b)
    bias = torch.where(torch.isinf(bias), torch.zeros_like(bias), bias)
    return bias if device is None else bias.to(device)


def entity_span(tokenizer, texts: Sequence[str], entities: Sequence, seq_len: int) -> torch.Tensor:
    """[B, seq_len] bool: the tokens of any occurrence of any entity in a left-padded batch
    (``entities``: one list for every row, or one list per row, as for :func:`entity_positions`)."""
    pos = entity_positions(tokenizer, list(texts), entities, padding_side="left")
    return positions_to_key_bias(pos, seq_len, 1.0) != 0


def pasta_head_scale(heads: HeadSet, num_layers: int, num_heads: int,
                     device: Optional[Union[str, torch.device]] = None) -> dict[int, torch.Tensor]:
    """PASTA's head set as per-layer ``head_scale`` vectors: 1 on chosen heads, 0 elsewhere.

    Parameters
    ----------
    heads : ``{layer: [head, ...]}`` (PASTA's ``head_config``), or a list of layers (every head of
        those layers).
    num_layers, num_heads : the model's number of layers and of query heads per layer.
    device : where to put the vectors.

    Returns
    -------
    head_scale : ``{layer: [num_heads] float32}`` for every chosen layer (layers not listed are untouched).
    """
    if isinstance(heads, Mapping):
        items = {int(layer): list(hs) for layer, hs in heads.items()}
    else:
        items = {int(layer): list(range(num_heads)) for layer in heads}
    out = {}
    for layer, hs in items.items():
        if not 0 <= layer < num_layers:
            raise ValueError(f"heads: layer {layer} outside [0, {num_layers})")
        if any(not 0 <= int(h) < num_heads for h in hs):
            raise ValueError(f"heads: layer {layer} names a head outside [0, {num_heads})")
        scale = torch.zeros(num_heads, dtype=torch.float32)
        scale[[int(h) for h in hs]] = 1.0
        out[layer] = scale if device is None else scale.to(device)
    return out


def pasta_key_bias(positions: Sequence, seq_len: int, alpha: float = 0.01,
                   *, device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """PASTA in boost form: ``key_bias = -log(alpha)`` on the emphasized positions, 0 elsewhere.

    Parameters
    ----------
    positions : per row, the emphasized token positions (any nesting :func:`entity_positions` returns).
    seq_len : prompt length.
    alpha : PASTA's scaling coefficient in ``(0, 1]`` (the paper uses 0.01).
    device : where to put the result.

    Returns
    -------
    key_bias : [B, seq_len] float32.
    """
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha <= 1.0):
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
    return positions_to_key_bias([_flatten(row) for row in positions], seq_len, -math.log(alpha), device=device)


def pasta_focus(positions: Sequence, seq_len: int, heads: HeadSet, alpha: float = 0.01) -> dict:
    """Keyword arguments for :func:`focuskern.hf.attention.attention_focus` that reproduce PASTA.

    Parameters
    ----------
    positions : per row, the emphasized token positions (e.g. from :func:`entity_positions`).
    seq_len : prompt length (padded batch).
    heads : ``{layer: [head, ...]}`` or a list of layers (all their heads).
    alpha : PASTA's coefficient.

    Returns
    -------
    kwargs : ``{"key_bias", "heads", "generated": "boost"}``; generated keys count as emphasized, as in
        PASTA's implementation, which only down-weights non-emphasized prompt keys.

    Examples
    --------
    >>> pos = entity_positions(tok, texts, ["Paris"])                       # doctest: +SKIP
    >>> with attention_focus(model, **pasta_focus(pos, ids.shape[1], {10: [3, 7]})):  # doctest: +SKIP
    ...     model.generate(ids, attention_mask=mask)
    """
    if isinstance(heads, Mapping):
        head_map = {int(layer): [int(h) for h in hs] for layer, hs in heads.items()}
    else:
        head_map = {int(layer): None for layer in heads}
    return {"key_bias": pasta_key_bias(positions, seq_len, alpha), "heads": head_map, "generated": "boost"}

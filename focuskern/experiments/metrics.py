"""Metrics of the demo and of the evaluations: entity coverage, doubled words, degenerate text
(double-space runs, glued pieces), over-focus (fluency: :func:`.generation.generate`), and the paired
bootstrap interval of a difference from the baseline (:func:`paired_bootstrap`)."""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from ..spec import VARIANT_POLICIES
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


def accepted_forms(entity: str) -> list[str]:
    """What counts as saying ``entity``: every form any variant policy generates (case and leading
    space aside), so that coverage is the same yardstick for every policy."""
    forms = {v.strip().lower() for policy in VARIANT_POLICIES.values() for v in policy(entity)}
    return sorted(f for f in forms if f)


def forbidden_entities(tokenizer, prompt_ids: list[int], entities: Sequence[str], n: int) -> list[str]:
    """Entities that ``no_repeat_ngram_size=n`` forbids outright: every variant form (of every variant
    policy) contains a token n-gram of the prompt, so the decoding cannot write it in that
    tokenization whatever the push (transformers bans an n-gram's last token once the n-gram occurred)."""
    if n <= 0:
        return []
    seen = {tuple(prompt_ids[i:i + n]) for i in range(len(prompt_ids) - n + 1)}
    forbidden = []
    for entity in entities:
        forms = {f for policy in VARIANT_POLICIES.values() for f in policy(entity)}
        ids = [tokenizer.encode(f, add_special_tokens=False) for f in forms]
        if all(any(tuple(v[i:i + n]) in seen for i in range(len(v) - n + 1)) for v in ids):
            forbidden.append(entity)
    return forbidden


def _form_pattern(form: str) -> re.Pattern:
    # Whole words only ("app" is not said by "apply"), a plural s/es allowed ("trams" for "tram").
    return re.compile(r"(?<!\w)" + re.escape(form) + r"(?:e?s)?(?!\w)", re.IGNORECASE)


def entity_counts(text: str, entities: Sequence[str]) -> dict[str, int]:
    """Occurrences of each entity in ``text`` (case-insensitive, whole words, any accepted form; an
    occurrence of a longer form is not counted again for a shorter form at the same place)."""
    counts = {}
    for entity in entities:
        spans = set()
        for form in sorted(accepted_forms(entity), key=len, reverse=True):
            for m in _form_pattern(form).finditer(text):
                if not any(a <= m.start() < b for a, b in spans):
                    spans.add(m.span())
        counts[entity] = len(spans)
    return counts


_GAP = re.compile(r"(?<=[\w,.;:!?)]) {2,}(?=[\w(])")
DOUBLE_SPACE_RUN = 3  # double gaps between words in one output that make it degenerate


def double_space_gaps(text: str) -> int:
    """Gaps of two or more spaces between two words on one line ("was actually   July"); indentation
    and spaced-out symbols (ASCII art: "*   *") are not counted."""
    return len(_GAP.findall(text))


def glued_pieces(text: str, entities: Sequence[str]) -> list[str]:
    """Entity pieces stuck onto the preceding word: the entity's first word right after a letter or
    digit where the junction shows it (a capital word start inside a word, a letter next to a digit,
    or the same entity twice without a gap: "AIHealthcare", "WideWeb", "the12-core",
    "healthcarehealthcare"; digits after a digit, "99", are just a number).  A lowercase compound
    ("teapot" for "pot") or an all-caps word ("AMOLED" for "OLED") is not counted: text alone cannot
    tell it from a real word."""
    found = []
    for entity in entities:
        for form in accepted_forms(entity):
            head = form.split()[0]
            for m in re.finditer(r"(\w+?)(" + re.escape(head) + ")", text, re.IGNORECASE):
                before, piece = m.group(1)[-1], m.group(2)[0]
                after = text[m.start(2) + 1:m.start(2) + 2]
                camel = piece.isupper() and (before.islower() or after.islower())
                if camel or (before.isalpha() != piece.isalpha()) \
                        or (any(ch.isalpha() for ch in head) and m.group(1).lower().endswith(head.lower())):
                    found.append(m.group(0))
    return sorted(set(found))


OVER_FOCUS = 3  # an entity said more often than this in one output is over-focused


def score_output(text: str, entities: Sequence[str]) -> dict:
    """All text metrics of one output: ``counts`` per entity, ``said`` (entities present), ``doubled``
    words, ``double_gaps``, ``glued`` pieces, ``degenerate`` (at least ``DOUBLE_SPACE_RUN`` double
    gaps or any glued piece) and ``over_focused`` entities (said more than ``OVER_FOCUS`` times)."""
    counts = entity_counts(text, entities)
    gaps, glued = double_space_gaps(text), glued_pieces(text, entities)
    return {"counts": counts, "said": sum(c > 0 for c in counts.values()), "n_entities": len(entities),
            "doubled": doubled_words(text), "double_gaps": gaps, "glued": glued,
            "degenerate": gaps >= DOUBLE_SPACE_RUN or bool(glued),
            "over_focused": [e for e, c in counts.items() if c > OVER_FOCUS]}


def score_text(text: str, keywords: list[str]) -> dict:
    """Seed 000's scoring of the demo: its keyword counter (substrings), coverage and doubled words."""
    counts = keyword_counts(text, keywords)
    return {"counts": counts, "coverage": sum(c > 0 for c in counts.values()), "doubled": doubled_words(text)}


def paired_bootstrap(treated: Sequence[float], baseline: Sequence[float], weights: Sequence[float], *,
                     resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``(difference, low, high)``: the weighted difference of a row from the baseline on the same cases,
    ``sum_i (treated_i - baseline_i) / sum_i weights_i``, and its percentile interval at ``level`` over
    ``resamples`` resamplings of the cases with replacement (the pairs stay together), drawn from
    ``numpy.random.default_rng(seed)``.

    Per case ``i``: ``treated_i`` and ``baseline_i`` count what was hit (entities said over all of the
    case's outputs, or correct answers over the gold positions), ``weights_i`` what could be hit
    (entities asked, positions): the difference is then one of entity-weighted coverage (or of mean
    accuracy), as a fraction."""
    t, b, w = (np.asarray(x, dtype=np.float64) for x in (treated, baseline, weights))
    if t.ndim != 1 or not len(t):
        raise ValueError(f"treated: expected a non-empty list of per-case values, got shape {t.shape}")
    for name, x in (("baseline", b), ("weights", w)):
        if x.shape != t.shape:
            raise ValueError(f"{name}: expected {len(t)} per-case values like treated, got shape {x.shape}")
    if not (np.isfinite(t).all() and np.isfinite(b).all()):
        raise ValueError("treated, baseline: values must be finite")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError("weights: every case needs a finite weight > 0")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples must be an int >= 1, got {resamples!r}")
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    diff = t - b
    idx = np.random.default_rng(seed).integers(0, len(t), size=(resamples, len(t)))
    draws = diff[idx].sum(1) / w[idx].sum(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(diff.sum() / w.sum()), float(low), float(high)


def format_difference(diff: tuple[float, float, float] | None, scale: float = 100.0) -> str:
    """``"+5.8 [+1.9, +10.6]"`` (points, for fractions); ``"–"`` for the baseline row (None)."""
    if diff is None or any(math.isnan(x) for x in diff):
        return "–"
    d, lo, hi = (scale * x for x in diff)
    return f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"

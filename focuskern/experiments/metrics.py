"""Metrics of the demo and of the evaluations: entity coverage (any case, and as written), doubled
words, degenerate text (double-space runs, glued pieces, keyword dumps, punctuation runs), spaces put
into CJK text, over-focus (fluency: :func:`.generation.generate`), and the paired bootstrap interval of
a difference from the baseline (:func:`paired_bootstrap`).

Scripts written without spaces (Han, kana, Hangul: "CJK" below) have no word boundaries: an entity
that starts (ends) with such a character counts wherever it occurs, and a letter or digit of those
scripts is no word boundary for a Latin entity either ("用GPU训练" says "GPU")."""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Sequence

import numpy as np

from ..spec import VARIANT_POLICIES
from .prompts import keyword_counts

# Letters of scripts written without spaces, and their punctuation / full-width forms.
_CJK_LETTER = "\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = _CJK_LETTER + "\u3001-\u303f\uff00-\uffef"
_WORD = f"[^\\W{_CJK}]"  # a letter or digit of a script written with spaces (a word-boundary breaker)
_DOUBLED = re.compile(r"\b(\w+)(?:\s+\1\b)+", re.IGNORECASE)
_DOUBLED_CJK = re.compile(f"([{_CJK_LETTER}]{{2,8}}?)(?: *\\1)+")


def is_cjk(ch: str) -> bool:
    """A character of a script written without spaces (Han, kana, Hangul, their punctuation)."""
    return re.fullmatch(f"[{_CJK}]", ch) is not None


def doubled_words(text: str) -> list[str]:
    """Immediately repeated words ("customer customer", "The the", "2019 2019"), and in CJK text a run
    of 2-8 characters written twice in a row, spaced or not ("大模型大模型", "医疗 医疗")."""
    found = [m.group(0) for m in _DOUBLED.finditer(text)]
    return found + [m.group(0) for m in _DOUBLED_CJK.finditer(text)]


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


def _form_pattern(form: str, as_written: bool = False) -> re.Pattern:
    """Whole words only ("app" is not said by "apply"), a plural s/es allowed ("trams" for "tram"); no
    boundary at an end that is a CJK character.  ``as_written``: case-sensitive, except that a form
    written in lower case may start with a capital (a sentence start)."""
    head, body = form[:1], re.escape(form[1:])
    head = f"[{head}{head.upper()}]" if as_written and head.islower() else re.escape(head)
    left = "" if is_cjk(form[0]) else f"(?<!{_WORD})"
    right = "" if is_cjk(form[-1]) else f"(?:e?s)?(?!{_WORD})"
    return re.compile(left + head + body + right, 0 if as_written else re.IGNORECASE)


def entity_spans(text: str, entity: str, as_written: bool = False) -> list[tuple[int, int]]:
    """Where ``entity`` occurs in ``text`` (any accepted form, case-insensitively; ``as_written``: the
    form as written, see :func:`_form_pattern`); an occurrence of a longer form is not counted again
    for a shorter form at the same place."""
    spans: list[tuple[int, int]] = []
    forms = [entity.strip()] if as_written else sorted(accepted_forms(entity), key=len, reverse=True)
    for form in forms:
        for m in _form_pattern(form, as_written).finditer(text):
            if not any(a <= m.start() < b for a, b in spans):
                spans.append(m.span())
    return sorted(spans)


def entity_counts(text: str, entities: Sequence[str], as_written: bool = False) -> dict[str, int]:
    """Occurrences of each entity in ``text`` (:func:`entity_spans`)."""
    return {entity: len(entity_spans(text, entity, as_written)) for entity in entities}


_CJK_SPACE = re.compile(f"(?<=\\S) +(?=[{_CJK}])|(?<=[{_CJK}]) +(?=\\S)")
_CJK_INNER_SPACE = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")


def cjk_spaces(text: str) -> tuple[int, int]:
    """``(adjacent, inner)``: runs of spaces on one line next to a CJK character (not indentation:
    "讨论 医疗", "1. 医疗", "AI 模型"), and those between two CJK characters ("解 医疗 自动驾驶")."""
    return len(_CJK_SPACE.findall(text)), len(_CJK_INNER_SPACE.findall(text))


KEYWORD_DUMP = 3  # entity occurrences in a row, with no words between them, that make a dump


def _no_words(gap: str) -> bool:
    """A gap of whitespace and punctuation that is not one mark of a sentence or a list (", ", "、",
    ". ": grammar); markdown marks (* _ # `) do not count as marks."""
    if not all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in gap):
        return False
    return sum(not ch.isspace() and ch not in "*_#`" for ch in gap) != 1


def keyword_dumps(text: str, entities: Sequence[str], run: int = KEYWORD_DUMP) -> list[str]:
    """Runs of at least ``run`` entity occurrences (any entities, repeats included) with no words in
    between: separated by whitespace, nothing, or several marks ("医疗 自动驾驶 智能客服 大模型",
    "healthcare AI healthcare", "医疗；；自动驾驶；；大模型"); a list ("医疗、自动驾驶、智能客服",
    "A, B, C") is writing, not a dump."""
    spans = sorted({s for e in entities for s in entity_spans(text, e)})
    spans = [s for s in spans if not any(a <= s[0] and s[1] <= b and (a, b) != s for a, b in spans)]
    dumps, group = [], spans[:1]
    for span in spans[1:] + [None]:
        if span is not None and span[0] >= group[-1][1] and _no_words(text[group[-1][1]:span[0]]):
            group.append(span)
            continue
        if len(group) >= run:
            dumps.append(text[group[0][0]:group[-1][1]])
        group = [span]
    return dumps


_PUNCT_RUN = re.compile(r"[,;:!?，。；：！？、.．]{3,}")


def punctuation_runs(text: str) -> list[str]:
    """Three or more clause/sentence marks in a row ("；；；", "。，。", "!!!"); an ellipsis of dots
    ("...") is not one."""
    return [m.group(0) for m in _PUNCT_RUN.finditer(text) if set(m.group(0)) - {".", "．"}]


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
                if is_cjk(before) or is_cjk(piece):
                    if m.group(1).lower().endswith(head.lower()):  # CJK has no boundaries: only a repeat
                        found.append(m.group(0))
                    continue
                after = text[m.start(2) + 1:m.start(2) + 2]
                camel = piece.isupper() and (before.islower() or after.islower())
                if camel or (before.isalpha() != piece.isalpha()) \
                        or (any(ch.isalpha() for ch in head) and m.group(1).lower().endswith(head.lower())):
                    found.append(m.group(0))
    return sorted(set(found))


OVER_FOCUS = 3  # an entity said more often than this in one output is over-focused


def score_output(text: str, entities: Sequence[str]) -> dict:
    """All text metrics of one output: ``counts`` per entity, ``said`` (entities present),
    ``said_as_written`` (present as written), ``doubled`` words, ``double_gaps``, ``glued`` pieces,
    keyword ``dumps``, ``punct_runs``, ``cjk_spaces`` / ``cjk_inner_spaces`` (:func:`cjk_spaces`),
    ``degenerate`` (at least ``DOUBLE_SPACE_RUN`` double gaps, or any glued piece, keyword dump or
    punctuation run) and ``over_focused`` entities (said more than ``OVER_FOCUS`` times)."""
    counts = entity_counts(text, entities)
    written = entity_counts(text, entities, as_written=True)
    gaps, glued = double_space_gaps(text), glued_pieces(text, entities)
    dumps, runs = keyword_dumps(text, entities), punctuation_runs(text)
    spaces, inner = cjk_spaces(text)
    return {"counts": counts, "said": sum(c > 0 for c in counts.values()), "n_entities": len(entities),
            "said_as_written": sum(c > 0 for c in written.values()),
            "doubled": doubled_words(text), "double_gaps": gaps, "glued": glued, "dumps": dumps,
            "punct_runs": runs, "cjk_spaces": spaces, "cjk_inner_spaces": inner,
            "degenerate": gaps >= DOUBLE_SPACE_RUN or bool(glued) or bool(dumps) or bool(runs),
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

"""The surface forms of a spec's entities (docs/text-tracking.md sections 3-4), as flat symbol arrays
for :func:`focuskern.automaton.compile_program`.

For an entity string ``e`` (stripped) under ``variants="text"``:

* counted forms (what says it): ``e`` and ``flip(e)``, ``e`` with its first character's case flipped;
* pushed form per push context ``pc = 2 * spaced + sentence``: ``pc 0: e``, ``pc 1: cap(e)`` (first
  character upper case), ``pc 2: " " + e``, ``pc 3: " " + cap(e)``; an entity whose first character is
  3 or 4 UTF-8 bytes long (CJK, kana, Thai ...) is never spaced.

``variants="as_written"`` counts and pushes ``e`` exactly as given; a list policy (``"spaced"``,
``"default"`` or a callable ``str -> list[str]``) counts and pushes each of its forms.  Such a form is
pushed where it fits (:func:`list_form_contexts`): with a leading space after a word, without one at a
boundary, a CJK form everywhere.  Token-id entities are their variants' symbols (bytes with a tokenizer,
opaque symbols without), counted and pushed in every push context.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ops.layout import N_PUSH_CONTEXTS
from .text import TokenTable

ALL_PCS = (1 << N_PUSH_CONTEXTS) - 1


@dataclass
class FlatForms:
    """Forms as one symbol array: form ``f`` is ``units[off[f]:off[f + 1]]`` of entity ``entity[f]``;
    ``pcs[f]`` is the bitmask of the push contexts it is pushed in (pushed forms only)."""

    units: np.ndarray
    off: np.ndarray
    entity: np.ndarray
    pcs: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.off)


@dataclass
class EntityForms:
    n_entities: int
    counted: FlatForms
    pushed: FlatForms
    canonical: list[list[tuple[int, ...]]] | None = None  # tokens mode: per entity, tokenized pushed forms


def is_wide(c: str) -> bool:
    """Is ``c`` (a first character) 3 or 4 UTF-8 bytes long (CJK, kana, Thai ...): never spaced."""
    return ord(c) >= 0x800


def _first_char_forms(c: str) -> tuple[str, str, bool]:
    """(``c`` with its case flipped, ``c`` upper case, :func:`is_wide`): each ``c`` where the case
    change is not one character."""
    flip, upper = c.swapcase(), c.upper()
    return (flip if len(flip) == 1 else c), (upper if len(upper) == 1 else c), is_wide(c)


def text_forms_of(strings: list[str]) -> tuple[list[str], list[int], list[str], list[int], list[int]]:
    """The ``"text"`` forms of every string (module docstring), entity by entity: ``(counted, counted
    owner, pushed, pushed owner, pushed push-context bitmask)``, owners indices into ``strings``.
    One loop with the first character's forms looked up (entities share few first characters)."""
    counted, counted_at, pushed, pushed_at, pcs = [], [], [], [], []
    chars: dict[str, tuple[str, str, bool]] = {}
    for i, e in enumerate(strings):
        e = e.strip()
        c, rest = e[:1], e[1:]
        if c not in chars:
            chars[c] = _first_char_forms(c)
        flip, cap, wide = chars[c]
        if flip == c:
            counted.append(e)
            counted_at.append(i)
        else:
            counted += (e, flip + rest)
            counted_at += (i, i)
        if cap == c:
            forms, masks = ((e,), (0b1111,)) if wide else ((e, " " + e), (0b0011, 0b1100))
        else:
            e_cap = cap + rest
            forms, masks = (((e, e_cap), (0b0101, 0b1010)) if wide else
                            ((e, e_cap, " " + e, " " + e_cap), (0b0001, 0b0010, 0b0100, 0b1000)))
        pushed += forms
        pushed_at += [i] * len(forms)
        pcs += masks
    return counted, counted_at, pushed, pushed_at, pcs


def text_forms(e: str) -> tuple[list[str], dict[str, int]]:
    """(counted forms, {pushed form: push-context bitmask}) of one entity string under ``"text"``."""
    counted, _, pushed, _, pcs = text_forms_of([e])
    return counted, dict(zip(pushed, pcs))


def _flat_strings(forms: list[str], entity: list[int], pcs: list[int]) -> FlatForms:
    """UTF-8 bytes of ``forms``, encoded in one call (forms are joined by NUL, which entities never hold)."""
    data = np.frombuffer(("\0".join(forms) + "\0").encode() if forms else b"", dtype=np.uint8)
    ends = np.flatnonzero(data == 0)
    off = np.zeros(len(forms) + 1, dtype=np.int64)
    off[1:] = ends - np.arange(len(forms))
    return FlatForms(data[data != 0].astype(np.int64), off, np.asarray(entity, np.int64), np.asarray(pcs, np.int64))


def list_form_contexts(form: str) -> int:
    """Push contexts of a form of ``"as_written"`` or a list policy, by its first character: a leading
    space fits after a word (pc 2, 3), a form without one at a boundary (pc 0, 1) -- pushed after a word
    it would glue onto it ("lightlight"); a 3-4 byte first character (CJK, kana ...) fits everywhere."""
    if form[:1].isspace():
        return 0b1100
    return ALL_PCS if is_wide(form[0]) else 0b0011


def _flat_arrays(parts: list[np.ndarray], entity: list[int], pcs: list[int]) -> FlatForms:
    off = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=off[1:])
    units = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(p, np.int64) for p in parts])
    return FlatForms(units, off, np.asarray(entity, np.int64), np.asarray(pcs, np.int64))


def entity_forms(entities, policy, table: TokenTable, tokenizer, tokens_mode: bool) -> EntityForms:
    """The counted and pushed forms of ``entities``.  ``policy``: ``"text"``, ``"as_written"`` or a
    callable ``str -> list[str]``.  Strings need a tokenizer (``ValueError`` naming the entity)."""
    strings = [i for i, entity in enumerate(entities) if isinstance(entity, str)]
    if strings and table.opaque:
        raise ValueError(f"entities[{strings[0]}] is a string: pass a tokenizer (or token ids)")
    if policy == "text":
        counted, counted_at, pushed, pushed_at, pushed_pcs = text_forms_of([entities[i] for i in strings])
    else:
        counted, counted_at = [], []
        for k, i in enumerate(strings):
            said = [entities[i]] if policy == "as_written" else list(dict.fromkeys(f for f in policy(entities[i]) if f))
            counted += said
            counted_at += [k] * len(said)
        pushed, pushed_at, pushed_pcs = counted, counted_at, [list_form_contexts(f) for f in counted]
    owner = np.asarray(strings, np.int64)
    counted_ent, pushed_ent = owner[np.asarray(counted_at, np.int64)], owner[np.asarray(pushed_at, np.int64)]
    id_counted: list[np.ndarray] = []
    id_counted_ent: list[int] = []
    canonical: list[list[tuple[int, ...]]] = []
    if tokens_mode:
        forms_of: dict[int, list[str]] = {}
        for form, i in zip(pushed, pushed_ent.tolist()):
            forms_of.setdefault(i, []).append(form)
    for i, entity in enumerate(entities):
        if isinstance(entity, str):
            if tokens_mode:
                canonical.append(_tokenize(tokenizer, forms_of.get(i, [entity]), i))
        else:
            variants = list(dict.fromkeys(tuple(int(t) for t in seq) for seq in entity))
            for seq in variants:  # ids checked by the caller (programs.check_in_vocab)
                id_counted.append(np.concatenate([table.units(t) for t in seq]))
                id_counted_ent.append(i)
            canonical.append(variants)
    ids = _flat_arrays(id_counted, id_counted_ent, [ALL_PCS] * len(id_counted))
    said = _concat(_flat_strings(counted, counted_ent, [ALL_PCS] * len(counted)), ids)
    push = _concat(_flat_strings(pushed, pushed_ent, pushed_pcs), ids)
    said, push = _nonempty(said), _nonempty(push)
    empty = np.flatnonzero(np.bincount(said.entity, minlength=len(entities)) == 0)
    if empty.size:
        i = int(empty[0])
        raise ValueError(f"entities[{i}] ({entities[i]!r}) has no text (its tokens have no bytes)")
    return EntityForms(len(entities), said, push, canonical if tokens_mode else None)


def _nonempty(forms: FlatForms) -> FlatForms:
    keep = forms.lengths > 0
    off = np.concatenate([[0], np.cumsum(forms.lengths[keep])]).astype(np.int64)
    return FlatForms(forms.units, off, forms.entity[keep], forms.pcs[keep])


def _concat(a: FlatForms, b: FlatForms) -> FlatForms:
    return FlatForms(np.concatenate([a.units, b.units]), np.concatenate([a.off, b.off[1:] + a.off[-1]]),
                     np.concatenate([a.entity, b.entity]), np.concatenate([a.pcs, b.pcs]))


def _tokenize(tokenizer, forms: list[str], i: int) -> list[tuple[int, ...]]:
    seqs = [tuple(tokenizer.encode(f, add_special_tokens=False)) for f in forms]
    seqs = list(dict.fromkeys(s for s in seqs if s))
    if not seqs:
        raise ValueError(f"entities[{i}] ({forms[0]!r}) tokenizes to nothing")
    return seqs


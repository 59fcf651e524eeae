"""The surface forms of a spec's entities (docs/text-tracking.md sections 3-4), as flat symbol arrays
for :func:`focuskern.automaton.compile_program`.

For an entity string ``e`` (stripped) under ``variants="text"``:

* counted forms (what says it): ``e`` and ``flip(e)``, ``e`` with its first character's case flipped;
* pushed form per push context ``pc = 2 * spaced + sentence``: ``pc 0: e``, ``pc 1: cap(e)`` (first
  character upper case), ``pc 2: " " + e``, ``pc 3: " " + cap(e)``; an entity whose first character is
  3 or 4 UTF-8 bytes long (CJK, kana, Thai ...) is never spaced.

``variants="as_written"`` counts and pushes ``e`` exactly as given, in every push context; a list
policy (``"spaced"``, ``"default"`` or a callable ``str -> list[str]``) counts and pushes each of its
forms in every push context.  Token-id entities are their variants' symbols (bytes with a tokenizer,
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


def flip_first(e: str) -> str:
    """``e`` with its first character's case flipped (unchanged where that is not one character)."""
    flipped = e[:1].swapcase()
    return flipped + e[1:] if len(flipped) == 1 else e


def capitalize_first(e: str) -> str:
    upper = e[:1].upper()
    return upper + e[1:] if len(upper) == 1 else e


def text_forms(e: str) -> tuple[list[str], dict[str, int]]:
    """(counted forms, {pushed form: push-context bitmask}) of an entity string under ``"text"``."""
    e = e.strip()
    cap, flip = capitalize_first(e), flip_first(e)
    counted = [e] if flip == e else [e, flip]
    if ord(e[0]) >= 0x800:  # 3- or 4-byte UTF-8 first character: never spaced
        return counted, ({e: 0b1111} if cap == e else {e: 0b0101, cap: 0b1010})
    if cap == e:
        return counted, {e: 0b0011, " " + e: 0b1100}
    return counted, {e: 0b0001, cap: 0b0010, " " + e: 0b0100, " " + cap: 0b1000}


def _flat_strings(forms: list[str], entity: list[int], pcs: list[int]) -> FlatForms:
    """UTF-8 bytes of ``forms``, encoded in one call (forms are joined by NUL, which entities never hold)."""
    data = np.frombuffer(("\0".join(forms) + "\0").encode() if forms else b"", dtype=np.uint8)
    ends = np.flatnonzero(data == 0)
    off = np.zeros(len(forms) + 1, dtype=np.int64)
    off[1:] = ends - np.arange(len(forms))
    return FlatForms(data[data != 0].astype(np.int64), off, np.asarray(entity, np.int64), np.asarray(pcs, np.int64))


def _flat_arrays(parts: list[np.ndarray], entity: list[int], pcs: list[int]) -> FlatForms:
    off = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=off[1:])
    units = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(p, np.int64) for p in parts])
    return FlatForms(units, off, np.asarray(entity, np.int64), np.asarray(pcs, np.int64))


def entity_forms(entities, policy, table: TokenTable, tokenizer, tokens_mode: bool) -> EntityForms:
    """The counted and pushed forms of ``entities``.  ``policy``: ``"text"``, ``"as_written"`` or a
    callable ``str -> list[str]``.  Strings need a tokenizer (``ValueError`` naming the entity)."""
    counted: list[str] = []
    counted_ent: list[int] = []
    pushed: list[str] = []
    pushed_ent: list[int] = []
    pushed_pcs: list[int] = []
    id_counted: list[np.ndarray] = []
    id_counted_ent: list[int] = []
    canonical: list[list[tuple[int, ...]]] = []
    for i, entity in enumerate(entities):
        if isinstance(entity, str):
            if table.opaque:
                raise ValueError(f"entities[{i}] is a string: pass a tokenizer (or token ids)")
            if policy == "text":
                said, push = text_forms(entity)
            else:
                said = [entity] if policy == "as_written" else list(dict.fromkeys(f for f in policy(entity) if f))
                push = dict.fromkeys(said, ALL_PCS)
            counted += said
            counted_ent += [i] * len(said)
            pushed += push
            pushed_ent += [i] * len(push)
            pushed_pcs += push.values()
            if tokens_mode:
                canonical.append(_tokenize(tokenizer, list(push), i))
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


"""What users touch: :class:`FocusSpec`, one request's entities and how hard to push toward them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

from .decay import Decay

Entity = Union[str, Sequence[Sequence[int]]]
MODES = ("phrase", "tokens")
SATISFY = ("once", "never")


def default_variants(text: str) -> list[str]:
    """As written, first letter upper/lower case, each with and without a leading space."""
    core = text.lstrip(" ")
    cased = [core, core[:1].upper() + core[1:], core[:1].lower() + core[1:]]
    forms = [text] + [v for c in cased for v in (c, " " + c)]
    return list(dict.fromkeys(forms))


def as_written(text: str) -> list[str]:
    """Only the string itself (seed 000's tokenization)."""
    return [text]


def spaced_variants(text: str) -> list[str]:
    """Mid-sentence forms only: a leading space before the text as written, first letter upper/lower
    case and Title Case.  Never boosts a word piece that could glue onto the previous word."""
    core = text.strip()
    forms = [core, core[:1].upper() + core[1:], core[:1].lower() + core[1:], core.title()]
    return list(dict.fromkeys(" " + f for f in forms))


VARIANT_POLICIES: dict[str, Callable[[str], list[str]]] = {
    "default": default_variants, "as_written": as_written, "spaced": spaced_variants}


@dataclass(frozen=True, eq=False)
class FocusSpec:
    """One request's focus.

    Parameters
    ----------
    entities : strings (tokenized into variants by ``variants``) or, per entity, a list of token-id
        sequences (its variants; no tokenizer needed).
    bias : logit boost of an unsatisfied entity's first token (phrase mode) or of all its tokens
        (tokens mode).
    alpha : blend, ``out = (1 - s*alpha) * x + s * bias``.
    decay : :class:`~focuskern.Decay` schedule of the strength ``s`` over generated steps.
    mode : ``"phrase"`` (Aho-Corasick over generated tokens; first tokens and continuations of partial
        matches) or ``"tokens"`` (every token of every variant, seed 000's method).
    satisfy : ``"once"`` (stop boosting an entity once generated in full) or ``"never"``.
    continuation_bias : boost of the next token of a partial match (default ``bias``).
    variants : ``"default"`` (as written, first letter upper/lower case, each with and without a
        leading space), ``"as_written"``, ``"spaced"`` (leading-space forms incl. Title Case) or a
        callable ``str -> list[str]``.
    boost_starts_in_match : also boost first tokens while a partial match is open (the contract's
        default); ``False`` pushes only the continuation, which avoids "autonomous autonomous".
    """

    entities: Sequence[Entity]
    bias: float = 3.0
    alpha: float = 0.0
    decay: Decay = field(default_factory=Decay.constant)
    mode: str = "phrase"
    satisfy: str = "once"
    continuation_bias: float | None = None
    variants: Union[str, Callable[[str], list[str]]] = "default"
    boost_starts_in_match: bool = True

    def __post_init__(self):
        if isinstance(self.entities, (str, bytes)) or not isinstance(self.entities, Sequence):
            raise TypeError("entities must be a list of strings or of token-id variant lists")
        if len(self.entities) == 0:
            raise ValueError("entities must not be empty")
        for i, entity in enumerate(self.entities):
            _check_entity(i, entity)
        _check_finite("bias", self.bias)
        if self.continuation_bias is not None:
            _check_finite("continuation_bias", self.continuation_bias)
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha!r}")
        if not isinstance(self.decay, Decay):
            raise TypeError(f"decay must be a focuskern.Decay, got {type(self.decay).__name__}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.satisfy not in SATISFY:
            raise ValueError(f"satisfy must be one of {SATISFY}, got {self.satisfy!r}")
        if isinstance(self.variants, str) and self.variants not in VARIANT_POLICIES:
            raise ValueError(f"variants must be one of {tuple(VARIANT_POLICIES)} or a callable, got {self.variants!r}")

    @classmethod
    def blend(cls, entities: Sequence[Entity], entity_bias: float, alpha: float, **kwargs) -> "FocusSpec":
        """Seed 000's gentle nudge ``x*(1-alpha) + E*alpha``, i.e. ``bias = alpha * E``."""
        return cls(entities, bias=alpha * entity_bias, alpha=alpha, **kwargs)

    @classmethod
    def recommended(cls, entities: Sequence[Entity], **kwargs) -> "FocusSpec":
        """What worked on the 135M model: almost no push while the model sets up its answer (a ramp that
        grows until step 100 from a 0.1 floor), a strong continuation so that a started phrase is
        finished, no re-boost of entity starts while a phrase is open (no "autonomous autonomous"),
        mid-sentence (spaced) variants only, and each entity released once said."""
        settings = dict(bias=4.0, continuation_bias=8.0, decay=Decay.ramp(100, floor=0.1), variants="spaced",
                        boost_starts_in_match=False)
        return cls(entities, **{**settings, **kwargs})

    @property
    def effective_continuation_bias(self) -> float:
        return self.bias if self.continuation_bias is None else self.continuation_bias

    def token_variants(self, tokenizer=None) -> list[list[tuple[int, ...]]]:
        """Per entity its distinct, non-empty token-id variants."""
        policy = VARIANT_POLICIES.get(self.variants) if isinstance(self.variants, str) else self.variants
        result = []
        for i, entity in enumerate(self.entities):
            if isinstance(entity, str):
                if tokenizer is None:
                    raise ValueError(f"entities[{i}] is a string: pass a tokenizer (or token ids)")
                seqs = [tuple(tokenizer.encode(form, add_special_tokens=False)) for form in policy(entity)]
            else:
                seqs = [tuple(int(t) for t in seq) for seq in entity]
            seqs = list(dict.fromkeys(s for s in seqs if s))
            if not seqs:
                raise ValueError(f"entities[{i}] ({entity!r}) tokenizes to nothing")
            result.append(seqs)
        return result

    def key(self) -> tuple:
        """Everything the compiled program and its parameters depend on (rows with equal keys share it).
        Computed once per spec (a batch of B rows sharing a 100k-entity spec asks B times)."""
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = self.__dict__["_key"] = self._compute_key()  # frozen: bypass __setattr__, once
        return cached

    def _compute_key(self) -> tuple:
        ents = tuple(e if isinstance(e, str) else tuple(tuple(int(t) for t in s) for s in e) for e in self.entities)
        return (ents, float(self.bias), float(self.alpha), self.decay, self.mode, self.satisfy,
                self.continuation_bias, self.variants, self.boost_starts_in_match)


def _check_finite(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_entity(i: int, entity) -> None:
    if isinstance(entity, str):
        if not entity.strip():
            raise ValueError(f"entities[{i}] is empty")
        return
    if not isinstance(entity, Sequence) or len(entity) == 0:
        raise TypeError(f"entities[{i}] must be a string or a non-empty list of token-id sequences")
    for seq in entity:
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or len(seq) == 0:
            raise TypeError(f"entities[{i}] must hold non-empty token-id sequences, got {seq!r}")
        for t in seq:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise ValueError(f"entities[{i}] holds an invalid token id {t!r}")

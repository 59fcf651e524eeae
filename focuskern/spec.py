"""What users touch: :class:`FocusSpec`, one request's entities and how hard to push toward them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

from .decay import Decay
from .forms import text_forms
from .ops.layout import MAX_EOS

Entity = Union[str, Sequence[Sequence[int]]]
MODES = ("phrase", "tokens")
SATISFY = ("once", "never")
# Token ids are narrowed to int32 on the way to the kernels: larger ones are refused here, before that.
MAX_TOKEN_ID = 2**31 - 1
# Logit shifts (bias, continuation_bias, force, eos_damp) are float32 and added together; the bound keeps
# every sum finite, even in float16 logits.
MAX_SHIFT = 1e4


def text_variants(text: str) -> list[str]:
    """The text policy's forms: the counted ones (as written, first letter's case flipped), then the
    pushed ones (capitalized at a sentence start, with a leading space after a word); see
    :mod:`focuskern.forms`."""
    counted, pushed = text_forms(text)
    return list(dict.fromkeys(counted + list(pushed)))


def default_variants(text: str) -> list[str]:
    """As written, first letter upper/lower case, each with and without a leading space."""
    core = text.lstrip(" ")
    cased = [core, core[:1].upper() + core[1:], core[:1].lower() + core[1:]]
    forms = [text] + [v for c in cased for v in (c, " " + c)]
    return list(dict.fromkeys(forms))


def as_written(text: str) -> list[str]:
    """Only the string itself (seed 000's method): counted and pushed exactly as given."""
    return [text]


def spaced_variants(text: str) -> list[str]:
    """Mid-sentence forms only: a leading space before the text as written, first letter upper/lower
    case and Title Case.  Never boosts a word piece that could glue onto the previous word."""
    core = text.strip()
    forms = [core, core[:1].upper() + core[1:], core[:1].lower() + core[1:], core.title()]
    return list(dict.fromkeys(" " + f for f in forms))


VARIANT_POLICIES: dict[str, Callable[[str], list[str]]] = {
    "text": text_variants, "as_written": as_written, "spaced": spaced_variants, "default": default_variants}


@dataclass(frozen=True, eq=False)
class FocusSpec:
    """One request's focus: say each entity once, where it fits, before the token budget runs out.

    The defaults are the steering policy (README: coverage evaluation): a start push ``bias`` that
    ramps in over the first 100 steps from a 0.1 floor, a strong continuation so that a started phrase
    is finished, no re-push of entity starts while a phrase is open, text tracking (an entity is said
    when its text occurs, whatever the tokenization; it is pushed in the form that fits where the text
    is: docs/text-tracking.md), each entity released once said -- and, given a token budget ``max_new_tokens``, an urgency that
    grows as the budget per unsaid entity shrinks, and damped end-of-text while entities are unsaid.
    With ``m`` unsaid entities and ``left = max(max_new_tokens - step, 1)`` tokens to go::

        urgency u = clamp(1 - left / (m * slack), 0, 1)
        boosted logit = (1 - s*alpha) * x + s * value + u * force      (value: bias or continuation_bias)
        end-of-text logit -= eos_damp                                    (while m > 0)

    (``s`` = ``decay``'s strength at ``step``.)  The previous defaults stay reachable by arguments
    (:meth:`fixed` names them), seed 000's method too (``mode="tokens"``, ``satisfy="never"``,
    ``variants="as_written"``).

    Parameters
    ----------
    entities : strings (tokenized into variants by ``variants``) or, per entity, a list of token-id
        sequences (its variants; no tokenizer needed).
    bias : logit boost of an unsatisfied entity's first token (phrase mode) or of all its tokens
        (tokens mode).
    alpha : blend, ``out = (1 - s*alpha) * x + s * bias``.
    decay : :class:`~focuskern.Decay` schedule of the strength ``s`` over generated steps.
    mode : ``"phrase"`` (Aho-Corasick over the generated text's bytes; first tokens and continuations
        of partial matches) or ``"tokens"`` (every token of every pushed form, tokenized, seed 000's
        method).
    satisfy : ``"once"`` (stop boosting an entity once generated in full) or ``"never"``.
    continuation_bias : boost of the next token of a partial match (``None``: ``bias``).
    variants : ``"text"`` (counted as written with the first letter in either case, with a word
        boundary in scripts written with spaces; pushed as written, capitalized at a sentence start,
        with a leading space after a word, never a space before CJK), ``"as_written"`` (counted and
        pushed exactly as given), or a list of forms each counted and pushed as given: ``"spaced"``
        (leading-space forms: as written, first letter upper/lower case, Title Case), ``"default"``
        (as written, first letter upper/lower case, each with and without a leading space) or a
        callable ``str -> list[str]``.
    boost_starts_in_match : also boost first tokens while a partial match is open; ``False`` (default)
        pushes only the continuation, which avoids "autonomous autonomous".
    max_new_tokens : the token budget of the answer (``generate``'s ``max_new_tokens``; the vLLM
        adapter fills it from each request's ``max_tokens``).  ``None``: no urgency, no end-of-text
        damping.  Needs ``satisfy="once"`` to count unsaid entities (with ``"never"`` it does nothing).
    slack : tokens per unsaid entity below which the urgency starts to grow.
    force : extra push of boosted tokens at full urgency (``u = 1``).
    eos_damp : subtracted from the end-of-text logit while entities are unsaid (given a budget).
    eos_token_id : the end-of-text token, or a list of at most 4 (``None``: the tokenizer's
        ``eos_token_id``, if any).
    """

    entities: Sequence[Entity]
    bias: float = 4.0
    alpha: float = 0.0
    decay: Decay = field(default_factory=lambda: Decay.ramp(100, floor=0.1))
    mode: str = "phrase"
    satisfy: str = "once"
    continuation_bias: float | None = 8.0
    variants: Union[str, Callable[[str], list[str]]] = "text"
    boost_starts_in_match: bool = False
    max_new_tokens: int | None = None
    slack: float = 24.0
    force: float = 12.0
    eos_damp: float = 10.0
    eos_token_id: int | Sequence[int] | None = None

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
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha!r}")
        if not isinstance(self.decay, Decay):
            raise TypeError(f"decay must be a focuskern.Decay, got {type(self.decay).__name__}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.satisfy not in SATISFY:
            raise ValueError(f"satisfy must be one of {SATISFY}, got {self.satisfy!r}")
        if self.max_new_tokens is not None and (isinstance(self.max_new_tokens, bool) or not isinstance(
                self.max_new_tokens, int) or not 0 < self.max_new_tokens <= MAX_TOKEN_ID):
            raise ValueError(f"max_new_tokens must be a positive int (< 2**31) or None, got {self.max_new_tokens!r}")
        _check_finite("slack", self.slack)
        if self.slack < 1e-6:
            raise ValueError(f"slack must be >= 1e-6, got {self.slack!r}")
        for name in ("force", "eos_damp"):
            _check_finite(name, getattr(self, name))
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.eos_token_id is not None:
            ids = self.eos_token_id if isinstance(self.eos_token_id, (list, tuple)) else [self.eos_token_id]
            if not 1 <= len(ids) <= MAX_EOS or any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in ids):
                raise ValueError(f"eos_token_id must be a non-negative int, a list of 1 to {MAX_EOS} of them, "
                                 f"or None, got {self.eos_token_id!r}")
        if isinstance(self.variants, str) and self.variants not in VARIANT_POLICIES:
            raise ValueError(f"variants must be one of {tuple(VARIANT_POLICIES)} or a callable, got {self.variants!r}")

    @classmethod
    def blend(cls, entities: Sequence[Entity], entity_bias: float, alpha: float, **kwargs) -> "FocusSpec":
        """Seed 000's gentle nudge ``x*(1-alpha) + E*alpha``, i.e. ``bias = alpha * E`` (a fixed push)."""
        return cls.fixed(entities, bias=alpha * entity_bias, alpha=alpha, **kwargs)

    @classmethod
    def fixed(cls, entities: Sequence[Entity], bias: float = 3.0, **kwargs) -> "FocusSpec":
        """The pre-policy defaults: a fixed push (constant strength, continuation = ``bias``, starts pushed
        inside an open phrase too, every variant with and without a leading space, no budget)."""
        settings = dict(decay=Decay.constant(), continuation_bias=None, variants="default",
                        boost_starts_in_match=True)
        return cls(entities, bias=bias, **{**settings, **kwargs})

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """``eos_token_id`` as a tuple (empty: ``None``)."""
        eos = self.eos_token_id
        return () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)

    @property
    def form_policy(self):
        """What :func:`focuskern.forms.entity_forms` takes: ``"text"``, ``"as_written"`` or a callable."""
        if self.variants in ("text", "as_written"):
            return self.variants
        return VARIANT_POLICIES[self.variants] if isinstance(self.variants, str) else self.variants

    @property
    def effective_continuation_bias(self) -> float:
        return self.bias if self.continuation_bias is None else self.continuation_bias

    def token_variants(self, tokenizer=None) -> list[list[tuple[int, ...]]]:
        """Per entity its distinct, non-empty token-id variants: its forms (``VARIANT_POLICIES``),
        each tokenized (for inspection and the experiments; the automaton follows the text)."""
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
                self.continuation_bias, self.variants, self.boost_starts_in_match, self.max_new_tokens,
                float(self.slack), float(self.force), float(self.eos_damp), self.eos_token_ids)


def _check_finite(name: str, value) -> None:
    """A finite int or float within ``[-MAX_SHIFT, MAX_SHIFT]`` (an int too large for a float too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -MAX_SHIFT <= value <= MAX_SHIFT:
        raise ValueError(f"{name} must be a finite number in [-{MAX_SHIFT:g}, {MAX_SHIFT:g}], got {value!r}")


def _check_entity(i: int, entity) -> None:
    if isinstance(entity, str):
        if not entity.strip():
            raise ValueError(f"entities[{i}] is empty")
        if "\0" in entity:
            raise ValueError(f"entities[{i}] holds a NUL character")
        try:
            entity.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate (JSON "\ud800"): no tokenizer takes it
            raise ValueError(f"entities[{i}] is not valid Unicode text ({e.reason} at {e.start})") from None
        return
    if not isinstance(entity, Sequence) or len(entity) == 0:
        raise TypeError(f"entities[{i}] must be a string or a non-empty list of token-id sequences")
    for seq in entity:
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or len(seq) == 0:
            raise TypeError(f"entities[{i}] must hold non-empty token-id sequences, got {seq!r}")
        for t in seq:
            if isinstance(t, bool) or not isinstance(t, int):
                raise ValueError(f"entities[{i}] holds an invalid token id {t!r}")
            if not 0 <= t <= MAX_TOKEN_ID:  # checked on the Python int, before any narrowing
                raise ValueError(f"entities[{i}]: token id {t} is outside [0, 2**31)")

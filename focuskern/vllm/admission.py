"""What a serving engine checks of a request's focus before admitting it (no vLLM import): the
operator's size limits, the spec itself, and -- given the model -- that every entity tokenizes and every
token id lies in the vocabulary.  Whatever passes here compiles in the engine.

Admission runs on the API server's event loop, so it stays short: the string entities of a focus the
engine builds off its step loop (:func:`~focuskern.vllm.rows.built_off_loop`: more than 64 entities
or 4096 characters) are not tokenized here (10,000 entities take seconds), only in the engine's build;
one that tokenizes to nothing there has the request served unfocused, logged.

Limits (environment variables, read at each admission; ``0`` or less disables one):

=============================  =========  ==========================================================
variable                       default    bounds
=============================  =========  ==========================================================
FOCUSKERN_MAX_ENTITIES         10000      entities per request
FOCUSKERN_MAX_ENTITY_CHARS     1000       characters of a string entity; token ids of a token-id
                                          entity (all its variants together)
FOCUSKERN_MAX_FOCUS_BYTES      1000000    the focus as JSON text, in UTF-8 bytes (as sent over HTTP;
                                          a dictionary is measured as ``json.dumps`` writes it)
=============================  =========  ==========================================================
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ..programs import check_in_vocab
from ..spec import FocusSpec
from .params import FOCUS_KEY, spec_from_params
from .rows import built_off_loop

LIMIT_DEFAULTS = {"FOCUSKERN_MAX_ENTITIES": 10_000, "FOCUSKERN_MAX_ENTITY_CHARS": 1_000,
                  "FOCUSKERN_MAX_FOCUS_BYTES": 1_000_000}
MAX_MESSAGE = 400  # characters of a refusal's message (it echoes client input)


@dataclass(frozen=True)
class Limits:
    """Operator limits on one focus (see the module docstring); ``None``: unbounded."""

    entities: Optional[int]
    entity_chars: Optional[int]
    focus_bytes: Optional[int]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Limits":
        """The limits the environment sets; raises ``ValueError`` naming a variable that is not an int."""
        values = []
        for name, default in LIMIT_DEFAULTS.items():
            raw = environ.get(name, "").strip()
            try:
                value = int(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name} must be an integer (0 or less: no limit), got {raw!r}") from None
            values.append(value if value > 0 else None)
        return cls(*values)


@dataclass(frozen=True)
class ModelFacts:
    """What the engine's model lets admission check: its vocabulary and its tokenizer (``None`` when the
    engine runs without one: string entities are refused)."""

    vocab_size: int
    tokenizer: Any = None


def admit(params: Any, limits: Limits, model: Optional[ModelFacts]) -> Optional[FocusSpec]:
    """The focus of ``params`` (a ``SamplingParams``) checked as the engine will use it, or ``None``.

    Raises
    ------
    ValueError
        naming ``focus`` and the field or limit, message clipped to ``MAX_MESSAGE`` characters.
    """
    extra = getattr(params, "extra_args", None)
    if not extra or extra.get(FOCUS_KEY) is None:
        return None
    try:
        check_limits(extra[FOCUS_KEY], limits)
        spec = spec_from_params(params)
        if model is not None:
            check_for_model(spec, model)
    except (TypeError, ValueError, OverflowError) as e:
        text = str(e)
        text = text if text.startswith("focus") else f"focus: {text}"
        raise ValueError(text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " ...") from e
    return spec


def check_limits(focus: Any, limits: Limits) -> None:
    """Refuse a focus over ``limits`` (JSON text is measured before it is parsed); one that is not even
    shaped like a focus is left to :func:`~focuskern.vllm.params.focus_spec` to name."""
    measured = isinstance(focus, str)
    if measured:
        _at_most("FOCUSKERN_MAX_FOCUS_BYTES", limits.focus_bytes, _utf8_bytes(focus), "focus: the JSON text has {n} bytes")
        try:
            focus = json.loads(focus)
        except (ValueError, RecursionError):
            return
    if not isinstance(focus, Mapping):
        return
    entities = focus.get("entities")
    if isinstance(entities, str) or not isinstance(entities, Sequence):
        return
    _at_most("FOCUSKERN_MAX_ENTITIES", limits.entities, len(entities), "focus.entities: {n} entities")
    for i, entity in enumerate(entities):
        _at_most("FOCUSKERN_MAX_ENTITY_CHARS", limits.entity_chars, _entity_size(entity),
                 f"focus.entities[{i}]: {{n}} characters (token ids)")
    if limits.focus_bytes is not None and not measured:
        text = json.dumps(focus, ensure_ascii=False, default=repr)
        _at_most("FOCUSKERN_MAX_FOCUS_BYTES", limits.focus_bytes, _utf8_bytes(text), "focus: the JSON text has {n} bytes")


def check_for_model(spec: FocusSpec, model: ModelFacts) -> None:
    """What the engine will do with ``spec`` that can fail for this model: tokenize every string entity
    (a tokenizer is needed; nothing may be left; only where the engine builds ``spec`` in its step:
    module docstring), every token id in ``[0, vocab_size)``, the end-of-text id(s) too."""
    if built_off_loop(spec) and model.tokenizer is not None:
        variants = [() if isinstance(e, str) else e for e in spec.entities]
    else:
        variants = spec.token_variants(model.tokenizer)  # without a tokenizer: refuses the first string
    check_in_vocab(variants, model.vocab_size)
    eos = spec.eos_token_id
    for t in eos if isinstance(eos, (list, tuple)) else () if eos is None else (eos,):
        if not 0 <= t < model.vocab_size:
            raise ValueError(f"eos_token_id {t} is outside [0, vocab_size={model.vocab_size})")


def _entity_size(entity: Any) -> int:
    """Characters of a string, token ids of a list of variants (items of anything else count one)."""
    if isinstance(entity, str):
        return len(entity)
    if not isinstance(entity, Sequence):
        return 1
    return sum(len(v) if isinstance(v, Sequence) and not isinstance(v, str) else 1 for v in entity)


def _utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))  # a lone surrogate is refused later, by name


def _at_most(name: str, limit: Optional[int], n: int, what: str) -> None:
    if limit is not None and n > limit:
        raise ValueError(f"{what.format(n=n)}, over the limit {name}={limit}")

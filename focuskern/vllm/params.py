"""A request's focus as vLLM carries it: ``SamplingParams(extra_args={"focus": {...}})``, turned into a
:class:`~focuskern.FocusSpec`.  No vLLM import.

Over HTTP it travels in ``"vllm_xargs": {"focus": "<the same dictionary as a JSON string>"}``: vLLM's
OpenAI server admits only strings, numbers and flat lists as ``vllm_xargs`` values, so a JSON string
is accepted wherever the dictionary is.

The dictionary speaks ``FocusSpec``'s vocabulary, in JSON types::

    {"entities": ["healthcare", [[1234, 567]]],   # strings, or per entity a list of token-id variants
     "bias": 4.0, "continuation_bias": 8.0, "alpha": 0.0,
     "decay": {"kind": "ramp", "horizon": 100, "floor": 0.1},   # or "constant"
     "mode": "phrase", "satisfy": "once", "variants": "text", "boost_starts_in_match": false,
     "max_new_tokens": 200, "slack": 24.0, "force": 12.0, "eos_damp": 10.0, "eos_token_id": 2}

Only ``entities`` is required; the values shown are the defaults, except ``max_new_tokens`` and
``eos_token_id`` (default: the request's ``max_tokens`` and ``eos_token_id``).  ``decay.kind`` is one of ``constant, linear, exponential (horizon =
half-life), cosine, cutoff, ramp``; ``floor`` defaults to 1 for ``constant`` and 0 otherwise.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional

from ..decay import CONSTANT, KIND_NAMES, Decay
from ..spec import VARIANT_POLICIES, FocusSpec

FOCUS_KEY = "focus"
_FIELDS = ("entities", "bias", "alpha", "decay", "mode", "satisfy", "continuation_bias", "variants",
           "boost_starts_in_match", "max_new_tokens", "slack", "force", "eos_damp", "eos_token_id")
_DECAY_FIELDS = ("kind", "horizon", "floor")


def focus_spec(focus: Any, defaults: Optional[Mapping[str, Any]] = None) -> FocusSpec:
    """Build the spec of one request's ``focus`` dictionary, or of its JSON text (module docstring);
    ``defaults``: values of the fields it leaves out or sets to null (``eos_token_id`` only where the
    spec then has a ``max_new_tokens``: it is the budget policy's end of text).  The spec is validated
    once (a 10,000-entity focus: milliseconds).

    Raises
    ------
    TypeError, ValueError
        naming the offending field as ``focus.<field>``.
    """
    if isinstance(focus, str):
        try:
            focus = json.loads(focus)
        except ValueError as e:  # JSONDecodeError, or an integer of more than 4300 digits
            raise ValueError(f"focus is a string but not JSON ({e})") from e
        except RecursionError:
            raise ValueError("focus is a string but not JSON (nested too deeply)") from None
    if not isinstance(focus, Mapping):
        raise TypeError(f"focus must be a JSON object (dict), got {type(focus).__name__}")
    unknown = sorted(set(focus) - set(_FIELDS), key=str)
    if unknown:
        raise ValueError(f"focus.{unknown[0]} is not a focus field; expected one of {', '.join(_FIELDS)}")
    if "entities" not in focus:
        raise ValueError("focus.entities is required (a list of strings or of token-id variant lists)")
    kwargs = dict(focus)
    for name, value in (defaults or {}).items():
        if kwargs.get(name) is None and (name != "eos_token_id" or kwargs.get("max_new_tokens") is not None):
            kwargs[name] = value
    if "decay" in kwargs:
        kwargs["decay"] = _decay(kwargs["decay"])
    variants = kwargs.get("variants", "default")
    if not isinstance(variants, str) or variants not in VARIANT_POLICIES:
        raise ValueError(f"focus.variants must be one of {tuple(VARIANT_POLICIES)}, got {variants!r}")
    flag = kwargs.get("boost_starts_in_match", False)
    if not isinstance(flag, bool):
        raise TypeError(f"focus.boost_starts_in_match must be true or false, got {flag!r}")
    try:
        return FocusSpec(**kwargs)
    except (TypeError, ValueError) as e:  # FocusSpec names the field; say where it sits
        raise type(e)(f"focus.{e}") from e


def spec_from_params(params: Any) -> Optional[FocusSpec]:
    """The focus of a ``vllm.SamplingParams`` (anything with ``extra_args``), or ``None`` when it has
    none.  Raises like :func:`focus_spec`."""
    extra = getattr(params, "extra_args", None)
    if not extra or extra.get(FOCUS_KEY) is None:
        return None
    # The budget policy's budget and end of text: the request's own max_tokens and eos_token_id (vLLM
    # sets it from the tokenizer at admission) unless the focus names them.
    max_tokens, eos = getattr(params, "max_tokens", None), getattr(params, "eos_token_id", None)
    defaults = {}
    if isinstance(max_tokens, int) and max_tokens > 0:
        defaults["max_new_tokens"] = max_tokens
    if isinstance(eos, int) and eos >= 0:
        defaults["eos_token_id"] = eos
    return focus_spec(extra[FOCUS_KEY], defaults)


def _decay(value: Any) -> Decay:
    if value is None or value == "constant":
        return Decay.constant()
    if not isinstance(value, Mapping):
        raise TypeError(f"focus.decay must be \"constant\" or an object with {', '.join(_DECAY_FIELDS)}, "
                        f"got {value!r}")
    unknown = sorted(set(value) - set(_DECAY_FIELDS), key=str)
    if unknown:
        raise ValueError(f"focus.decay.{unknown[0]} is not a decay field; expected {', '.join(_DECAY_FIELDS)}")
    kind = value.get("kind")
    if kind not in KIND_NAMES:
        raise ValueError(f"focus.decay.kind must be one of {', '.join(KIND_NAMES)}, got {kind!r}")
    code = KIND_NAMES.index(kind)
    numbers = {"horizon": value.get("horizon", 0.0), "floor": value.get("floor", 1.0 if code == CONSTANT else 0.0)}
    for name, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"focus.decay.{name} must be a number, got {number!r}")
    try:
        return Decay(code, numbers["horizon"], numbers["floor"])
    except ValueError as e:  # "decay: horizon H must be finite, ..."
        raise ValueError(f"focus.{e}") from e

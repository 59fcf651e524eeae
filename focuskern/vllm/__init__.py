"""vLLM drop-in: :class:`FocusLogitsProcessor`, a vLLM V1 logits processor (also Model Runner V2's).

    from vllm import LLM, SamplingParams
    from focuskern.vllm import FocusLogitsProcessor

    llm = LLM(model=..., logits_processors=[FocusLogitsProcessor])
    params = SamplingParams(max_tokens=200, extra_args={"focus": {
        "entities": ["healthcare", "autonomous driving"], "bias": 4.0, "continuation_bias": 8.0,
        "decay": {"kind": "ramp", "horizon": 100, "floor": 0.1}, "variants": "spaced",
        "boost_starts_in_match": False}})

Installed, the package also registers :class:`FocusLogitsPlugin` under the ``vllm.logits_processors``
entry-point group, so ``vllm serve`` loads it (it stands aside in engines that list
``FocusLogitsProcessor`` themselves); over HTTP the focus travels as ``"vllm_xargs": {"focus": {...}}``.
The focus dictionary is described in :mod:`focuskern.vllm.params`.

``import focuskern`` never imports vLLM; ``focuskern.vllm.params``, ``.rows`` and ``.slots`` (the
engine-facing bookkeeping) do not either.  The processor classes are imported on first access.
"""
from __future__ import annotations

from .params import FOCUS_KEY, focus_spec, spec_from_params

_NEED_VLLM = ("FocusLogitsProcessor", "FocusLogitsPlugin")
__all__ = ["FOCUS_KEY", *_NEED_VLLM, "focus_spec", "spec_from_params"]


def __getattr__(name: str):
    if name in _NEED_VLLM:  # imported on first use only: they import vLLM
        from . import processor
        return getattr(processor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Hugging Face transformers drop-ins.

* :class:`FocusLogitsProcessor` (:mod:`focuskern.hf.logits`): the logits lever, a ``LogitsProcessor``.
* :func:`attention_focus` (:mod:`focuskern.hf.attention`): the attention lever; importing that module
  registers ``attn_implementation="focus"`` with transformers, so it is imported on first use only
  (importing the logits processor leaves transformers' attention registry alone).
"""
from __future__ import annotations

from .logits import FocusLogitsProcessor

__all__ = ["FocusLogitsProcessor", "attention_focus"]


def __getattr__(name: str):
    if name == "attention_focus":
        from .attention import attention_focus
        return attention_focus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The ``cpp`` and ``cuda`` backends: ops defined and implemented in C++ (``csrc/``, loaded as
``focuskern._C``); this module adds their fake implementations so ``torch.compile`` can trace them.

``focuskern::focus_logits_{cpp,cuda}_`` and ``focuskern::focus_state_{cpp,cuda}_`` take the same
arguments as the other backends (``FOCUS_LOGITS_SCHEMA`` / ``FOCUS_STATE_SCHEMA``).
"""
from __future__ import annotations

from .dispatch import extension as _extension
from ._registry import register_noop_fake

_C, _why = _extension()
if _C is None:
    raise ImportError(_why)

NATIVE_OPS = tuple(register_noop_fake(f"{family}_{backend}_")
                   for family in ("focus_logits", "focus_state") for backend in ("cpp", "cuda"))

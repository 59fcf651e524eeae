"""Stateless focus ops (backends are imported lazily, on first use)."""
from .focus_logits import focus_logits_, validate_focus_logits_args

__all__ = ["focus_logits_", "validate_focus_logits_args"]

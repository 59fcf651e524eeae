"""Stateless focus ops (backends are imported lazily, on first use)."""
from .focus_attention import focus_attention, validate_focus_attention_args
from .focus_logits import focus_logits_, validate_focus_logits_args

__all__ = ["focus_logits_", "validate_focus_logits_args"]
__all__ += ["focus_attention", "validate_focus_attention_args"]

"""focuskern: fused kernels that steer LLM generation toward key entities."""
from .ops.dispatch import backends
from .positions import entity_positions, pasta_focus, pasta_head_scale, pasta_key_bias, positions_to_key_bias
from .decay import Decay
from .spec import FocusSpec
from .state import FocusState
from . import ops

__all__ = ["Decay", "FocusSpec", "FocusState", "attention_focus", "attention_readout", "backends",
           "entity_positions", "ops", "pasta_focus", "pasta_head_scale", "pasta_key_bias", "positions_to_key_bias"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # attention_focus lives in focuskern.hf.attention, which imports transformers (seconds) and registers
    # attn_implementation="focus": only on first use, so that `import focuskern` stays light.
    if name == "attention_focus":
        from .hf.attention import attention_focus
        return attention_focus
    if name == "attention_readout":
        from .hf.readout import attention_readout
        return attention_readout
    raise AttributeError(f"module 'focuskern' has no attribute {name!r}")

"""focuskern: fused kernels that steer LLM generation toward key entities."""
from ._backends import backends
from .decay import Decay
from . import ops

__all__ = ["Decay", "backends", "ops"]
__version__ = "0.1.0"

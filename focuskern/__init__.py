"""focuskern: fused kernels that steer LLM generation toward key entities."""
from ._backends import backends
from .decay import Decay
from .spec import FocusSpec
from .state import FocusState
from . import ops

__all__ = ["Decay", "FocusSpec", "FocusState", "backends", "ops"]
__version__ = "0.1.0"

"""Decay schedules: how strongly a row's focus pushes at generated step ``t``.

Every schedule is encoded as three float32 numbers ``(kind, horizon, floor)`` so a whole batch
travels to a kernel as one ``[B, 3]`` tensor.  The strength is

    s(t) = floor + (1 - floor) * f(t)

==========  ====  =============================================================
kind        code  f(t) (H = horizon)
==========  ====  =============================================================
constant    0     1
linear      1     max(0, 1 - t / H)
exponential 2     0.5 ** (t / H)            (H is the half-life)
cosine      3     (1 + cos(pi * min(t, H) / H)) / 2
cutoff      4     1 if t < H else 0
ramp        5     min(1, t / H)             (grows until step H)
==========  ====  =============================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CONSTANT, LINEAR, EXPONENTIAL, COSINE, CUTOFF, RAMP = range(6)
KIND_NAMES = ("constant", "linear", "exponential", "cosine", "cutoff", "ramp")
MIN_HORIZON, MAX_HORIZON = 1e-6, 1e12


def check_decay_triple(kind: float, horizon: float, floor: float, name: str = "decay") -> None:
    """Raise ``ValueError`` naming ``name`` unless (kind, horizon, floor) is a valid schedule: a known
    kind, a floor in [0, 1], a finite horizon, in ``[MIN_HORIZON, MAX_HORIZON]`` for kinds 1-5 (float32
    keeps ``t / H`` finite there)."""
    if not (0 <= kind < len(KIND_NAMES) and kind == int(kind)):  # NaN and inf fail the range first
        raise ValueError(f"{name}: unknown decay kind {kind!r}; expected 0..5 ({', '.join(KIND_NAMES)})")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"{name}: floor must be in [0, 1], got {floor!r}")
    if not math.isfinite(horizon) or (kind != CONSTANT and not MIN_HORIZON <= horizon <= MAX_HORIZON):
        raise ValueError(f"{name}: horizon H must be finite, in [{MIN_HORIZON:g}, {MAX_HORIZON:g}] for "
                         f"{KIND_NAMES[int(kind)]}, got {horizon!r}")


@dataclass(frozen=True)
class Decay:
    """A decay schedule (see the module docstring for the formulas)."""

    kind: int = CONSTANT
    horizon: float = 0.0
    floor: float = 1.0

    def __post_init__(self):
        try:
            triple = self.as_triple()
        except OverflowError:  # an int past float's range
            raise ValueError(f"decay: kind, horizon and floor must be finite numbers, got {self!r}") from None
        check_decay_triple(*triple)

    @classmethod
    def constant(cls) -> "Decay":
        return cls(CONSTANT, 0.0, 1.0)

    @classmethod
    def linear(cls, horizon: float, floor: float = 0.0) -> "Decay":
        return cls(LINEAR, horizon, floor)

    @classmethod
    def exponential(cls, half_life: float, floor: float = 0.0) -> "Decay":
        return cls(EXPONENTIAL, half_life, floor)

    @classmethod
    def cosine(cls, horizon: float, floor: float = 0.0) -> "Decay":
        return cls(COSINE, horizon, floor)

    @classmethod
    def cutoff(cls, horizon: float) -> "Decay":
        return cls(CUTOFF, horizon, 0.0)

    @classmethod
    def ramp(cls, horizon: float, floor: float = 0.0) -> "Decay":
        return cls(RAMP, horizon, floor)

    def as_triple(self) -> tuple[float, float, float]:
        return (float(self.kind), float(self.horizon), float(self.floor))


def decay_strength(decay: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Strength ``s`` [B] (float32) for ``decay`` [B, 3] and ``step`` [B] (int); no host sync on CUDA."""
    kind, horizon, floor = decay.float().unbind(-1)
    kinds = (LINEAR, EXPONENTIAL, COSINE, CUTOFF, RAMP)
    if decay.device.type == "cpu" and not torch.compiler.is_compiling():
        present = set(kind.unique().tolist())  # only the kinds in use: a dozen fewer tiny ops (free on CPU)
        if not present - {0.0}:
            return torch.ones_like(floor)  # all constant
        kinds = tuple(k for k in kinds if k in present)
    t = step.float()
    h = torch.where(horizon > 0, horizon, torch.ones_like(horizon))  # kind 0 may carry H = 0
    ratio = t / h
    shapes = {LINEAR: lambda: (1.0 - ratio).clamp_min(0.0), EXPONENTIAL: lambda: torch.exp2(-ratio),
              COSINE: lambda: 0.5 * (1.0 + torch.cos(math.pi * ratio.clamp_max(1.0))),
              CUTOFF: lambda: (t < h).float(), RAMP: lambda: ratio.clamp_max(1.0)}
    f = torch.ones_like(t)
    for k in kinds:
        f = torch.where(kind == k, shapes[k](), f)
    return floor + (1.0 - floor) * f

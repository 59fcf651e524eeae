"""Public entry point of the stateless logits-focus op.

    out[r, v] = (1 - s_r * alpha_r) * x[r, v] + s_r * sum_{j in row r, token_ids[j] = v} token_bias[j]

with ``s_r`` the decay strength of row ``r`` at ``step_r`` (see :mod:`focuskern.decay`).  A ``-inf``
entry bans its token whatever ``s_r`` is; duplicated ids in a row add up.
"""
from __future__ import annotations

import torch

from .dispatch import get_op
from ..decay import KIND_NAMES
from ._checks import LOGIT_DTYPES, check_tensor, check_values

# Shared by every backend's registered op ``focuskern::focus_logits_<backend>_``.
FOCUS_LOGITS_SCHEMA = ("(Tensor(a!) logits, Tensor row_offsets, Tensor token_ids, Tensor token_bias, "
                       "Tensor alpha, Tensor decay, Tensor step) -> ()")


def validate_focus_logits_args(logits, row_offsets, token_ids, token_bias, alpha, decay, step) -> None:
    """Check shapes, dtypes, devices and values; raises ``TypeError``/``ValueError`` naming the argument.

    Reads the tensors' values, so on CUDA it synchronizes: call it when the batch is built, not per step.
    """
    check_tensor("logits", logits, LOGIT_DTYPES, (None, None))
    dev = logits.device
    B, V = logits.shape
    check_tensor("row_offsets", row_offsets, (torch.int32,), (B + 1,), dev)
    check_tensor("token_ids", token_ids, (torch.int32,), (None,), dev)
    nnz = token_ids.shape[0]
    check_tensor("token_bias", token_bias, (torch.float32,), (nnz,), dev)
    check_tensor("alpha", alpha, (torch.float32,), (B,), dev)
    check_tensor("decay", decay, (torch.float32,), (B, 3), dev)
    check_tensor("step", step, (torch.int32,), (B,), dev)
    check_values("row_offsets", row_offsets[1:] >= row_offsets[:-1], "must be non-decreasing")
    check_values("row_offsets", (row_offsets[:1] == 0) & (row_offsets[-1:] == nnz),
                 f"must start at 0 and end at nnz={nnz}")
    check_values("token_ids", (token_ids >= 0) & (token_ids < V), f"ids must lie in [0, V={V})")
    check_values("token_bias", ~torch.isnan(token_bias) & (token_bias != float("inf")),
                 "must be finite or -inf (NaN and +inf are rejected)")
    check_values("alpha", (alpha >= 0) & (alpha <= 1), "must lie in [0, 1]")
    kind, horizon, floor = decay.unbind(-1)
    check_values("decay", (kind == kind.round()) & (kind >= 0) & (kind < len(KIND_NAMES)),
                 f"kind (column 0) must be one of 0..{len(KIND_NAMES) - 1} ({', '.join(KIND_NAMES)})")
    check_values("decay", (kind == 0) | (horizon > 0), "horizon H (column 1) must be > 0 for kinds 1-5")
    check_values("decay", (floor >= 0) & (floor <= 1), "floor (column 2) must lie in [0, 1]")
    check_values("step", step >= 0, "must be >= 0")


def focus_logits_(
    logits: torch.Tensor,
    row_offsets: torch.Tensor,
    token_ids: torch.Tensor,
    token_bias: torch.Tensor,
    alpha: torch.Tensor,
    decay: torch.Tensor,
    step: torch.Tensor,
    *,
    backend: str = "auto",
    validate: bool = True,
) -> torch.Tensor:
    """Bias, blend and decay ``logits`` in place, one launch for the whole batch.

    Parameters
    ----------
    logits : [B, V] float32 / float16 / bfloat16, rows may be strided; modified in place.
    row_offsets : [B + 1] int32, non-decreasing from 0 to nnz; row ``r`` owns entries
        ``row_offsets[r]:row_offsets[r+1]``.
    token_ids : [nnz] int32 in ``[0, V)``.
    token_bias : [nnz] float32, finite or ``-inf`` (a ban).
    alpha : [B] float32 in ``[0, 1]``; 0 on every row touches only the listed entries.
    decay : [B, 3] float32 ``(kind, horizon, floor)``, see :mod:`focuskern.decay`.
    step : [B] int32 >= 0, the decay step ``t`` of each row.
    backend : ``"auto"``, ``"torch"``, ``"triton"``, ``"cpp"`` or ``"cuda"``.
    validate : check arguments first (reads values: a host sync on CUDA; pass ``False`` in hot loops
        once the inputs are known to be good, and under ``torch.compile``).

    Returns
    -------
    ``logits`` (the same tensor).
    """
    if validate:
        validate_focus_logits_args(logits, row_offsets, token_ids, token_bias, alpha, decay, step)
    get_op("focus_logits", backend, logits.device)(logits, row_offsets, token_ids, token_bias, alpha, decay, step)
    return logits

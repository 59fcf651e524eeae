"""Public entry point of the stateless logits-focus op.

    out[r, v] = (1 - s_r * alpha_r) * x[r, v] + s_r * sum_{j in row r, token_ids[j] = v} token_bias[j]

with ``s_r`` the decay strength of row ``r`` at ``step_r`` (see :mod:`focuskern.decay`).  A ``-inf``
entry bans its token whatever ``s_r`` is; duplicated ids in a row add up.
"""
from __future__ import annotations

import functools
import os

import torch

from .dispatch import extension, get_op, op_name
from ..decay import KIND_NAMES
from ._checks import LOGIT_DTYPES, check_tensor, check_values

# Shared by every backend's registered op ``focuskern::focus_logits_<backend>_``.
FOCUS_LOGITS_SCHEMA = ("(Tensor(a!) logits, Tensor row_offsets, Tensor token_ids, Tensor token_bias, "
                       "Tensor alpha, Tensor decay, Tensor step) -> ()")


ARG_NAMES = ("logits", "row_offsets", "token_ids", "token_bias", "alpha", "decay", "step")


def validate_focus_logits_args(logits, row_offsets, token_ids, token_bias, alpha, decay, step) -> None:
    """Check shapes, dtypes, devices and values; raises ``TypeError``/``ValueError`` naming the argument.

    The value checks are reduced on the tensors' device and read back together: on CUDA that is one
    device-to-host copy, i.e. one synchronization (tens of microseconds, and it stalls the CPU until
    every queued kernel has run) -- call it when the batch is built, not per step.
    """
    check_tensor("logits", logits, LOGIT_DTYPES, (None, None))
    dev = logits.device
    B, V = logits.shape
    if any(stride == 0 and size > 1 for stride, size in zip(logits.stride(), logits.shape)):
        raise ValueError("logits: a broadcast (stride-0) view cannot be written in place; pass a copy")
    check_tensor("row_offsets", row_offsets, (torch.int32,), (B + 1,), dev)
    check_tensor("token_ids", token_ids, (torch.int32,), (None,), dev)
    nnz = token_ids.shape[0]
    check_tensor("token_bias", token_bias, (torch.float32,), (nnz,), dev)
    check_tensor("alpha", alpha, (torch.float32,), (B,), dev)
    check_tensor("decay", decay, (torch.float32,), (B, 3), dev)
    check_tensor("step", step, (torch.int32,), (B,), dev)
    kind, horizon, floor = decay.unbind(-1)
    checks = [
        ("row_offsets", row_offsets[1:] >= row_offsets[:-1], "must be non-decreasing"),
        ("row_offsets", (row_offsets[:1] == 0) & (row_offsets[-1:] == nnz), f"must start at 0 and end at nnz={nnz}"),
        ("token_ids", (token_ids >= 0) & (token_ids < V), f"ids must lie in [0, V={V})"),
        ("token_bias", ~torch.isnan(token_bias) & (token_bias != float("inf")),
         "must be finite or -inf (NaN and +inf are rejected)"),
        ("alpha", (alpha >= 0) & (alpha <= 1), "must lie in [0, 1]"),
        ("decay", (kind == kind.round()) & (kind >= 0) & (kind < len(KIND_NAMES)),
         f"kind (column 0) must be one of 0..{len(KIND_NAMES) - 1} ({', '.join(KIND_NAMES)})"),
        ("decay", (kind == 0) | (horizon > 0), "horizon H (column 1) must be > 0 for kinds 1-5"),
        ("decay", (floor >= 0) & (floor <= 1), "floor (column 2) must lie in [0, 1]"),
        ("step", step >= 0, "must be >= 0"),
    ]
    all_ok = torch.stack([ok.all() for _, ok, _ in checks]).tolist()  # the one host read
    for (name, ok, what), good in zip(checks, all_ok):
        if not good:
            check_values(name, ok, what)


@functools.lru_cache(maxsize=None)
def _resolved(backend: str, device: torch.device, forced: str | None):
    """``(op, is_cpp)`` for ``(backend, device)``: resolving costs ~5 us, as much as a small step's
    kernel.  ``forced`` (FOCUSKERN_BACKEND, which ``"auto"`` obeys) is part of the key."""
    name = op_name("focus_logits", backend, device)
    return getattr(torch.ops.focuskern, name), name == "focus_logits_cpp_"


@functools.lru_cache(maxsize=1)
def _native_check():
    """``focuskern._C.focus_logits_check`` (csrc/module.cpp), or None without the extension."""
    ext = extension()[0]
    return None if ext is None else getattr(ext, "focus_logits_check", None)


N_KINDS = len(KIND_NAMES)
CHECK, CHECK_AND_APPLY, CHECK_AND_APPLY_IF_AUTO = 0, 1, 2  # modes of the native check


def _rejected(args, code: int):
    """Raise the named error for arguments the native check rejected (``code`` = 1 + the position of
    the first bad one): :func:`validate_focus_logits_args` says what is wrong."""
    validate_focus_logits_args(*args)
    raise ValueError(f"{ARG_NAMES[code - 1]}: rejected by the native argument check")


def _checked_natively(args, mode: int) -> bool | None:
    """Validate ``args`` in one native pass over the small tensors; with ``CHECK_AND_APPLY`` the same
    call then runs the cpp op, with ``CHECK_AND_APPLY_IF_AUTO`` only where ``FOCUSKERN_BACKEND`` lets
    ``backend="auto"`` take cpp.  Returns whether the op has run, or None when the native check did not
    look at the arguments (no extension, tensors off the CPU, or tensors/modes that need the dispatcher:
    autograd, subclasses, dispatch modes); bad input raises :func:`validate_focus_logits_args`'s named
    error."""
    check = _native_check()
    if check is None:
        return None
    code = check(*args, N_KINDS, mode)
    if code < 0:
        return None
    if code > 0:
        _rejected(args, code)
    return mode != CHECK


# Called through a module global (dynamo folds it by identity under torch.compile): the attribute
# lookups of ``torch.compiler.is_compiling`` cost a tenth of a small step.
_is_compiling = torch.compiler.is_compiling


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
    logits : [B, V] float32 / float16 / bfloat16, any strides but broadcast (stride-0) ones (e.g. rows
        of a wider buffer); modified in place.  The other tensors may be strided views too (``params[:, 0]``, a transposed ``decay``,
        an ``expand``-ed ``alpha``): the launchers that need dense arrays copy them once per call.
    row_offsets : [B + 1] int32, non-decreasing from 0 to nnz; row ``r`` owns entries
        ``row_offsets[r]:row_offsets[r+1]``.
    token_ids : [nnz] int32 in ``[0, V)`` (checked when ``validate``; unchecked, every backend skips
        an id outside it rather than write out of bounds).
    token_bias : [nnz] float32, finite or ``-inf`` (a ban).
    alpha : [B] float32 in ``[0, 1]``; 0 on every row touches only the listed entries.
    decay : [B, 3] float32 ``(kind, horizon, floor)``, see :mod:`focuskern.decay`.
    step : [B] int32 >= 0, the decay step ``t`` of each row.
    backend : ``"auto"``, ``"torch"``, ``"triton"``, ``"cpp"`` or ``"cuda"``.
    validate : check arguments first.  On CPU every check runs natively in one pass over the small
        tensors, and with the ``cpp`` backend (what ``"auto"`` takes) the same native call applies the
        op without the dispatcher, so the default call costs less than ``validate=False`` does.  On
        CUDA the value checks are reductions read back to the host: one synchronization per call (the CPU waits for every queued kernel) -- pass ``False`` on
        the serving path once the inputs are known to be good, and under ``torch.compile``.

    Returns
    -------
    ``logits`` (the same tensor).
    """
    # The common CPU call: checks and op in one native call, without the dispatcher, written out here
    # (no argument tuple, no helper frame: together as much as the native call on a small step).
    if validate and backend == "auto" and not _is_compiling():
        check = _native_check()
        if check is not None:
            code = check(logits, row_offsets, token_ids, token_bias, alpha, decay, step, N_KINDS,
                         CHECK_AND_APPLY_IF_AUTO)
            if code == 0:
                return logits
            if code > 0:
                _rejected((logits, row_offsets, token_ids, token_bias, alpha, decay, step), code)
    args = (logits, row_offsets, token_ids, token_bias, alpha, decay, step)
    if _is_compiling():
        if validate:
            validate_focus_logits_args(*args)
        get_op("focus_logits", backend, logits.device)(*args)
        return logits
    if not isinstance(logits, torch.Tensor):
        check_tensor("logits", logits, LOGIT_DTYPES, (None, None))
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    forced = os.environ.get("FOCUSKERN_BACKEND") if backend == "auto" else None
    op, is_cpp = _resolved(backend, logits.device, forced)
    if validate:
        done = _checked_natively(args, CHECK_AND_APPLY if is_cpp else CHECK)
        if done:
            return logits
        if done is None:
            validate_focus_logits_args(*args)
    op(*args)
    return logits

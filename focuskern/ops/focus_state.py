"""The stateful op behind :class:`focuskern.FocusState`: advance every row's automaton with the token
it generated last, then bias/blend/decay its logits -- one launch for the batch.

For row ``r`` following program ``p`` (``prog[r] = p >= 0``; -1 leaves the row untouched), with the
tables of :mod:`focuskern.automaton` and ``unsat(L)`` = "list ``L`` holds an entity whose bit in
``sat[r]`` is clear":

1. if ``last_tokens[r]`` is given and in ``[0, V)`` (``V = len(tok_off) - 1``; other ids are not fed):
   the byte walk of docs/text-tracking.md section 2 feeds the token's symbols to the row's node and
   context (both in the ``node`` word: ``local_node | ctx << CTX_SHIFT``), with ``sat <- sat | out(u)``
   at every node ``u`` entered (satisfy="once"), and ``step <- step + 1``;
2. a closure entry ``(k, c)`` of ``node`` is *alive* if ``unsat(through(c))`` (phrase mode);
   2a. an entry whose token's logit is ``-inf`` before this step's writes is *banned*; when no alive
   entry of the node is unbanned, every banned entry gives up: ``sat <- sat | through(c)``;
   aliveness is taken after; continuation slots = slots of alive entries; first slots = slots with
   ``unsat(first_pc(k))``, ``pc = 2 * (ctx & CTX_SPACED != 0) + (ctx & CTX_SENTENCE != 0)``
   (suppressed while an entry is alive unless ``boost_starts_in_match``);
3. ``val = max(bias if first, continuation_bias if continuation)``, and with ``s`` the decay strength at
   ``step``: ``out[r, v] = (1 - s*alpha) * x[r, v] + s * val + u * force`` for boosted ``v``,
   ``(1 - s*alpha) * x`` elsewhere;
4. the budget policy (``budget > 0`` and satisfy="once"): with ``m`` = entities of the program minus
   the set bits of ``sat`` and ``left = max(budget - step, 1)``, ``u = clamp(1 - left / (m * slack),
   0, 1)`` (0 without a budget or with ``m = 0``), and while ``m > 0`` each distinct end-of-text id
   ``EOS0..EOS3`` in ``[0, V)`` gets ``- eos_damp`` after the writes of step 3.

Work per row and step: one pass over the program's slots and the lists they own (early exit at the
first unsatisfied entity), i.e. linear in the program's size, never in entities x nodes; a budgeted row adds
a popcount of its ``sat`` words (entities / 32).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from .dispatch import get_op, resolve
from .layout import FOCUS_STATE_ARGS

FOCUS_STATE_SCHEMA = FOCUS_STATE_ARGS


class FocusTables(NamedTuple):
    """Device tables of all programs of a batch (columns: :mod:`focuskern.ops.layout`), bounds global."""

    prog_f32: torch.Tensor  # [P, F.WIDTH] float32
    prog_i32: torch.Tensor  # [P, I.WIDTH] int32
    node: torch.Tensor  # [N, N_.WIDTH] int32
    slot: torch.Tensor  # [S, S_.WIDTH] int32
    closure: torch.Tensor  # [E, C.WIDTH] int32
    ents: torch.Tensor  # [M] int32
    tok_off: torch.Tensor  # [V + 1] int32, token t's symbols: tok_sym[tok_off[t]:tok_off[t + 1]]
    tok_sym: torch.Tensor  # [T] int32
    byte_class: torch.Tensor  # [256] int32


class RowState(NamedTuple):
    """Per-row device state; ``node``, ``sat`` and ``step`` are updated in place."""

    prog: torch.Tensor  # [B] int32, -1 = untouched row
    node: torch.Tensor  # [B] int32, program-local AC node | (row context << CTX_SHIFT)
    sat: torch.Tensor  # [B, W] int32, satisfied-entity bitset
    step: torch.Tensor  # [B] int32, tokens generated so far


class FocusStateOp:
    """The op of one backend for one device, resolved once (``"auto"`` is not re-resolved per step)."""

    def __init__(self, backend: str, device: torch.device):
        self.backend = resolve(backend, device, "focus_state")
        self._op = get_op("focus_state", self.backend, device)

    def __call__(self, logits: torch.Tensor, last_tokens: Optional[torch.Tensor], rows: RowState,
                 tables: FocusTables, limits: Sequence[int], blend: bool) -> None:
        """Run the op.  Arguments are trusted (FocusState validated them when its specs were added);
        ``last_tokens`` may have any strides and be int32 or int64: every backend reads either dtype
        without narrowing and leaves a row whose id lies outside ``[0, V)`` unfed (an int64 id >= 2^31
        never wraps into the vocabulary), so nothing is cast or masked here, per step."""
        if last_tokens is not None:
            last_tokens = last_tokens.contiguous()
        self._op(logits, last_tokens, *rows, *tables, list(limits), blend)

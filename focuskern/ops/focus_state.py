"""The stateful op behind :class:`focuskern.FocusState`: advance every row's automaton with the token
it generated last, then bias/blend/decay its logits -- one launch for the batch.

For row ``r`` following program ``p`` (``row_prog[r] = p >= 0``; -1 leaves the row untouched):

1. if ``last_tokens`` is given: ``node <- delta(node, last_tokens[r])`` (Aho-Corasick),
   ``sat <- sat | node_out[node]`` (satisfy="once"), ``step <- step + 1``;
2. ``alive(c) = node_mask[c] & ~sat != 0``; continuation slots = closure entries of ``node`` with an
   alive child (phrase mode); first slots = ``slot_first & ~sat != 0`` (suppressed while a
   continuation is open unless ``boost_starts_in_match``);
3. ``val = max(bias if first, continuation_bias if continuation)``, and with ``s`` the decay strength at
   ``step``: ``out[r, v] = (1 - s*alpha) * x[r, v] + s * val`` for boosted ``v``, ``(1 - s*alpha) * x``
   elsewhere.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .dispatch import get_op

# Columns of the per-program parameter tables.
F_BIAS, F_CONT, F_ALPHA, F_KIND, F_HORIZON, F_FLOOR = range(6)
I_NODE_BASE, I_SLOT_BASE, I_N_SLOTS, I_PHRASE, I_ONCE, I_STARTS_IN_MATCH = range(6)


# Shared by every backend's registered op ``focuskern::focus_state_<backend>_``.
FOCUS_STATE_SCHEMA = (
    "(Tensor(a!) logits, Tensor? last_tokens, Tensor prog, Tensor(b!) node, Tensor(c!) sat, Tensor(d!) step, "
    "Tensor prog_f32, Tensor prog_i32, Tensor node_mask, Tensor node_out, Tensor clo_start, Tensor clo_end, "
    "Tensor clo_slot, Tensor clo_child, Tensor slot_token, Tensor slot_first, Tensor slot_root_child, "
    "int max_slots, int max_closure, bool blend) -> ()")


class FocusTables(NamedTuple):
    """Device tables of all programs of a batch (see :mod:`focuskern.automaton`), indices global."""

    prog_f32: torch.Tensor  # [P, 6] float32
    prog_i32: torch.Tensor  # [P, 6] int32
    node_mask: torch.Tensor  # [N, W] int32
    node_out: torch.Tensor  # [N, W] int32
    clo_start: torch.Tensor  # [N] int32 (global closure index)
    clo_end: torch.Tensor  # [N] int32
    clo_slot: torch.Tensor  # [E] int32 (program-local slot)
    clo_child: torch.Tensor  # [E] int32 (program-local node)
    slot_token: torch.Tensor  # [S] int32
    slot_first: torch.Tensor  # [S, W] int32
    slot_root_child: torch.Tensor  # [S] int32 (program-local node)


class RowState(NamedTuple):
    """Per-row device state; ``node``, ``sat`` and ``step`` are updated in place."""

    prog: torch.Tensor  # [B] int32, -1 = untouched row
    node: torch.Tensor  # [B] int32, program-local AC state
    sat: torch.Tensor  # [B, W] int32, satisfied-entity bitset
    step: torch.Tensor  # [B] int32, tokens generated so far


def focus_state_apply_(
    backend: str,
    logits: torch.Tensor,
    last_tokens: Optional[torch.Tensor],
    rows: RowState,
    tables: FocusTables,
    max_slots: int,
    max_closure: int,
    blend: bool,
) -> None:
    """Run the op (arguments are trusted: FocusState validated them when its specs were added)."""
    get_op("focus_state", backend, logits.device)(logits, last_tokens, *rows, *tables, max_slots, max_closure, blend)

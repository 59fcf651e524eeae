"""Focus for vLLM Model Runner V2 (imports no vLLM): a state row per request slot, and under speculative
decoding one per draft token.

Each step serves the slots of the batch and reads the newest tokens from the model's input ids, on the
device.  A row holds where the token the model reads is not its request's next unconsumed output (a
prompt chunk, a re-read history) and advances otherwise.

**Speculative decoding.**  With ``drafts = K`` (the engine's ``num_speculative_tokens``), a request's
logits rows are contiguous: row 0 reads its last committed token, row ``k`` its ``k``-th draft token
(``expanded_local_pos = k``); up to ``K + 1`` rows.  Row ``k`` must be steered as sequential decoding
would steer that position: from the state after the committed tokens and drafts ``1..k``, with the
give-ups of rows ``0..k-1`` (a banned token read off their logits) in it.  So the state keeps ``K + 1``
*lanes* per slot, and a step runs ``K + 1`` launches: launch ``k`` copies lane ``k - 1`` into lane
``k`` and advances and biases it with row ``k`` (requests with fewer rows are pointed at a spare row
nothing follows, so they neither advance nor bias).  Which drafts the engine accepted is known at the
next step only: lane ``a`` then holds the state after the ``a`` accepted drafts, and ``a`` is read off
the positions, ``pos(row 0) - prompt_len - step(lane 0)``.  Launch 0 forks lane 0 from lane ``a``.
Without drafts a step is one launch, as before.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from .rows import _Rows


class SlotFocus(_Rows):
    """Focus for vLLM Model Runner V2's request slots (see :meth:`add`, :meth:`flush`, :meth:`apply`).

    Parameters
    ----------
    slots : the runner's ``max_num_reqs``.
    vocab_size, device, tokenizer, backend, pin_memory : as for :class:`~focuskern.vllm.rows.BatchFocus`.
    drafts : the engine's speculative tokens per step (``num_speculative_tokens``; 0 without).

    State row ``k * slots + s`` is slot ``s``'s lane ``k`` (module docstring); row ``slots * (drafts + 1)``
    (only with drafts) follows no spec.  All per-step decisions are made on the device.
    """

    def __init__(self, slots: int, vocab_size: int, device, tokenizer=None, *, drafts: int = 0,
                 backend: str = "auto", pin_memory: bool = False):
        if isinstance(drafts, bool) or not isinstance(drafts, int) or drafts < 0:
            raise ValueError(f"drafts must be a non-negative int, got {drafts!r}")
        self.slots, self.lanes = slots, drafts + 1
        super().__init__(slots * self.lanes + (drafts > 0), vocab_size, device, tokenizer, backend, pin_memory)
        self.focused = np.zeros(slots, dtype=bool)
        self._replay: dict[int, tuple[int, int]] = {}

    def add(self, slot: int, params: Any, prompt_len: int, prefill_len: int) -> bool:
        """A request enters ``slot`` (whatever the slot held before is dropped).  ``prefill_len -
        prompt_len`` output tokens it generated before (resumed after preemption) are replayed by the
        next :meth:`flush`.  Returns whether the request is focused."""
        spec = self.spec(params)
        self._replay.pop(slot, None)
        if spec is None and not self.focused[slot]:
            return False
        self.focused[slot] = self.set_row(slot, spec)
        for lane in range(1, self.lanes):  # the same spec: compiled once, for lane 0
            self.state.set_row(lane * self.slots + slot, spec if self.focused[slot] else None)
        if self.focused[slot] and prefill_len > prompt_len:
            self._replay[slot] = (prompt_len, prefill_len)
        return bool(self.focused[slot])

    def flush(self, token_ids: Callable[[int, int, int], Sequence[int]]) -> None:
        """Replay the histories of resumed requests (into lane 0, which the next step forks from);
        ``token_ids(slot, start, stop)`` reads a slot's tokens (a device read: rare, only after
        preemption).  The newest history token is left for the step that reads it as model input."""
        for slot, (prompt_len, prefill_len) in self._replay.items():
            self.state.advance_row(slot, token_ids(slot, prompt_len, prefill_len - 1))
        self._replay.clear()

    def apply(self, logits: torch.Tensor, slots: torch.Tensor, slots_host: np.ndarray, input_ids: torch.Tensor,
              pos: torch.Tensor, prompt_len: torch.Tensor, local_pos: torch.Tensor) -> torch.Tensor:
        """Bias ``logits`` [b, V] whose row ``i`` belongs to slot ``slots[i]`` ([b] device) and is its
        request's row ``local_pos[i]`` ([b] device; 0 without drafts), advancing each row by
        ``input_ids[i]`` when that token, at position ``pos[i]``, is the next token its lane has not
        consumed (``prompt_len`` [max slots] device).  ``slots_host``: the slot of each request, on the
        host (``idx_mapping_np``)."""
        if not self.focused[slots_host].any():
            return logits
        slots = slots.long()
        if self.lanes == 1:
            hold = (pos - prompt_len[slots]) != self.state.step[slots]
            return self.state.apply_(logits, input_ids, rows=slots, hold=hold)
        return self._apply_lanes(logits, slots, len(slots_host), input_ids, pos, prompt_len, local_pos.long())

    def _apply_lanes(self, logits, slots, requests: int, input_ids, pos, prompt_len, local_pos) -> torch.Tensor:
        """The ``K + 1`` launches of a step with drafts (module docstring)."""
        index = torch.arange(logits.shape[0], device=logits.device)
        request = torch.cumsum(local_pos == 0, 0) - 1  # rows of a request are contiguous, row 0 first
        first = torch.zeros(requests, dtype=torch.long, device=logits.device)
        first.scatter_reduce_(0, request, index, "amin", include_self=False)
        count = torch.zeros_like(first).scatter_add_(0, request, torch.ones_like(index))
        slot = slots[first]
        spare = torch.full_like(slot, self.slots * self.lanes)
        steps = self.state.step
        accepted = (pos[first] - prompt_len[slot] - steps[slot]).clamp(0, self.lanes - 1)
        for k in range(self.lanes):
            lane = k * self.slots + slot
            self.state.copy_rows_(accepted * self.slots + slot if k == 0 else lane - self.slots, lane)
            served = count > k
            row = torch.where(served, first + k, first + count - 1)  # a request's own row: no two alike
            hold = (pos[row] - prompt_len[slot]) != steps[lane]
            chunk = logits[row]
            self.state.apply_(chunk, input_ids[row], rows=torch.where(served, lane, spare), hold=hold)
            logits[row] = chunk
        return logits

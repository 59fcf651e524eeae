"""FocusState: the device-resident focus state of a batch of generation rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .ops.dispatch import resolve
from .automaton import Program, compile_program, words_for
from .ops._checks import LOGIT_DTYPES, check_tensor
from .ops.focus_state import I_NODE_BASE, FocusTables, RowState, focus_state_apply_
from .spec import FocusSpec

_TABLE_WIDTH = 6  # columns of prog_f32 / prog_i32
_MASK_TABLES = ("node_mask", "node_out", "slot_first")


@dataclass
class _Entry:
    key: tuple
    spec: FocusSpec
    program: Program
    f32: list[float]
    i32_flags: list[int]  # phrase, once, starts_in_match
    blends: bool
    refs: int = 0


class FocusState:
    """Row ``r`` of a batch follows ``specs[r]`` (``None`` leaves the row untouched).

    Rows with equal specs share one compiled automaton.  Rows can be appended, replaced, moved,
    swapped and reordered without touching the others; specs are validated (and tokenized) when they
    are added, never per step.  :meth:`apply_` makes no host-device sync; it can also serve a subset
    of the rows and hold rows that generated nothing (a serving engine's batch).

    Parameters
    ----------
    specs : one :class:`FocusSpec` or ``None`` per row.
    vocab_size : number of token ids; logits may be wider (padded vocabularies).
    device : where the state and the logits live.
    tokenizer : tokenizes string entities (not needed for token-id entities).
    backend : ``"auto"``, ``"torch"``, ``"triton"``, ``"cpp"`` or ``"cuda"``.
    """

    def __init__(self, specs: Sequence[Optional[FocusSpec]], vocab_size: int, device, tokenizer=None,
                 *, backend: str = "auto"):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.backend = resolve(backend, self.device, "focus_state") if backend != "auto" else backend
        self._entries: list[_Entry] = []
        self._pid_by_key: dict[tuple, int] = {}
        self._row_pid: list[Optional[int]] = []
        self._words = 1
        self._reset_tables()
        self._rows = RowState(*(self._zeros(0, dtype=torch.int32) for _ in range(2)),
                              self._zeros(0, 1, dtype=torch.int32), self._zeros(0, dtype=torch.int32))
        pids = [self._acquire(spec) for spec in specs]
        self._row_pid = pids
        self._rows = RowState(
            torch.tensor([-1 if p is None else p for p in pids], dtype=torch.int32, device=self.device),
            self._zeros(len(pids), dtype=torch.int32),
            self._zeros(len(pids), self._words, dtype=torch.int32),
            self._zeros(len(pids), dtype=torch.int32),
        )

    # ------------------------------------------------------------------ rows
    def __len__(self) -> int:
        return len(self._row_pid)

    @property
    def step(self) -> torch.Tensor:
        """[B] int32: tokens each row has generated (its decay step)."""
        return self._rows.step

    def spec(self, row: int) -> Optional[FocusSpec]:
        pid = self._row_pid[self._index(row)]
        return None if pid is None else self._entries[pid].spec

    def append(self, spec: Optional[FocusSpec]) -> int:
        """Add a row at the end; returns its index."""
        pid = self._acquire(spec)
        self._row_pid.append(pid)
        prog, node, sat, step = self._rows
        one = self._zeros(1, dtype=torch.int32)
        self._rows = RowState(torch.cat([prog, one - 1 if pid is None else one + pid]), torch.cat([node, one]),
                              torch.cat([sat, self._zeros(1, self._words, dtype=torch.int32)]), torch.cat([step, one]))
        return len(self) - 1

    def set_row(self, row: int, spec: Optional[FocusSpec]) -> None:
        """Give ``row`` a new spec (``None`` = untouched) and a fresh state."""
        row = self._index(row)
        pid = self._acquire(spec)
        self._release(self._row_pid[row])
        self._row_pid[row] = pid
        self._rows.prog[row] = -1 if pid is None else pid
        self._rows.node[row] = 0
        self._rows.sat[row] = 0
        self._rows.step[row] = 0
        self._maybe_compact()

    def swap(self, i: int, j: int) -> None:
        """Exchange rows ``i`` and ``j`` (specs and state)."""
        i, j = self._index(i), self._index(j)
        self._row_pid[i], self._row_pid[j] = self._row_pid[j], self._row_pid[i]
        idx = torch.tensor([i, j], device=self.device)
        for t in self._rows:
            t[idx] = t[idx.flip(0)]

    def move(self, src: int, dst: int) -> None:
        """Row ``dst`` takes ``src``'s spec and state; ``src`` becomes untouched."""
        src, dst = self._index(src), self._index(dst)
        if src == dst:
            return
        self._release(self._row_pid[dst])
        self._row_pid[dst], self._row_pid[src] = self._row_pid[src], None
        for t in self._rows:
            t[dst] = t[src]
        self._rows.prog[src] = -1
        self._maybe_compact()

    def resize(self, rows: int) -> None:
        """Drop rows past ``rows`` or append untouched rows up to it."""
        while len(self) < rows:
            self.append(None)
        for pid in self._row_pid[rows:]:
            self._release(pid)
        del self._row_pid[rows:]
        self._rows = RowState(*(t[:rows] for t in self._rows))
        self._maybe_compact()

    def reorder_(self, index: torch.Tensor) -> None:
        """Row ``r`` takes the automaton state of row ``index[r]`` (a device tensor, no sync).

        Specs stay where they are, so ``index[r]`` must follow the same spec as ``r`` -- as in beam
        search, where a beam's parent is a beam of the same prompt."""
        index = index.to(device=self.device, dtype=torch.long)
        for t in self._rows[1:]:
            t.copy_(t[index])

    # ----------------------------------------------------------------- apply
    def apply_(self, logits: torch.Tensor, last_tokens: Optional[torch.Tensor] = None, *,
               rows: Optional[torch.Tensor] = None, hold: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Advance each row with the token it generated last, then bias its logits in place.

        Parameters
        ----------
        logits : [b, V] float32/float16/bfloat16, ``V >= vocab_size``; row ``i`` belongs to state row
            ``i``, or to ``rows[i]``.
        last_tokens : [b] int32/int64, optional: the token each row generated since the last call.
        rows : [b] int32/int64, optional: distinct state rows of the logits rows (default: every row, in
            order).  State rows not listed are neither advanced nor biased.
        hold : [b] bool, optional (with ``last_tokens``): rows that generated nothing since the last
            call (a request still reading its prompt).  They keep their state; their ``last_tokens``
            entries are ignored.

        Returns
        -------
        ``logits``, modified in place.
        """
        if rows is not None:
            check_tensor("rows", rows, (torch.int32, torch.int64), (None,), self.device)
        b = len(self) if rows is None else rows.shape[0]
        check_tensor("logits", logits, LOGIT_DTYPES, (b, None), self.device)
        if logits.shape[1] < self.vocab_size:
            raise ValueError(f"logits has {logits.shape[1]} columns, fewer than vocab_size={self.vocab_size}")
        if last_tokens is not None:
            check_tensor("last_tokens", last_tokens, (torch.int32, torch.int64), (b,), self.device)
            last_tokens = last_tokens.to(torch.int32)
        if hold is not None:
            if last_tokens is None:
                raise ValueError("hold needs last_tokens (it says which rows do not advance)")
            check_tensor("hold", hold, (torch.bool,), (b,), self.device)
        if self._active_rows() == 0:
            return logits
        # A subset works on gathered copies of its rows, written back once advanced.
        state = self._rows if rows is None else RowState(*(t[rows] for t in self._rows))
        if hold is not None:
            last_tokens = self._rewind_(state, last_tokens, hold)
        focus_state_apply_(self.backend, logits, last_tokens, state, self._tables, self._max_slots,
                           self._max_closure, self._blend_rows() > 0)
        if rows is not None and last_tokens is not None:
            for mine, advanced in zip(self._rows[1:], state[1:]):
                mine[rows] = advanced
        return logits

    def advance_row(self, row: int, tokens: Sequence[int]) -> None:
        """Advance ``row`` over ``tokens`` (oldest first) without biasing anything: the history of a
        request that joins mid-generation, e.g. one resumed after preemption.  One launch per token on
        a scratch logits row, so it costs what ``len(tokens)`` decoding steps of one row cost."""
        row = self._index(row)
        pid = self._row_pid[row]
        ids = torch.tensor(list(tokens), dtype=torch.int32, device=self.device)
        if pid is None or ids.numel() == 0:
            return
        one = RowState(*(t[row:row + 1] for t in self._rows))  # views: the launches update the row
        scratch = self._zeros(1, self.vocab_size, dtype=torch.float32)
        for i in range(ids.numel()):
            focus_state_apply_(self.backend, scratch, ids[i:i + 1], one, self._tables, self._max_slots,
                               self._max_closure, self._entries[pid].blends)

    def _rewind_(self, state: RowState, last_tokens: torch.Tensor, hold: torch.Tensor) -> torch.Tensor:
        """Step each held row back to its node's trie parent and one step earlier, and return the
        tokens with the held rows' replaced by the edge token back to their node: the launch then
        re-enters the node, i.e. the row keeps its state.  Entities the node completes were recorded
        in ``sat`` when the row first got there, so re-entering changes nothing; the root has no parent
        and stays the root under ``vocab_size``, a token no program holds."""
        held = hold & (state.prog >= 0)
        base = self._tables.prog_i32[state.prog.clamp_min(0).long(), I_NODE_BASE]
        # Untouched rows may hold a stale node of a dropped program: index 0 keeps the gather in bounds.
        g = torch.where(held, base + state.node, 0).long()
        state.node.copy_(torch.where(held, self._parent[g], state.node))
        state.step.sub_(held.int())
        return torch.where(held, self._edge[g], last_tokens)

    def boosts(self) -> list[dict[int, float]]:
        """What :meth:`apply_` would add this step, per row ``{token: s * value}`` (for inspection)."""
        probe = torch.zeros(len(self), self.vocab_size, device=self.device)
        self.apply_(probe)
        rows, cols = probe.nonzero(as_tuple=True)
        out: list[dict[int, float]] = [{} for _ in range(len(self))]
        for r, c, v in zip(rows.tolist(), cols.tolist(), probe[rows, cols].tolist()):
            out[r][c] = v
        return out

    # -------------------------------------------------------------- programs
    def _zeros(self, *shape, dtype):
        return torch.zeros(*shape, dtype=dtype, device=self.device)

    def _index(self, row: int) -> int:
        if isinstance(row, bool) or not isinstance(row, int) or not -len(self) <= row < len(self):
            raise IndexError(f"row {row!r} out of range for a batch of {len(self)}")
        return row % len(self)

    def _active_rows(self) -> int:
        return sum(p is not None for p in self._row_pid)

    def _blend_rows(self) -> int:
        return sum(p is not None and self._entries[p].blends for p in self._row_pid)

    def _acquire(self, spec: Optional[FocusSpec]) -> Optional[int]:
        if spec is None:
            return None
        if not isinstance(spec, FocusSpec):
            raise TypeError(f"specs must hold FocusSpec or None, got {type(spec).__name__}")
        key = spec.key()
        pid = self._pid_by_key.get(key)
        if pid is None:
            pid = self._add_program(spec, key)
        self._entries[pid].refs += 1
        return pid

    def _release(self, pid: Optional[int]) -> None:
        if pid is not None:
            self._entries[pid].refs -= 1

    def _add_program(self, spec: FocusSpec, key: tuple) -> int:
        variants = spec.token_variants(self.tokenizer)
        for i, entity in enumerate(variants):
            for seq in entity:
                bad = [t for t in seq if not 0 <= t < self.vocab_size]
                if bad:
                    raise ValueError(f"entities[{i}]: token id {bad[0]} is outside [0, vocab_size={self.vocab_size})")
        program = compile_program(variants, phrase=spec.mode == "phrase")
        f32 = [spec.bias, spec.effective_continuation_bias, spec.alpha, *spec.decay.as_triple()]
        flags = [int(spec.mode == "phrase"), int(spec.satisfy == "once"), int(spec.boost_starts_in_match)]
        entry = _Entry(key, spec, program, f32, flags, blends=spec.alpha > 0)
        self._widen(words_for(program.n_entities))
        self._entries.append(entry)
        self._pid_by_key[key] = len(self._entries) - 1
        self._append_tables([entry])
        return len(self._entries) - 1

    def _widen(self, words: int) -> None:
        """Grow every bitset to ``words`` words (a spec with more entities than any before)."""
        if words <= self._words:
            return
        pad = lambda t: torch.nn.functional.pad(t, (0, words - t.shape[1]))  # noqa: E731
        self._tables = self._tables._replace(**{n: pad(getattr(self._tables, n)) for n in _MASK_TABLES})
        self._rows = self._rows._replace(sat=pad(self._rows.sat))
        self._words = words

    def _reset_tables(self) -> None:
        z32 = lambda *s: self._zeros(*s, dtype=torch.int32)  # noqa: E731
        # One sentinel closure entry keeps padded gathers in bounds when no program has a closure.
        self._tables = FocusTables(
            self._zeros(0, _TABLE_WIDTH, dtype=torch.float32), z32(0, _TABLE_WIDTH), z32(0, self._words),
            z32(0, self._words), z32(0), z32(0), z32(1) - 1, z32(1), z32(0), z32(0, self._words), z32(0))
        # Per global node: its trie parent (program-local) and edge token, for holding rows (_rewind_).
        self._parent, self._edge = z32(0), z32(0)
        self._max_slots = 1
        self._max_closure = 1

    def _append_tables(self, entries: list[_Entry]) -> None:
        t = self._tables
        n_nodes, n_slots, n_clo = t.clo_start.shape[0], t.slot_token.shape[0], t.clo_slot.shape[0]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in FocusTables._fields}
        for e in entries:
            prog = e.program.padded_masks(self._words)
            parts["prog_f32"].append(np.asarray([e.f32], dtype=np.float32))
            parts["prog_i32"].append(np.asarray([[n_nodes, n_slots, prog.n_slots, *e.i32_flags]], dtype=np.int32))
            for name in ("node_mask", "node_out", "clo_slot", "clo_child", "slot_token", "slot_first", "slot_root_child"):
                parts[name].append(getattr(prog, name))
            parts["clo_start"].append(prog.clo_start + n_clo)
            parts["clo_end"].append(prog.clo_end + n_clo)
            n_nodes, n_slots, n_clo = n_nodes + prog.n_nodes, n_slots + prog.n_slots, n_clo + len(prog.clo_slot)
            self._max_slots = max(self._max_slots, prog.n_slots)
            self._max_closure = max(self._max_closure, prog.max_closure)
        self._tables = FocusTables(*(
            torch.cat([getattr(t, name), torch.from_numpy(np.concatenate(parts[name])).to(self.device)])
            for name in FocusTables._fields))
        # The root's edge (-1) becomes vocab_size: no program holds it, and unlike -1 it cannot match a
        # kernel's masked-out slot lanes.
        edges = [np.where(e.program.edge < 0, self.vocab_size, e.program.edge).astype(np.int32) for e in entries]
        self._parent = torch.cat([self._parent, torch.from_numpy(np.concatenate([e.program.parent for e in entries]))
                                  .to(self.device)])
        self._edge = torch.cat([self._edge, torch.from_numpy(np.concatenate(edges)).to(self.device)])

    def _maybe_compact(self) -> None:
        """Drop programs no row uses once they hold more nodes than the live ones (amortized O(1))."""
        dead = sum(e.program.n_nodes for e in self._entries if e.refs == 0)
        live = sum(e.program.n_nodes for e in self._entries if e.refs > 0)
        if dead <= max(live, 4096):
            return
        keep = [pid for pid, e in enumerate(self._entries) if e.refs > 0]
        remap = {old: new for new, old in enumerate(keep)}
        self._entries = [self._entries[pid] for pid in keep]
        self._pid_by_key = {e.key: pid for pid, e in enumerate(self._entries)}
        self._row_pid = [None if p is None else remap[p] for p in self._row_pid]
        self._reset_tables()
        self._append_tables(self._entries)
        self._rows.prog.copy_(torch.tensor([-1 if p is None else p for p in self._row_pid], dtype=torch.int32))

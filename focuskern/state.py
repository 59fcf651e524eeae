"""FocusState: the device-resident focus state of a batch of generation rows."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .ops._checks import LOGIT_DTYPES, check_tensor
from .ops.focus_state import FocusStateOp, RowState
from .ops.layout import CTX_INITIAL, CTX_SHIFT
from .automaton import Program
from .programs import ProgramTable
from .spec import FocusSpec


FRESH_NODE = CTX_INITIAL << CTX_SHIFT  # a fresh row's node word: the root, context "start of the answer"


class FocusState:
    """Row ``r`` of a batch follows ``specs[r]`` (``None`` leaves the row untouched).

    Rows with equal specs share one compiled automaton (:class:`~focuskern.programs.ProgramTable`).
    Rows can be appended, replaced, moved, swapped and reordered without touching the others; specs
    are validated (and tokenized) when they are added, never per step.  :meth:`apply_` makes no
    host-device sync and its host work does not grow with the entities; it can also serve a subset of
    the rows and hold rows that generated nothing (a serving engine's batch).

    Parameters
    ----------
    specs : one :class:`FocusSpec` or ``None`` per row.
    vocab_size : number of token ids; logits may be wider (padded vocabularies).
    device : where the state and the logits live.
    tokenizer : reads string entities and the generated tokens as text (its vocabulary's bytes are
        indexed once per tokenizer); without one, entities are token ids matched token by token.
    backend : ``"auto"``, ``"torch"``, ``"triton"``, ``"cpp"`` or ``"cuda"`` (resolved once, here).
    """

    def __init__(self, specs: Sequence[Optional[FocusSpec]], vocab_size: int, device, tokenizer=None,
                 *, backend: str = "auto"):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self._op = FocusStateOp(backend, self.device)
        self.backend = self._op.backend
        self.programs = ProgramTable(vocab_size, self.device, tokenizer)
        self._row_pid: list[Optional[int]] = [self.programs.acquire(spec) for spec in specs]
        # Counted as rows change, so that apply_ never loops over rows on the host.
        self._active = sum(p is not None for p in self._row_pid)
        self._blending = sum(p is not None and self.programs[p].blends for p in self._row_pid)
        B = len(self._row_pid)
        self._rows = RowState(
            torch.tensor([-1 if p is None else p for p in self._row_pid], dtype=torch.int32, device=self.device),
            self._fresh_nodes(B), self._zeros(B, self.programs.words), self._zeros(B))

    # ------------------------------------------------------------------ rows
    def __len__(self) -> int:
        return len(self._row_pid)

    @property
    def step(self) -> torch.Tensor:
        """[B] int32: tokens each row has generated (its decay step)."""
        return self._rows.step

    def spec(self, row: int) -> Optional[FocusSpec]:
        pid = self._row_pid[self._index(row)]
        return None if pid is None else self.programs[pid].spec

    def append(self, spec: Optional[FocusSpec]) -> int:
        """Add a row at the end; returns its index."""
        pid = self.programs.acquire(spec)
        self._fit_words()
        fresh = RowState(self._zeros(1), self._fresh_nodes(1), self._zeros(1, self._rows.sat.shape[1]), self._zeros(1))
        self._rows = RowState(*(torch.cat([t, f]) for t, f in zip(self._rows, fresh)))
        self._row_pid.append(None)
        self._assign(len(self) - 1, pid)
        return len(self) - 1

    def set_row(self, row: int, spec: Optional[FocusSpec], program: Optional[Program] = None) -> None:
        """Give ``row`` a new spec (``None`` = untouched) and a fresh state; ``program``: the spec's
        :func:`~focuskern.programs.compile_spec`, when it was compiled elsewhere (used on first sight)."""
        row = self._index(row)
        pid = self.programs.acquire(spec, program)
        self._fit_words()
        self._assign(row, pid)
        self._rows.node[row] = FRESH_NODE
        for t in self._rows[2:]:
            t[row] = 0
        self._compact()

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
        pid = self._row_pid[src]
        if pid is not None:
            self.programs[pid].refs += 1  # held by dst before src lets go of it
        self._assign(dst, pid)
        self._assign(src, None)
        for t in self._rows[1:]:
            t[dst] = t[src]
        self._compact()

    def resize(self, rows: int) -> None:
        """Drop rows past ``rows`` or append untouched rows up to it."""
        while len(self) < rows:
            self.append(None)
        for row in range(rows, len(self)):
            self._assign(row, None)
        del self._row_pid[rows:]
        self._rows = RowState(*(t[:rows] for t in self._rows))
        self._compact()

    def reorder_(self, index: torch.Tensor) -> None:
        """Row ``r`` takes the automaton state of row ``index[r]`` (a device tensor, no sync).

        Specs stay where they are, so ``index[r]`` must follow the same spec as ``r`` -- as in beam
        search, where a beam's parent is a beam of the same prompt."""
        check_tensor("index", index, (torch.int32, torch.int64), (len(self),), self.device)
        self.copy_rows_(index, torch.arange(len(self), device=self.device))

    def copy_rows_(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Row ``dst[i]`` takes the automaton state row ``src[i]`` had before the call (device tensors of
        one length, no sync; ``dst`` distinct).  Specs stay where they are, as in :meth:`reorder_`: a
        speculative draft's row forks from its request's row."""
        check_tensor("src", src, (torch.int32, torch.int64), (None,), self.device)
        check_tensor("dst", dst, (torch.int32, torch.int64), (src.shape[0],), self.device)
        src, dst = src.long(), dst.long()
        for t in self._rows[1:]:
            t[dst] = t[src]

    # ----------------------------------------------------------------- apply
    def apply_(self, logits: torch.Tensor, last_tokens: Optional[torch.Tensor] = None, *,
               rows: Optional[torch.Tensor] = None, hold: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Advance each row with the token it generated last, then bias its logits in place.

        Parameters
        ----------
        logits : [b, V] float32/float16/bfloat16, ``V >= vocab_size``; row ``i`` belongs to state row
            ``i``, or to ``rows[i]``.
        last_tokens : [b] int32/int64, any strides, optional: the token each row generated since the
            last call.
        rows : [b] int32/int64, optional: distinct state rows of the logits rows (default: every row, in
            order).  State rows not listed are neither advanced nor biased.
        hold : [b] bool, optional (with ``last_tokens``): rows that generated nothing since the last
            call (a request still reading its prompt).  They keep their state: their ``last_tokens``
            entries are replaced by -1, an id the op does not feed.

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
        if hold is not None:
            if last_tokens is None:
                raise ValueError("hold needs last_tokens (it says which rows do not advance)")
            check_tensor("hold", hold, (torch.bool,), (b,), self.device)
        if self._active == 0:
            return logits
        # A subset works on gathered copies of its rows, written back once advanced.
        state = self._rows if rows is None else RowState(*(t[rows] for t in self._rows))
        if hold is not None:
            last_tokens = torch.where(hold, -1, last_tokens)
        self._op(logits, last_tokens, state, self.programs.tables, self.programs.limits, self._blending > 0)
        if rows is not None and last_tokens is not None:
            for mine, advanced in zip(self._rows[1:], state[1:]):
                mine[rows] = advanced
        return logits

    def advance_row(self, row: int, tokens: Sequence[int]) -> None:
        """Advance ``row`` over ``tokens`` (oldest first) without biasing anything: the history of a
        request that joins mid-generation, e.g. one resumed after preemption.  One launch per token on
        a scratch logits row, so it costs what ``len(tokens)`` decoding steps of one row cost.  Ids
        outside ``[0, vocab_size)`` are not fed, as in :meth:`apply_` (checked here as Python ints, so
        an id past int64 cannot overflow the tensor)."""
        row = self._index(row)
        pid = self._row_pid[row]
        tokens = list(tokens)
        for t in tokens:
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(f"tokens must hold ints, got {type(t).__name__}")
        ids = torch.tensor([t if 0 <= t < self.vocab_size else -1 for t in tokens], dtype=torch.int32,
                           device=self.device)
        if pid is None or ids.numel() == 0:
            return
        one = RowState(*(t[row:row + 1] for t in self._rows))  # views: the launches update the row
        scratch = torch.zeros(1, self.vocab_size, device=self.device)
        for i in range(ids.numel()):
            self._op(scratch, ids[i:i + 1], one, self.programs.tables, self.programs.limits,
                     self.programs[pid].blends)

    def said(self, row: int) -> list[int]:
        """The entities (indices into ``spec(row).entities``) ``row`` has said or given up (a host read)."""
        row = self._index(row)
        pid = self._row_pid[row]
        if pid is None:
            return []
        words = self._rows.sat[row].tolist()
        return [e for e in range(self.programs[pid].program.n_entities) if words[e // 32] >> (e % 32) & 1]

    def boosts(self) -> list[dict[int, float]]:
        """What :meth:`apply_` would add this step, per row ``{token: s * value}`` (for inspection)."""
        probe = torch.zeros(len(self), self.vocab_size, device=self.device)
        self.apply_(probe)
        rows, cols = probe.nonzero(as_tuple=True)
        out: list[dict[int, float]] = [{} for _ in range(len(self))]
        for r, c, v in zip(rows.tolist(), cols.tolist(), probe[rows, cols].tolist()):
            out[r][c] = v
        return out

    # --------------------------------------------------------------- helpers
    def _fresh_nodes(self, n: int) -> torch.Tensor:
        """Node words of fresh rows: the root, at the start of the answer."""
        return torch.full((n,), FRESH_NODE, dtype=torch.int32, device=self.device)

    def _zeros(self, *shape) -> torch.Tensor:
        return torch.zeros(*shape, dtype=torch.int32, device=self.device)

    def _index(self, row: int) -> int:
        if isinstance(row, bool) or not isinstance(row, int) or not -len(self) <= row < len(self):
            raise IndexError(f"row {row!r} out of range for a batch of {len(self)}")
        return row % len(self)

    def _assign(self, row: int, pid: Optional[int]) -> None:
        """Row ``row`` follows program ``pid`` (already acquired); releases its previous program."""
        old = self._row_pid[row]
        for p, sign in ((old, -1), (pid, 1)):
            if p is not None:
                self._active += sign
                self._blending += sign * self.programs[p].blends
        self.programs.release(old)
        self._row_pid[row] = pid
        self._rows.prog[row] = -1 if pid is None else pid

    def _fit_words(self) -> None:
        """Widen every row's satisfied bitset after a spec with more entities than any before."""
        missing = self.programs.words - self._rows.sat.shape[1]
        if missing > 0:
            self._rows = self._rows._replace(sat=torch.nn.functional.pad(self._rows.sat, (0, missing)))

    def _compact(self) -> None:
        remap = self.programs.compact_if_worth_it()
        if remap is not None:
            self._row_pid = [None if p is None else remap[p] for p in self._row_pid]
            prog = [-1 if p is None else p for p in self._row_pid]
            self._rows.prog.copy_(torch.tensor(prog, dtype=torch.int32))

"""ProgramTable: the compiled programs of a :class:`~focuskern.FocusState`, one per distinct spec, and
their device tables (all programs concatenated; columns in :mod:`focuskern.ops.layout`).

Rows hold references to programs; a program no row uses stays until compaction drops it (once dead
programs hold more nodes than the live ones: amortized O(1) per row change, memory bounded by twice
the live programs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .automaton import Program, compile_program, words_for
from .ops.focus_state import FocusTables
from .ops.layout import C, F, I, N_, S_
from .spec import FocusSpec

# Compaction never runs below this many dead nodes (a few small specs are cheaper to keep than rebuild).
MIN_DEAD_NODES = 4096


def check_in_vocab(variants: list[list[tuple[int, ...]]], vocab_size: int) -> None:
    """Raise ``ValueError`` naming the first entity with a token id outside ``[0, vocab_size)``.  Checks
    the Python ints (a tokenizer's or a caller's), before they are narrowed to the int32 tables."""
    for i, entity in enumerate(variants):
        for seq in entity:
            if min(seq) < 0 or max(seq) >= vocab_size:
                bad = next(t for t in seq if not 0 <= t < vocab_size)
                raise ValueError(f"entities[{i}]: token id {bad} is outside [0, vocab_size={vocab_size})")


@dataclass
class ProgramEntry:
    key: tuple
    spec: FocusSpec
    program: Program
    blends: bool
    eos: int  # end-of-text token id, -1 for none
    refs: int = 0


class ProgramTable:
    """Programs keyed by :meth:`FocusSpec.key`, reference-counted, with their device tables.

    ``limits`` = (max_slots, max_closure, max_ents, max_out) over the programs ever added since the
    last compaction (the torch backend pads to them); ``words`` = int32 words of the widest program's
    satisfied-entity bitset."""

    def __init__(self, vocab_size: int, device: torch.device, tokenizer=None):
        self.vocab_size = vocab_size
        self.device = device
        self.tokenizer = tokenizer
        self.entries: list[ProgramEntry] = []
        self._pid_by_key: dict[tuple, int] = {}
        self.words = 1
        self._blank: dict[int, bool] = {}  # token id -> decodes to whitespace only (cache)
        self._reset_tables()

    def __getitem__(self, pid: int) -> ProgramEntry:
        return self.entries[pid]

    def acquire(self, spec: Optional[FocusSpec]) -> Optional[int]:
        """The program id of ``spec`` (compiled on first sight), its reference count raised."""
        if spec is None:
            return None
        if not isinstance(spec, FocusSpec):
            raise TypeError(f"specs must hold FocusSpec or None, got {type(spec).__name__}")
        key = spec.key()
        pid = self._pid_by_key.get(key)
        if pid is None:
            pid = self._add(spec, key)
        self.entries[pid].refs += 1
        return pid

    def release(self, pid: Optional[int]) -> None:
        if pid is not None:
            self.entries[pid].refs -= 1

    def compact_if_worth_it(self) -> Optional[dict[int, int]]:
        """Drop programs no row uses once they hold more nodes than the live ones; returns the map of
        old to new program ids when it did (rows must follow it), else ``None``."""
        dead = sum(e.program.n_nodes for e in self.entries if e.refs == 0)
        live = sum(e.program.n_nodes for e in self.entries if e.refs > 0)
        if dead <= max(live, MIN_DEAD_NODES):
            return None
        keep = [pid for pid, e in enumerate(self.entries) if e.refs > 0]
        self.entries = [self.entries[pid] for pid in keep]
        self._pid_by_key = {e.key: pid for pid, e in enumerate(self.entries)}
        self._reset_tables()
        self._append_tables(self.entries)
        return {old: new for new, old in enumerate(keep)}

    # ------------------------------------------------------------------ build
    def _add(self, spec: FocusSpec, key: tuple) -> int:
        variants = spec.token_variants(self.tokenizer)
        check_in_vocab(variants, self.vocab_size)
        program = compile_program(variants, phrase=spec.mode == "phrase")
        self._never_start_blank_pieces(program, spec)
        entry = ProgramEntry(key, spec, program, blends=spec.alpha > 0, eos=self._eos_token(spec))
        self.words = max(self.words, words_for(program.n_entities))
        self.entries.append(entry)
        self._pid_by_key[key] = len(self.entries) - 1
        self._append_tables([entry])
        return len(self.entries) - 1

    def _eos_token(self, spec: FocusSpec) -> int:
        """The spec's end-of-text token, else the tokenizer's, else -1 (no damping; none without a budget)."""
        eos = spec.eos_token_id
        if spec.max_new_tokens is None:
            return -1
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
            eos = eos if isinstance(eos, int) and 0 <= eos < self.vocab_size else -1
        elif eos >= self.vocab_size:
            raise ValueError(f"eos_token_id {eos} is outside [0, vocab_size={self.vocab_size})")
        return eos

    def _never_start_blank_pieces(self, program: Program, spec: FocusSpec) -> None:
        """A whitespace-only piece (SmolLM2's lone ``Ġ`` before a digit: ``" 3 billion"`` is ``Ġ 3
        Ġbillion``) never gets the start bias: pushed on its own it drifts the text into double spaces
        when the digit does not follow.  It still matches, and once the model writes it the rest of the
        entity is pushed as a continuation.  Needs the tokenizer (string entities)."""
        if self.tokenizer is None or all(not isinstance(e, str) for e in spec.entities):
            return
        for k, token in enumerate(program.slot[:, S_.TOKEN].tolist()):
            blank = self._blank.get(token)
            if blank is None:
                blank = self._blank[token] = not self.tokenizer.decode([token]).strip()
            if blank:
                program.slot[k, S_.FIRST_HI] = program.slot[k, S_.FIRST_LO]

    def _reset_tables(self) -> None:
        def empty(*shape, dtype=torch.int32):
            return torch.zeros(*shape, dtype=dtype, device=self.device)
        # One sentinel closure entry and entity keep the torch backend's padded gathers in bounds.
        self.tables = FocusTables(empty(0, F.WIDTH, dtype=torch.float32), empty(0, I.WIDTH), empty(0, N_.WIDTH),
                                  empty(0, S_.WIDTH), empty(1, C.WIDTH), empty(1))
        self.limits = [1, 1, 1, 1]

    def _append_tables(self, entries: list[ProgramEntry]) -> None:
        if not entries:
            return
        t = self.tables
        n_nodes, n_slots, n_clo, n_ents = (t.node.shape[0], t.slot.shape[0], t.closure.shape[0], t.ents.shape[0])
        parts: dict[str, list[np.ndarray]] = {name: [] for name in FocusTables._fields}
        for e in entries:
            prog, spec = e.program, e.spec
            f32 = np.zeros((1, F.WIDTH), dtype=np.float32)
            f32[0, [F.BIAS, F.CONT, F.ALPHA, F.KIND, F.HORIZON, F.FLOOR]] = (
                spec.bias, spec.effective_continuation_bias, spec.alpha, *spec.decay.as_triple())
            f32[0, [F.BUDGET, F.SLACK, F.FORCE, F.EOS_DAMP]] = (
                spec.max_new_tokens or 0, spec.slack, spec.force, spec.eos_damp)
            parts["prog_f32"].append(f32)
            i32 = np.zeros((1, I.WIDTH), dtype=np.int32)
            i32[0, [I.NODE_BASE, I.SLOT_BASE, I.N_SLOTS, I.ENT_BASE, I.ENT_COUNT]] = (
                n_nodes, n_slots, prog.n_slots, n_ents, len(prog.ents))
            i32[0, [I.PHRASE, I.ONCE, I.STARTS_IN_MATCH, I.N_ENTITIES, I.EOS]] = (
                spec.mode == "phrase", spec.satisfy == "once", spec.boost_starts_in_match, prog.n_entities,
                e.eos)
            parts["prog_i32"].append(i32)
            node = prog.node.copy()
            node[:, [N_.CLO_LO, N_.CLO_HI]] += n_clo
            node[:, [N_.THROUGH_LO, N_.THROUGH_HI, N_.OUT_LO, N_.OUT_HI]] += n_ents
            # The root's edge (-1) becomes vocab_size: no program holds it (see FocusState._rewind_).
            node[node[:, N_.EDGE] < 0, N_.EDGE] = self.vocab_size
            slot = prog.slot.copy()
            slot[:, [S_.FIRST_LO, S_.FIRST_HI]] += n_ents
            parts["node"].append(node)
            parts["slot"].append(slot)
            parts["closure"].append(prog.closure)
            parts["ents"].append(prog.ents)
            n_nodes, n_slots = n_nodes + prog.n_nodes, n_slots + prog.n_slots
            n_clo, n_ents = n_clo + prog.closure.shape[0], n_ents + len(prog.ents)
            self.limits = [max(self.limits[0], prog.n_slots), max(self.limits[1], prog.max_closure),
                           max(self.limits[2], len(prog.ents)), max(self.limits[3], prog.max_out)]
        self.tables = FocusTables(*(
            torch.cat([getattr(t, name), torch.from_numpy(np.concatenate(parts[name])).to(self.device)])
            for name in FocusTables._fields))

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
from .forms import entity_forms
from .ops.focus_state import FocusTables
from .ops.layout import MAX_EOS, C, F, I, N_, S_
from .spec import FocusSpec
from .text import token_table

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


def compile_spec(spec: FocusSpec, vocab_size: int, table, tokenizer) -> Program:
    """The automaton of ``spec``'s entities against ``table`` (the tokenizer's
    :class:`~focuskern.text.TokenTable`): what a :class:`ProgramTable` compiles on first sight of a
    spec, also run on its own (in a build process, :mod:`focuskern.vllm.build`)."""
    check_in_vocab([() if isinstance(e, str) else e for e in spec.entities], vocab_size)
    forms = entity_forms(spec.entities, spec.form_policy, table, tokenizer, tokens_mode=spec.mode == "tokens")
    return compile_program(forms, table, phrase=spec.mode == "phrase")


@dataclass
class ProgramEntry:
    key: tuple
    spec: FocusSpec
    program: Program
    blends: bool
    eos: tuple[int, ...]  # distinct end-of-text token ids (at most MAX_EOS)
    refs: int = 0


class ProgramTable:
    """Programs keyed by :meth:`FocusSpec.key`, reference-counted, with their device tables.

    ``limits`` = (max_slots, max_closure, max_ents, max_out, max_token_len, max_depth) over the programs
    ever added since the last compaction and the tokenizer's :class:`~focuskern.text.TokenTable` (the
    torch backend pads and loops to them); ``words`` = int32 words of the widest program's
    satisfied-entity bitset."""

    def __init__(self, vocab_size: int, device: torch.device, tokenizer=None):
        self.vocab_size = vocab_size
        self.device = device
        self.tokenizer = tokenizer
        self._token_table = None  # read from the tokenizer when the first program arrives (cached per tokenizer)
        self.entries: list[ProgramEntry] = []
        self._pid_by_key: dict[tuple, int] = {}
        self.words = 1
        self._reset_tables()

    @property
    def token_table(self):
        if self._token_table is None:
            self._token_table = token_table(self.tokenizer, self.vocab_size)
            self.tables = self.tables._replace(**dict(zip(("tok_off", "tok_sym", "byte_class"),
                                                          self._token_table.tensors(self.device))))
            self.limits[4] = max(self._token_table.max_len, 1)
        return self._token_table

    def __getitem__(self, pid: int) -> ProgramEntry:
        return self.entries[pid]

    def acquire(self, spec: Optional[FocusSpec], program: Optional[Program] = None) -> Optional[int]:
        """The program id of ``spec`` (compiled on first sight, unless ``program`` is its
        :func:`compile_spec` compiled elsewhere), its reference count raised."""
        if spec is None:
            return None
        if not isinstance(spec, FocusSpec):
            raise TypeError(f"specs must hold FocusSpec or None, got {type(spec).__name__}")
        key = spec.key()
        pid = self._pid_by_key.get(key)
        if pid is None:
            pid = self._add(spec, key, program)
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
    def _add(self, spec: FocusSpec, key: tuple, program: Optional[Program]) -> int:
        table = self.token_table  # first use: the tokenizer's table joins the device tables
        if program is None:
            program = compile_spec(spec, self.vocab_size, table, self.tokenizer)
        entry = ProgramEntry(key, spec, program, blends=spec.alpha > 0, eos=self._eos_tokens(spec))
        self.words = max(self.words, words_for(program.n_entities))
        self.entries.append(entry)
        self._pid_by_key[key] = len(self.entries) - 1
        self._append_tables([entry])
        return len(self.entries) - 1

    def _eos_tokens(self, spec: FocusSpec) -> tuple[int, ...]:
        """The spec's end-of-text ids, else the tokenizer's (those in the vocabulary), else none (no
        damping; none without a budget).  The spec's are checked against ``vocab_size`` here."""
        if spec.max_new_tokens is None:
            return ()
        if spec.eos_token_id is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
            eos = eos if isinstance(eos, (list, tuple)) else [eos]
            eos = [e for e in eos if isinstance(e, int) and not isinstance(e, bool) and 0 <= e < self.vocab_size]
            return tuple(dict.fromkeys(eos))[:MAX_EOS]
        for e in spec.eos_token_ids:
            if e >= self.vocab_size:
                raise ValueError(f"eos_token_id {e} is outside [0, vocab_size={self.vocab_size})")
        return tuple(dict.fromkeys(spec.eos_token_ids))

    def _reset_tables(self) -> None:
        def empty(*shape, dtype=torch.int32):
            return torch.zeros(*shape, dtype=dtype, device=self.device)
        # One sentinel closure entry and entity keep the torch backend's padded gathers in bounds.
        tok = (empty(1), empty(1), empty(256)) if self._token_table is None else self._token_table.tensors(self.device)
        self.tables = FocusTables(empty(0, F.WIDTH, dtype=torch.float32), empty(0, I.WIDTH), empty(0, N_.WIDTH),
                                  empty(0, S_.WIDTH), empty(1, C.WIDTH), empty(1), *tok)
        self.limits = [1, 1, 1, 1, 1 if self._token_table is None else max(self._token_table.max_len, 1), 1]

    def _append_tables(self, entries: list[ProgramEntry]) -> None:
        if not entries:
            return
        t = self.tables
        n_nodes, n_slots, n_clo, n_ents = (t.node.shape[0], t.slot.shape[0], t.closure.shape[0], t.ents.shape[0])
        grown = FocusTables._fields[:6]  # the token table does not grow with programs
        parts: dict[str, list[np.ndarray]] = {name: [] for name in grown}
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
            i32[0, [I.PHRASE, I.ONCE, I.STARTS_IN_MATCH, I.N_ENTITIES]] = (
                spec.mode == "phrase", spec.satisfy == "once", spec.boost_starts_in_match, prog.n_entities)
            i32[0, I.EOS0:I.EOS0 + MAX_EOS] = (list(e.eos) + [-1] * MAX_EOS)[:MAX_EOS]
            parts["prog_i32"].append(i32)
            node = prog.node.copy()
            node[:, [N_.CLO_LO, N_.CLO_HI]] += n_clo
            node[:, [N_.THROUGH_LO, N_.THROUGH_HI, N_.OUT_LO, N_.OUT_HI]] += n_ents
            slot = prog.slot.copy()
            slot[:, S_.FIRST_LO0:] += n_ents
            parts["node"].append(node)
            parts["slot"].append(slot)
            parts["closure"].append(prog.closure)
            parts["ents"].append(prog.ents)
            n_nodes, n_slots = n_nodes + prog.n_nodes, n_slots + prog.n_slots
            n_clo, n_ents = n_clo + prog.closure.shape[0], n_ents + len(prog.ents)
            self.limits = [max(self.limits[0], prog.n_slots), max(self.limits[1], prog.max_closure),
                           max(self.limits[2], len(prog.ents)), max(self.limits[3], prog.max_out),
                           self.limits[4], max(self.limits[5], prog.max_depth)]
        self.tables = t._replace(**{
            name: torch.cat([getattr(t, name), torch.from_numpy(np.concatenate(parts[name])).to(self.device)])
            for name in grown})

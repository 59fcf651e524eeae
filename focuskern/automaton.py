"""Compile a spec's entity forms into the symbol-level Aho-Corasick tables the kernels walk
(design: ``docs/text-tracking.md``; columns: :mod:`focuskern.ops.layout`).

A *program* is the compiled form of one :class:`~focuskern.FocusSpec` (rows with the same spec share
it).  Node 0 is the root; node, slot, closure and entity indices are local to the program.  Entity sets
are sorted lists of entity ids in one array (``ents``): a program's size, its compile time and a
kernel's work per step grow linearly with the entities (the vocabulary's trie is built once per table).

* pattern ``P(f)`` of a counted form ``f`` (:func:`patterns`): the symbols of feeding ``f``'s units to a
  row with ``ctx = 0``: ``B`` before a word byte that does not follow one, ``D`` before a class-bearing
  non-digit after a digit, and a trailing ``D`` when ``f`` ends in a digit;
* node ``u`` (trie of the patterns, numbered by depth, children contiguous and sorted by symbol):
  ``through(u)`` = entities with a pattern passing through ``u``; ``out(u)`` = entities with a pattern
  ending at ``u`` or at a node on its fail chain; ``fail(u)`` = the node of the longest proper suffix of
  ``u``'s symbols in the trie;
* token edge ``(t, c)`` of ``u``: ``u`` is pattern ``P(f)`` after the symbol of unit ``i - 1`` of ``f``,
  token ``t`` (not whitespace-only, but see :func:`with_lone_space_edges`) spells ``f[i : i + L]`` and ``c``
  is the node after unit ``i + L - 1``; ``closure(u)`` = ``u``'s own edges as (slot, child) entries
  sorted by slot (a token spells one path from ``u``: one entry per slot);
* slot ``k`` (the program's ``k``-th smallest pushed token): ``first_pc(k)`` = entities whose form pushed
  in push context ``pc`` starts with the token (phrase mode), or, in tokens mode, entities with the token
  in a tokenized pushed form (the same list for every ``pc``).

The trie, fail links, lists and token edges (:func:`build_automaton`) come from the C++ extension
where it is built (``csrc/compile_cpu.cpp``, loops over nodes) and from numpy otherwise (vectorized:
loops over depth and token length, never over nodes or entities); both give the same arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .forms import EntityForms, FlatForms
from .ops.layout import (BC_CONT, BC_DIGIT, BC_WORD, BYTE_CLASS, N_PUSH_CONTEXTS, NODE_MASK, SYM_DIGITS_END,
                         SYM_WORD_START, C, N_, S_)
from .ops.dispatch import extension
from .text import WHITESPACE, P, TokenTable, powers, run_hash, unit_values

WORD_BITS = 32
_CLASS = np.asarray(BYTE_CLASS, dtype=np.int64)


def words_for(n_entities: int) -> int:
    """int32 words of a satisfied-entity bitset (one per row, not per node)."""
    return max(1, -(-n_entities // WORD_BITS))


@dataclass
class Program:
    n_entities: int
    node: np.ndarray  # [N, N_.WIDTH] int32, entity-list bounds local to ``ents``
    slot: np.ndarray  # [S, S_.WIDTH] int32
    closure: np.ndarray  # [E, C.WIDTH] int32
    ents: np.ndarray  # [M] int32
    max_depth: int

    @property
    def n_nodes(self) -> int:
        return self.node.shape[0]

    @property
    def n_slots(self) -> int:
        return self.slot.shape[0]

    @property
    def max_closure(self) -> int:
        return int((self.node[:, N_.CLO_HI] - self.node[:, N_.CLO_LO]).max(initial=0))

    @property
    def max_out(self) -> int:
        return int((self.node[:, N_.OUT_HI] - self.node[:, N_.OUT_LO]).max(initial=0))


def _check_nodes(n_nodes: int) -> None:
    if n_nodes > NODE_MASK + 1:
        raise ValueError(f"entities compile to {n_nodes} automaton nodes, more than {NODE_MASK + 1}")


def _csr(owner: np.ndarray, item: np.ndarray, n_owners: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(owner, item)`` pairs as lists per owner: ``offsets`` [n_owners + 1] and the items,
    sorted ascending within each owner's list ``items[offsets[o]:offsets[o + 1]]``."""
    key = np.sort(owner * max(n_items, 1) + item)  # sort, not np.unique: its hash path is ~8x slower here
    key = key[np.concatenate([key[:1] >= 0, key[1:] != key[:-1]])]
    owner, item = np.divmod(key, max(n_items, 1))
    offsets = np.zeros(n_owners + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n_owners), out=offsets[1:])
    return offsets, item


def _expand(offsets: np.ndarray, items: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every item of the lists of ``owners`` (repeats allowed): ``(p, items)``, ``p`` the index into
    ``owners`` each item came from, in the order of ``owners`` then of each list."""
    lo, counts = offsets[owners], offsets[owners + 1] - offsets[owners]
    p = np.repeat(np.arange(len(owners)), counts)
    starts = np.cumsum(counts) - counts  # where each owner's run begins in the output
    return p, items[np.arange(int(counts.sum())) - starts[p] + lo[p]]


def patterns(forms: FlatForms) -> tuple[np.ndarray, np.ndarray]:
    """``(sym, off)``: pattern ``f`` is ``sym[off[f]:off[f + 1]]`` (docs/text-tracking.md section 3, the
    walk of section 2 from ``ctx = 0``)."""
    u, n = forms.units, len(forms.units)
    form = np.repeat(np.arange(len(forms.off) - 1), forms.lengths)
    cls = np.where(u < 256, _CLASS[np.minimum(u, 255)], 0)
    bearing = (u < 256) & (cls & BC_CONT == 0)
    last = np.maximum.accumulate(np.where(bearing, np.arange(n), -1)) if n else np.zeros(0, np.int64)
    prev = np.concatenate([[-1], last[:-1]]).astype(np.int64)
    prev_cls = np.where(prev >= forms.off[form], cls[prev], 0)
    word_start = bearing & (cls & BC_WORD != 0) & (prev_cls & BC_WORD == 0)
    digits_end = bearing & (prev_cls & BC_DIGIT != 0) & (cls & BC_DIGIT == 0)
    ends = forms.off[1:] - 1
    tail = last[ends] >= forms.off[:-1]
    tail &= cls[np.where(tail, last[ends], 0)] & BC_DIGIT != 0  # the form ends in a digit
    count = 1 + word_start + digits_end
    count[ends[tail]] += 1
    end = np.cumsum(count)
    unit_at = end - count + word_start + digits_end
    sym = np.empty(int(end[-1]) if n else 0, dtype=np.int64)
    pre = word_start | digits_end
    sym[unit_at[pre] - 1] = np.where(word_start[pre], SYM_WORD_START, SYM_DIGITS_END)
    sym[unit_at] = u
    sym[unit_at[ends[tail]] + 1] = SYM_DIGITS_END
    off = np.concatenate([[0], end[ends]]).astype(np.int64)
    return sym, off


class _Trie:
    """The trie of all patterns, nodes numbered by depth (root 0), children sorted by symbol.

    Nodes are created depth by depth from sorted ``(parent, symbol)`` keys, so the key ``parent * K +
    k`` (``k`` the symbol's rank) of nodes ``1 .. N-1`` is strictly increasing: a child lookup is one
    ``searchsorted``.  ``at[s]`` = the node after pattern symbol ``s``."""

    def __init__(self, sym: np.ndarray, off: np.ndarray, entity: np.ndarray, n_entities: int):
        self.symbols, rank = np.unique(sym, return_inverse=True)
        self.n_sym = n_sym = max(len(self.symbols), 1)
        lengths, starts = np.diff(off), off[:-1]
        through_entity = np.repeat(entity, lengths)  # the entity of each pattern symbol
        order = np.argsort(-lengths, kind="stable")  # longest first: the patterns alive at depth d lead
        lengths, starts, entity = lengths[order], starts[order], entity[order]
        alive = np.searchsorted(-lengths, -np.arange(int(lengths.max(initial=0))), side="left")
        node = np.zeros(len(lengths), dtype=np.int64)
        self.at = np.zeros(len(sym), dtype=np.int64)
        parents, ranks, self.level = [np.zeros(1, np.int64)], [np.full(1, -1)], [0, 1]
        for depth, a in enumerate(alive):
            pos = starts[:a] + depth
            keys, inverse = np.unique(node[:a] * n_sym + rank[pos], return_inverse=True)
            node[:a] = self.level[-1] + inverse.reshape(-1)
            self.at[pos] = node[:a]
            parent, r = np.divmod(keys, n_sym)
            parents.append(parent)
            ranks.append(r)
            self.level.append(self.level[-1] + len(keys))
        self.parent, self.rank = np.concatenate(parents), np.concatenate(ranks)
        self.n_nodes, self.n_entities = self.level[-1], n_entities
        _check_nodes(self.n_nodes)
        self.keys = self.parent[1:] * n_sym + self.rank[1:]
        self.sym = np.append(self.symbols, -1)[self.rank]  # the root's rank -1 picks the appended -1
        self.through = _csr(self.at, through_entity, self.n_nodes, n_entities)
        self.ends = _csr(self.at[starts + lengths - 1], entity, self.n_nodes, n_entities)
        self.child_lo = np.searchsorted(self.parent[1:], np.arange(self.n_nodes + 1)) + 1
        self._unit_paths()

    def _unit_paths(self) -> None:
        """Per node: ``resting`` (the root, or entered on a unit, not on B/D), ``rest`` (its nearest
        resting proper ancestor), ``unit_depth`` (units on its root path) and ``prefix_hash`` (their
        hash, :class:`focuskern.text.RunHashes`'s polynomial)."""
        sym = self.sym
        unit = (sym >= 0) & (sym != SYM_WORD_START) & (sym != SYM_DIGITS_END)
        self.resting = unit.copy()
        self.resting[0] = True
        self.rest = np.zeros(self.n_nodes, dtype=np.int64)
        self.unit_depth = np.zeros(self.n_nodes, dtype=np.int64)
        self.prefix_hash = np.zeros(self.n_nodes, dtype=np.uint64)
        power = powers(P, len(self.level))
        for lo, hi in zip(self.level[1:], self.level[2:]):
            v = np.arange(lo, hi)
            par = self.parent[v]
            self.unit_depth[v] = self.unit_depth[par] + unit[v]
            with np.errstate(over="ignore"):
                add = unit_values(np.maximum(sym[v], 0)) * power[self.unit_depth[par]]
                self.prefix_hash[v] = self.prefix_hash[par] + np.where(unit[v], add, np.uint64(0))
            self.rest[v] = np.where(self.resting[par], par, self.rest[par])

    def child(self, node: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """The child of each ``node`` on the symbol of rank ``rank`` (0 = none)."""
        query = node * self.n_sym + rank
        i = np.minimum(np.searchsorted(self.keys, query), max(len(self.keys) - 1, 0))
        hit = self.keys[i] == query if len(self.keys) else np.zeros(len(query), bool)
        return np.where(hit, i + 1, 0)

    def fail_links(self) -> np.ndarray:
        """``fail[u]``, depth by depth (a fail link points to a shallower node): follow the parent's
        fail chain until a node has a child on ``u``'s symbol, for all nodes of the depth at once."""
        fail = np.zeros(self.n_nodes, dtype=np.int64)
        for lo, hi in zip(self.level[2:], self.level[3:]):
            pending = np.arange(lo, hi)
            at, rank = fail[self.parent[pending]], self.rank[pending]
            while pending.size:
                found = self.child(at, rank)
                fail[pending] = found  # final where found or at the root; overwritten otherwise
                go = (found == 0) & (at != 0)
                pending, at, rank = pending[go], fail[at[go]], rank[go]
        return fail


def _fail_chains(fail: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every node ``w != 0`` on every node ``u``'s fail chain ``u, fail(u), ...``: ``(u, w, j)`` with
    ``w = fail^j(u)`` (smaller ``j`` = deeper ``w``)."""
    u = w = np.arange(1, len(fail))
    us, ws, js = [], [], []
    j = 0
    while u.size:
        us.append(u)
        ws.append(w)
        js.append(np.full(len(u), j))
        keep = fail[w] != 0
        u, w, j = u[keep], fail[w[keep]], j + 1
    return tuple(np.concatenate([np.zeros(0, np.int64)] + parts) for parts in (us, ws, js))


def token_edges(trie: "_Trie", table: TokenTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every token edge ``(u, t, c)``: ``u != root`` and ``c`` are resting nodes (after a unit symbol)
    and ``t`` spells the units on the trie path from ``u`` down to ``c``.

    Bottom-up from every resting ``c``: the run of the last ``L`` units above ``c`` is grown one unit at
    a time while it is a token suffix; its hash is ``(S(c) - S(a)) * P^-d(a)`` with ``S`` the prefix
    hash of the units on a node's root path and ``d`` their number (one lookup per (node, length))."""
    index, rest = table.index, trie.rest
    c = np.flatnonzero(trie.resting)[1:]
    a = c
    cs, us, ts = [], [], []
    for _ in range(index.max_len):
        a = rest[a]
        found, i = index.find(index.suffixes, run_hash(trie.prefix_hash[a], trie.prefix_hash[c], trie.unit_depth[a]))
        emit = found & (a != 0)
        p, token = index.tokens_of(index.suffixes, i[emit])
        cs.append(c[emit][p])
        us.append(a[emit][p])
        ts.append(token)
        keep = found & (a != 0)
        a, c = a[keep], c[keep]
        if not a.size:
            break
    empty = [np.zeros(0, np.int64)]
    return tuple(np.concatenate(empty + parts) for parts in (us, ts, cs))


def with_lone_space_edges(a: "Automaton", table: TokenTable) -> "Automaton":
    """``a`` plus edges ``(u, t, c)`` of a one-byte whitespace token ``t`` where ``u``'s path goes on with
    that byte (after a ``D``) and no other token continues ``u`` with it: tokenizers that write a space
    before a digit alone (``" June" " " "1"``) go on only so; unseen, its ban re-pushed ``" June"``."""
    single = np.flatnonzero(np.diff(table.off) == 1)
    single = single[np.isin(table.sym[table.off[single]], list(WHITESPACE))]
    space = table.sym[table.off[single]]
    v = np.flatnonzero(np.isin(a.sym, space))  # nodes entered on such a byte (never the root)
    u = np.searchsorted(a.child_lo, v, side="right") - 1  # their parents
    u = np.where(a.sym[u] == SYM_DIGITS_END, np.searchsorted(a.child_lo, u, side="right") - 1, u)  # D: its parent
    v, u = v[u > 0], u[u > 0]
    # u's own edges (a.edge_u is sorted): does one begin with v's byte?
    bounds = np.column_stack([np.searchsorted(a.edge_u, u), np.searchsorted(a.edge_u, u, side="right")])
    p, e = _expand(bounds.ravel(), np.arange(len(a.edge_u)), 2 * np.arange(len(u)))
    continued = np.bincount(p, table.sym[table.off[a.edge_token[e]]] == a.sym[v[p]], len(u)) > 0
    i, j = np.nonzero(a.sym[v[~continued]][:, None] == space[None, :])
    u, t, c = u[~continued][i], single[j], v[~continued][i]
    order = np.argsort(u * table.vocab_size + t)  # inserted in (u, t) order: millions of edges not re-sorted
    at = np.searchsorted(a.edge_u * table.vocab_size + a.edge_token, (u * table.vocab_size + t)[order])
    return a._replace(**{name: np.insert(getattr(a, name), at, new[order])
                         for name, new in (("edge_u", u), ("edge_token", t), ("edge_child", c))})


def _starts(forms: EntityForms, table: TokenTable, phrase: bool):
    """``(pc, token, entity)`` of every start (module docstring, slot ``first_pc``)."""
    if not phrase:
        token = np.asarray([t for seqs in forms.canonical for seq in seqs for t in seq], np.int64)
        entity = np.repeat(np.arange(len(forms.canonical)), [sum(map(len, seqs)) for seqs in forms.canonical])
        pcs = np.arange(N_PUSH_CONTEXTS)
        return np.repeat(pcs, len(token)), np.tile(token, len(pcs)), np.tile(entity, len(pcs))
    pushed = forms.pushed
    f, length, token = table.index.spelled(pushed.units, pushed.off[:-1], pushed.lengths)
    # Only the longest token(s) a form starts with: pushing every prefix token (" in" for
    # " intelligent") let the model write the short common word and start over ("in … in … in").  A
    # form whose first character is 3 or 4 bytes (CJK, kana …) that the vocabulary only writes split
    # (no start token holds the whole character) starts with its shortest token(s) instead -- in a
    # byte-level vocabulary the lead byte: a tokenization the text never had, so its n-grams are not the
    # prompt's (no_repeat_ngram_size bans every n-gram of the usual one).  Where a token holds the
    # whole character (any CJK-rich vocabulary), the longest is kept: the model writes whole characters
    # and rarely a lone lead byte.
    first = pushed.units[pushed.off[:-1]]  # forms are not empty
    char_bytes = np.where(first >= 0xF0, 4, 3)
    longest = np.zeros(len(pushed.lengths), np.int64)
    shortest = np.full(len(pushed.lengths), np.iinfo(np.int64).max)
    np.maximum.at(longest, f, length)
    np.minimum.at(shortest, f, length)
    split = (first >= 0xE0) & (first < 256) & (longest < char_bytes)
    keep = length == np.where(split, shortest, longest)[f]
    f, token = f[keep], token[keep]
    pc = np.arange(N_PUSH_CONTEXTS)[None, :]
    has = (pushed.pcs[f][:, None] >> pc) & 1 == 1
    rows, pcs = np.nonzero(has)
    return pcs, token[rows], pushed.entity[f][rows]


class Automaton(NamedTuple):
    """The trie of the patterns (nodes breadth-first, children sorted by symbol: :class:`_Trie`), its
    fail links, ``through``/``out`` as lists per node (``*_off`` [N + 1] and the entities) and the
    token edges ``(u, t, c)`` sorted by ``(u, t, c)``."""

    sym: np.ndarray
    child_lo: np.ndarray
    fail: np.ndarray
    through_off: np.ndarray
    through: np.ndarray
    out_off: np.ndarray
    out: np.ndarray
    edge_u: np.ndarray
    edge_token: np.ndarray
    edge_child: np.ndarray
    max_depth: int


def build_automaton(sym: np.ndarray, off: np.ndarray, entity: np.ndarray, n_entities: int, table: TokenTable,
                    phrase: bool, native: bool = True) -> Automaton:
    """The :class:`Automaton` of patterns ``sym[off[f]:off[f + 1]]`` (entity ``entity[f]``); token edges
    only in ``phrase`` mode.  With ``native`` and the C++ extension built, its loops over nodes
    (``csrc/compile_cpu.cpp``); else numpy (the reference: both give the same arrays)."""
    ext = extension()[0] if native else None
    if getattr(ext, "vocab_trie", None) is None:  # no extension, or one built before the vocabulary trie
        return _build_numpy(sym, off, entity, n_entities, table, phrase)
    args = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in (sym, off, entity)]
    *arrays, max_depth = ext.build_automaton(*args, table.native_vocab(ext) if phrase else None)
    _check_nodes(len(arrays[0]))
    return Automaton(*(a.numpy() for a in arrays), max_depth)


def _build_numpy(sym, off, entity, n_entities: int, table: TokenTable, phrase: bool) -> Automaton:
    trie = _Trie(sym, off, entity, n_entities)
    n = trie.n_nodes
    fail = trie.fail_links()
    u, w, _ = _fail_chains(fail)
    # out(u) = ends of every node on the chain, the root's included (only an empty pattern ends there)
    chain_u = np.concatenate([u, np.arange(n)])
    p, ent = _expand(*trie.ends, np.concatenate([w, np.zeros(n, np.int64)]))
    out = _csr(chain_u[p], ent, n, n_entities)
    edges = token_edges(trie, table) if phrase else (np.zeros(0, np.int64),) * 3
    order = np.lexsort(edges[::-1])
    return Automaton(trie.sym, trie.child_lo, fail, *trie.through, *out, *(e[order] for e in edges),
                     len(trie.level) - 2)


def compile_program(forms: EntityForms, table: TokenTable, phrase: bool) -> Program:
    """Build the tables of a spec's entity forms against a tokenizer's :class:`TokenTable`.

    Time and memory are linear in the total form length times the depth of the fail chains (the
    longest pattern); see :func:`build_automaton`."""
    sym, off = patterns(forms.counted)
    a = build_automaton(sym, off, forms.counted.entity, forms.n_entities, table, phrase)
    if phrase:
        a = with_lone_space_edges(a, table)
    n, n_ent = len(a.sym), forms.n_entities

    pcs, start_token, start_entity = _starts(forms, table, phrase)
    pushed = np.zeros(max(table.vocab_size, int(start_token.max(initial=-1)) + 1), bool)  # slot = rank
    pushed[a.edge_token] = pushed[start_token] = True
    tokens = np.flatnonzero(pushed)
    slot_of = np.cumsum(pushed) - 1

    # closure(u) = u's own token edges, by slot (a token spells one path from u: one child per slot)
    closure = np.empty((len(a.edge_u), C.WIDTH), dtype=np.int32)
    closure[:, C.SLOT], closure[:, C.CHILD] = slot_of[a.edge_token], a.edge_child
    clo_off = np.searchsorted(a.edge_u, np.arange(n + 1))

    node = np.zeros((n, N_.WIDTH), dtype=np.int32)
    node[:, N_.CLO_LO], node[:, N_.CLO_HI] = clo_off[:-1], clo_off[1:]
    node[:, N_.THROUGH_LO], node[:, N_.THROUGH_HI] = a.through_off[:-1], a.through_off[1:]
    out_off = a.out_off + len(a.through)
    node[:, N_.OUT_LO], node[:, N_.OUT_HI] = out_off[:-1], out_off[1:]
    node[:, N_.FAIL] = a.fail
    node[:, N_.CHILD_LO], node[:, N_.CHILD_HI] = a.child_lo[:-1], a.child_lo[1:]
    node[:, N_.SYM] = a.sym
    ents = [a.through, a.out]

    slot = np.zeros((len(tokens), S_.WIDTH), dtype=np.int32)
    slot[:, S_.TOKEN] = tokens
    start_slot = slot_of[start_token]
    base = len(a.through) + len(a.out)
    for pc in range(N_PUSH_CONTEXTS):
        mine = pcs == pc
        first_off, first = _csr(start_slot[mine], start_entity[mine], len(tokens), n_ent)
        lo = getattr(S_, f"FIRST_LO{pc}")
        slot[:, lo], slot[:, lo + 1] = base + first_off[:-1], base + first_off[1:]
        ents.append(first)
        base += len(first)
    return Program(n_ent, node, slot, closure, np.concatenate(ents).astype(np.int32), a.max_depth)

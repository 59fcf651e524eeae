"""Compile one spec's entity variants into the flat Aho-Corasick tables the kernels walk.

A *program* is the compiled form of one :class:`~focuskern.FocusSpec` (rows with the same spec share
it).  Node 0 is the root; node, slot, closure and entity indices are local to the program.  Entity
sets are sorted lists of entity ids in one array (``ents``), so a program's size, its compile time and
a kernel's work per step grow linearly with the number of entities (a bitset per node would grow with
nodes x entities).  Column meanings: :mod:`focuskern.ops.layout`.

* node ``u``: ``through(u)`` = entities with a variant passing through ``u``; ``out(u)`` = entities one
  of whose variants ends at ``u`` or at a node on its fail chain (reaching ``u`` completes them);
  ``closure(u)`` = the children of every node on ``u``'s fail chain (root excluded) as (slot, child)
  entries sorted by slot, deepest first within a slot: the first entry with slot ``k`` is the AC
  transition on ``k``, and every entry is a possible continuation of a partial match; ``parent(u)`` and
  ``edge(u)``, the trie parent and the token from it (root: 0 and -1), step a state back by one token.
* slot ``k`` (the program's ``k``-th smallest distinct token id): ``first(k)`` = entities boosted by
  ``bias`` when they own the slot (phrase mode: variants that start with it, i.e. ``through`` of the
  root's child on it; tokens mode: variants containing it) and the root's child on it (0 = none).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import chain

import numpy as np

from .ops.layout import C, N_, S_

WORD_BITS = 32


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


def _merge(a: list[int], b: list[int]) -> list[int]:
    """Sorted union of two sorted lists."""
    if not b:
        return a
    if not a:
        return b
    return sorted(set(a).union(b))


class _Lists:
    """Entity lists laid end to end in one array; ``add`` returns the list's ``(lo, hi)``."""

    def __init__(self):
        self.parts: list[list[int]] = []
        self.size = 0

    def add(self, items: list[int]) -> tuple[int, int]:
        lo = self.size
        self.parts.append(items)
        self.size += len(items)
        return lo, self.size

    def array(self) -> np.ndarray:
        return np.fromiter(chain.from_iterable(self.parts), dtype=np.int32, count=self.size)


def compile_program(entity_variants: list[list[tuple[int, ...]]], phrase: bool) -> Program:
    """Build the tables for entities given as lists of token-id variants (linear in their total length)."""
    children: list[dict[int, int]] = [{}]
    through: list[list[int]] = [[]]
    ends: list[list[int]] = [[]]
    parent, edge = [0], [-1]
    for entity, variants in enumerate(entity_variants):
        for variant in variants:
            node = 0
            for token in variant:
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                    through.append([])
                    ends.append([])
                    parent.append(node)
                    edge.append(token)
                node = nxt
                if not through[node] or through[node][-1] != entity:  # entities arrive in order: sorted
                    through[node].append(entity)
            if not ends[node] or ends[node][-1] != entity:
                ends[node].append(entity)

    n = len(children)
    fail = [0] * n
    out = ends
    queue = deque(children[0].values())
    while queue:
        node = queue.popleft()
        for token, child in children[node].items():
            f = fail[node]
            while f and token not in children[f]:
                f = fail[f]
            target = children[f].get(token, 0)
            fail[child] = target if target != child else 0
            out[child] = _merge(out[child], out[fail[child]])
            queue.append(child)

    tokens = sorted({t for c in children for t in c})
    slot_of = {t: i for i, t in enumerate(tokens)}
    lists = _Lists()
    node_table = np.zeros((n, N_.WIDTH), dtype=np.int32)
    closure: list[tuple[int, int]] = []
    for u in range(n):
        entries = []
        w = u
        while w:
            entries.extend((slot_of[t], c) for t, c in children[w].items())
            w = fail[w]
        entries.sort(key=lambda e: e[0])  # stable: deepest first within a slot
        row = node_table[u]
        row[N_.CLO_LO] = len(closure)
        closure.extend(entries)
        row[N_.CLO_HI] = len(closure)
        row[N_.THROUGH_LO], row[N_.THROUGH_HI] = lists.add(through[u])
        row[N_.OUT_LO], row[N_.OUT_HI] = lists.add(out[u])
    node_table[:, N_.PARENT] = parent
    node_table[:, N_.EDGE] = edge

    slot_table = np.zeros((len(tokens), S_.WIDTH), dtype=np.int32)
    slot_table[:, S_.TOKEN] = tokens
    slot_table[:, S_.ROOT_CHILD] = [children[0].get(t, 0) for t in tokens]
    if phrase:  # first(k) = through(root's child on k): the node's list, not a copy
        root_child = slot_table[:, S_.ROOT_CHILD]
        has = root_child > 0
        slot_table[has, S_.FIRST_LO] = node_table[root_child[has], N_.THROUGH_LO]
        slot_table[has, S_.FIRST_HI] = node_table[root_child[has], N_.THROUGH_HI]
    else:
        owners: dict[int, set[int]] = {t: set() for t in tokens}
        for u in range(1, n):
            owners[edge[u]].update(through[u])
        for k, t in enumerate(tokens):
            slot_table[k, S_.FIRST_LO], slot_table[k, S_.FIRST_HI] = lists.add(sorted(owners[t]))

    closure_table = np.asarray(closure, dtype=np.int32).reshape(-1, C.WIDTH)
    return Program(len(entity_variants), node_table, slot_table, closure_table, lists.array())

"""Compile one spec's entity variants into the flat Aho-Corasick tables the kernels walk.

A *program* is the compiled form of one :class:`~focuskern.FocusSpec` (rows with the same spec share
it).  Node 0 is the root; every node index, slot index and closure index is local to the program.

Tables (numpy, int32):

* ``node_mask`` [N, W]  entities that have a variant passing through the node (bitsets of W words).
* ``node_out``  [N, W]  entities one of whose variants ends at the node or at a node on its fail chain:
  reaching the node means they have been generated in full.
* ``clo_start``/``clo_end`` [N]  the node's *closure*: the children of every node on its fail chain
  (root excluded), deepest first, as ``clo_slot`` / ``clo_child`` [E].  The first closure entry with
  slot k is the AC transition on k; every entry is a possible continuation of a partial match.
* ``slot_token`` [S] the distinct token ids of the program (sorted); ``slot_first`` [S, W] entities
  boosted by ``bias`` when they own the slot (phrase mode: variants that start with it; tokens mode:
  variants containing it); ``slot_root_child`` [S] the root's child on that token (0 = none).
* ``parent`` / ``edge`` [N]  the trie parent of each node and the token leading to it from there (the
  root: 0 and -1), so a state can be stepped back by one token (``FocusState.apply_(hold=...)``).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

WORD_BITS = 32


def words_for(n_entities: int) -> int:
    return max(1, -(-n_entities // WORD_BITS))


def _bitsets(sets: list[set[int]], words: int) -> np.ndarray:
    out = np.zeros((len(sets), words), dtype=np.uint32)
    for i, members in enumerate(sets):
        for e in members:
            out[i, e // WORD_BITS] |= np.uint32(1 << (e % WORD_BITS))
    return out.view(np.int32)


@dataclass
class Program:
    n_entities: int
    node_mask: np.ndarray
    node_out: np.ndarray
    clo_start: np.ndarray
    clo_end: np.ndarray
    clo_slot: np.ndarray
    clo_child: np.ndarray
    slot_token: np.ndarray
    slot_first: np.ndarray
    slot_root_child: np.ndarray
    parent: np.ndarray
    edge: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.clo_start)

    @property
    def n_slots(self) -> int:
        return len(self.slot_token)

    @property
    def max_closure(self) -> int:
        return int((self.clo_end - self.clo_start).max(initial=0))

    def padded_masks(self, words: int) -> "Program":
        """The same program with bitsets widened to ``words`` words (batches share one width)."""
        def pad(a):
            return np.pad(a, ((0, 0), (0, words - a.shape[1])))
        return Program(self.n_entities, pad(self.node_mask), pad(self.node_out), self.clo_start,
                       self.clo_end, self.clo_slot, self.clo_child, self.slot_token,
                       pad(self.slot_first), self.slot_root_child, self.parent, self.edge)


def compile_program(entity_variants: list[list[tuple[int, ...]]], phrase: bool) -> Program:
    """Build the tables for entities given as lists of token-id variants."""
    children: list[dict[int, int]] = [{}]
    through: list[set[int]] = [set()]
    ends: list[set[int]] = [set()]
    parent, edge = [0], [-1]
    for entity, variants in enumerate(entity_variants):
        for variant in variants:
            node = 0
            for token in variant:
                if token not in children[node]:
                    children[node][token] = len(children)
                    children.append({})
                    through.append(set())
                    ends.append(set())
                    parent.append(node)
                    edge.append(token)
                node = children[node][token]
                through[node].add(entity)
            ends[node].add(entity)

    n = len(children)
    fail = [0] * n
    out = [set(e) for e in ends]
    order = []
    queue = deque(children[0].values())
    while queue:
        node = queue.popleft()
        order.append(node)
        for token, child in children[node].items():
            f = fail[node]
            while f and token not in children[f]:
                f = fail[f]
            fail[child] = children[f][token] if token in children[f] and children[f][token] != child else 0
            out[child] |= out[fail[child]]
            queue.append(child)

    tokens = sorted({t for c in children for t in c})
    slot_of = {t: i for i, t in enumerate(tokens)}
    clo_start, clo_end, clo_slot, clo_child = [], [], [], []
    for node in range(n):
        clo_start.append(len(clo_slot))
        w = node
        while w:
            for token, child in sorted(children[w].items()):
                clo_slot.append(slot_of[token])
                clo_child.append(child)
            w = fail[w]
        clo_end.append(len(clo_slot))

    if phrase:
        first = [through[children[0][t]] if t in children[0] else set() for t in tokens]
    else:
        owners = {t: set() for t in tokens}
        for node in range(n):
            for token, child in children[node].items():
                owners[token] |= through[child]
        first = [owners[t] for t in tokens]

    words = words_for(len(entity_variants))
    i32 = lambda xs: np.asarray(xs, dtype=np.int32)  # noqa: E731
    return Program(
        n_entities=len(entity_variants),
        node_mask=_bitsets(through, words),
        node_out=_bitsets(out, words),
        clo_start=i32(clo_start),
        clo_end=i32(clo_end),
        clo_slot=i32(clo_slot),
        clo_child=i32(clo_child),
        slot_token=i32(tokens),
        slot_first=_bitsets(first, words),
        slot_root_child=i32([children[0].get(t, 0) for t in tokens]),
        parent=i32(parent),
        edge=i32(edge),
    )

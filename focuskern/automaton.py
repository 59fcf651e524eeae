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

Nodes are numbered by depth, children in slot order.  The compiler is vectorized (numpy) and loops
only over depth, never over nodes or entities (100k entities compile in well under a second).
"""
from __future__ import annotations

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


class _Trie:
    """The trie of all variants, nodes numbered by depth (root 0), children in token order.

    Because nodes are created depth by depth from sorted ``(parent, slot)`` keys, the key
    ``parent * S + slot`` of nodes ``1 .. N-1`` is strictly increasing: a child lookup is one
    ``searchsorted``.  ``level[d]:level[d + 1]`` are the nodes at depth ``d``."""

    def __init__(self, entity_variants: list[list[tuple[int, ...]]]):
        per_entity = [len(vs) for vs in entity_variants]
        lengths = np.fromiter((len(v) for vs in entity_variants for v in vs), dtype=np.int64,
                              count=sum(per_entity))
        tokens = np.fromiter(chain.from_iterable(chain.from_iterable(entity_variants)), dtype=np.int64,
                             count=int(lengths.sum()))
        self.tokens, token_slot = np.unique(tokens, return_inverse=True)  # slot k = k-th smallest token
        self.n_slots = n_slots = len(self.tokens)
        starts = np.cumsum(lengths) - lengths
        order = np.argsort(-lengths, kind="stable")  # longest first: the variants alive at depth d lead
        entity = np.repeat(np.arange(len(entity_variants)), per_entity)[order]
        lengths, starts = lengths[order], starts[order]
        alive = np.searchsorted(-lengths, -np.arange(int(lengths.max(initial=0))), side="left")

        at = np.zeros(len(lengths), dtype=np.int64)  # each variant's node at the current depth
        parents, slots, through_nodes, through_ents = [np.zeros(1, np.int64)], [np.full(1, -1)], [], []
        self.level = [0, 1]
        for depth, a in enumerate(alive):
            keys, inverse = np.unique(at[:a] * n_slots + token_slot[starts[:a] + depth], return_inverse=True)
            at[:a] = self.level[-1] + inverse.reshape(-1)
            parent, slot = np.divmod(keys, n_slots)
            parents.append(parent)
            slots.append(slot)
            through_nodes.append(at[:a].copy())
            through_ents.append(entity[:a])
            self.level.append(self.level[-1] + len(keys))
        self.parent, self.slot = np.concatenate(parents), np.concatenate(slots)
        self.n_nodes, self.n_entities = self.level[-1], len(entity_variants)
        self.keys = self.parent[1:] * n_slots + self.slot[1:]
        self.through = _csr(np.concatenate([np.zeros(0, np.int64)] + through_nodes),
                            np.concatenate([np.zeros(0, np.int64)] + through_ents), self.n_nodes, self.n_entities)
        self.ends = _csr(at, entity, self.n_nodes, self.n_entities)  # empty variants end at the root
        # children of w: nodes child_lo[w] .. child_lo[w + 1] - 1 (nodes are sorted by parent)
        self.children = (np.searchsorted(self.parent[1:], np.arange(self.n_nodes + 1)) + 1,
                         np.arange(self.n_nodes, dtype=np.int64))

    def child(self, node: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """The child of each ``node`` on ``slot`` (0 = none)."""
        query = node * self.n_slots + slot
        i = np.minimum(np.searchsorted(self.keys, query), max(len(self.keys) - 1, 0))
        hit = self.keys[i] == query if len(self.keys) else np.zeros(len(query), bool)
        return np.where(hit, i + 1, 0)

    def fail_links(self) -> np.ndarray:
        """``fail[u]``: the node of the longest proper suffix of ``u``'s string that is in the trie.

        Depth by depth (a fail link points to a shallower node): follow the parent's fail chain until a
        node has a child on ``u``'s token, at most ``depth`` steps, for all nodes of the depth at once."""
        fail = np.zeros(self.n_nodes, dtype=np.int64)
        for lo, hi in zip(self.level[2:], self.level[3:]):
            pending = np.arange(lo, hi)
            at, slot = fail[self.parent[pending]], self.slot[pending]
            while pending.size:
                found = self.child(at, slot)
                fail[pending] = found  # final where found or at the root; overwritten otherwise
                go = (found == 0) & (at != 0)
                pending, at, slot = pending[go], fail[at[go]], slot[go]
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


def compile_program(entity_variants: list[list[tuple[int, ...]]], phrase: bool) -> Program:
    """Build the tables for entities given as lists of token-id variants.

    Vectorized (numpy), looping only over depth: time and memory are linear in the total variant
    length times the depth of the fail chains (the longest variant)."""
    trie = _Trie(entity_variants)
    n, n_ent = trie.n_nodes, trie.n_entities
    fail = trie.fail_links()
    u, w, j = _fail_chains(fail)

    # out(u) = ends of every node on the chain, the root's included (only an empty variant ends there)
    chain_u = np.concatenate([u, np.arange(n)])
    p, ent = _expand(*trie.ends, np.concatenate([w, np.zeros(n, np.int64)]))
    out = _csr(chain_u[p], ent, n, n_ent)

    # closure(u) = children of every chain node but the root, by slot, deepest (smallest j) first
    p, child = _expand(*trie.children, w)
    cu, cslot = u[p], trie.slot[child]
    order = np.lexsort((j[p], cslot, cu))
    closure = np.stack([cslot[order], child[order]], axis=1).astype(np.int32).reshape(-1, C.WIDTH)
    clo_off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(cu, minlength=n), out=clo_off[1:])

    through_off, through = trie.through
    out_off = out[0] + len(through)
    node = np.zeros((n, N_.WIDTH), dtype=np.int32)
    node[:, N_.CLO_LO], node[:, N_.CLO_HI] = clo_off[:-1], clo_off[1:]
    node[:, N_.THROUGH_LO], node[:, N_.THROUGH_HI] = through_off[:-1], through_off[1:]
    node[:, N_.OUT_LO], node[:, N_.OUT_HI] = out_off[:-1], out_off[1:]
    node[:, N_.PARENT] = trie.parent
    node[:, N_.EDGE] = np.append(trie.tokens, -1)[trie.slot]  # the root's slot -1 picks the appended -1
    ents = [through, out[1]]

    slot = np.zeros((trie.n_slots, S_.WIDTH), dtype=np.int32)
    slot[:, S_.TOKEN] = trie.tokens
    root_children = np.arange(trie.children[0][0], trie.children[0][1])
    slot[trie.slot[root_children], S_.ROOT_CHILD] = root_children
    if phrase:  # first(k) = through(root's child on k): the node's list, not a copy
        root_child = slot[:, S_.ROOT_CHILD]
        has = root_child > 0
        slot[has, S_.FIRST_LO] = node[root_child[has], N_.THROUGH_LO]
        slot[has, S_.FIRST_HI] = node[root_child[has], N_.THROUGH_HI]
    else:  # first(k) = union of through(v) over the nodes v entered by token k
        p, ent = _expand(through_off, through, np.arange(1, n))
        first_off, first = _csr(trie.slot[1 + p], ent, trie.n_slots, n_ent)
        first_off = first_off + len(through) + len(out[1])
        slot[:, S_.FIRST_LO], slot[:, S_.FIRST_HI] = first_off[:-1], first_off[1:]
        ents.append(first)
    return Program(n_ent, node, slot, closure, np.concatenate(ents).astype(np.int32))

"""compile_program vs an Aho-Corasick oracle written from the definitions (nodes = prefix strings).

The oracle names every node by its string, so the comparison does not depend on node numbering:
the compiled tables are decoded into the same string-keyed form (a node's string is rebuilt from its
parent and edge columns) and compared field by field; random walks then check the AC transitions the
kernels take (first closure entry on a slot, else the root's child) against longest-suffix matching.
"""
import random

import numpy as np
import pytest

from focuskern.automaton import compile_program
from focuskern.ops.layout import C, N_, S_


def random_variants(rng: random.Random, alphabet: int, n_entities: int) -> list[list[tuple[int, ...]]]:
    """Entities over a small alphabet, so prefixes, suffixes and whole variants are shared; some entities
    reuse another entity's variant, a prefix or a suffix of it, or a single token."""
    pool: list[tuple[int, ...]] = []
    entities = []
    for _ in range(n_entities):
        variants = []
        for _ in range(rng.randint(1, 3)):
            if pool and rng.random() < 0.4:
                base = rng.choice(pool)
                cut = rng.randint(1, len(base))
                seq = rng.choice([base, base[:cut], base[-cut:]])
            else:
                seq = tuple(rng.randrange(alphabet) for _ in range(rng.choice([1, 1, 2, 3, 4, 6])))
            variants.append(seq)
        variants = list(dict.fromkeys(variants))
        pool.extend(variants)
        entities.append(variants)
    return entities


class Oracle:
    """Aho-Corasick by definition: a node is a prefix of some variant; the fail chain of ``s`` is its
    suffixes that are nodes, longest first."""

    def __init__(self, entity_variants, phrase: bool):
        self.prefixes = {v[:i] for vs in entity_variants for v in vs for i in range(len(v) + 1)}
        self.tokens = sorted({t for vs in entity_variants for v in vs for t in v})
        self.slot_of = {t: k for k, t in enumerate(self.tokens)}
        self.variants = [(e, v) for e, vs in enumerate(entity_variants) for v in vs]
        self.phrase = phrase

    def chain(self, s):
        return [s[i:] for i in range(len(s)) if s[i:] in self.prefixes]

    def through(self, s):
        return sorted({e for e, v in self.variants if s and v[:len(s)] == s})

    def out(self, s):
        return sorted({e for e, v in self.variants if s[len(s) - len(v):] == v and len(v) <= len(s)})

    def closure(self, s):
        entries = [(self.slot_of[t], w + (t,)) for w in self.chain(s) for t in self.tokens
                   if w + (t,) in self.prefixes]
        return sorted(entries, key=lambda e: e[0])  # stable: deepest chain node first within a slot

    def first(self, k):
        t = self.tokens[k]
        if self.phrase:
            return self.through((t,))
        return sorted({e for e, v in self.variants if t in v})

    def step(self, s, t):
        """The AC transition: the longest suffix of ``s + t`` that is a node."""
        s = s + (t,)
        return next((s[i:] for i in range(len(s) + 1) if s[i:] in self.prefixes))


def decode(program):
    """String-keyed view of a program: per node string its (through, out, closure), per slot its
    (token, root child string, first), and the node id of every string."""
    node, ents = program.node, program.ents

    def span(lo, hi):
        return ents[lo:hi].tolist()

    strings: dict[int, tuple[int, ...]] = {0: ()}
    assert (int(node[0, N_.PARENT]), int(node[0, N_.EDGE])) == (0, -1)

    def string(u):  # parents may be numbered in any order: rebuild recursively
        if u not in strings:
            strings[u] = string(int(node[u, N_.PARENT])) + (int(node[u, N_.EDGE]),)
        return strings[u]

    strings = [string(u) for u in range(program.n_nodes)]
    nodes = {}
    for u, s in enumerate(strings):
        row = node[u]
        closure = [(int(k), strings[c]) for k, c in program.closure[row[N_.CLO_LO]:row[N_.CLO_HI]]]
        nodes[s] = (span(row[N_.THROUGH_LO], row[N_.THROUGH_HI]), span(row[N_.OUT_LO], row[N_.OUT_HI]), closure)
    slots = [(int(r[S_.TOKEN]), strings[r[S_.ROOT_CHILD]] if r[S_.ROOT_CHILD] else None,
              span(r[S_.FIRST_LO], r[S_.FIRST_HI])) for r in program.slot]
    return nodes, slots, {s: u for u, s in enumerate(strings)}


def transition(program, u, k):
    """The kernels' step from node ``u`` on slot ``k``: the first closure entry on ``k``, else the
    root's child on ``k`` (0 = none)."""
    row = program.node[u]
    for slot, child in program.closure[row[N_.CLO_LO]:row[N_.CLO_HI]]:
        if slot == k:
            return int(child)
    return int(program.slot[k, S_.ROOT_CHILD])


@pytest.mark.parametrize("phrase", [True, False], ids=["phrase", "tokens"])
@pytest.mark.parametrize("alphabet,n_entities", [(2, 3), (3, 8), (5, 20), (9, 40)])
def test_tables_match_oracle(phrase, alphabet, n_entities):
    rng = random.Random(random.randrange(2**31))
    variants = random_variants(rng, alphabet, n_entities)
    program = compile_program(variants, phrase)
    oracle = Oracle(variants, phrase)
    nodes, slots, _ = decode(program)

    assert program.n_entities == n_entities
    assert set(nodes) == oracle.prefixes and len(nodes) == program.n_nodes  # one node per prefix
    for s, (through, out, closure) in nodes.items():
        assert through == oracle.through(s), s
        assert out == oracle.out(s), s
        assert closure == oracle.closure(s), s
    assert [t for t, _, _ in slots] == oracle.tokens
    for k, (t, root_child, first) in enumerate(slots):
        assert root_child == ((t,) if (t,) in oracle.prefixes else None)
        assert first == oracle.first(k)
    if phrase:  # first(k) is the root child's through-list itself, not a copy
        has = program.slot[:, S_.ROOT_CHILD] > 0
        children = program.slot[has, S_.ROOT_CHILD]
        assert (program.slot[has][:, [S_.FIRST_LO, S_.FIRST_HI]]
                == program.node[children][:, [N_.THROUGH_LO, N_.THROUGH_HI]]).all()
    for table in (program.node, program.slot, program.closure, program.ents):
        assert table.dtype == np.int32


@pytest.mark.parametrize("phrase", [True, False], ids=["phrase", "tokens"])
def test_random_walks_follow_longest_suffix(phrase):
    rng = random.Random(random.randrange(2**31))
    alphabet = rng.randint(2, 6)
    variants = random_variants(rng, alphabet, rng.randint(1, 25))
    program = compile_program(variants, phrase)
    oracle = Oracle(variants, phrase)
    nodes, _, node_of = decode(program)
    for _ in range(20):
        u, s = 0, ()
        text = [rng.randrange(alphabet + 1) for _ in range(rng.randint(1, 30))]  # alphabet: no slot
        for t in text:
            s = oracle.step(s, t)
            u = transition(program, u, oracle.slot_of[t]) if t in oracle.slot_of else 0
            assert u == node_of[s], (text, s)
            assert nodes[s][1] == oracle.out(s)  # completed here: a variant is a suffix of the text


def test_empty_and_single_token_programs():
    empty = compile_program([], phrase=True)
    assert (empty.n_nodes, empty.n_slots, empty.closure.shape, len(empty.ents)) == (1, 0, (0, C.WIDTH), 0)
    single = compile_program([[(7,)], [(7,), (3,)]], phrase=False)
    nodes, slots, _ = decode(single)
    assert nodes[(7,)][:2] == ([0, 1], [0, 1]) and nodes[(3,)][:2] == ([1], [1])
    assert slots == [(3, (3,), [1]), (7, (7,), [0, 1])]


@pytest.mark.parametrize("phrase", [True, False], ids=["phrase", "tokens"])
def test_100k_entities_have_linear_tables(phrase):
    rng = np.random.default_rng(random.randrange(2**31))
    vocab, n = 151936, 100_000
    lengths = rng.integers(1, 5, size=n)
    flat = rng.integers(0, vocab, size=int(lengths.sum())).tolist()
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    variants = [[tuple(flat[a:b])] for a, b in zip(bounds[:-1], bounds[1:])]
    total = len(flat)
    program = compile_program(variants, phrase)
    assert program.n_entities == n
    assert program.n_nodes <= total + 1 and program.n_slots <= total
    assert program.closure.shape[0] <= 2 * total  # fail chains of random tokens are short
    assert len(program.ents) <= 3 * total + n  # through + out + (tokens mode) first lists
    node = program.node
    for u in rng.integers(1, program.n_nodes, 1000):
        through = program.ents[node[u, N_.THROUGH_LO]:node[u, N_.THROUGH_HI]]
        assert len(through) and (np.diff(through) > 0).all()  # non-empty, sorted, distinct

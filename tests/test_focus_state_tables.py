"""The FocusState op on tables built by hand, every backend against the torch reference.

The compiler never writes some of what these tables hold -- ids outside ``[0, V)`` in slots and
end-of-text columns, last tokens outside it, every row context, opaque symbols among bytes -- but a state built from tables given directly can (issue 21), so every
backend must treat them as the reference does (skip them) rather than index out of bounds.  The trie
is random but well formed (docs/text-tracking.md section 5): nodes numbered by depth, children a
contiguous range sorted by symbol, a fail link to a shallower node.
"""
import random

import pytest
import torch

from focuskern.ops import layout as L
from focuskern.ops.dispatch import available_backends, get_op
from focuskern.ops.layout import C, F, I, N_, S_
from conftest import DEVICE, TOLERANCES

BACKENDS = [b for b in available_backends("focus_state", DEVICE) if b != "torch"]
# Bytes of every class (letters, digits, space, opener, sentence end, newline, CJK lead, continuation,
# Latin-1 lead) and the two inserted symbols.
SYMBOLS = [ord(c) for c in "aZ7 (.\n,"] + [0xE4, 0x80, 0xBD, 0xC3, L.SYM_WORD_START, L.SYM_DIGITS_END]
BAD_IDS = (-2**31, -1, 2**31 - 1)
# The contexts a walk can reach (a digit is a word byte; a word byte is spaced and ends a sentence start).
CONTEXTS = (0, L.CTX_SPACED, L.CTX_SENTENCE, L.CTX_SPACED | L.CTX_SENTENCE, L.CTX_PREV_WORD | L.CTX_SPACED,
            L.CTX_PREV_WORD | L.CTX_PREV_DIGIT | L.CTX_SPACED)


def random_trie(rng, n_nodes):
    """(children ranges, symbols, fail links, depths) of a random trie numbered by depth."""
    sym, depth, child_lo, child_hi, fail = [0], [0], [], [], []
    frontier = [0]
    while len(sym) < n_nodes and frontier:
        u = frontier.pop(0)
        kids = sorted(rng.sample(SYMBOLS, rng.randint(0, min(4, n_nodes - len(sym)))))
        child_lo.append(len(sym))
        for s in kids:
            frontier.append(len(sym))
            sym.append(s)
            depth.append(depth[u] + 1)
        child_hi.append(len(sym))
    child_lo += [0] * (len(sym) - len(child_lo))
    child_hi += [0] * (len(sym) - len(child_hi))
    for u in range(len(sym)):
        shallower = [v for v in range(len(sym)) if depth[v] < depth[u]]
        fail.append(rng.choice(shallower) if shallower and rng.random() < 0.7 else 0)
    return child_lo, child_hi, sym, fail


def random_tables(rng, V, n_programs):
    """Random prog_f32, prog_i32, node, slot, closure, ents and token tables of ``n_programs`` programs
    (-> dict of tensors, node counts)."""
    # One sentinel closure entry and entity first, as FocusState keeps them (programs.py).
    pf, pi, nodes, slots, closure, ents, sizes = [], [], [], [], [[0, 0]], [0], []

    def entity_list(n_ent, most):
        lo = len(ents)
        ents.extend(rng.sample(range(n_ent), rng.randint(0, min(most, n_ent))))
        return [lo, len(ents)]

    for _ in range(n_programs):
        n_ent, n_nodes = rng.randint(1, 40), rng.randint(1, 30)
        n_slots = rng.randint(1, min(10, V))
        row_i = [0] * I.WIDTH
        row_i[I.NODE_BASE], row_i[I.SLOT_BASE], row_i[I.N_SLOTS], row_i[I.ENT_BASE] = (
            len(nodes), len(slots), n_slots, len(ents))
        tokens = sorted(rng.sample(range(V), n_slots - 1) + [rng.choice(BAD_IDS + (V,))])
        for t in tokens:
            slots.append([t] + sum((entity_list(n_ent, 3) for _ in range(L.N_PUSH_CONTEXTS)), []))
        child_lo, child_hi, sym, fail = random_trie(rng, n_nodes)
        for u in range(len(sym)):
            entries = sorted((rng.randrange(n_slots), rng.randrange(len(sym))) for _ in range(rng.randint(0, 3)))
            row = [0] * N_.WIDTH
            row[N_.CLO_LO], row[N_.CLO_HI] = len(closure), len(closure) + len(entries)
            closure.extend(list(e) for e in entries)
            row[N_.THROUGH_LO], row[N_.THROUGH_HI] = entity_list(n_ent, 4)
            row[N_.OUT_LO], row[N_.OUT_HI] = entity_list(n_ent, 2) if rng.random() < 0.4 else [0, 0]
            row[N_.FAIL], row[N_.CHILD_LO], row[N_.CHILD_HI], row[N_.SYM] = fail[u], child_lo[u], child_hi[u], sym[u]
            nodes.append(row)
        row_i[I.ENT_COUNT] = len(ents) - row_i[I.ENT_BASE]
        row_i[I.PHRASE], row_i[I.ONCE], row_i[I.STARTS_IN_MATCH] = rng.choice([0, 1, 1]), rng.choice([0, 1, 1]), rng.randint(0, 1)
        row_i[I.N_ENTITIES] = n_ent
        eos = [rng.choice([-1, rng.randrange(V), tokens[0], V, *BAD_IDS]) for _ in range(L.MAX_EOS)]
        row_i[I.EOS0:I.EOS0 + L.MAX_EOS] = eos
        row_f = [0.0] * F.WIDTH
        row_f[F.BIAS], row_f[F.CONT], row_f[F.ALPHA] = rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.choice([0.0, 0.4])
        row_f[F.KIND], row_f[F.HORIZON], row_f[F.FLOOR] = rng.choice([(0.0, 1.0, 0.0), (1.0, 6.0, 0.2)])
        row_f[F.BUDGET], row_f[F.SLACK], row_f[F.FORCE], row_f[F.EOS_DAMP] = rng.choice([0.0, 12.0]), 1.5, 2.0, 3.0
        pi.append(row_i)
        pf.append(row_f)
        sizes.append(len(sym))
    # Token table: a token of 0..5 symbols (bytes of every class, sometimes an opaque symbol).
    off, syms = [0], []
    for _ in range(V):
        syms += [rng.choice(SYMBOLS[:-2] + [L.SYM_OPAQUE + 3]) for _ in range(rng.randint(0, 5))]
        off.append(len(syms))

    def i32(x, width=None):
        t = torch.tensor(x, dtype=torch.int32)
        return (t.reshape(-1, width) if width else t).to(DEVICE)

    tables = dict(prog_f32=torch.tensor(pf, device=DEVICE), prog_i32=i32(pi, I.WIDTH), node_table=i32(nodes, N_.WIDTH),
                  slot_table=i32(slots, S_.WIDTH), closure=i32(closure, C.WIDTH), ents=i32(ents),
                  tok_off=i32(off), tok_sym=i32(syms or [0]), byte_class=i32(list(L.BYTE_CLASS)))
    limits = [max(r[I.N_SLOTS] for r in pi), max(max(n[N_.CLO_HI] - n[N_.CLO_LO] for n in nodes), 1), max(len(ents), 1),
              max(max(n[N_.OUT_HI] - n[N_.OUT_LO] for n in nodes), 1), max(max(b - a for a, b in zip(off, off[1:])), 1),
              max(sizes)]
    return tables, limits, sizes


def random_rows(rng, B, sizes):
    """prog (some -1), state words (every reachable context), sat (some bits set) and step of ``B`` rows."""
    prog = [rng.randrange(-1, len(sizes)) for _ in range(B)]
    words = [(rng.randrange(sizes[p]) if p >= 0 else 0) | (rng.choice(CONTEXTS) << L.CTX_SHIFT) for p in prog]
    sat = [[rng.choice([0, 0, rng.randrange(-2**31, 2**31)]) for _ in range(2)] for _ in range(B)]
    steps = [rng.randrange(8) for _ in range(B)]
    return [torch.tensor(x, dtype=torch.int32, device=DEVICE) for x in (prog, words, sat, steps)]


def run(backend, logits, last, rows, tables, limits, blend=True):
    rows = [r.clone() for r in rows]
    get_op("focus_state", backend, logits.device)(logits, last, *rows, *tables.values(), limits, blend)
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hand_built_tables_match_reference(backend, dtype, seed):
    """Walk, context, pushes, give-up and end-of-text on random tables with bad ids (int32 and int64 last
    tokens, read without narrowing); strided logits."""
    rng = random.Random(seed)
    for _ in range(12):
        B, V = rng.randint(1, 6), rng.choice([7, 23, 40])
        tables, limits, sizes = random_tables(rng, V, rng.randint(1, 3))
        rows = random_rows(rng, B, sizes)
        parent = torch.randn(B, V + 3, device=DEVICE).to(dtype)
        parent[:, :V][torch.rand(B, V, device=DEVICE) < 0.25] = float("-inf")  # banned continuations
        # int64 ids past int32 must not wrap into the vocabulary (2^32 + 3 would be token 3).
        wide = rng.random() < 0.5
        bad = BAD_IDS + ((2**32 + 3, 2**40, 2**63 - 1, -2**63) if wide else ())
        last = None if rng.random() < 0.15 else torch.tensor(
            [rng.choice([rng.randrange(V), rng.randrange(V), V - 1, V, *bad]) for _ in range(B)],
            dtype=torch.int64 if wide else torch.int32, device=DEVICE)
        want_logits = parent.clone()
        want = run("torch", want_logits[:, :V], last, rows, tables, limits)
        got_logits = parent.clone()
        got = run(backend, got_logits[:, :V], last, rows, tables, limits)
        for name, w, g in zip(("prog", "node", "sat", "step"), want, got):
            assert torch.equal(g, w), f"{name}: {g.tolist()} != {w.tolist()} (last {last})"
        torch.testing.assert_close(got_logits, want_logits, rtol=TOLERANCES[dtype][0], atol=TOLERANCES[dtype][1])
        assert torch.equal(got_logits[:, V:], parent[:, V:]), "a bad id wrote past the row"

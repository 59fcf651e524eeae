"""compile_program vs an oracle written from the definitions of docs/text-tracking.md (nodes = prefix
strings of the patterns).

The oracle names every node by its symbol string, so the comparison does not depend on node numbering:
the compiled tables are decoded into the same string-keyed form (a node's string is rebuilt from its
parent's and its ``SYM``) and compared field by field.  Vocabularies: opaque tokens (no tokenizer) and
small byte vocabularies with letters, digits, spaces, punctuation and CJK characters.
"""
import random

import numpy as np
import pytest

from focuskern.automaton import Automaton, build_automaton, compile_program, patterns
from focuskern.forms import entity_forms, text_forms_of
from focuskern.ops.dispatch import extension
from focuskern.ops.layout import N_PUSH_CONTEXTS, SYM_DIGITS_END, SYM_WORD_START, C, N_, S_
from focuskern.text import WHITESPACE, TokenTable, opaque_table
from reference import counted_forms, pushed_forms

B, D = SYM_WORD_START, SYM_DIGITS_END


def syms(text: str) -> list:
    return [s if s >= 256 else bytes([s]) for s in text.encode()]


@pytest.mark.parametrize("entity,want", [
    ("Paris", [B, *b"Paris"]),
    ("March 3", [B, *b"March ", B, *b"3", D]),
    ("48-megapixel", [B, *b"48", D, *b"-", B, *b"megapixel"]),
    ("GPT-4o", [B, *b"GPT-", B, *b"4", D, *b"o"]),
    ("医疗", list("医疗".encode())),
    ("2019年", [B, *b"2019", D, *"年".encode()]),
    ("Ångström", [B, *"Ångström".encode()]),
])
def test_patterns_insert_word_starts_and_digit_ends(entity, want):
    forms = entity_forms([entity], "as_written", TokenTable.from_bytes([bytes([b]) for b in range(256)]), None, False)
    sym, off = patterns(forms.counted)
    assert sym.tolist() == want


def decode(program):
    """{string: node} with each node's string rebuilt from the child ranges."""
    node = program.node
    strings = {0: ()}
    for u in range(program.n_nodes):
        lo, hi = int(node[u, N_.CHILD_LO]), int(node[u, N_.CHILD_HI])
        assert lo == hi or u < lo, "children are deeper"
        syms_ = node[lo:hi, N_.SYM].tolist()
        assert syms_ == sorted(set(syms_)), "children sorted by symbol, distinct"
        for c in range(lo, hi):
            strings[c] = strings[u] + (int(node[c, N_.SYM]),)
    assert len(strings) == program.n_nodes
    depth = [len(strings[u]) for u in range(program.n_nodes)]
    assert depth == sorted(depth), "nodes numbered by depth"
    return strings


def check_program(entities, policy, table, mode="phrase"):
    forms = entity_forms(entities, policy, table, None, mode == "tokens")
    program = compile_program(forms, table, phrase=mode == "phrase")
    sym, off = patterns(forms.counted)
    pats = [(int(e), tuple(sym[off[f]:off[f + 1]].tolist())) for f, e in enumerate(forms.counted.entity)]
    strings = decode(program)
    index = {s: u for u, s in strings.items()}
    prefixes = {p[:i] for _, p in pats for i in range(len(p) + 1)}
    assert set(index) == prefixes
    node, ents = program.node, program.ents

    def span(lo, hi):
        return sorted(ents[lo:hi].tolist())
    unit = {s: s < 256 or s >= 1024 for s in range(2048)}
    vocab = {t: tuple(table.units(t).tolist()) for t in range(table.vocab_size)}
    eligible = {t: u for t, u in vocab.items() if u and not set(u) <= WHITESPACE}
    for s, u in index.items():
        fail = next(s[i:] for i in range(1, len(s) + 1) if s[i:] in prefixes) if s else ()
        assert strings[int(node[u, N_.FAIL])] == fail
        assert span(node[u, N_.THROUGH_LO], node[u, N_.THROUGH_HI]) == sorted({e for e, p in pats if s and p[:len(s)] == s})
        assert span(node[u, N_.OUT_LO], node[u, N_.OUT_HI]) == sorted({e for e, p in pats if s[len(s) - len(p):] == p
                                                                        and len(p) <= len(s)})
        # closure(u): tokens spelling the units on a path from u (resting, not the root) to a resting node
        want = set()
        if s and unit[s[-1]] and mode == "phrase":
            for c, t_units in ((c, tuple(x for x in strings[c][len(s):] if unit[x])) for c in index.values()
                               if strings[c][:len(s)] == s and len(strings[c]) > len(s) and unit[strings[c][-1]]):
                want |= {(t, c) for t, v in eligible.items() if v == t_units}
            # a one-byte whitespace token where no other token continues u with that byte (" June" " " "1")
            continued = {vocab[t][0] for t, _ in want}
            for t, v in vocab.items():
                if len(v) == 1 and v[0] in WHITESPACE and v[0] not in continued:
                    want |= {(t, index[s + path]) for path in ((v[0],), (D, v[0])) if s + path in index}
        lo, hi = int(node[u, N_.CLO_LO]), int(node[u, N_.CLO_HI])
        got = [(int(program.slot[k, S_.TOKEN]), int(c)) for k, c in program.closure[lo:hi, [C.SLOT, C.CHILD]]]
        assert set(got) == want and len(got) == len(want)
        assert [k for k, _ in program.closure[lo:hi]] == sorted(k for k, _ in program.closure[lo:hi])
    tokens = program.slot[:, S_.TOKEN].tolist()
    assert tokens == sorted(set(tokens))
    pushed = forms.pushed
    for pc in range(N_PUSH_CONTEXTS):
        want = {}
        for f, e in enumerate(pushed.entity.tolist()):
            if not pushed.pcs[f] >> pc & 1:
                continue
            units = tuple(pushed.units[pushed.off[f]:pushed.off[f + 1]].tolist())
            if mode == "phrase":  # the longest token(s) the form starts with; the shortest for a split wide first character
                lengths = [len(v) for v in eligible.values() if units[:len(v)] == v]
                n = max(lengths, default=0)
                if 0xE0 <= units[0] < 256 and n < (4 if units[0] >= 0xF0 else 3):  # a wide character written split
                    n = min(lengths)
                starting = [t for t, v in eligible.items() if len(v) == n and units[:len(v)] == v]
            else:
                starting = [t for seq in forms.canonical[e] for t in seq]
            for t in starting:
                want.setdefault(t, set()).add(e)
        got = {t: set(span(program.slot[k, S_.FIRST_LO0 + 2 * pc], program.slot[k, S_.FIRST_HI0 + 2 * pc]))
               for k, t in enumerate(tokens)}
        assert {t: v for t, v in got.items() if v} == want
    return program


def random_entities(rng, alphabet: list[str], n: int) -> list[str]:
    pool, out = [], []
    for _ in range(n):
        if pool and rng.random() < 0.4:
            base = rng.choice(pool)
            cut = rng.randint(1, len(base))
            text = rng.choice([base, base[:cut], base[-cut:]]).strip() or base
        else:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))).strip() or "a"
        pool.append(text)
        out.append(text)
    return out


def byte_vocabulary(rng, alphabet: list[str], extra: int) -> TokenTable:
    """Every single byte, plus ``extra`` random multi-character pieces (some with a leading space)."""
    pieces = [bytes([b]) for b in range(256)]
    for _ in range(extra):
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 4)))
        pieces.append(piece.encode())
    return TokenTable.from_bytes(list(dict.fromkeys(pieces)))


@pytest.mark.parametrize("policy", ["text", "as_written"])
def test_text_program_matches_the_oracle(seed, policy):
    rng = random.Random(seed)
    alphabet = ["a", "b", "A", "B", "1", "2", " ", "-", ".", "医", "疗"]
    table = byte_vocabulary(rng, alphabet, 60)
    check_program(random_entities(rng, alphabet, rng.randint(1, 12)), policy, table)


def test_tokens_mode_program_matches_the_oracle(seed):
    rng = random.Random(seed)
    entities = [[tuple(rng.randrange(9) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
                for _ in range(rng.randint(1, 8))]
    check_program(entities, "as_written", opaque_table(9), mode="tokens")


def test_opaque_program_matches_the_oracle(seed):
    """Token-id entities without a tokenizer: the token-level automaton (one symbol per token)."""
    rng = random.Random(seed)
    entities = [[tuple(rng.randrange(6) for _ in range(rng.choice([1, 2, 3, 5]))) for _ in range(rng.randint(1, 3))]
                for _ in range(rng.randint(1, 10))]
    check_program(entities, "as_written", opaque_table(6))


def test_an_entity_no_token_starts_compiles_without_starts():
    """(A legacy spaced form over single-byte tokens: the lone space is never a start.)  It can still
    be said and continued once its text begins."""
    table = TokenTable.from_bytes([b"a", b"b", b" "])
    program = check_program(["ab", " ab"], "as_written", table)
    assert np.all(opaque_table(3).units(2) == [1026]) and program.n_entities == 2


native = pytest.mark.skipif(getattr(extension()[0], "vocab_trie", None) is None,
                            reason="focuskern._C (with build_automaton and vocab_trie) is not built")


def assert_same_automaton(forms, table, phrase):
    """The C++ path of build_automaton gives the numpy version's arrays, bit for bit."""
    sym, off = patterns(forms.counted)
    args = (sym, off, forms.counted.entity, forms.n_entities, table, phrase)
    got, want = build_automaton(*args, native=True), build_automaton(*args, native=False)
    for name, a, b in zip(Automaton._fields, got, want):
        assert np.array_equal(a, b), name


@native
@pytest.mark.parametrize("policy", ["text", "as_written"])
@pytest.mark.parametrize("phrase", [True, False])
def test_native_automaton_equals_numpy(seed, policy, phrase):
    rng = random.Random(seed)
    alphabet = ["a", "b", "A", "B", "1", "2", " ", "-", ".", "(", "医", "疗", "の", "は", "É"]
    table = byte_vocabulary(rng, alphabet, rng.randint(0, 300))
    entities = random_entities(rng, alphabet, rng.choice([1, 7, 300]))
    assert_same_automaton(entity_forms(entities, policy, table, None, False), table, phrase)


@native
def test_native_automaton_equals_numpy_on_token_ids(seed):
    """Token-id entities, opaque symbols (no tokenizer) and bytes mixed with string entities."""
    rng = random.Random(seed)
    ids = [[tuple(rng.randrange(7) for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 3))]
           for _ in range(rng.randint(1, 40))]
    assert_same_automaton(entity_forms(ids, "as_written", opaque_table(7), None, False), opaque_table(7), True)
    table = byte_vocabulary(rng, ["a", "b", " ", "3"], 20)
    mixed = ids + random_entities(rng, ["a", "b", " ", "3", "年"], 30)
    assert_same_automaton(entity_forms(mixed, "text", table, None, False), table, True)


@native
def test_native_vocabulary_trie_is_built_once_per_table(seed):
    """The C++ compiler's vocabulary trie is made by the first compile of a table and kept: later
    specs on the table reuse it and still give numpy's arrays."""
    rng = random.Random(seed)
    alphabet = ["a", "b", "1", " ", "-", "医", "É"]
    table = byte_vocabulary(rng, alphabet, 200)
    assert_same_automaton(entity_forms(random_entities(rng, alphabet, 5), "text", table, None, False), table, True)
    handle = table.native_vocab(extension()[0])
    for count in (1, 40):
        assert_same_automaton(entity_forms(random_entities(rng, alphabet, count), "text", table, None, False), table, True)
        assert table.native_vocab(extension()[0]) is handle


def test_text_forms_of_many_entities_follow_the_rules(seed):
    """The text policy's forms of a batch (one loop, first characters looked up once) are those of the
    rules read per entity (tests/reference.py): counted as written and first letter flipped, pushed per
    push context; cased, uncased, CJK/Japanese/Thai, digits, 'ß' (upper case is two characters), 'ǆ'."""
    rng = random.Random(seed)
    heads = ["paris", "Paris", "ß", "ǆemal", "医疗", "ひらがな", "ไทย", "2 million", "éclair", "İstanbul", "(x)", "Σ"]
    entities = [rng.choice(heads) + rng.choice(["", " tail", "年", "9"]) + " " * rng.randint(0, 1) for _ in range(60)]
    counted, counted_at, pushed, pushed_at, pcs = text_forms_of(entities)
    for i, e in enumerate(entities):
        assert [f for f, at in zip(counted, counted_at) if at == i] == counted_forms(e)
        mine = [(f, m) for f, at, m in zip(pushed, pushed_at, pcs) if at == i]
        assert {pc: f for f, m in mine for pc in range(N_PUSH_CONTEXTS) if m >> pc & 1} == dict(enumerate(pushed_forms(e)))
        assert len({f for f, _ in mine}) == len(mine) and sum(m for _, m in mine) == 0b1111

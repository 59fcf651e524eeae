"""FocusState vs a brute-force reference that rescans each row's whole generated sequence."""
import math
import random

import pytest
import torch

import focuskern as fk
from focuskern.ops.dispatch import available_backends
from conftest import DEVICE, TOLERANCES
from cases import next_token, random_spec
from reference import assert_close_to_f64, brute_boosts, decay_f64

BACKENDS = available_backends("focus_state", DEVICE)


def check_rows(state, specs, gens):
    got = state.boosts()
    for r, (spec, gen) in enumerate(zip(specs, gens)):
        want = {} if spec is None else brute_boosts(spec, gen)
        assert got[r] == pytest.approx(want, abs=1e-5), f"row {r}: generated {gen}"
        assert int(state.step[r]) == (len(gen) if spec is not None else int(state.step[r]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_incremental_automaton_matches_rescan(backend):
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    alphabet, B = 9, 6
    specs = [random_spec(rng, alphabet) if r != 2 else None for r in range(B)]
    state = fk.FocusState(specs, vocab_size=alphabet + 3, device=DEVICE, backend=backend)
    gens = [[] for _ in range(B)]
    check_rows(state, specs, gens)
    for _ in range(25):
        toks = [next_token(rng, s, g, alphabet) for s, g in zip(specs, gens)]
        for g, t, s in zip(gens, toks, specs):
            if s is not None:
                g.append(t)
        state.apply_(torch.zeros(B, alphabet + 3, device=DEVICE), torch.tensor(toks, device=DEVICE))
        check_rows(state, specs, gens)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_operations_mid_stream(backend):
    """Append / replace / move / swap / resize while generating; every row keeps its own history."""
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    alphabet = 7
    pool = [random_spec(rng, alphabet) for _ in range(4)]  # rows share specs, so programs are shared
    specs = [rng.choice(pool) for _ in range(3)]
    gens = [[] for _ in specs]
    state = fk.FocusState(specs, vocab_size=alphabet + 3, device=DEVICE, backend=backend)
    for it in range(40):
        op = rng.choice(["append", "set", "move", "swap", "resize", "none", "none"])
        B = len(specs)
        if op == "append":
            specs.append(rng.choice(pool + [None]))
            gens.append([])
            assert state.append(specs[-1]) == B
        elif op == "set" and B:
            r = rng.randrange(B)
            specs[r], gens[r] = rng.choice(pool + [None, random_spec(rng, alphabet)]), []
            state.set_row(r, specs[r])
        elif op == "move" and B > 1:
            a, b = rng.sample(range(B), 2)
            specs[b], gens[b], specs[a], gens[a] = specs[a], gens[a], None, []
            state.move(a, b)
        elif op == "swap" and B > 1:
            a, b = rng.sample(range(B), 2)
            specs[a], specs[b], gens[a], gens[b] = specs[b], specs[a], gens[b], gens[a]
            state.swap(a, b)
        elif op == "resize":
            n = rng.randint(0, B + 2)
            specs = (specs + [None] * n)[:n]
            gens = (gens + [[] for _ in range(n)])[:n]
            state.resize(n)
        assert len(state) == len(specs)
        for r, s in enumerate(specs):
            assert state.spec(r) is None if s is None else state.spec(r).key() == s.key()
        toks = [next_token(rng, s, g, alphabet) for s, g in zip(specs, gens)]
        for g, t, s in zip(gens, toks, specs):
            if s is not None:
                g.append(t)
        state.apply_(torch.zeros(len(specs), alphabet + 3, device=DEVICE),
                     torch.tensor(toks, dtype=torch.int64, device=DEVICE))
        check_rows(state, specs, gens)


def test_reorder_follows_parents():
    spec = fk.FocusSpec.fixed([[(1, 2, 3)]], bias=1.0)
    state = fk.FocusState([spec, spec], vocab_size=5, device=DEVICE)
    state.apply_(torch.zeros(2, 5, device=DEVICE), torch.tensor([1, 4], device=DEVICE))
    assert state.boosts()[0] == {2: 1.0} or state.boosts()[0].get(2) == 1.0
    state.reorder_(torch.tensor([1, 1], device=DEVICE))
    assert state.boosts() == [{1: 1.0}, {1: 1.0}]


def test_copy_rows_forks_state_rows_and_checks_its_arguments():
    """A row forked with copy_rows_ goes on like its source (a speculative draft's lane); the source and
    rows not listed are unchanged; every argument is checked by name."""
    spec = fk.FocusSpec.fixed([[(1, 2, 3)], [(4,)]], bias=1.0)
    state = fk.FocusState([spec, spec, spec], vocab_size=6, device=DEVICE)
    state.apply_(torch.zeros(3, 6, device=DEVICE), torch.tensor([1, 4, 0], device=DEVICE))
    before = state.boosts()
    assert before[2] != before[0]
    state.copy_rows_(torch.tensor([0, 1], device=DEVICE)[::2], torch.tensor([2, 0], device=DEVICE)[::2])
    assert state.boosts() == [before[0], before[1], before[0]] and state.step.tolist() == [1, 1, 1]
    state.apply_(torch.zeros(3, 6, device=DEVICE), torch.tensor([2, 5, 2], device=DEVICE))
    after = state.boosts()
    assert after[2] == after[0] != after[1] and 3 in after[0]  # both go on with "1 2": 3 continues it
    with pytest.raises(TypeError, match="src must be int32 or int64"):
        state.copy_rows_(torch.tensor([0.0], device=DEVICE), torch.tensor([1], device=DEVICE))
    with pytest.raises(ValueError, match=r"dst must have shape \[1\]"):
        state.copy_rows_(torch.tensor([0], device=DEVICE), torch.tensor([1, 2], device=DEVICE))


def test_many_entities_use_several_bitset_words():
    entities = [[(i,)] for i in range(70)]  # 70 entities -> 3 words of 32 bits
    state = fk.FocusState([fk.FocusSpec.fixed(entities, bias=1.0)], vocab_size=80, device=DEVICE)
    state.append(fk.FocusSpec.fixed([[(75, 76)]], bias=2.0))
    for t in (5, 40, 69):
        state.apply_(torch.zeros(2, 80, device=DEVICE), torch.tensor([t, 75], device=DEVICE))
    assert set(state.boosts()[0]) == set(range(70)) - {5, 40, 69}
    assert state.boosts()[1] == {75: 2.0, 76: 2.0}  # "75" is an open partial match; starts stay boosted


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(TOLERANCES))
def test_logits_parity_with_blend_and_decay(backend, dtype):
    """The full output (1 - s*alpha) x + s*val against float64 math, every decay kind, strided rows."""
    rng = random.Random(random.randrange(2**31))
    V, B = 32007, 5
    decays = [fk.Decay.constant(), fk.Decay.linear(8, 0.2), fk.Decay.exponential(3), fk.Decay.cosine(6, 0.1),
              fk.Decay.cutoff(2), fk.Decay.ramp(4)]
    specs = [random_spec(rng, 50, alpha=rng.choice([0.0, 0.0, 0.4]), decay=rng.choice(decays)) for _ in range(B - 1)]
    specs.insert(1, None)
    state = fk.FocusState(specs, vocab_size=V, device=DEVICE, backend=backend)
    gens = [[] for _ in specs]
    for _ in range(3):
        toks = [next_token(rng, s, g, 50) for s, g in zip(specs, gens)]
        for g, t, s in zip(gens, toks, specs):
            if s is not None:
                g.append(t)
        parent = torch.randn(B, V + 5, device=DEVICE).to(dtype) * 3
        logits = parent[:, :V]
        x = logits.cpu().double()
        untouched = parent[:, V:].clone()
        state.apply_(logits, torch.tensor(toks, device=DEVICE))
        expected, magnitude = x.clone(), x.abs()
        for r, (spec, gen) in enumerate(zip(specs, gens)):
            if spec is None:
                continue
            s = decay_f64(*spec.decay.as_triple(), len(gen))
            expected[r] *= 1 - s * spec.alpha
            magnitude[r] *= 1 - s * spec.alpha
            for t, v in brute_boosts(spec, gen).items():
                expected[r, t] += v
                magnitude[r, t] += abs(v)
        assert_close_to_f64(logits, expected, magnitude, *TOLERANCES[dtype])
        assert torch.equal(logits[1].cpu(), x[1].to(dtype)), "an untouched row changed"
        assert torch.equal(parent[:, V:], untouched)


def test_alpha_zero_leaves_unlisted_logits_bitwise():
    spec = fk.FocusSpec.fixed([[(3, 4)], [(9,)]], bias=2.0)
    state = fk.FocusState([spec], vocab_size=1000, device=DEVICE)
    logits = torch.randn(1, 1000, device=DEVICE, dtype=torch.bfloat16)
    before = logits.clone()
    state.apply_(logits)
    changed = (logits != before).nonzero()[:, 1].tolist()
    assert changed == [3, 9]


@pytest.mark.parametrize("bad,error,name", [
    (dict(entities=[]), ValueError, "entities"),
    (dict(entities="abc"), TypeError, "entities"),
    (dict(entities=[""]), ValueError, r"entities\[0\]"),
    (dict(entities=[[()]]), TypeError, r"entities\[0\]"),
    (dict(entities=[[(1, -2)]]), ValueError, r"entities\[0\]"),
    (dict(entities=[[(1,)]], bias=math.nan), ValueError, "bias"),
    (dict(entities=[[(1,)]], bias=math.inf), ValueError, "bias"),
    (dict(entities=[[(1,)]], continuation_bias=math.nan), ValueError, "continuation_bias"),
    (dict(entities=[[(1,)]], alpha=1.5), ValueError, "alpha"),
    (dict(entities=[[(1,)]], mode="words"), ValueError, "mode"),
    (dict(entities=[[(1,)]], satisfy="twice"), ValueError, "satisfy"),
    (dict(entities=[[(1,)]], decay=0.5), TypeError, "decay"),
    (dict(entities=[[(1,)]], variants="odd"), ValueError, "variants"),
    (dict(entities=[[(1,)]], max_new_tokens=0), ValueError, "max_new_tokens"),
    (dict(entities=[[(1,)]], max_new_tokens=2.5), ValueError, "max_new_tokens"),
    (dict(entities=[[(1,)]], slack=0.0), ValueError, "slack"),
    (dict(entities=[[(1,)]], force=-1.0), ValueError, "force"),
    (dict(entities=[[(1,)]], eos_damp=math.inf), ValueError, "eos_damp"),
    (dict(entities=[[(1,)]], eos_token_id=-1), ValueError, "eos_token_id"),
])
def test_bad_spec_is_named(bad, error, name):
    with pytest.raises(error, match=name):
        fk.FocusSpec(**bad)


@pytest.mark.parametrize("make,error,name", [
    (lambda: fk.Decay(kind=9), ValueError, "kind"),
    (lambda: fk.Decay.linear(0), ValueError, "horizon"),
    (lambda: fk.Decay.cosine(-3), ValueError, "horizon"),
    (lambda: fk.Decay.ramp(5, floor=1.5), ValueError, "floor"),
])
def test_bad_decay_is_named(make, error, name):
    with pytest.raises(error, match=name):
        make()


def test_bad_state_input_is_named_and_logits_untouched():
    with pytest.raises(ValueError, match="vocab_size"):
        fk.FocusState([fk.FocusSpec([[(12,)]])], vocab_size=10, device=DEVICE)
    with pytest.raises(ValueError, match="tokenizer"):
        fk.FocusState([fk.FocusSpec(["word"])], vocab_size=10, device=DEVICE)

    class EmptyTokenizer:
        def encode(self, text, add_special_tokens=False):
            return []

        def decode(self, ids):
            return ""
    assert fk.FocusState([fk.FocusSpec(["\u200b"])], vocab_size=10, device=DEVICE,
                         tokenizer=EmptyTokenizer()).boosts() == [{}]  # nothing spells it: never pushed
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        fk.FocusState([fk.FocusSpec(["\u200b"], mode="tokens")], vocab_size=10, device=DEVICE,
                      tokenizer=EmptyTokenizer())
    state = fk.FocusState([fk.FocusSpec([[(1,)]])], vocab_size=10, device=DEVICE)
    logits = torch.randn(1, 10, device=DEVICE)
    before = logits.clone()
    for bad_logits, bad_last, name in [
        (logits.double(), None, "logits"), (logits[:, :5], None, "logits"), (torch.randn(2, 10, device=DEVICE), None, "logits"),
        (logits, torch.tensor([1.0], device=DEVICE), "last_tokens"), (logits, torch.tensor([1, 2], device=DEVICE), "last_tokens"),
    ]:
        with pytest.raises((ValueError, TypeError), match=name):
            state.apply_(bad_logits, bad_last)
    assert torch.equal(logits, before)
    with pytest.raises(TypeError, match="FocusSpec"):
        state.append("not a spec")


@pytest.mark.parametrize("backend", BACKENDS)
def test_subsets_and_held_rows_keep_their_own_history(backend):
    """A serving engine's steps: each step serves some rows (``rows``, any order), some of which
    generated nothing (``hold``: still prefilling); every row must still match the rescan of the tokens
    it actually generated."""
    rng = random.Random(random.randrange(2**31))
    alphabet, B = 8, 7
    specs = [random_spec(rng, alphabet) if r != 3 else None for r in range(B)]
    state = fk.FocusState(specs, vocab_size=alphabet + 3, device=DEVICE, backend=backend)
    gens = [[] for _ in range(B)]
    for _ in range(30):
        served = rng.sample(range(B), rng.randint(1, B))
        held = [rng.random() < 0.3 for _ in served]
        toks = [next_token(rng, specs[r], gens[r], alphabet) for r in served]
        for r, h, t in zip(served, held, toks):
            if specs[r] is not None and not h:
                gens[r].append(t)
        logits = torch.zeros(len(served), alphabet + 3, device=DEVICE)
        state.apply_(logits, torch.tensor(toks, device=DEVICE), rows=torch.tensor(served, device=DEVICE),
                     hold=torch.tensor(held, device=DEVICE))
        boosts = state.boosts()
        for i, r in enumerate(served):  # what the call added to a row is what the row boosts now
            got = {t: v for t, v in enumerate(logits[i].tolist()) if v}
            assert got == pytest.approx(boosts[r])
        check_rows(state, specs, gens)


@pytest.mark.parametrize("backend", BACKENDS)
def test_advance_row_replays_a_history(backend):
    rng = random.Random(random.randrange(2**31))
    alphabet = 8
    spec = random_spec(rng, alphabet)
    history = []
    for _ in range(12):
        history.append(next_token(rng, spec, history, alphabet))
    state = fk.FocusState([spec, None], vocab_size=alphabet + 3, device=DEVICE, backend=backend)
    state.advance_row(0, history)
    state.advance_row(1, history)  # an untouched row ignores it
    check_rows(state, [spec, None], [history, []])
    state.apply_(torch.zeros(2, alphabet + 3, device=DEVICE), torch.tensor([1, 1], device=DEVICE))
    check_rows(state, [spec, None], [history + [1], []])


def test_bad_rows_and_hold_are_named():
    state = fk.FocusState([fk.FocusSpec([[(1,)]])] * 3, vocab_size=10, device=DEVICE)
    logits, last = torch.zeros(2, 10, device=DEVICE), torch.tensor([1, 2], device=DEVICE)
    rows = torch.tensor([0, 2], device=DEVICE)
    for kwargs, name in [
        (dict(rows=rows.float()), "rows"), (dict(rows=torch.tensor([0, 1, 2], device=DEVICE)), "logits"),
        (dict(rows=rows, hold=torch.tensor([1, 0], device=DEVICE)), "hold"),
        (dict(rows=rows, hold=torch.tensor([True], device=DEVICE)), "hold"),
    ]:
        with pytest.raises((ValueError, TypeError), match=name):
            state.apply_(logits, last, **kwargs)
    with pytest.raises(ValueError, match="hold needs last_tokens"):
        state.apply_(logits, rows=rows, hold=torch.tensor([True, False], device=DEVICE))


def test_whitespace_only_piece_is_never_a_start(smollm2_dir):
    """SmolLM2 writes " 3 billion" as [Ġ, 3, Ġbillion]: the lone Ġ is never pushed as a start; once a
    space is written the entity is pushed through its digits (a start: the space is not part of it)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    blank, three, billion = tok.encode(" 3 billion", add_special_tokens=False)
    assert tok.decode([blank]).strip() == ""
    spec = fk.FocusSpec(["3 billion"], bias=2.0, continuation_bias=5.0, decay=fk.Decay.constant())
    state = fk.FocusState([spec], vocab_size=len(tok), device=DEVICE, tokenizer=tok)
    assert blank not in state.boosts()[0]
    state.apply_(torch.zeros(1, len(tok), device=DEVICE), torch.tensor([blank], device=DEVICE))
    assert state.boosts()[0] == {three: 2.0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_random_entity_set_matches_rescan(backend):
    """Hundreds of entities with shared prefixes (many bitset words, long entity lists)."""
    rng = random.Random(random.randrange(2**31))
    alphabet = 40
    entities = [[[rng.randrange(alphabet) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 2))]
                for _ in range(300)]
    spec = fk.FocusSpec(entities, bias=2.0, continuation_bias=3.0, boost_starts_in_match=rng.random() < 0.5)
    state = fk.FocusState([spec, None], vocab_size=alphabet, device=DEVICE, backend=backend)
    gen = []
    for _ in range(30):
        gen.append(next_token(rng, spec, gen, alphabet - 3))
        state.apply_(torch.zeros(2, alphabet, device=DEVICE), torch.tensor([gen[-1], 0], device=DEVICE))
    check_rows(state, [spec, None], [gen, []])


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_tokens_rows_and_hold_equal_their_contiguous_copies(backend):
    rng = random.Random(random.randrange(2**31))
    alphabet, B = 9, 4
    specs = [random_spec(rng, alphabet) for _ in range(B)]
    states = [fk.FocusState(specs, vocab_size=alphabet + 3, device=DEVICE, backend=backend) for _ in range(2)]
    for _ in range(6):
        pairs = torch.randint(0, alphabet + 3, (B, 2), dtype=torch.int32, device=DEVICE)  # tokens = column 0
        rows = torch.randperm(B, device=DEVICE)[:3].repeat_interleave(2)[::2]
        hold = (torch.rand(3, 2, device=DEVICE) < 0.3)[:, 0]
        index = torch.tensor([[0, 9], [0, 9], [2, 9], [3, 9]], device=DEVICE)[:, 0]
        outs = []
        for state, contiguous in zip(states, (False, True)):
            prep = (lambda t: t.contiguous()) if contiguous else (lambda t: t)
            logits = torch.zeros(3, alphabet + 3, device=DEVICE)
            state.apply_(logits, prep(pairs[:3, 0]), rows=prep(rows), hold=prep(hold))
            state.apply_(torch.zeros(B, alphabet + 3, device=DEVICE), prep(pairs[:, 0]))
            state.reorder_(prep(index))
            outs.append((logits, state.boosts(), state._rows.node.clone(), state.step.clone()))
        assert torch.equal(outs[0][0], outs[1][0]) and outs[0][1] == outs[1][1]
        assert torch.equal(outs[0][2], outs[1][2]) and torch.equal(outs[0][3], outs[1][3])


def test_request_churn_compacts_with_and_without_live_programs():
    """Fresh specs set and cleared row by row (a server's request churn): compaction must run while no
    program is live and while some are, keep every live row right, and keep the tables bounded."""
    rng = random.Random(random.randrange(2**31))
    state = fk.FocusState([None] * 4, vocab_size=500, device=DEVICE)
    sizes = []
    for i in range(1200):
        entities = [[[rng.randrange(500) for _ in range(3)]] for _ in range(3)]
        state.set_row(i % 4, fk.FocusSpec(entities))
        if i < 600 or i % 3:  # first every row is cleared at once (no live program), then two in three
            state.set_row(i % 4, None)
        sizes.append(state.programs.tables.node.shape[0])
    for phase in (sizes[:600], sizes[600:]):
        assert max(phase) <= 2 * 4096 + 4 * 10  # dead nodes <= max(live, MIN_DEAD_NODES) + one spec
        assert min(phase[100:]) < max(phase[100:])  # it did compact
    specs = [state.spec(r) for r in range(4)]
    check_rows(state, specs, [[] for _ in range(4)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_budget_policy_urgency_and_end_of_text_by_hand(backend):
    """u = clamp(1 - max(budget - step, 1) / (unsaid * slack), 0, 1) on every boosted token, end of
    text damped while an entity is unsaid; nothing else changes (bitwise, fp16)."""
    spec = fk.FocusSpec([[(1, 2)], [(3,)]], bias=2.0, continuation_bias=4.0, decay=fk.Decay.constant(),
                        max_new_tokens=10, slack=2.0, force=6.0, eos_damp=5.0, eos_token_id=7)
    state = fk.FocusState([spec, None], vocab_size=9, device=DEVICE, backend=backend)
    assert state.boosts()[0] == {1: 2.0, 3: 2.0, 7: -5.0}  # 10 tokens left for 2 entities: no urgency
    history = [3] + [0] * 8  # entity 1 said at once, then nothing until step 9
    for t in history:
        state.apply_(torch.zeros(2, 9, device=DEVICE), torch.tensor([t, t], device=DEVICE))
    assert state.boosts() == [{1: 2.0 + 0.5 * 6.0, 7: -5.0}, {}]  # 1 token left, 1 unsaid: u = 1/2
    logits = torch.randn(2, 9, device=DEVICE).half()
    before = logits.clone()
    state.apply_(logits, torch.tensor([1, 1], device=DEVICE))  # step 10: inside "1 2", u = 1/2 still
    changed = (logits != before).nonzero().tolist()
    assert changed == [[0, 2], [0, 7]]
    assert logits[0, 2].item() == pytest.approx(before[0, 2].item() + 4.0 + 3.0, abs=1e-2)
    assert logits[0, 7].item() == pytest.approx(before[0, 7].item() - 5.0, abs=1e-2)
    state.apply_(torch.zeros(2, 9, device=DEVICE), torch.tensor([2, 2], device=DEVICE))
    assert state.boosts()[0] == {}  # every entity said: no push, end of text free


def test_budget_policy_needs_a_budget_and_satisfy_once():
    entities = [[(1,)], [(2, 3)]]
    for spec in (fk.FocusSpec(entities, eos_token_id=7, decay=fk.Decay.constant()),
                 fk.FocusSpec(entities, eos_token_id=7, decay=fk.Decay.constant(), satisfy="never",
                              max_new_tokens=1)):
        state = fk.FocusState([spec], vocab_size=9, device=DEVICE)
        for _ in range(3):
            assert state.boosts()[0] == {1: spec.bias, 2: spec.bias}
            state.apply_(torch.zeros(1, 9, device=DEVICE), torch.tensor([0], device=DEVICE))


def test_end_of_text_defaults_to_the_tokenizer_and_is_checked():
    class Tok:
        eos_token_id = 5

        def encode(self, text, add_special_tokens=False):
            return [ord(c) % 5 for c in text]

        def decode(self, ids):
            return "".join(chr(ord("a") + i) for i in ids)

    spec = fk.FocusSpec([[(1,)]], max_new_tokens=50, decay=fk.Decay.constant())
    assert fk.FocusState([spec], vocab_size=9, device=DEVICE, tokenizer=Tok()).boosts()[0] == {1: 4.0, 5: -10.0}
    with pytest.raises(ValueError, match="eos_token_id"):
        fk.FocusState([fk.FocusSpec([[(1,)]], max_new_tokens=5, eos_token_id=9)], vocab_size=9, device=DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_banned_continuation_gives_the_entity_up(backend):
    """A continuation whose logit is -inf (no_repeat_ngram_size bans a bigram of the prompt) can never
    be said: its entity is given up (counted as said), and starts are pushed again at once."""
    spec = fk.FocusSpec([[(1, 2)], [(3,)]], bias=2.0, continuation_bias=4.0, decay=fk.Decay.constant(),
                        max_new_tokens=100, eos_token_id=7)
    state = fk.FocusState([spec], vocab_size=9, device=DEVICE, backend=backend)
    state.apply_(torch.zeros(1, 9, device=DEVICE))
    logits = torch.zeros(1, 9, device=DEVICE)
    logits[0, 2] = -math.inf
    state.apply_(logits, torch.tensor([1], device=DEVICE))  # inside "1 2", and 2 is banned
    assert logits[0].tolist() == [0, 0, -math.inf, 2.0, 0, 0, 0, -10.0, 0]
    assert state.boosts()[0] == {3: 2.0, 7: -10.0}  # entity 0 is not pushed again
    state.apply_(torch.zeros(1, 9, device=DEVICE), torch.tensor([3], device=DEVICE))
    assert state.boosts()[0] == {}  # entity 1 said, entity 0 given up: end of text free


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_banned_continuations_match_the_reference(backend):
    """Random specs and logits with -inf entries: every backend gives up what the torch backend does."""
    rng = random.Random(random.randrange(2**31))
    alphabet, B = 8, 5
    specs = [random_spec(rng, alphabet) for _ in range(B)]
    states = [fk.FocusState(specs, alphabet + 3, DEVICE, backend=b) for b in ("torch", backend)]
    gens = [[] for _ in range(B)]
    last = None
    for _ in range(20):
        logits = torch.randn(B, alphabet + 3, device=DEVICE)
        logits[torch.rand(B, alphabet + 3, device=DEVICE) < 0.3] = -math.inf
        outs = [logits.clone() for _ in states]
        for state, out in zip(states, outs):
            state.apply_(out, last)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-5)
        assert torch.equal(states[1]._rows.sat, states[0]._rows.sat)
        toks = [next_token(rng, s, g, alphabet) for s, g in zip(specs, gens)]
        for g, t in zip(gens, toks):
            g.append(t)
        last = torch.tensor(toks, device=DEVICE)

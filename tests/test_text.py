"""Text tracking (docs/text-tracking.md) against oracles read from the rules: token bytes decode like the
tokenizer; the entities a row marks said equal a search of the decoded text; what a row pushes equals
the rules' reference -- on the embedded byte-level BPE tokenizer and a SentencePiece-style vocabulary
with byte fallback (built with ``tokenizers`` here), for real tokenizations, random segmentations of
the same text into vocabulary tokens, and random token streams, on every backend."""
import random

import pytest
import torch

import focuskern as fk
from focuskern.ops.dispatch import available_backends
from focuskern.text import WHITESPACE, token_table
from conftest import DEVICE
from reference import said_in_text, text_boosts

BACKENDS = available_backends("focus_state", DEVICE)

ENTITIES = ["Paris", "Ada Lovelace", "医疗", "人工智能", "March 3", "2 million", "48-megapixel camera", "東京",
            "healthcare", "CI/CD pipeline", "art", "artificial intelligence"]
TEXTS = [
    "Paris is lovely. In (Paris) and \"Paris\" we met.\nParis! comparisons of Parisian art",
    "我们讨论医疗问题。人工智能和大模型的医疗应用",
    "東京に行きました。東京タワーは高い",
    "On March 30 and March 3, 2 million people bought a 48-megapixel camera; 12 million did not.",
    "Healthcare matters: ada Lovelace met Ada Lovelace about healthcare.",
    "Unhealthcare, CI/CD pipelines and artificial intelligence (art) 2 millionth",
]


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def sentencepiece():
    """A Unigram vocabulary with ▁ word pieces, single characters and <0xNN> byte fallback."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = " ".join(TEXTS).replace("\n", " ").split()
    pieces = ["<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += sorted({"\u2581" + w[:n] for w in words for n in (2, 4, len(w))} | {c for w in words for c in w[:3]}
                     | {"\u2581"} | set("aeiostnrl"))
    tk = Tokenizer(models.Unigram([(p, -len(p)) for p in pieces], unk_id=0, byte_fallback=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")


def tokenizer_of(request, name):
    return request.getfixturevalue(name)


def vocab_of(tok, whitespace: bool = False) -> dict[bytes, list[int]]:
    """bytes -> tokens: those not whitespace-only, or (``whitespace``) the one-byte whitespace ones."""
    table = token_table(tok, len(tok))
    vocab: dict[bytes, list[int]] = {}
    for t in range(table.vocab_size):
        units = table.units(t).tolist()
        if max(units) >= 256:  # a special token: one opaque symbol
            continue
        b = bytes(units)
        if (set(b) <= WHITESPACE and len(b) == 1) if whitespace else not set(b) <= WHITESPACE:
            vocab.setdefault(b, []).append(t)
    return vocab


def random_segmentation(rng, data: bytes, vocab) -> list[int]:
    """``data`` cut into random vocabulary tokens (single bytes always exist in these vocabularies,
    bytes with no token of their own are skipped)."""
    out, i = [], 0
    while i < len(data):
        options = [n for n in range(1, min(16, len(data) - i) + 1) if data[i:i + n] in vocab]
        if not options:
            i += 1
            continue
        n = rng.choice(options)
        out.append(rng.choice(vocab[data[i:i + n]]))
        i += n
    return out


def test_token_bytes_decode_like_the_tokenizer(smol, sentencepiece, seed):
    rng = random.Random(seed)
    table = token_table(smol, len(smol))
    ids = [rng.randrange(17, len(smol)) for _ in range(300)]
    data = b"".join(bytes(table.units(t).tolist()) for t in ids)
    assert data.decode(errors="replace") == smol.decode(ids, clean_up_tokenization_spaces=False)
    assert token_table(smol, len(smol)) is table  # cached per tokenizer
    sp = token_table(sentencepiece, len(sentencepiece))
    for text in TEXTS:
        ids = sentencepiece.encode(text, add_special_tokens=False)
        data = b"".join(bytes(sp.units(t).tolist()) for t in ids)
        assert data.decode().lstrip(" ") == sentencepiece.decode(ids).lstrip(" ")
    assert bytes(sp.units(sentencepiece.convert_tokens_to_ids("<0xE5>")).tolist()) == b"\xe5"


def streams(rng, tok, vocab, texts=TEXTS):
    """(name, token ids): each text tokenized, and randomly segmented, and a random token stream."""
    for text in texts:
        yield "encoded", tok.encode(text, add_special_tokens=False)
        yield "segmented", random_segmentation(rng, text.encode(), vocab)
    yield "random", [rng.choice(rng.choice(list(vocab.values()))) for _ in range(60)]


@pytest.mark.parametrize("name", ["smol", "sentencepiece"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_said_and_pushed_follow_the_text(request, name, backend, seed):
    tok = tokenizer_of(request, name)
    rng = random.Random(seed)
    vocab, spaces = vocab_of(tok), vocab_of(tok, whitespace=True)
    table = token_table(tok, len(tok))
    spec = fk.FocusSpec(ENTITIES, bias=2.0, continuation_bias=5.0, decay=fk.Decay.constant(),
                        boost_starts_in_match=False)
    # Every text on torch and C++; a random half of them (the seed picks it) under the Triton
    # interpreter, which takes ~0.3 s a step (the compiled backends also replay torch's state bit for
    # bit on random streams with bans: test_text_give_ups_match_the_reference).
    texts = rng.sample(TEXTS, len(TEXTS) // 2) if backend == "triton" and DEVICE.type == "cpu" else TEXTS
    for kind, ids in streams(rng, tok, vocab, texts):
        state = fk.FocusState([spec], vocab_size=len(tok), device=DEVICE, tokenizer=tok, backend=backend)
        data = b""
        for i, t in enumerate(ids):
            state.apply_(torch.zeros(1, len(tok), device=DEVICE), torch.tensor([t], device=DEVICE))
            data += bytes(table.units(t).tolist())
            said = said_in_text(ENTITIES, data)
            where = f"{kind} stream after {i + 1} tokens: {data.decode(errors='replace')!r}"
            assert set(state.said(0)) == said, where
            if kind != "random" and (i % 4 == 0 or i == len(ids) - 1):
                assert state.boosts()[0] == pytest.approx(text_boosts(ENTITIES, data, said, vocab, spaces, 2.0, 5.0)), where


@pytest.mark.parametrize("backend", BACKENDS)
def test_entity_inside_a_longer_token_and_overlapping_entities(smol, backend):
    """A match must not follow a letter or digit ("comparison", "smart", "12 million" say nothing);
    it may end inside a word or token (" Parisian" says "Paris", " artificial" says "art" as well)."""
    spec = fk.FocusSpec(["Paris", "art", "artificial intelligence", "2 million"])
    state = fk.FocusState([spec], vocab_size=len(smol), device=DEVICE, tokenizer=smol, backend=backend)

    def feed(text):
        for t in smol.encode(text, add_special_tokens=False):
            state.apply_(torch.zeros(1, len(smol), device=DEVICE), torch.tensor([t], device=DEVICE))
    feed("comparison smart 12 million")
    assert state.said(0) == []
    feed(" Parisian artificial intelligence")
    assert state.said(0) == [0, 1, 2]
    feed(" (2 million)")
    assert state.said(0) == [0, 1, 2, 3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_push_context_picks_the_form(smol, backend):
    """Start of the answer: "Paris"; after a word: " Paris"; after "(": "Paris"; CJK never spaced;
    a lower-case entity is capitalized only at a sentence start."""
    spec = fk.FocusSpec(["Paris", "医疗", "healthcare"], decay=fk.Decay.constant(), bias=1.0)
    state = fk.FocusState([spec], vocab_size=len(smol), device=DEVICE, tokenizer=smol, backend=backend)

    def top():
        return {smol.decode([t]) for t in state.boosts()[0]}
    assert "Paris" in top() and any(s.startswith("Health") for s in top())
    assert not any(s.startswith("health") or s.startswith(" ") for s in top())
    for text, spaced in [("We saw", True), (" (", False), ("x. ", False)]:
        for t in smol.encode(text, add_special_tokens=False):
            state.apply_(torch.zeros(1, len(smol), device=DEVICE), torch.tensor([t], device=DEVICE))
        forms = top()
        assert (" Paris" in forms) == spaced and ("Paris" in forms) != spaced
        assert not any(f.startswith(" ") and not f.strip().isascii() for f in forms)  # CJK never spaced
    assert any(f.startswith("Health") for f in forms) and not any(f.startswith("health") for f in forms)  # "x. "


@pytest.mark.parametrize("backend", BACKENDS)
def test_held_rows_and_ids_outside_the_vocabulary_are_not_fed(smol, backend):
    spec = fk.FocusSpec(["Paris"])
    state = fk.FocusState([spec, spec], vocab_size=len(smol), device=DEVICE, tokenizer=smol, backend=backend)
    pa = smol.encode(" Pa", add_special_tokens=False)[0]
    state.apply_(torch.zeros(2, len(smol), device=DEVICE), torch.tensor([pa, pa], device=DEVICE))
    before = (state._rows.node.clone(), state.step.clone())
    for bad in (len(smol), 2**31 + pa, -1, 2**40):
        state.apply_(torch.zeros(2, len(smol), device=DEVICE), torch.tensor([bad, pa], device=DEVICE),
                     hold=torch.tensor([False, True], device=DEVICE))
        assert torch.equal(state._rows.node, before[0]) and torch.equal(state.step, before[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_split_wide_first_character_starts_with_its_shortest_token(smol, backend):
    """"断桥" is usually written 'æĸ' 'Ń' …: it is pushed through the lone lead byte 'æ' (a tokenization
    the prompt never had), then continued by every tokenization of the rest; "Paris" keeps its longest,
    and so does "人工智能": the vocabulary holds the whole character 人 (a model writes it whole)."""
    spec = fk.FocusSpec(["断桥", "Paris", "人工智能"], bias=1.0, continuation_bias=2.0, decay=fk.Decay.constant())
    state = fk.FocusState([spec], vocab_size=len(smol), device=DEVICE, tokenizer=smol, backend=backend)
    lead = smol.convert_tokens_to_ids("æ")
    ren = "人工智能".encode()
    whole = max((b for b in vocab_of(smol) if ren.startswith(b)), key=len)
    assert len(whole) >= 3 and vocab_of(smol)[whole]
    assert state.boosts()[0] == {lead: 1.0, smol.convert_tokens_to_ids("Paris"): 1.0,
                                 **{t: 1.0 for t in vocab_of(smol)[whole]}}
    state.apply_(torch.zeros(1, len(smol), device=DEVICE), torch.tensor([lead], device=DEVICE))
    rest = {t for b, ts in vocab_of(smol).items() if "断桥".encode()[1:].startswith(b) for t in ts}
    assert rest and state.boosts()[0] == {t: 2.0 for t in rest}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_banned_continuation_inside_a_character_gives_nothing_up(smol, backend):
    """After the lead byte of 西 ('è'), its next byte banned aborts the attempt but not "西湖" (the byte
    may begin thousands of other characters); after the whole 西 with every way on banned, it is given up."""
    spec = fk.FocusSpec(["西湖"], decay=fk.Decay.constant())
    state = fk.FocusState([spec], vocab_size=len(smol), device=DEVICE, tokenizer=smol, backend=backend)
    data = "西湖".encode()
    vocab = vocab_of(smol)

    def step(token, rest):
        logits = torch.zeros(1, len(smol), device=DEVICE)
        logits[0, [t for b, ts in vocab.items() if rest.startswith(b) for t in ts]] = float("-inf")
        state.apply_(logits, torch.tensor([token], device=DEVICE))
    step(vocab[data[:1]][0], data[1:])
    assert state.said(0) == []
    step(vocab[data[1:2]][0], b"")
    step(vocab[data[2:3]][0], data[3:])
    assert state.said(0) == [0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("entity,written", [("June 11, 2019", "We met in June"), ("Apollo 11", "Apollo"),
                                            ("Boeing 747 8", "Boeing 747")])
def test_a_lone_space_before_a_digit_is_a_continuation_and_its_ban_gives_up(smol, backend, entity, written):
    """SmolLM2 writes the space before a digit alone (' June' ' ' '1' '1'): that ' ' is the entity's
    only continuation, so it is pushed; banned (no_repeat_ngram_size), the entity is given up instead of
    its start being pushed again ("June June, June …")."""
    spec = fk.FocusSpec([entity], bias=2.0, continuation_bias=5.0, decay=fk.Decay.constant())
    space = smol.convert_tokens_to_ids("\u0120")
    assert smol.convert_ids_to_tokens(smol.encode(" 1", add_special_tokens=False))[0] == "\u0120"
    for banned in (False, True):
        state = fk.FocusState([spec], vocab_size=len(smol), device=DEVICE, tokenizer=smol, backend=backend)
        ids = smol.encode(written, add_special_tokens=False)
        for t in ids:
            state.apply_(torch.zeros(1, len(smol), device=DEVICE), torch.tensor([t], device=DEVICE))
        assert state.boosts()[0] == {space: 5.0}, written
        logits = torch.zeros(1, len(smol), device=DEVICE)
        logits[0, space] = float("-inf") if banned else 0.0
        state.apply_(logits, None)
        assert state.said(0) == ([0] if banned else [])  # given up (marked as if said) only when banned
        assert logits[0, space].item() == (float("-inf") if banned else 5.0)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_text_give_ups_match_the_reference(smol, backend, seed):
    """Random streams over CJK, digit and English entities with random -inf logits (the decoding's
    bans): every backend writes and gives up what the torch backend does, on a strided logits view."""
    rng = random.Random(seed)
    vocab = vocab_of(smol)
    spec = fk.FocusSpec(ENTITIES, bias=2.0, continuation_bias=5.0, max_new_tokens=40, eos_token_id=2)
    states = [fk.FocusState([spec] * 3, vocab_size=len(smol), device=DEVICE, tokenizer=smol, backend=b)
              for b in ("torch", backend)]
    streams_ = [random_segmentation(rng, rng.choice(TEXTS).encode(), vocab)[:30] for _ in range(3)]
    last = None
    for i in range(30):
        base = torch.randn(3, 2 * len(smol), device=DEVICE)
        base[torch.rand(3, 2 * len(smol), device=DEVICE) < 0.5] = float("-inf")
        outs = [base.clone()[:, ::2] for _ in states]
        for state, out in zip(states, outs):
            state.apply_(out, last)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-5)
        assert torch.equal(states[1]._rows.sat, states[0]._rows.sat) and torch.equal(states[1]._rows.node,
                                                                                       states[0]._rows.node)
        last = torch.tensor([s[i] if i < len(s) else 0 for s in streams_], device=DEVICE)

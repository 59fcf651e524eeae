"""Head selection from the readout (issue 13, evaluation 3): choosing the top-K heads, finding entity
starts in an answer, key-only pair groups, the rows that use them, and the two response profiles on the
embedded model."""
import random

import pytest
import torch

from focuskern.experiments import lost_in_middle as lim
from focuskern.experiments.coverage import AttentionRow, load_cases
from focuskern.experiments.groups import as_map, as_pairs, pair_groups, top_heads
from focuskern.experiments.head_selection import copy_response, entity_starts, retrieval_response


@pytest.mark.parametrize("layers,heads,count", [(30, 9, 1), (30, 9, 27), (4, 3, 12), (1, 1, 1)])
def test_top_heads_are_the_largest_responses(layers, heads, count):
    response = torch.randn(layers, heads)
    chosen = top_heads(response, count)
    pairs = as_pairs(chosen)
    assert len(pairs) == count and len(set(pairs)) == count
    picked = torch.tensor([response[l, h] for l, h in pairs])
    rest = torch.tensor([response[l, h] for l in range(layers) for h in range(heads) if (l, h) not in set(pairs)])
    if rest.numel():
        assert picked.min() > rest.max()
    assert all(hs == sorted(hs) for hs in chosen.values()) and list(chosen) == sorted(chosen)
    assert as_map(pairs) == chosen


@pytest.mark.parametrize("count", [0, -1, 271])
def test_top_heads_rejects_a_bad_count(count):
    with pytest.raises(ValueError, match="count"):
        top_heads(torch.zeros(30, 9), count)


def test_entity_starts_marks_the_first_token_of_every_variant_occurrence():
    variants = [[(5, 6), (7,)], [(9, 9, 9)]]
    tokens = [5, 6, 5, 7, 9, 9, 9, 9, 6, 5]
    # (5, 6) at 0; (7,) at 3; (9, 9, 9) at 4 and 5 (overlapping); a lone 5 at 2 and 9 is no start.
    assert [t for t, s in enumerate(entity_starts(tokens, variants)) if s] == [0, 3, 4, 5]
    assert entity_starts([], variants) == []


def test_setting_and_row_names_and_missing_heads():
    s = lim.Setting(target=0.1, heads=((21, 1), (22, 4)), scope="data")
    assert s.label == "target mass p=0.1, top-2 heads (readout), data occurrences"
    assert lim.Setting(target=0.1).label == "target mass p=0.1, layers all, all occurrences"
    row = AttentionRow(0.3, 9)
    assert (AttentionRow(0.3).name, row.name) == ("attention p=0.3", "attention p=0.3 top-9")
    with pytest.raises(ValueError, match="top-9"):
        row.focus(None, None, [], 0)
    response = torch.arange(270.0).reshape(30, 9)
    assert as_pairs(row.with_heads(response).heads) == tuple((29, h) for h in range(9))
    assert AttentionRow(0.3).with_heads(response).heads is None
    assert AttentionRow(0.3, 27, logits=True).name == "defaults + attention p=0.3 top-27"


@pytest.fixture(scope="module")
def lm(smollm2_dir):
    from focuskern.experiments.models import load_model

    return load_model(smollm2_dir, attn_implementation="focus")


@pytest.mark.model
def test_key_groups_mark_each_key_in_the_json_and_nothing_else(lm):
    _, tok = lm
    pairs = [lim.place(p, 2) for p in lim.make_cases(5, 2, random.randrange(10**6), "hex8")]
    keys = [p[2][0] for p in pairs]
    texts = lim.prompt_texts(tok, [lim.case_prompt(p, k) for p, k in zip(pairs, keys)], keys)
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    groups = pair_groups(tok, texts, pairs, enc["input_ids"].shape[1], keys_only=True)
    for b, row in enumerate(pairs):
        for t, (key, _) in enumerate(row):
            marked = (groups[b] == t).nonzero().flatten()
            # A token straddling the key's edge counts (entity_positions): '"' and '":' may come along.
            assert tok.decode(enc["input_ids"][b, marked]).replace('"', "").replace(":", "").strip() == key
        assert int((groups[b] >= 0).sum()) < int(enc["attention_mask"][b].sum()) // 2


@pytest.mark.model
def test_profiles_on_the_model(lm):
    model, tok = lm
    retrieval = retrieval_response(model, tok, k=4, n=1, seed=random.randrange(10**6), ids="hex8", batch_size=1)
    assert retrieval.shape == (30, 9) and bool(torch.isfinite(retrieval).all())
    # Shares lie in [0, 1], so a difference of shares lies in [-1, 1].
    assert float(retrieval.abs().max()) <= 1
    cases = load_cases("tune")[:2]
    copy = copy_response(model, tok, cases, max_new_tokens=40, batch_size=2)
    assert copy["response"].shape == (30, 9) and 0 < copy["starts"] < copy["steps"]
    # Every answer token up to its end is one step (the readout row that predicted it).
    from focuskern.experiments.generation import Decoding
    from focuskern.experiments.prompts import chat_inputs

    d = Decoding(max_new_tokens=40)
    inputs = chat_inputs(tok, [c["prompt"] for c in cases])
    out = model.generate(**inputs, max_new_tokens=40, do_sample=False, repetition_penalty=d.repetition_penalty,
                         no_repeat_ngram_size=d.no_repeat_ngram_size, pad_token_id=tok.pad_token_id)
    assert copy["steps"] == int((out[:, inputs["input_ids"].shape[1]:] != tok.pad_token_id).sum())


class _Force:
    """A logits processor that leaves only ``token`` possible."""

    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores):
        scores = torch.full_like(scores, float("-inf"))
        scores[:, self.token] = 0.0
        return scores


@pytest.mark.model
def test_coverage_attention_rows_take_the_logits_lever_only_when_asked(lm, monkeypatch):
    from focuskern.experiments import coverage
    from focuskern.experiments.generation import Decoding

    model, tok = lm
    token = random.randrange(1000, 20000)
    print("forced token", token)
    monkeypatch.setitem(coverage.POLICIES, "defaults", lambda ents, budget, tok, s: [_Force(token)])
    case = [random.choice(load_cases("report"))]
    decoding = Decoding(max_new_tokens=4)
    answers = {}
    for logits in (False, True):
        row = AttentionRow(0.3, logits=logits)
        (run,) = coverage.run_policy(model, tok, case, row.name, 1.0, decoding, [], 1, attention=row)
        answers[logits] = run["outputs"][0]["text"]
    assert answers[True] == tok.decode([token] * 4, skip_special_tokens=True)
    assert answers[False] != answers[True]

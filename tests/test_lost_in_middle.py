"""`focuskern eval lost-in-middle`: case construction, gold placement, scoring table, layer specs, and
(model) one focused batch through the real model end to end."""
import json
import random
import uuid

import pytest

from focuskern.experiments import lost_in_middle as lim


def test_cases_are_seeded_random_uuid_pairs():
    seed = random.randrange(10**6)
    cases = lim.make_cases(7, 3, seed)
    assert cases == lim.make_cases(7, 3, seed)
    assert cases != lim.make_cases(7, 3, seed + 1)
    assert [len(c) for c in cases] == [7, 7, 7]
    for pairs in cases:
        for key, value in pairs:
            assert uuid.UUID(key).version == 4 and uuid.UUID(value).version == 4
        assert len({x for pair in pairs for x in pair}) == 14


def test_hex8_cases_and_bad_id_format():
    for pairs in lim.make_cases(4, 5, random.randrange(10**6), "hex8"):
        assert all(len(x) == 8 and int(x, 16) >= 0 for pair in pairs for x in pair)
    with pytest.raises(ValueError, match="ids"):
        lim.make_cases(4, 5, 0, "uuid5")


@pytest.mark.parametrize("k", [1, 2, 10, 20, 31])
def test_gold_pair_moves_to_each_position_others_keep_order(k):
    pairs = [(f"k{i}", f"v{i}") for i in range(k)]
    indices = [lim.gold_index(k, f) for f in lim.FRACTIONS]
    assert indices[0] == 0 and indices[-1] == k - 1 and indices == sorted(indices)
    for index in indices:
        placed = lim.place(pairs, index)
        assert placed[index] == pairs[0]
        assert [p for p in placed if p != pairs[0]] == pairs[1:]


def test_gold_index_matches_quarters():
    assert [lim.gold_index(20, f) for f in lim.FRACTIONS] == [0, 5, 10, 14, 19]
    assert [lim.gold_index(10, f) for f in lim.FRACTIONS] == [0, 2, 5, 7, 9]


def test_prompt_holds_the_json_in_order_and_asks_for_the_key():
    pairs = lim.make_cases(5, 1, random.randrange(10**6))[0]
    text = lim.case_prompt(pairs, pairs[3][0])
    body = text.split("JSON data:\n", 1)[1].split("\n\nKey:", 1)[0]
    assert list(json.loads(body).items()) == pairs
    assert text.startswith(lim.INSTRUCTION)
    assert text.endswith(f'Key: "{pairs[3][0]}"\nCorresponding value:')


@pytest.mark.parametrize("spec, layers", [("all", None), ("3", (3,)), ("0-2,7", (0, 1, 2, 7)),
                                          ("5-6,1-2", (1, 2, 5, 6))])
def test_layer_specs_round_trip(spec, layers):
    assert lim.parse_layers(spec) == layers
    if layers is not None:
        assert lim.parse_layers(lim.format_layers(layers)) == layers


def test_bad_scope_names_the_argument():
    with pytest.raises(ValueError, match="scope"):
        lim.Setting(1.0, None, "question")


@pytest.mark.parametrize("spec", ["", "a-b", "3-", "-1", "2,,3"])
def test_bad_layer_spec_names_the_argument(spec):
    with pytest.raises(ValueError, match="layers"):
        lim.parse_layers(spec)


def test_accuracy_table_and_plot(tmp_path):
    settings = [lim.Setting(), lim.Setting(2.0, (0, 1, 2))]
    rng = random.Random()
    cells = [{"k": k, "position": p, "setting": s.label, "correct": [rng.random() < 0.5 for _ in range(8)]}
             for k in (3, 5) for p in lim.LABELS for s in settings]
    labels = [s.label for s in settings]
    table = lim.accuracy_table({"cells": cells}, [3, 5], labels).splitlines()
    assert len(table) == 2 + 4
    row = table[2 + 3].split(" | ")  # k=5, focused
    assert row[1] == "focus beta=2, layers 0-2, all occurrences" == settings[1].label
    want = [100 * sum(c["correct"]) / 8 for c in cells if c["k"] == 5 and c["setting"] == settings[1].label]
    assert [float(x) for x in row[2:7]] == [float(f"{a:.0f}") for a in want]
    assert float(row[7]) == pytest.approx(sum(want) / 5, abs=0.05)
    base = [c["correct"] for c in cells if c["k"] == 5 and c["setting"] == "baseline"]
    focused = [c["correct"] for c in cells if c["k"] == 5 and c["setting"] == settings[1].label]
    diff = 100 * (sum(map(sum, focused)) - sum(map(sum, base))) / 40
    assert float(row[8].split(" [")[0]) == pytest.approx(diff, abs=0.05)  # vs baseline, in points
    assert table[2].split(" | ")[8].rstrip(" |") == "–"  # the baseline row itself
    lim.plot({"cells": cells}, [3, 5], labels, str(tmp_path / "p.png"), "title")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.model
def test_key_bias_marks_the_key_where_the_scope_says(smollm2_dir):
    from transformers import AutoTokenizer

    from focuskern.experiments.prompts import chat_texts

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    cases = lim.make_cases(6, 3, random.randrange(10**6), "hex8")
    cases[1] = cases[1][:2]  # a shorter row: the batch is left-padded
    keys = [pairs[0][0] for pairs in cases]
    texts = [t + lim.ANSWER_PREFIX.format(key=key)
             for t, key in zip(chat_texts(tok, [lim.case_prompt(lim.place(p, 1), p[0][0]) for p in cases]), keys)]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    ids, pads = enc["input_ids"], enc["attention_mask"].eq(0).sum(1)
    for scope, occurrences in (("all", 3), ("data", 1)):
        bias = lim.key_bias(tok, texts, keys, lim.Setting(1.5, None, scope), ids.shape[1])
        assert bias.shape == ids.shape and set(bias.unique().tolist()) == {0.0, 1.5}
        for row, key in zip(range(len(cases)), keys):
            marked = bias[row].nonzero().flatten().tolist()
            assert marked, "the key was not found"
            # Decoding the marked tokens gives the key once per boosted occurrence, nothing else.
            assert tok.decode(ids[row, marked]).replace('"', "").replace(" ", "") == key * occurrences
            if scope == "data":
                question_start = len(tok(texts[row].split("Key:")[0])["input_ids"])
                assert max(marked) < pads[row] + question_start


@pytest.mark.model
def test_evaluate_runs_baseline_and_focus_on_the_model(smollm2_dir):
    from focuskern.experiments.models import load_model

    model, tok = load_model(smollm2_dir, attn_implementation="focus")
    settings = [lim.Setting(), lim.Setting(2.0, (0, 1)), lim.Setting(1.0, None, "data")]
    res = lim.evaluate(model, tok, [2], 2, random.randrange(10**6), settings, ids="hex8", batch_size=2,
                       max_new_tokens=3, log=lambda _: None)
    assert [(c["k"], c["position"], c["setting"]) for c in res["cells"]] == \
        [(2, p, s.label) for p in lim.LABELS for s in settings]
    assert all(len(c["correct"]) == 2 for c in res["cells"])
    # Each example is the first case of its cell: its score is "the gold value is in the answer".
    first = {(c["k"], c["position"], c["setting"]): c["correct"][0] for c in res["cells"]}
    assert len(res["examples"]) == len(first)
    for e in res["examples"]:
        assert e["answer"] and first[e["k"], e["position"], e["setting"]] == (e["gold"] in e["answer"])

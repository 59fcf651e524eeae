"""``focuskern eval coverage``: metrics on hand-written texts, the fixed split, the policy table, and a
tiny end-to-end run on the embedded model."""
import json
import random

import pytest
import torch

from focuskern.experiments import coverage
from focuskern.experiments.metrics import (doubled_words, double_space_gaps, entity_counts, forbidden_entities,
                                           glued_pieces, score_output)
from focuskern.experiments.prompts import SEED_PROMPT


def test_entity_counts_case_insensitive_whole_words_and_plurals():
    text = "The 12-Core Processor beats two 12-core processors. An app, not an apply; April 5th? No: April 5."
    counts = entity_counts(text, ["12-core processor", "app", "April 5", "OLED display"])
    assert counts == {"12-core processor": 2, "app": 1, "April 5": 1, "OLED display": 0}


def test_score_output_coverage_and_over_focus():
    text = "Rosa met the fox. Rosa, rosa and ROSA again, and Rosa once more, with a red balloon."
    s = score_output(text, ["Rosa", "fox", "red balloon", "rainy Tuesday"])
    assert (s["said"], s["n_entities"]) == (3, 4)
    assert s["counts"]["Rosa"] == 5
    assert s["over_focused"] == ["Rosa"]
    assert not s["degenerate"]


def test_doubled_words():
    assert doubled_words("the the cat sat on the mat") == ["the the"]
    assert doubled_words("Healthcare healthcare is key") == ["Healthcare healthcare"]
    assert doubled_words("here, here: a comma between is not a doubled word") == []
    assert doubled_words("a clean sentence") == []


def test_double_space_runs_make_an_output_degenerate():
    assert double_space_gaps("Word  word  word  word") == 3
    assert double_space_gaps("A list:\n    - indented item\n    - another") == 0
    assert double_space_gaps("art:  *   *    *") == 0
    assert score_output("Word  word  word  word", ["word"])["degenerate"]
    assert not score_output("One  gap only.", ["gap"])["degenerate"]


def test_glued_pieces():
    ents = ["healthcare", "12-core processor", "pot"]
    assert glued_pieces("AIHealthcare and the12-core processor", ents) == ["AIHealthcare", "the12-core"]
    assert glued_pieces("healthcarehealthcare", ents) == ["healthcarehealthcare"]
    # A lowercase compound cannot be told from a glued piece by text alone: not counted.
    assert glued_pieces("the MapleStreet Library", ["Maple Street Library", "Street"]) == ["MapleStreet"]
    assert glued_pieces("a teapot, healthcare and a 12-core processor", ents) == []
    assert glued_pieces("an AMOLED screen", ["OLED display"]) == []
    assert glued_pieces("open 99% of the time, from 9 am", ["9 am"]) == []
    assert score_output("AIHealthcare", ents)["degenerate"]


def test_forbidden_entities_hold_a_prompt_ngram_in_every_form():
    class Words:  # one token per character
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

    prompt = Words().encode("visit Oslo")
    # "Oslo": every form (" Oslo", "oslo", ...) holds "sl" or "lo", both bigrams of the prompt.
    assert forbidden_entities(Words(), prompt, ["Oslo", "Rome"], 2) == ["Oslo"]
    assert forbidden_entities(Words(), prompt, ["Oslo"], 0) == []
    assert forbidden_entities(Words(), prompt, ["Oslo"], 5) == []  # no 5-gram of the prompt in "Oslo" forms


def test_split_is_fixed_disjoint_and_balanced():
    every = coverage.load_cases("all")
    tune, report = coverage.load_cases("tune"), coverage.load_cases("report")
    assert len(every) >= 48 and len(tune) == len(report) == len(every) // 2
    assert {c["id"] for c in tune}.isdisjoint(c["id"] for c in report)
    assert {c["id"] for c in tune} | {c["id"] for c in report} == {c["id"] for c in every}
    assert coverage.load_cases("tune") == tune  # the same cases every time, in file order
    # The recorded split follows the rule stated in the file: alternate within each kind.
    seen = {}
    for c in every:
        j = seen.setdefault(c["kind"], 0)
        seen[c["kind"]] += 1
        assert c["split"] == ("tune" if j % 2 == 0 else "report"), c["id"]
    assert {c["kind"] for c in tune} == {c["kind"] for c in report} == {"write", "summary", "qa", "instructions"}
    assert all(3 <= len(c["entities"]) <= 6 for c in every)
    assert all(SEED_PROMPT not in c["prompt"] for c in every)
    with pytest.raises(ValueError, match="split"):
        coverage.load_cases("test")


@pytest.mark.parametrize("policy", list(coverage.POLICIES))
def test_every_policy_builds_processors_that_touch_only_their_rows(policy):
    vocab, k = 50, 2
    # Token ids from 1: transformers' SequenceBiasLogitsProcessor refuses id 0.
    ents = [[[random.randrange(1, vocab), random.randrange(1, vocab)]], [[random.randrange(1, vocab)]], [[7, 8, 9]]]
    per_case = [coverage.POLICIES[policy](ents, {"max_new_tokens": 16, "eos_token_id": 2}, None, 1.0), []]
    prompt = torch.randint(0, vocab, (2 * k, 5))
    scores = torch.randn(2 * k, vocab)
    before = scores.clone()
    out = coverage.PerPrompt(per_case)(prompt, scores.clone())
    assert torch.equal(out[k:], before[k:])  # the second prompt has no processors
    if policy == "baseline":
        assert torch.equal(out, before)
    elif policy != "sequence_bias":  # transformers' lever pushes multi-token entities only once started
        assert (out[:k] > before[:k]).any()


@pytest.mark.model
def test_end_to_end_on_two_cases(tmp_path):
    from focuskern.__main__ import main

    rc = main(["eval", "coverage", "--split", "report", "--limit", "2", "--max-new-tokens", "8", "--seeds", "0",
               "--out", str(tmp_path), "--name", "tiny"])
    assert rc == 0
    result = json.loads((tmp_path / "tiny.json").read_text())
    assert [r["policy"] for r in result["summary"]] == list(coverage.DEFAULT_POLICIES)
    assert result["cases"] == [c["id"] for c in coverage.load_cases("report")[:2]]
    for r in result["results"]:
        assert [run["mode"] for run in r["runs"]] == ["greedy", "seed 0"]
        for run in r["runs"]:
            assert len(run["outputs"]) == 2 and all(0 < o["tokens"] <= 8 for o in run["outputs"])
    assert result["summary"][0]["fluency"] == pytest.approx(1.0)
    assert result["metadata"]["split"] == "report" and not result["metadata"]["partial"]
    assert (tmp_path / "tiny.md").read_text().count("\n| ") >= 6
    assert (tmp_path / "tiny.png").stat().st_size > 0

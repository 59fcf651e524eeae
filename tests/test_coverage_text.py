"""Issue 22's evaluation: the case sets (--cases), and the text metrics for CJK and degenerate output
(coverage any case / as written, spaces next to CJK, keyword dumps, punctuation runs, doubled words)
on Chinese, Japanese, English sentence starts and digits."""
import json
import random

import pytest

from focuskern.__main__ import build_parser
from focuskern.experiments import cases as case_sets
from focuskern.experiments.coverage_text import text_summary, text_table
from focuskern.experiments.metrics import (cjk_spaces, doubled_words, entity_counts, glued_pieces, keyword_dumps,
                                           punctuation_runs, score_output)

SEED_ZH = ["大模型", "人工智能", "医疗", "自动驾驶", "智能客服"]


def test_chinese_entities_count_without_word_boundaries():
    text = "我们讨论医疗问题。人工智能和大模型在2019年3月用GPU训练，端口8080。"
    counts = entity_counts(text, ["医疗", "人工智能", "大模型", "2019年3月", "GPU", "8080", "自动驾驶"])
    assert counts == {"医疗": 1, "人工智能": 1, "大模型": 1, "2019年3月": 1, "GPU": 1, "8080": 1, "自动驾驶": 0}
    # Digits keep their boundary: 2019年3月 is not said by 2019年31日 ... nor 12019年3月.
    assert entity_counts("2019年31日，12019年3月", ["2019年3"]) == {"2019年3": 0}
    assert entity_counts("云帆App上线了", ["云帆App", "App"]) == {"云帆App": 1, "App": 1}


def test_japanese_and_mixed_scripts():
    text = "東京大学の研究チームはGPT-4で論文を分析した。"
    assert entity_counts(text, ["東京大学", "GPT-4", "論文", "京都"]) == {"東京大学": 1, "GPT-4": 1, "論文": 1, "京都": 0}
    assert cjk_spaces("東京大学 の 研究") == (2, 2)


def test_as_written_allows_a_capital_at_a_sentence_start_only_for_lower_case_entities():
    ents = ["healthcare", "Ada Lovelace", "ENIAC", "Friday", "CI/CD pipeline"]
    text = "Healthcare first. Then ada Lovelace built the Eniac on friday with a cI/CD pipeline."
    assert entity_counts(text, ents) == {e: 1 for e in ents}
    assert entity_counts(text, ents, as_written=True) == {"healthcare": 1, "Ada Lovelace": 0, "ENIAC": 0,
                                                          "Friday": 0, "CI/CD pipeline": 0}
    good = "Ada Lovelace built the ENIAC on Friday with a CI/CD pipeline for healthcare."
    assert score_output(good, ents)["said_as_written"] == 5
    assert score_output(text, ents)["said_as_written"] == 1


def test_digits_keep_their_boundaries():
    assert entity_counts("On March 30 and in 1989, 2 million", ["March 3", "1989", "2 million", "89"]) == \
        {"March 3": 0, "1989": 1, "2 million": 1, "89": 0}
    assert entity_counts("In 1969, Apollo 11 landed.", ["1969", "Apollo 11"], as_written=True) == \
        {"1969": 1, "Apollo 11": 1}


def test_spaces_next_to_cjk():
    assert cjk_spaces("我们讨论医疗问题。") == (0, 0)
    # the issue's keyword dump: spaces between Chinese words
    assert cjk_spaces("的解 医疗 自动驾驶 智能客服") == (3, 3)
    # indentation and line starts are not counted; a list marker's space is (the baseline writes it too)
    assert cjk_spaces("要点：\n  医疗\n1. 自动驾驶") == (1, 0)
    assert cjk_spaces("用 GPU 训练") == (2, 0)
    assert cjk_spaces("Plain English text, no CJK at all.") == (0, 0)


def test_keyword_dumps():
    dump = "破冊性质的解 医疗 自动驾驶 智能客服 大模型 人工智能 争议"
    assert keyword_dumps(dump, SEED_ZH) == ["医疗 自动驾驶 智能客服 大模型 人工智能"]
    assert keyword_dumps("人工智能、大模型和医疗都在变化。", SEED_ZH) == []  # 和 breaks the run
    assert keyword_dumps("医疗；；自动驾驶；；大模型", SEED_ZH) == ["医疗；；自动驾驶；；大模型"]
    assert keyword_dumps("Healthcare AI healthcare", ["healthcare", "AI"]) == ["Healthcare AI healthcare"]
    # lists and sentences are writing: one mark between the entities
    assert keyword_dumps("医疗、自动驾驶、智能客服等行业", SEED_ZH) == []
    assert keyword_dumps("the fox. Rosa, rosa and more", ["fox", "Rosa"]) == []
    assert keyword_dumps("**医疗**、**自动驾驶**、**智能客服**", SEED_ZH) == []
    assert keyword_dumps("healthcare and AI and healthcare", ["healthcare", "AI"]) == []
    assert keyword_dumps("大模型大模型大模型", SEED_ZH) == ["大模型大模型大模型"]


def test_punctuation_runs():
    assert punctuation_runs("环境；；；；；；；") == ["；；；；；；；"]
    assert punctuation_runs("好。，。真的!!!") == ["。，。", "!!!"]
    assert punctuation_runs("Wait... and then。") == []  # an ellipsis of dots is writing
    assert punctuation_runs("1. **Healthcare**: AI") == []  # markdown is not a punctuation run


def test_doubled_words_in_cjk_english_sentence_starts_and_digits():
    assert doubled_words("大模型大模型的发展") == ["大模型大模型"]
    assert doubled_words("医疗 医疗问题") == ["医疗 医疗"]
    assert doubled_words("東京大学東京大学") == ["東京大学東京大学"]
    assert doubled_words("The the model.") == ["The the"]
    assert doubled_words("in 2019 2019 and 2019, 2020") == ["2019 2019"]
    assert doubled_words("我们讨论医疗问题。人工智能和大模型。") == []
    assert doubled_words("这是一个好例子") == []


def test_glued_pieces_ignore_cjk_neighbours_but_catch_cjk_repeats():
    assert glued_pieces("在2019年3月发布，GPU加速", ["2019年3月", "GPU"]) == []
    assert glued_pieces("医疗医疗", ["医疗"]) == ["医疗医疗"]


def test_score_output_on_the_issue_example():
    text = "人工智能和大模型的破冊性质的解 医疗 自动驾驶 智能客服 大模型 人工智能 争议 2019 环境；；；；；；；"
    s = score_output(text, SEED_ZH)
    assert (s["said"], s["said_as_written"]) == (5, 5)
    assert s["dumps"] and s["punct_runs"] and s["degenerate"]
    assert s["cjk_inner_spaces"] >= 5
    clean = score_output("人工智能和大模型正在改变医疗。", SEED_ZH)
    assert (clean["said"], clean["degenerate"], clean["cjk_spaces"]) == (3, False, 0)


def test_text_summary_and_table():
    outs = [score_output(t, SEED_ZH) | {"case": "x"} for t in ("医疗 自动驾驶 智能客服", "人工智能和大模型")]
    row = {"policy": "p", "strength": 1.0, "greedy_coverage": 0.5, "sampled_coverage": 0.5,
           "doubled_words": 0, "degenerate_outputs": 1, "outputs": 2, **text_summary(outs[:1], outs[1:])}
    assert row["written_greedy"] == pytest.approx(3 / 5) and row["written_sampled"] == pytest.approx(2 / 5)
    assert (row["cjk_spaces"], row["cjk_inner_spaces"], row["dump_outputs"], row["punct_outputs"]) == (2, 2, 1, 0)
    assert "| p | 1 | 50.0% / 50.0% | 60.0% / 40.0% | 2 (2) | 1 | 0 | 0 | 1 of 2 |" in text_table([row])


@pytest.mark.parametrize("name", list(case_sets.BUILTIN))
def test_builtin_case_sets_have_a_fixed_alternating_split(name):
    every = case_sets.load_cases("all", name)
    tune, report = case_sets.load_cases("tune", name), case_sets.load_cases("report", name)
    assert len(tune) == len(report) == len(every) // 2
    seen = {}
    for c in every:
        j = seen.setdefault(c["kind"], 0)
        seen[c["kind"]] += 1
        assert c["split"] == ("tune" if j % 2 == 0 else "report"), c["id"]
    if name != "en":
        assert all(c["kind"].startswith("quoted") or any("\u4e00" <= ch <= "\u9fff" for ch in c["prompt"])
                   for c in every)


def test_chinese_set_and_quoted_entities():
    zh = case_sets.load_cases("all", "zh")
    assert len(zh) >= 16 and {c["kind"] for c in zh} == {"write", "summary", "qa", "instructions"}
    assert all(any("\u4e00" <= ch <= "\u9fff" for e in c["entities"] for ch in e) for c in zh)
    quoted = [c for c in zh if c["kind"] == "summary"] + case_sets.load_cases("all", "quoted")
    for c in quoted:  # summaries: every entity is quoted verbatim from the given text
        assert all(e in c["prompt"] for e in c["entities"]), c["id"]


def test_user_case_files_json_and_jsonl(tmp_path):
    rows = [{"id": f"c{i}", "prompt": f"写一段话 {i}", "entities": ["医疗"], "split": ("tune", "report")[i % 2]}
            for i in range(random.randrange(2, 7))]
    print("cases:", len(rows))
    (tmp_path / "a.json").write_text(json.dumps({"cases": rows}, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "c.json").write_text(json.dumps(rows), encoding="utf-8")
    for f in ("a.json", "b.jsonl", "c.json"):
        got = case_sets.load_cases("report", str(tmp_path / f))
        assert [c["id"] for c in got] == [r["id"] for r in rows if r["split"] == "report"]
        assert all(c["kind"] == "-" for c in got)
    args = build_parser().parse_args(["eval", "coverage", "--cases", str(tmp_path / "b.jsonl")])
    assert args.cases.endswith("b.jsonl")
    assert build_parser().parse_args(["eval", "coverage"]).cases == "en"


@pytest.mark.parametrize("bad, match", [
    ({"prompt": "p", "entities": ["x"], "split": "tune"}, "missing 'id'"),
    ({"id": "a", "prompt": "p", "entities": [], "split": "tune"}, "entities"),
    ({"id": "a", "prompt": "p", "entities": ["x"], "split": "test"}, "split"),
    ({"id": "a", "prompt": " ", "entities": ["x"], "split": "tune"}, "prompt"),
])
def test_bad_case_files_name_the_problem(tmp_path, bad, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([bad]))
    with pytest.raises(ValueError, match=match):
        case_sets.load_cases("all", str(path))
    with pytest.raises(ValueError, match="cases"):
        case_sets.load_cases("all", str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="split"):
        case_sets.load_cases("dev", "zh")


def test_demo_rows_filter_names_a_missing_row():
    from types import SimpleNamespace

    from focuskern.experiments.demo import run_demo

    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2]), device="cpu")
    with pytest.raises(ValueError, match="rows: none of \\['nonsense'\\]"):
        run_demo(model, None, "写一段话", SEED_ZH, rows=["nonsense"], progress=False)
    args = build_parser().parse_args(["demo", "--rows", "baseline", "defaults"])
    assert args.rows == ["baseline", "defaults"]

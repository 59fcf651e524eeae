"""Where results go and what they say against the baseline: file names from the model and device,
commands without absolute paths, the paired bootstrap of ``metrics``, the "vs baseline" columns of
``eval coverage`` and ``eval lost-in-middle``, and ``inspect`` refusing to overwrite files."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest

from focuskern.__main__ import DEFAULT_OUT, build_parser, main
from focuskern.experiments import coverage
from focuskern.experiments.metrics import format_difference, paired_bootstrap
from focuskern.metadata import command_line, result_name


@pytest.mark.parametrize("model, device, want", [
    (None, "cpu", "coverage_smollm2_cpu"),
    ("Qwen/Qwen2.5-7B-Instruct", "cuda:1", "coverage_qwen2.5-7b-instruct_cuda"),
    ("models/My Model.Q4_K_M.gguf", "cuda", "coverage_my-model.q4-k-m_cuda"),
    ("/data/llama-3-8b/", "cpu", "coverage_llama-3-8b_cpu"),
    ("日本語モデル", "cpu", "coverage_model_cpu"),
])
def test_result_names_follow_the_model_and_device(model, device, want):
    assert result_name("coverage", model, device) == want


def test_recorded_commands_hold_no_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = os.path.join(str(tmp_path), "cases", "mine.jsonl")
    elsewhere = os.path.join(os.path.dirname(str(tmp_path)), "x", "model.gguf")
    argv = [os.path.join(os.path.dirname(str(tmp_path)), "focuskern", "__main__.py"), "eval", "coverage",
            "--cases", here, f"--model={elsewhere}", "--note", "a b"]
    cmd = command_line(argv)
    assert cmd == "focuskern eval coverage --cases cases/mine.jsonl --model=model.gguf --note 'a b'"
    assert os.sep + os.path.basename(str(tmp_path)) not in cmd


def test_defaults_write_into_the_current_directory():
    for argv in (["eval", "coverage"], ["inspect", "--prompt", "p", "--entities", "e"]):
        assert build_parser().parse_args(argv).out == DEFAULT_OUT
    assert not os.path.isabs(DEFAULT_OUT) and "benchmarks" not in DEFAULT_OUT


def _reference_bootstrap(t, b, w, resamples, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t), size=(resamples, len(t)))
    draws = [sum(t[i] - b[i] for i in row) / sum(w[i] for i in row) for row in idx]
    return np.percentile(draws, [2.5, 97.5])


def test_paired_bootstrap_against_a_loop():
    rng = random.Random()
    n = rng.randrange(3, 30)
    w = [rng.randrange(3, 7) for _ in range(n)]
    t = [rng.randrange(0, x + 1) for x in w]
    b = [rng.randrange(0, x + 1) for x in w]
    seed = rng.randrange(10**6)
    print(f"n={n} seed={seed}")
    d, lo, hi = paired_bootstrap(t, b, w, resamples=500, seed=seed)
    assert d == pytest.approx((sum(t) - sum(b)) / sum(w))
    assert [lo, hi] == pytest.approx(list(_reference_bootstrap(t, b, w, 500, seed)))
    assert lo <= d <= hi or n < 5
    assert paired_bootstrap(t, b, w, resamples=500, seed=seed) == (d, lo, hi)  # seeded: reproducible


def test_paired_bootstrap_is_zero_width_when_every_case_moves_alike():
    assert paired_bootstrap([3, 3, 3], [1, 1, 1], [4, 4, 4], resamples=200) == pytest.approx((0.5, 0.5, 0.5))


@pytest.mark.parametrize("kwargs, name", [
    (dict(treated=[], baseline=[], weights=[]), "treated"),
    (dict(treated=[1, 2], baseline=[1], weights=[3, 3]), "baseline"),
    (dict(treated=[1, 2], baseline=[1, 1], weights=[3, 0]), "weights"),
    (dict(treated=[1, float("nan")], baseline=[1, 1], weights=[3, 3]), "treated"),
    (dict(treated=[1], baseline=[1], weights=[3], resamples=0), "resamples"),
    (dict(treated=[1], baseline=[1], weights=[3], level=95), "level"),
])
def test_paired_bootstrap_names_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        paired_bootstrap(**kwargs)


def test_format_difference():
    assert format_difference((0.058, 0.019, 0.106)) == "+5.8 [+1.9, +10.6]"
    assert format_difference(None) == "–"


def _runs(said: dict[str, list[int]], n_entities: int = 4) -> list[dict]:
    """Runs of one coverage row: greedy + one seed, ``said[case] = [greedy said, sampled said]``."""
    return [{"mode": mode, "outputs": [{"case": c, "said": s[i], "n_entities": n_entities} for c, s in said.items()]}
            for i, mode in enumerate(("greedy", "seed 0"))]


def test_coverage_vs_baseline_is_the_entity_weighted_paired_difference():
    rng = random.Random()
    cases = [f"case{i}-日本" for i in range(rng.randrange(2, 9))]
    row = {c: [rng.randrange(5), rng.randrange(5)] for c in cases}
    base = {c: [rng.randrange(5), rng.randrange(5)] for c in cases}
    d, lo, hi = coverage.versus_baseline(_runs(row), _runs(base))
    assert d == pytest.approx((sum(map(sum, row.values())) - sum(map(sum, base.values()))) / (8 * len(cases)))
    assert lo <= hi
    g = coverage.versus_baseline(_runs(row), _runs(base), greedy_only=True)[0]
    assert g == pytest.approx(sum(v[0] - base[c][0] for c, v in row.items()) / (4 * len(cases)))
    with pytest.raises(ValueError, match="runs"):
        coverage.versus_baseline(_runs({**row, "extra": [1, 1]}), _runs(base))


def test_inspect_keeps_existing_files(tmp_path):
    (tmp_path / "mine.json").write_text("{}")
    with pytest.raises(ValueError, match="--overwrite"):
        main(["inspect", "--prompt", "p", "--entities", "e", "--out", str(tmp_path), "--name", "mine"])
    assert (tmp_path / "mine.json").read_text() == "{}"


def test_coverage_table_has_two_columns_per_reference_row():
    row = {"policy": "defaults", "strength": 1.0, "greedy_coverage": 0.5, "sampled_coverage": 0.4,
           "fluency": 1.1, "doubled_words": 0, "degenerate_outputs": 0, "outputs": 8, "over_focused": 0,
           "mean_tokens": 20.0, "versus": {"baseline": {"all": [0.25, 0.1, 0.4], "greedy": [0.2, -0.1, 0.5]}}}
    base = {**row, "policy": "baseline", "versus": {}}
    lines = coverage.markdown_table([base, row], 2, [0], versus=("baseline", "defaults")).splitlines()
    assert lines[0].count("| vs ") == 4 and len(lines[1].split("|")) == len(lines[0].split("|"))
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells[-4:] == ["+25.0 [+10.0, +40.0]", "+20.0 [-10.0, +50.0]", "–", "–"]

"""``focuskern eval coverage``: does a steering policy get every entity said, fluently, on prompts it
was never tuned on?

The cases (``--cases``, :mod:`.cases`; the default ``coverage_cases.json``: open writing with required keywords, summaries of a given text,
QA with dates, instructions with technical terms; 3-6 entities each) are split once into a tuning
and a report half.  Each policy of :data:`POLICIES` generates an answer to every case of the split
on the chat template -- greedy and one sampled answer per seed (temperature 0.7, top-p 0.9) -- with
the seed's decoding (``repetition_penalty`` 1.05, ``no_repeat_ngram_size`` 2, 200 new tokens).
Scores (:mod:`.metrics`): coverage = entities said / entities asked; doubled words; degenerate
outputs; over-focused entities; fluency = mean log-prob of the outputs under the unmodified model
relative to the baseline's (``lp_policy / lp_baseline``: 110% = 10% less likely); mean length.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from typing import Callable

import torch
from transformers import LogitsProcessor, SequenceBiasLogitsProcessor

from tqdm import tqdm

from ..hf.attention import attention_focus
from ..hf.logits import FocusLogitsProcessor
from ..metadata import run_metadata
from ..positions import entity_span
from ..spec import FocusSpec
from .cases import load_cases
from .coverage_text import text_summary, text_table
from .generation import Decoding, budget_of, generate, unmodified_logprobs
from .groups import as_pairs, top_heads
from .head_selection import copy_response, plot_response, save_profile
from .metrics import forbidden_entities, format_difference, paired_bootstrap, score_output
from .models import load_model
from .prompts import chat_inputs, chat_texts


# --- policies: name -> (entities, budget, tokenizer, strength) -> logits processors for one prompt's
# rows.  ``budget`` = FocusSpec arguments ``max_new_tokens`` and ``eos_token_id`` (generation.budget_of).
# ``strength`` multiplies the policy's push (1 = as defined); the baseline ignores it.

def _focus(spec: FocusSpec, tokenizer, strength: float) -> list[LogitsProcessor]:
    scaled = dataclasses.replace(spec, bias=spec.bias * strength, force=spec.force * strength,
                                 continuation_bias=spec.effective_continuation_bias * strength)
    return [FocusLogitsProcessor(scaled, tokenizer)]


def seed000_spec(entities) -> FocusSpec:
    """Seed 000's method: +3 on every token of each entity as written, every step."""
    return FocusSpec(entities, bias=3.0, mode="tokens", satisfy="never", variants="as_written")


def _sequence_bias(entities, tokenizer, strength: float) -> list[LogitsProcessor]:
    # transformers' own lever with seed 000's token ids: each entity's token sequence gets +3 on its
    # last token once the rest has been generated (single-token entities: every step).
    seqs = {seq: 3.0 * strength for variants in seed000_spec(entities).token_variants(tokenizer) for seq in variants}
    return [SequenceBiasLogitsProcessor(sequence_bias=[[list(s), b] for s, b in seqs.items()])]


Policy = Callable[[list, dict, object, float], list[LogitsProcessor]]
POLICIES: dict[str, Policy] = {
    "baseline": lambda ents, budget, tok, s: [],
    "seed000": lambda ents, budget, tok, s: _focus(seed000_spec(ents), tok, s),
    "sequence_bias": lambda ents, budget, tok, s: _sequence_bias(ents, tok, s),
    "fixed": lambda ents, budget, tok, s: _focus(FocusSpec.fixed(ents), tok, s),  # the pre-policy defaults
    "defaults": lambda ents, budget, tok, s: _focus(FocusSpec(ents, **budget), tok, s),
    # Ablations of the defaults, one part each.  no_budget = the earlier FocusSpec.recommended.
    "no_budget": lambda ents, budget, tok, s: _focus(FocusSpec(ents), tok, s),
    "no_urgency": lambda ents, budget, tok, s: _focus(FocusSpec(ents, **budget, force=0.0), tok, s),
    "no_eos_damp": lambda ents, budget, tok, s: _focus(FocusSpec(ents, **budget, eos_damp=0.0), tok, s),
    "all_variants": lambda ents, budget, tok, s: _focus(FocusSpec(ents, **budget, variants="default"), tok, s),
}
DEFAULT_POLICIES = ("baseline", "seed000", "sequence_bias", "fixed", "defaults", "no_budget", "no_urgency",
                    "no_eos_damp", "all_variants")


class PerPrompt(LogitsProcessor):
    """Applies prompt ``i``'s processors to its rows ``i*k .. i*k+k-1`` only (``k`` = rows / prompts),
    so that cases with different entities share one batched ``generate``."""

    def __init__(self, per_prompt: list[list[LogitsProcessor]]):
        self.per_prompt = per_prompt

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = input_ids.shape[0] // len(self.per_prompt)
        for i, procs in enumerate(self.per_prompt):
            rows = slice(i * k, (i + 1) * k)
            for proc in procs:
                scores[rows] = proc(input_ids[rows], scores[rows])
        return scores


@dataclasses.dataclass(frozen=True)
class AttentionRow:
    """A row steered by the attention lever: target mass ``target`` on each case's entity spans in
    the prompt, on every head (``count`` None) or on the top-``count`` heads of the readout's copy
    response (``heads`` = ``{layer: [heads]}``, set by :meth:`with_heads` once the heads are profiled);
    with ``logits`` together with the logits lever (the ``defaults`` policy)."""
    target: float
    count: int | None = None
    heads: dict | None = None
    logits: bool = False

    @property
    def name(self) -> str:
        return (("defaults + " if self.logits else "") + f"attention p={self.target:g}"
                + (f" top-{self.count}" if self.count else ""))

    def with_heads(self, response: torch.Tensor) -> "AttentionRow":
        return dataclasses.replace(self, heads=top_heads(response, self.count)) if self.count else self

    def focus(self, model, tok, batch: list[dict], seq_len: int):
        if self.count and self.heads is None:
            raise ValueError(f"{self.name}: the heads were not selected (with_heads)")
        span = entity_span(tok, chat_texts(tok, [c["prompt"] for c in batch]), [c["entities"] for c in batch],
                           seq_len)
        return attention_focus(model, target_mass=self.target, target_keys=span.to(model.device), heads=self.heads)


def run_policy(model, tok, cases, policy: str, strength: float, decoding: Decoding, seeds, batch_size: int,
               bar=None, attention: AttentionRow | None = None) -> list[dict]:
    """Every case's outputs under one policy: ``[{"mode": "greedy" | "seed N", "outputs": [...]}]``.
    With ``attention`` the policy is that attention row (with the ``defaults`` processors where the row
    says so), and the answers are scored again under the unmodified model (the logits ``generate`` saw
    were already steered)."""
    runs = []
    budget = budget_of(model, decoding.max_new_tokens)
    for seed in [None, *seeds]:
        outputs = []
        for lo in range(0, len(cases), batch_size):
            batch = cases[lo:lo + batch_size]
            inputs = chat_inputs(tok, [c["prompt"] for c in batch], model.device)
            logits = policy if attention is None else "defaults" if attention.logits else "baseline"
            procs = [PerPrompt([POLICIES[logits](c["entities"], budget, tok, strength) for c in batch])]
            if attention is None:
                out, lps = generate(model, tok, inputs, procs, decoding, seed, bar=bar)
            else:
                with attention.focus(model, tok, batch, inputs["input_ids"].shape[1]):
                    out, _ = generate(model, tok, inputs, procs, decoding, seed, bar=bar)
                lps = unmodified_logprobs(model, inputs, out, tok.pad_token_id)
            for case, row, lp, ids, mask in zip(batch, out, lps, inputs["input_ids"], inputs["attention_mask"]):
                text = tok.decode(row, skip_special_tokens=True)
                prompt = ids[mask.bool()].tolist()
                outputs.append({"case": case["id"], "text": text, "logprob": lp,
                                "tokens": int((row != tok.pad_token_id).sum()),
                                "forbidden": forbidden_entities(tok, prompt, case["entities"],
                                                                decoding.no_repeat_ngram_size),
                                **score_output(text, case["entities"])})
        runs.append({"mode": "greedy" if seed is None else f"seed {seed}", "outputs": outputs})
    return runs


def summarize(policy: str, strength: float, runs: list[dict], baseline_lp: float | None) -> dict:
    """One table row: coverage (greedy; sampled = all seeds together), counts over all outputs."""
    greedy = [o for r in runs if r["mode"] == "greedy" for o in r["outputs"]]
    sampled = [o for r in runs if r["mode"] != "greedy" for o in r["outputs"]]
    every = greedy + sampled

    def coverage(outs):
        return sum(o["said"] for o in outs) / sum(o["n_entities"] for o in outs) if outs else float("nan")

    def allowed_coverage(outs):
        """Coverage of the entities the decoding does not forbid outright (metrics.forbidden_entities)."""
        said = sum(n > 0 for o in outs for e, n in o["counts"].items() if e not in o.get("forbidden", ()))
        asked = sum(o["n_entities"] - len(o.get("forbidden", ())) for o in outs)
        return said / asked if asked else float("nan")

    lp = statistics.fmean(o["logprob"] for o in every if not math.isnan(o["logprob"]))
    return {"policy": policy, "strength": strength, "outputs": len(every),
            "coverage": coverage(every), "greedy_coverage": coverage(greedy), "sampled_coverage": coverage(sampled),
            "allowed_greedy_coverage": allowed_coverage(greedy), "allowed_sampled_coverage": allowed_coverage(sampled),
            "forbidden": sum(len(o.get("forbidden", ())) for o in every),
            "mean_logprob": lp, "fluency": lp / baseline_lp if baseline_lp else None,
            "doubled_words": sum(len(o["doubled"]) for o in every),
            "degenerate_outputs": sum(o["degenerate"] for o in every),
            "over_focused": sum(len(o["over_focused"]) for o in every),
            "mean_tokens": statistics.fmean(o["tokens"] for o in every), **text_summary(greedy, sampled)}


def per_case(runs: list[dict], greedy_only: bool = False) -> dict[str, tuple[int, int]]:
    """``{case id: (entities said, entities asked)}`` summed over the case's outputs (greedy only, or all)."""
    out: dict[str, tuple[int, int]] = {}
    for run in runs:
        if greedy_only and run["mode"] != "greedy":
            continue
        for o in run["outputs"]:
            said, asked = out.get(o["case"], (0, 0))
            out[o["case"]] = (said + o["said"], asked + o["n_entities"])
    return out


def versus_baseline(runs: list[dict], base_runs: list[dict], greedy_only: bool = False) -> list[float]:
    """Entity-weighted coverage difference from the baseline over the same cases and its 95% paired
    bootstrap interval, resampling cases (:func:`.metrics.paired_bootstrap`, seed 0): ``[d, low, high]``."""
    row, base = per_case(runs, greedy_only), per_case(base_runs, greedy_only)
    if row.keys() != base.keys():
        raise ValueError("runs: the row and the baseline were not run on the same cases")
    ids = sorted(base)
    return list(paired_bootstrap([row[i][0] for i in ids], [base[i][0] for i in ids], [base[i][1] for i in ids]))


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def markdown_table(summary: list[dict], cases: int, seeds, versus=("baseline",)) -> str:
    """The report's table: one row per policy and strength, two columns (all outputs, greedy) against
    each row named in ``versus``."""
    lines = ["| policy | strength | greedy coverage | sampled coverage | allowed: greedy / sampled "
             "| fluency vs baseline | doubled words | degenerate outputs | over-focused entities "
             "| mean length (tokens) |" + "".join(f" vs {v}: all outputs | vs {v}: greedy |" for v in versus),
             "|" + " --- |" * (10 + 2 * len(versus))]
    for r in summary:
        allowed = f"{_pct(r.get('allowed_greedy_coverage'))} / {_pct(r.get('allowed_sampled_coverage'))}"
        lines.append(f"| {r['policy']} | {r['strength']:g} | {_pct(r['greedy_coverage'])} | "
                     f"{_pct(r['sampled_coverage'])} | {allowed} | {_pct(r['fluency'])} | {r['doubled_words']} | "
                     f"{r['degenerate_outputs']} of {r['outputs']} | {r['over_focused']} | {r['mean_tokens']:.0f} |"
                     + "".join(f" {format_difference(r.get('versus', {}).get(v, {}).get(part))} |"
                               for v in versus for part in ("all", "greedy")))
    lines.append(f"\n{cases} cases; greedy + sampled seeds {list(seeds)} (temperature 0.7, top-p 0.9); "
                 "counts are over all outputs of the row. *Allowed*: coverage of the entities the decoding "
                 "does not forbid outright (no_repeat_ngram_size: every form holds an n-gram of the prompt). "
                 "*vs X*: coverage difference from row X in points (entities said / asked over "
                 "the case's outputs, summed over cases), 95% paired bootstrap interval over the cases "
                 "(10,000 resamples, seed 0).")
    return "\n".join(lines)


def plot(summary: list[dict], path: str, title: str) -> None:
    """Coverage (all outputs) vs fluency, one line per policy over its push strengths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for policy in dict.fromkeys(r["policy"] for r in summary):
        rows = sorted((r for r in summary if r["policy"] == policy and r["fluency"]), key=lambda r: r["strength"])
        if not rows:
            continue
        xs = [100 * r["fluency"] for r in rows]
        ys = [100 * r["coverage"] for r in rows]
        ax.plot(xs, ys, marker="o", label=policy)
        for x, y, r in zip(xs, ys, rows):
            if len(rows) > 1:
                ax.annotate(f"×{r['strength']:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("fluency: mean log-prob relative to baseline (%; higher = less likely)")
    ax.set_ylabel("coverage: entities said (%, greedy + sampled)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _config(args, decoding: Decoding) -> dict:
    """What a result depends on besides the policy (``--resume`` reuses results only when it matches)."""
    config = {"split": args.split, "model": args.model or "embedded SmolLM2-135M-Instruct (Q4_1 .gguf)",
            "seeds": list(args.seeds), "limit": args.limit, "decoding": dataclasses.asdict(decoding)}
    if args.cases != "en":  # the built-in English set's configs predate --cases
        config["cases"] = args.cases
    return config


def _previous(path: str, config: dict, cases: list[dict]) -> tuple[dict, dict | None]:
    """Results of an earlier run with the same config, by (policy, strength), and that run's metadata;
    the texts are scored again, so that a changed metric applies to them too."""
    if not os.path.exists(path):
        return {}, None
    with open(path) as f:
        old = json.load(f)
    if old.get("config") != config:
        return {}, None
    entities = {c["id"]: c["entities"] for c in cases}
    for r in old["results"]:
        for run in r["runs"]:
            for o in run["outputs"]:
                o.update(score_output(o["text"], entities[o["case"]]))
    return {(r["policy"], r["strength"]): r for r in old["results"]}, old["metadata"]


def main(args) -> int:
    args.policies = args.policies or list(DEFAULT_POLICIES)
    args.max_new_tokens = args.max_new_tokens or Decoding.max_new_tokens
    unknown = [p for p in args.policies if p not in POLICIES]
    if unknown:
        raise ValueError(f"--policies: unknown {unknown}; known: {list(POLICIES)}")
    decoding = Decoding(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
                        no_repeat_ngram_size=args.no_repeat_ngram_size)
    cases = load_cases(args.split, args.cases)[:args.limit]
    config = _config(args, decoding)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, args.name)
    previous, old_meta = _previous(stem + ".json", config, cases) if args.resume else ({}, None)
    # The baseline pushes nothing: one strength is enough.
    todo = [(p, 1.0 if p == "baseline" else s) for p in args.policies for s in args.strengths]
    rows = [AttentionRow(p, K) for p in args.target for K in [None, *args.select_heads]]
    # With the logits lever: the selected-heads rows (the all-heads ones where no heads are selected).
    rows += [dataclasses.replace(r, logits=True) for r in rows
             if args.with_logits and bool(r.count) == bool(args.select_heads)]
    attention = {row.name: row for row in rows}
    todo = list(dict.fromkeys(todo + [(name, 1.0) for name in attention]))
    runs_per_policy = (1 + len(args.seeds)) * math.ceil(len(cases) / args.batch_size)
    fresh = [t for t in todo if t not in previous]
    print(f"{len(cases)} cases ({args.split}), {len(todo)} policy settings ({len(todo) - len(fresh)} reused), "
          f"greedy + seeds {args.seeds}")
    if fresh:  # all reused: only the tables and the plot are written again
        print(f"loading {args.model or 'the embedded SmolLM2-135M-Instruct'} ...")
        model, tok = load_model(args.model, device=args.device, attn_implementation="focus" if attention else None)
        if args.select_heads and args.target:
            response = profile_heads(model, tok, args, decoding)
            attention = {name: row.with_heads(response) for name, row in attention.items()}
    bar = tqdm(total=len(fresh) * runs_per_policy * decoding.max_new_tokens, unit="step", dynamic_ncols=True)
    results = []
    for policy, strength in todo:
        if (policy, strength) in previous:
            results.append(previous[(policy, strength)])
            continue
        bar.set_description(f"{policy} x{strength:g}")
        runs = run_policy(model, tok, cases, policy, strength, decoding, args.seeds, args.batch_size, bar,
                          attention.get(policy))
        results.append({"policy": policy, "strength": strength, "runs": runs})
        _write(stem, args, config, cases, results, partial=True)
    bar.close()
    # Every row reused: only the tables were made now; the JSON keeps the generating run's metadata.
    summary = _write(stem, args, config, cases, results, partial=False,
                     tabulated=None if fresh else {**old_meta, "tabulated": run_metadata(args.device)})
    print(markdown_table(summary, len(cases), args.seeds, args.versus) + "\n\n" + text_table(summary))
    print(f"wrote {stem}.json, .md, .png")
    return 0


def profile_heads(model, tok, args, decoding: Decoding) -> torch.Tensor:
    """The copy response of every head (:func:`.head_selection.copy_response`) on the tuning half's
    greedy answers -- whatever ``--split`` is -- written to ``<out>/<name>_heads.{json,png}``."""
    profile = copy_response(model, tok, load_cases("tune", args.cases), decoding.max_new_tokens, args.batch_size)
    stem = os.path.join(args.out, args.name + "_heads")
    meta = run_metadata(args.device, cases="tune", starts=profile["starts"], steps=profile["steps"],
                        selected={K: as_pairs(top_heads(profile["response"], K)) for K in args.select_heads})
    save_profile(stem + ".json", profile["response"], meta)
    plot_response(profile["response"], args.select_heads, stem + ".png",
                  f"copy response (entity span share before an entity - elsewhere), coverage tuning half, "
                  f"{profile['starts']} entity starts of {profile['steps']} steps")
    return profile["response"]


def _write(stem: str, args, config: dict, cases: list[dict], results: list[dict], partial: bool,
           tabulated: dict | None = None) -> list[dict]:
    """JSON (every output) always; the markdown table and the plot once the run is complete.  ``tabulated``:
    the metadata to keep when nothing was generated (the earlier run's, with this run's as ``tabulated``)."""
    base = next((r for r in results if r["policy"] == "baseline"), None)
    base_lp = summarize("baseline", 1.0, base["runs"], None)["mean_logprob"] if base else None
    summary = [summarize(r["policy"], r["strength"], r["runs"], base_lp) for r in results]
    for name in args.versus:
        ref = next((r for r in results if r["policy"] == name), None)
        for row, r in zip(summary, results):
            if ref is not None and r is not ref:
                row.setdefault("versus", {})[name] = {"all": versus_baseline(r["runs"], ref["runs"]),
                                                      "greedy": versus_baseline(r["runs"], ref["runs"], True)}
    meta = tabulated or run_metadata(args.device, cases=len(cases), split=args.split, partial=partial, note=args.note)
    with open(stem + ".json", "w") as f:
        json.dump({"metadata": meta, "config": config, "cases": [c["id"] for c in cases], "summary": summary,
                   "results": results}, f, indent=1)
    if not partial:
        title = f"{args.name}: {len(cases)} cases ({args.cases}, {args.split}), greedy + seeds {list(args.seeds)}"
        with open(stem + ".md", "w") as f:
            f.write(f"# {title}\n\n{markdown_table(summary, len(cases), args.seeds, args.versus)}\n\n"
                    f"{text_table(summary)}\n\n"
                    f"Device: {meta['device']}; date: {meta['date_utc']}; command: `{meta['command']}`\n"
                    + (f"\nTables written again from this JSON ({meta['tabulated']['date_utc']}): "
                       f"`{meta['tabulated']['command']}`\n" if "tabulated" in meta else ""))
        plot(summary, stem + ".png", title)
    return summary

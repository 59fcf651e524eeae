"""``focuskern eval attention-keywords``: the demo's prompt and keywords with the attention lever.

Rows: the unmodified model; target mass ``p`` on the prompt's keyword spans in every head of every layer
(``attention_focus(target_mass=p)``) and, with ``--select-heads K --heads-from FILE``, on the top-K heads of
a copy-response profile (:mod:`.head_selection`, written by ``eval coverage --select-heads``); the logits
lever alone (focuskern's defaults with the budget); both.
Decoding as ``focuskern demo`` (greedy + ``--samples`` sampled rows drawn in one batch).  Fluency is the
mean log-prob of each answer under the *unmodified* model: the answers are scored again without focus
(under attention focus the logits ``generate`` sees are already steered).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time

import torch
from tqdm import tqdm

from ..hf.logits import FocusLogitsProcessor
from ..spec import FocusSpec
from ..metadata import run_metadata
from .coverage import AttentionRow
from .demo import _measure
from .generation import Decoding, budget_of, generate, unmodified_logprobs
from .groups import as_pairs
from .models import load_model
from .prompts import SEED_KEYWORDS, SEED_PROMPT, chat_inputs


def check_targets(targets) -> list[float]:
    """Target masses, each a share in (0, 1)."""
    for p in targets:
        if not (isinstance(p, (int, float)) and 0 < p < 1 and math.isfinite(p)):
            raise ValueError(f"target mass must be in (0, 1), got {p!r}")
    return [float(p) for p in targets]


def rows_of(targets: list[float], both: float | None, response: torch.Tensor | None = None,
            counts=()) -> list[tuple[str, AttentionRow | None, bool]]:
    """(label, attention row or None, logits lever on); top-K rows need the heads' ``response``, and
    the logits + attention row ``both`` then uses the first K's heads."""
    rows = [("baseline", None, False)]
    rows += [(f"attention p={p:g} (all heads)", AttentionRow(p), False) for p in targets]
    for K in counts:
        rows += [(f"attention p={p:g} (top-{K} heads)", AttentionRow(p, K).with_heads(response), False)
                 for p in targets]
    rows.append(("logits (defaults, budget)", None, True))
    if both is not None:  # on the heads of the first K when heads are selected
        row = AttentionRow(both, counts[0] if counts else None).with_heads(response)
        where = f" (top-{row.count} heads)" if row.count else ""
        rows.append((f"logits + attention p={both:g}{where}", row, True))
    return rows


def run(model, tok, prompt, keywords, rows, *, samples, max_new_tokens, seed=0, log=print) -> list[dict]:
    inputs = chat_inputs(tok, [prompt], model.device)
    variants = FocusSpec(keywords).token_variants(tok)
    decoding, budget = Decoding(max_new_tokens=max_new_tokens), budget_of(model, max_new_tokens)
    results = []
    case = [{"prompt": prompt, "entities": keywords}]
    for label, attention, logits in rows:
        t0 = time.perf_counter()
        result = {"row": label, "target_mass": attention and attention.target, "logits": logits,
                  "heads": attention and attention.heads and as_pairs(attention.heads)}
        with tqdm(total=2 * max_new_tokens, desc=f"{label:30s}", unit="step", dynamic_ncols=True) as bar:
            for kind, sample_seed in (("greedy", None), ("sampled", seed)):
                procs = [FocusLogitsProcessor(FocusSpec(keywords, **budget), tok)] if logits else []
                L = inputs["input_ids"].shape[1]
                with attention.focus(model, tok, case, L) if attention else contextlib.nullcontext():
                    outs, steered = generate(model, tok, inputs, procs, decoding, sample_seed,
                                             num_return_sequences=samples, bar=bar)
                measured = _measure(tok, outs, unmodified_logprobs(model, inputs, outs, tok.pad_token_id),
                                    keywords, variants)
                for m, s, o in zip(measured, steered, outs):
                    m.update(logprob_steered=s, tokens=int((o != tok.pad_token_id).sum()))
                result[kind] = measured
        result["seconds"] = round(time.perf_counter() - t0, 1)
        log(f"  {label}: greedy {result['greedy'][0]['coverage']}/{len(keywords)}, {result['seconds']} s")
        results.append(result)
    return results


def summarize(results: list[dict]) -> list[dict]:
    def lp(rows):
        return statistics.mean(r["logprob"] for r in rows if not math.isnan(r["logprob"]))

    base = lp(results[0]["greedy"] + results[0]["sampled"])
    out = []
    for res in results:
        g, s = res["greedy"][0], res["sampled"]
        out.append({"row": res["row"], "greedy": g["coverage"], "sampled": statistics.mean(r["coverage"] for r in s),
                    "greedy_logprob": g["logprob"], "sampled_logprob": lp(s),
                    "fluency": lp(res["greedy"] + s) / base, "doubled": len(g["doubled"]) + sum(len(r["doubled"]) for r in s),
                    "broken": g["broken"] + sum(r["broken"] for r in s),
                    "tokens": statistics.mean(r["tokens"] for r in [g] + s), "seconds": res["seconds"]})
    return out


def markdown(report: dict) -> str:
    n = len(report["keywords"])
    lines = [f"# Seed 000's keywords with the attention lever ({report['date_utc']})", "",
             f"Device: {report['device']}; torch {report.get('torch')}, transformers {report.get('transformers')}, "
             f"focuskern {report.get('focuskern')}, {report.get('torch_threads')} thread(s).  ",
             f"Command: `{report['command']}`  ",
             f"Decoding: {report['max_new_tokens']} new tokens, repetition_penalty 1.05, no_repeat_ngram_size 2; "
             f"greedy + {report['samples']} sampled (T 0.7, top-p 0.9, seed {report['seed']}, one batch).", "",
             "| row | greedy | sampled (mean) | logp greedy | logp sampled | fluency | doubled | broken | tokens | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["summary"]:
        lines.append(f"| {r['row']} | {r['greedy']}/{n} | {r['sampled']:.1f}/{n} | {r['greedy_logprob']:.3f} | "
                     f"{r['sampled_logprob']:.3f} | {r['fluency']:.0%} | {r['doubled']} | {r['broken']} | "
                     f"{r['tokens']:.0f} | {r['seconds']:.0f} |")
    lines += ["", "greedy/sampled: keywords said (of the five); logp: mean log-prob of the answer under the "
              "unmodified model; fluency: mean logp (greedy and samples) relative to the baseline (100% = as "
              "fluent, higher = less likely text); doubled: doubled words, broken: broken entity fragments "
              "(all rows summed); tokens: mean answer length."]
    return "\n".join(lines) + "\n"


def main(args) -> int:
    targets = check_targets(args.target or [0.03, 0.1])
    both = check_targets([args.both])[0] if args.both else None
    response = None
    if args.select_heads:
        if not args.heads_from:
            raise ValueError("--heads-from: needed with --select-heads (a <name>_heads.json of eval coverage)")
        with open(args.heads_from) as f:
            response = torch.tensor(json.load(f)["response"])
    max_new = args.max_new_tokens or 200
    model, tok = load_model(args.model, device=args.device, attn_implementation="focus")
    results = run(model, tok, SEED_PROMPT, SEED_KEYWORDS, rows_of(targets, both, response, args.select_heads),
                  samples=args.samples,
                  max_new_tokens=max_new, seed=args.seed)
    report = {**run_metadata(args.device), "note": args.note, "prompt": SEED_PROMPT, "keywords": SEED_KEYWORDS,
              "max_new_tokens": max_new, "samples": args.samples, "seed": args.seed,
              "summary": summarize(results), "results": results}
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, args.name)
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(report) + (f"\n{args.note}\n" if args.note else ""))
    print(markdown(report))
    return 0

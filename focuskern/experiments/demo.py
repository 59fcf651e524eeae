"""``focuskern demo``: seed 000's experiment, rerun on the embedded SmolLM2-135M-Instruct.

Rows: the unmodified model, seed 000's method, the contract's plain phrase focus, the seed's gentle
nudge (blend), the seed's dynamic decay and focuskern's defaults (the budget policy); each greedy and sampled
(temperature 0.7, top-p 0.9, ``--samples`` rows drawn in one batch from a fixed seed).
"""
from __future__ import annotations

import json
import statistics
import time

from ..decay import Decay
from ..hf.logits import FocusLogitsProcessor
from ..spec import FocusSpec
from .generation import Decoding, budget_of, generate
from .metrics import broken_fragments, score_text
from .models import load_model
from .prompts import SEED_KEYWORDS, SEED_PROMPT, chat_inputs


def demo_rows(keywords: list[str], budget: dict) -> list[tuple[str, FocusSpec | None]]:
    return [
        ("baseline", None),
        ("seed 000 (tokens, +3, as written)", FocusSpec(keywords, bias=3.0, mode="tokens", satisfy="never", variants="as_written")),
        ("phrase (+3, once)", FocusSpec.fixed(keywords, bias=3.0)),
        ("blend (E=15, a=0.2)", FocusSpec.blend(keywords, entity_bias=15.0, alpha=0.2)),
        ("decay (+5, half-life 50)", FocusSpec.fixed(keywords, bias=5.0, decay=Decay.exponential(50))),
        ("focuskern defaults (budget policy)", FocusSpec(keywords, **budget)),
    ]


def _measure(tok, outputs, lps, keywords, variants) -> list[dict]:
    rows = []
    for out, lp in zip(outputs, lps):
        text = tok.decode(out, skip_special_tokens=True)
        ids = [t for t in out.tolist() if t != tok.pad_token_id]
        rows.append({**score_text(text, keywords), "text": text, "broken": broken_fragments(ids, variants, tok),
                     "logprob": lp})
    return rows


def run_demo(model, tok, prompt: str, keywords: list[str], *, samples: int = 10, max_new_tokens: int = 200,
             seed: int = 0, log=print, progress: bool = True, rows: list[str] | None = None) -> list[dict]:
    """Every row greedy and sampled (``rows``: only those whose label contains one of these words);
    with ``progress`` a bar per row (decoding steps, with an ETA)."""
    from tqdm import tqdm

    every = demo_rows(keywords, budget_of(model, max_new_tokens))
    chosen = [(label, spec) for label, spec in every if not rows or any(word in label for word in rows)]
    if not chosen:
        raise ValueError(f"rows: none of {rows} names a row of {[label for label, _ in every]}")
    inputs = chat_inputs(tok, [prompt], model.device)
    variants = FocusSpec(keywords).token_variants(tok)
    decoding = Decoding(max_new_tokens=max_new_tokens)
    results = []
    for label, spec in chosen:
        t0 = time.perf_counter()
        result = {"row": label}
        with tqdm(total=2 * max_new_tokens, desc=f"{label:34s}", unit="step", disable=not progress,
                  leave=True, dynamic_ncols=True) as bar:
            for kind, sample_seed in (("greedy", None), ("sampled", seed)):
                procs = [FocusLogitsProcessor(spec, tok)] if spec is not None else []
                outs, lps = generate(model, tok, inputs, procs, decoding, sample_seed,
                                     num_return_sequences=samples, bar=bar)
                result[kind] = _measure(tok, outs, lps, keywords, variants)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        log(f"  {label}: done in {result['seconds']} s")
        results.append(result)
    return results


def summary_table(results: list[dict], n_keywords: int) -> str:
    base = results[0]
    head = (f"{'row':32s} {'greedy':>7s} {'dbl':>4s} {'brk':>4s} {'logp':>7s} | {'sampled':>8s} {'dbl':>4s} "
            f"{'brk':>4s} {'logp':>7s} {'fluency':>8s}")
    lines = [head, "-" * len(head)]
    base_lp = statistics.mean(r["logprob"] for r in base["sampled"] + base["greedy"])
    for res in results:
        g, s = res["greedy"][0], res["sampled"]
        lp = statistics.mean(r["logprob"] for r in s + res["greedy"])
        lines.append(
            f"{res['row']:32s} {g['coverage']:>5d}/{n_keywords} {len(g['doubled']):>4d} {g['broken']:>4d} "
            f"{g['logprob']:>7.3f} | {statistics.mean(r['coverage'] for r in s):>6.1f}/{n_keywords} "
            f"{sum(len(r['doubled']) for r in s):>4d} {sum(r['broken'] for r in s):>4d} "
            f"{statistics.mean(r['logprob'] for r in s):>7.3f} {lp / base_lp:>7.0%}")
    lines.append("greedy/sampled: keywords present (sampled: mean over the samples); dbl: doubled words;"
                 " brk: broken entity fragments; logp: mean log-prob under the unmodified model;"
                 " fluency: mean log-prob relative to baseline (100% = as fluent; higher = less likely).")
    return "\n".join(lines)


def main(args) -> int:
    keywords = args.keywords or SEED_KEYWORDS
    prompt = args.prompt or SEED_PROMPT
    log = (lambda *a, **k: None) if args.json else print
    log(f"loading {args.model or 'the embedded SmolLM2-135M-Instruct'} ...")
    model, tok = load_model(args.model, device=args.device)
    log(f"keywords: {keywords}")
    results = run_demo(model, tok, prompt, keywords, samples=args.samples, max_new_tokens=args.max_new_tokens,
                       seed=args.seed, log=log, rows=args.rows)
    if args.json:
        print(json.dumps({"prompt": prompt, "keywords": keywords, "results": results}, indent=1))
        return 0
    for res in results:
        g = res["greedy"][0]
        print(f"\n=== {res['row']} (greedy) — {g['coverage']}/{len(keywords)} {g['counts']}")
        print(g["text"])
    print()
    print(summary_table(results, len(keywords)))
    return 0

"""HF ``generate`` tokens/s with and without the focus processor (``python benchmarks/hf_generate.py``)."""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import LogitsProcessorList

from focuskern import FocusSpec
from focuskern.metadata import run_metadata
from focuskern.experiments.generation import budget_of
from focuskern.experiments.models import load_model
from focuskern.experiments.prompts import SEED_KEYWORDS, SEED_PROMPT, chat_inputs
from focuskern.hf import FocusLogitsProcessor


def bench_generate(model, tok, *, batch: int, new_tokens: int, repeats: int, device: str) -> dict:
    inputs = chat_inputs(tok, [SEED_PROMPT] * batch, device)
    spec = FocusSpec(SEED_KEYWORDS, **budget_of(model, new_tokens))

    def run(with_focus: bool) -> float:
        procs = LogitsProcessorList([FocusLogitsProcessor(spec, tok)] if with_focus else [])
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       logits_processor=procs, pad_token_id=tok.pad_token_id)
        if device != "cpu":
            torch.cuda.synchronize()
        return batch * new_tokens / (time.perf_counter() - t0)

    run(False), run(True)  # warm-up
    # Interleaved so that drift of the machine's speed hits both columns alike.
    plain, focused = [], []
    for _ in range(repeats):
        plain.append(run(False))
        focused.append(run(True))
    p, f = statistics.median(plain), statistics.median(focused)
    return {"batch": batch, "new_tokens": new_tokens, "repeats": repeats, "tokens_per_s_plain": round(p, 1),
            "tokens_per_s_focus": round(f, 1), "overhead_pct": round(100 * (p - f) / p, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="HF model folder/id or a .gguf path (default: embedded SmolLM2)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    model, tok = load_model(args.model, device=args.device)
    rows = [bench_generate(model, tok, batch=b, new_tokens=args.new_tokens, repeats=args.repeats, device=args.device)
            for b in args.batch]
    report = {**run_metadata(args.device), "model": args.model or "SmolLM2-135M-Instruct (embedded)", "rows": rows}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

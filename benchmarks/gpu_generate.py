#!/usr/bin/env python
"""End-to-end HF ``generate`` on randomly initialized models shaped like real ones (a GPU report stage).

Speed does not depend on the weights, and nothing can be downloaded on the GPU machine, so the models
are built from configs written here: a Llama-3-8B-shaped ``LlamaConfig`` and a Qwen2.5-7B-shaped
``Qwen2Config`` (hidden size, heads, KV heads, MLP width, vocabulary, RoPE base of the published
configs), with ``--layers`` decoder layers instead of 32 / 28 to fit the report's time.  Prompts are
random token ids and the focus spec holds token-id entities (no tokenizer is needed).

Two measurements per model, each the median of ``--repeats`` interleaved runs after one warm-up:

* ``processor``: tokens/s of ``generate`` (greedy, ``--new-tokens`` forced) without and with
  :class:`focuskern.hf.FocusLogitsProcessor` (20 entities of 1-4 ids), B in ``--batch``; overhead
  ``(plain - focus) / plain`` (issue 11's GPU target: <= 2% per token at B >= 8);
* ``attention``: wall time of ``generate`` (B = 1, ``--long-prompt`` tokens, ``--long-new`` new tokens)
  with ``attn_implementation="sdpa"`` and ``"focus"`` under ``attention_focus`` (bias 2.0 on 64 keys).

``--smoke`` builds tiny models of the same classes on the CPU (numbers meaningless; tests the path).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from focuskern.metadata import run_metadata

# Published shapes (layers are set by --layers).
CONFIGS = {
    "llama3-8b-shaped": ("LlamaConfig", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
        bos_token_id=128000, eos_token_id=128001, tie_word_embeddings=False)),
    "qwen2.5-7b-shaped": ("Qwen2Config", dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
        bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=False)),
}
TINY = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            bos_token_id=1, eos_token_id=2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens of the processor runs")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--long-prompt", type=int, nargs="*", default=[8192, 32768])
    p.add_argument("--long-new", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON file to write (default: print only)")
    p.add_argument("--smoke", action="store_true", help="tiny models on the CPU (tests the code path)")
    args = p.parse_args(argv)
    if args.smoke:
        args.layers, args.batch, args.prompt, args.new_tokens = 2, [1, 2], 8, 4
        args.long_prompt, args.long_new, args.repeats = [64], 4, 1
    return args


def build_model(name: str, layers: int, device: torch.device, smoke: bool):
    import transformers

    cls_name, shape = CONFIGS[name]
    config = getattr(transformers, cls_name)(**{**shape, **(TINY if smoke else {}), "num_hidden_layers": layers})
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


class Runner:
    """Times ``model.generate`` on random prompts; ``sync`` brackets every run on CUDA."""

    def __init__(self, model, device: torch.device, repeats: int):
        self.model, self.device, self.repeats = model, device, repeats
        self.vocab = model.config.vocab_size
        self.gen = torch.Generator().manual_seed(0)

    def prompt(self, B: int, L: int) -> torch.Tensor:
        return torch.randint(0, self.vocab, (B, L), generator=self.gen).to(self.device)

    def seconds(self, ids: torch.Tensor, new: int, **kw) -> float:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                min_new_tokens=new, do_sample=False, pad_token_id=0, **kw)
        sync()
        return time.perf_counter() - t

    def paired(self, runs: dict) -> dict:
        """Median seconds of each zero-argument run, interleaved (drift hits every column alike)."""
        for fn in runs.values():
            fn()  # warm-up: kernels, autotuning, allocator
        times = {k: [] for k in runs}
        for _ in range(self.repeats):
            for k, fn in runs.items():
                times[k].append(fn())
        return {k: statistics.median(v) for k, v in times.items()}


def focus_spec(vocab: int):
    from focuskern import FocusSpec

    rng = random.Random(0)
    entities = [[[rng.randrange(1, vocab) for _ in range(rng.randint(1, 4))]] for _ in range(20)]
    return FocusSpec(entities, bias=3.0)


def processor_rows(runner: Runner, args) -> list[dict]:
    from focuskern.hf import FocusLogitsProcessor

    spec = focus_spec(runner.vocab)
    rows = []
    for B in args.batch:
        ids = runner.prompt(B, args.prompt)
        t = runner.paired({
            "plain": lambda: runner.seconds(ids, args.new_tokens),
            "focus": lambda: runner.seconds(ids, args.new_tokens, logits_processor=[FocusLogitsProcessor(spec)]),
        })
        plain, focus = (B * args.new_tokens / t[k] for k in ("plain", "focus"))
        rows.append({"batch": B, "prompt": args.prompt, "new_tokens": args.new_tokens,
                     "tokens_per_s_plain": round(plain, 1), "tokens_per_s_focus": round(focus, 1),
                     "overhead_pct": round(100 * (plain - focus) / plain, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def attention_rows(runner: Runner, args) -> list[dict]:
    import focuskern.hf.attention as hf_attention  # registers attn_implementation="focus"

    rows = []
    for L in args.long_prompt:
        ids = runner.prompt(1, L)
        bias = torch.zeros(1, L)
        bias[0, torch.randperm(L, generator=runner.gen)[:64]] = 2.0

        def sdpa():
            runner.model.set_attn_implementation("sdpa")
            return runner.seconds(ids, args.long_new)

        def focus():
            runner.model.set_attn_implementation(hf_attention.NAME)
            with hf_attention.attention_focus(runner.model, key_bias=bias):
                return runner.seconds(ids, args.long_new)

        t = runner.paired({"sdpa": sdpa, "focus": focus})
        runner.model.set_attn_implementation("sdpa")
        rows.append({"batch": 1, "prompt": L, "new_tokens": args.long_new, "seconds_sdpa": round(t["sdpa"], 4),
                     "seconds_focus": round(t["focus"], 4), "focus_over_sdpa": round(t["focus"] / t["sdpa"], 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_generate.py: no CUDA device (use --smoke to test the script on the CPU)")
    report = {"run_metadata": run_metadata(str(device), layers=args.layers, smoke=args.smoke), "models": {}}
    for name in args.models:
        t = time.perf_counter()
        model = build_model(name, args.layers, device, args.smoke)
        entry = {"config": CONFIGS[name][0], "layers": args.layers, "build_s": round(time.perf_counter() - t, 2),
                 "parameters": sum(p.numel() for p in model.parameters())}
        runner = Runner(model, device, args.repeats)
        entry["processor"] = processor_rows(runner, args)
        entry["attention"] = attention_rows(runner, args)
        report["models"][name] = entry
        del model, runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

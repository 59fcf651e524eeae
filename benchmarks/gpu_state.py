#!/usr/bin/env python
"""GPU timings of one ``FocusState.apply_`` step (automaton advance + bias/blend/decay) per backend.

Each row of the batch follows its own spec (5 entities x 4 variants of 1-4 ids, as
``benchmarks/test_bench_state_cpu.py``), V = 151936 logits.  Reported per (B, alpha, backend): device
time (``triton.testing.do_bench`` median) and host time per call from Python (``gpu_logits.Timer``).
``--cpu-smoke`` runs the same path on the CPU with tiny sizes (numbers meaningless).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

import focuskern as fk
from focuskern.metadata import run_metadata
from focuskern.ops.dispatch import available_backends

try:  # both `python benchmarks/gpu_state.py` and `python -m benchmarks.gpu_state`
    from .gpu_logits import Timer
except ImportError:
    from gpu_logits import Timer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.3])
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--warmup-ms", type=int, default=25)
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--host-calls", type=int, default=300)
    p.add_argument("--host-budget-s", type=float, default=0.3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cpu-smoke", action="store_true")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.batch, args.vocab = [1, 4], 4096
    return args


def row_spec(rng: random.Random, V: int, alpha: float) -> fk.FocusSpec:
    entities = [[[rng.randrange(1, V) for _ in range(rng.randint(1, 4))] for _ in range(4)] for _ in range(5)]
    return fk.FocusSpec(entities, bias=3.0, alpha=alpha, decay=fk.Decay.linear(1000, floor=0.1))


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_state.py: no CUDA device (use --cpu-smoke to test the script)")
    timer = Timer(args, device)
    backends = [b for b in available_backends("focus_state", device) if device.type == "cuda" or b != "triton"]
    rows = []
    for alpha in args.alpha:
        for B in args.batch:
            rng = random.Random(B)
            specs = [row_spec(rng, args.vocab, alpha) for _ in range(B)]
            logits = torch.randn(B, args.vocab, device=device)
            tokens = torch.randint(0, args.vocab, (B,), device=device)
            for backend in backends:
                state = fk.FocusState(specs, args.vocab, device, backend=backend)
                step = lambda: state.apply_(logits, tokens)  # noqa: E731
                host_us, calls = timer.host_us(step)
                rows.append({"B": B, "alpha": alpha, "backend": backend, "device_us": round(timer.device_us(step), 2),
                             "host_us": round(host_us, 2), "host_calls": calls})
                print(json.dumps(rows[-1]), flush=True)
    report = {"run_metadata": run_metadata(str(device), vocab=args.vocab), "results": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

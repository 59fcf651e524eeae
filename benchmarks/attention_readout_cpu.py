#!/usr/bin/env python
"""CPU cost of the attention readout and of target-mass steering on ``focus_attention``'s torch path.

For each case the plain call (``key_bias`` only), the readout (``return_mass`` of G groups) and the
target (``target_mass`` on group 0) are timed in interleaved rounds (median of ``--rounds``); issue 13's
target is readout <= 1.3x plain.  Shapes are SmolLM2-135M's (Hq = 9, Hkv = 3, D = 64)::

    python benchmarks/attention_readout_cpu.py     # writes benchmarks/results/attention_readout_cpu.{json,md}

Peak extra memory of the torch path is one chunk x Lk of scores (``MAX_SCORE_ELEMENTS``) plus, with a
readout, a chunk x (G + 1) float32 accumulator: never Lq x Lk.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from focuskern.metadata import run_metadata
from focuskern.ops import focus_attention

RESULTS = Path(__file__).resolve().parent / "results"
# (kind, B, Lq, Lk, G): prefill with one group (entities), decode with one group and with one group per key
CASES = [("prefill", 1, 512, 512, 1), ("prefill", 1, 2048, 2048, 1), ("prefill", 1, 2048, 2048, 8),
         ("decode", 8, 1, 4096, 1), ("decode", 8, 1, 4096, 4096)]


def contenders(B, Lq, Lk, G, Hq=9, Hkv=3, D=64):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, Hq, Lq, D, generator=gen)
    k = torch.randn(B, Hkv, Lk, D, generator=gen)
    v = torch.randn(B, Hkv, Lk, D, generator=gen)
    bias = torch.zeros(B, Lk)
    bias[:, :: 50] = 1.0
    groups = torch.randint(-1, G, (B, Lk), generator=gen, dtype=torch.int32)
    target = torch.full((Hq,), 0.3)
    kw = dict(backend="torch", validate=False)
    return {
        "plain": lambda: focus_attention(q, k, v, bias, **kw),
        "readout": lambda: focus_attention(q, k, v, bias, key_group=groups, num_groups=G, return_mass=True, **kw),
        "target": lambda: focus_attention(q, k, v, bias, key_group=groups, num_groups=G, target_mass=target, **kw),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "attention_readout_cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for kind, B, Lq, Lk, G in CASES:
        fns = contenders(B, Lq, Lk, G)
        times = {name: [] for name in fns}
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(args.rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        row = {"kind": kind, "B": B, "Lq": Lq, "Lk": Lk, "G": G, **{f"{n}_ms": round(t, 2) for n, t in ms.items()},
               "readout_x": round(ms["readout"] / ms["plain"], 2), "target_x": round(ms["target"] / ms["plain"], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = run_metadata("cpu", rounds=args.rounds, threads=args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    lines = ["# focus_attention torch path: readout and target-mass cost on CPU (median ms, ratio to plain)", "",
             "| case | B | Lq | Lk | G | plain | readout | target | readout / plain | target / plain |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['B']} | {r['Lq']} | {r['Lk']} | {r['G']} | {r['plain_ms']} | {r['readout_ms']} | "
              f"{r['target_ms']} | {r['readout_x']}x | {r['target_x']}x |" for r in rows]
    lines += ["", "Target (issue 13): readout <= 1.3x plain.", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

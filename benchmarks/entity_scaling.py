#!/usr/bin/env python
"""Entity-count scaling (``make bench-scaling``): compile time, step time and peak memory of a focus
spec with N = 100 / 1k / 10k / 100k entities, against HF ``SequenceBiasLogitsProcessor`` and vLLM V1's
index-add at the same number of ids, all in one run.

* Entities: N random entities of 1-4 token ids (uniform) over V = 151936 (Qwen2.5's vocabulary),
  one spec shared by every row of the batch, bias 3.0; B in {1, 64}.
* ``focuskern_<backend>``: compile = ``FocusState([spec] * B, V, device, backend=...)``; step =
  ``state.apply_(logits, tokens)`` with random tokens (every step advances the automata).
* ``hf_sequence_bias``: ``SequenceBiasLogitsProcessor({tuple(entity): 3.0})``; compile = the
  constructor plus its first call (it prepares its tables lazily); step = ``proc(input_ids, scores)``.
* ``vllm_v1_index_add``: ``logits[(rows, ids)] += bias`` (``benchmarks/logits_contenders.py``) with the
  entities' distinct ids as every row's ``logit_bias``; compile = building the index tensors from that dict.

Each (N, B, contender) runs in its own process (clean peak RSS, and a time box: ``--timeout-s``, default
60 s); a contender that runs out of time is recorded and not tried at larger N for that B.  Step time:
median over ``--steps`` calls (at most ``--step-budget-s``).  Peak memory: the process's peak RSS
growth over its state before compiling.  Writes ``entity_scaling_<device>.{json,md,png}`` to
``benchmarks/results/`` (``--name`` changes the stem).
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
V = 151936
BIAS = 3.0


def entities(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(V) for _ in range(rng.randint(1, 4))] for _ in range(n)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_step_us(step, steps: int, budget_s: float) -> tuple[float, int]:
    step()  # first call outside the timings (lazy setup, caches)
    samples, end = [], time.perf_counter() + budget_s
    while len(samples) < steps and (len(samples) < 3 or time.perf_counter() < end):
        t = time.perf_counter()
        step()
        samples.append(time.perf_counter() - t)
    return 1e6 * statistics.median(samples), len(samples)


def measure(contender: str, n: int, B: int, seed: int, steps: int, budget_s: float) -> dict:
    """One (contender, N, B) cell, in this process; returns its row.  Imports and one-off op
    registration happen before the clock starts."""
    import dataclasses

    import torch
    from transformers import SequenceBiasLogitsProcessor

    import focuskern as fk

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from logits_contenders import Case, make_contender, make_inputs

    torch.set_num_threads(1)
    ents = entities(n, seed)
    id_bias = {t: BIAS for e in ents for t in e}  # what a vLLM logit_bias request would hold
    logits = torch.randn(B, V)
    gen = torch.Generator().manual_seed(seed)
    backend = contender.removeprefix("focuskern_")
    if contender.startswith("focuskern_"):  # registers the backend's op
        fk.FocusState([fk.FocusSpec([[[1]]])], V, "cpu", backend=backend).apply_(logits[:1], torch.zeros(1, dtype=torch.long))
    base = peak_rss_mb()
    t0 = time.perf_counter()
    if contender.startswith("focuskern_"):
        state = fk.FocusState([fk.FocusSpec([[e] for e in ents], bias=BIAS)] * B, V, "cpu", backend=backend)
        compile_s = time.perf_counter() - t0
        step = lambda: state.apply_(logits, torch.randint(0, V, (B,), generator=gen))  # noqa: E731
    elif contender == "hf_sequence_bias":
        proc = SequenceBiasLogitsProcessor(sequence_bias={tuple(e): BIAS for e in ents})
        input_ids = torch.randint(0, V, (B, 8), generator=gen)
        proc(input_ids, logits)  # builds its tables lazily, on the first call
        compile_s = time.perf_counter() - t0
        step = lambda: proc(input_ids, logits)  # noqa: E731
    elif contender == "vllm_v1_index_add":
        t_inputs = time.perf_counter()
        inp = make_inputs(Case(B, V, 1), seed=seed, logits=logits)  # untimed; the index is built below
        t0 += time.perf_counter() - t_inputs
        rows = torch.arange(B, dtype=torch.int32).repeat_interleave(len(id_bias))
        ids = torch.tensor(list(id_bias), dtype=torch.int32).repeat(B)
        vals = torch.tensor(list(id_bias.values()), dtype=logits.dtype).repeat(B)
        inp = dataclasses.replace(inp, rows32=rows, ids32=ids, vals=vals)
        compile_s = time.perf_counter() - t0
        step = make_contender("vllm_v1_index_add", inp, logits)
    else:
        raise ValueError(f"unknown contender {contender!r}")
    step_us, calls = median_step_us(step, steps, budget_s)
    return {"contender": contender, "entities": n, "B": B, "ids": len(id_bias), "status": "ok",
            "compile_s": round(compile_s, 4), "step_us": round(step_us, 2), "step_calls": calls,
            "peak_mb": round(peak_rss_mb() - base, 1)}


def run_cell(args, contender: str, n: int, B: int) -> dict:
    """``measure`` in a child process, killed after ``--timeout-s``."""
    cmd = [sys.executable, __file__, "--child", json.dumps([contender, n, B, args.seed, args.steps, args.step_budget_s])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        return {"contender": contender, "entities": n, "B": B, "status": f"timeout > {args.timeout_s:g} s"}
    if out.returncode != 0:
        return {"contender": contender, "entities": n, "B": B, "status": "failed",
                "error": out.stderr.strip().splitlines()[-1:] or [""]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    meta = report["run_metadata"]
    lines = [f"# Entity-count scaling ({meta['device']})", "",
             f"{meta['date_utc']}, torch {meta.get('torch')}, transformers {meta.get('transformers')}, 1 torch "
             f"thread, V = {V}, entities of 1-4 random ids, seed {report['seed']}; command `{meta['command']}`", "",
             "| contender | B | entities | distinct ids | compile s | step µs | peak MB | status |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        lines.append(f"| {r['contender']} | {r['B']} | {r['entities']} | {r.get('ids', '–')} | {r.get('compile_s', '–')} "
                     f"| {r.get('step_us', '–')} | {r.get('peak_mb', '–')} | {r['status']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (key, label), ax in zip((("compile_s", "compile time (s)"), ("step_us", "step time (µs)"),
                                 ("peak_mb", "peak RSS growth (MB)")), axes):
        for contender in report["contenders"]:
            for B, style in zip(report["batch"], ("-o", "--s")):
                pts = [(r["entities"], r[key]) for r in report["rows"]
                       if r["contender"] == contender and r["B"] == B and r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, label=f"{contender} B={B}")
        ax.set(xscale="log", yscale="log", xlabel="entities", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Entity-count scaling, V={V} ({report['run_metadata']['device']}, {report['run_metadata']['date_utc']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--contenders", nargs="+",
                   default=["focuskern_cpp", "focuskern_torch", "hf_sequence_bias", "vllm_v1_index_add"])
    p.add_argument("--timeout-s", type=float, default=60.0, help="time box of one (contender, N, B) cell")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--step-budget-s", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="entity_scaling_cpu")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return 0
    from tqdm import tqdm

    from focuskern.metadata import run_metadata

    rows, gave_up = [], set()
    cells = [(c, n, B) for B in args.batch for c in args.contenders for n in sorted(args.entities)]
    for contender, n, B in tqdm(cells, desc="entity scaling", unit="cell"):
        if (contender, B) in gave_up:
            rows.append({"contender": contender, "entities": n, "B": B, "status": "skipped (failed or timed out at a smaller N)"})
            continue
        rows.append(run_cell(args, contender, n, B))
        if rows[-1]["status"] != "ok":
            gave_up.add((contender, B))
        tqdm.write(json.dumps(rows[-1]))
    report = {"run_metadata": run_metadata("cpu", torch_threads=1), "seed": args.seed, "vocab": V,
              "batch": args.batch, "contenders": args.contenders, "timeout_s": args.timeout_s, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    plot(report, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / args.name}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

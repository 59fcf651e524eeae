"""The default CPU call of ``focus_logits_`` against the leanest eager PyTorch, paired (issue 23).

Contenders (``logits_contenders``): ``focuskern_default`` (``backend="auto"``, ``validate=True``),
``focuskern_cpp`` (``validate=False``, through the dispatcher) and ``eager_scatter_add``
(``mul_`` where alpha > 0, then ``scatter_add_``); and, to show where the default call's time goes,
``checks_only``: the native argument check the default call makes, called straight from Python
without applying the op (``focuskern._C.focus_logits_check``, mode 0).  Every size of ``test_bench_logits_cpu.py``, with
1 and 2 torch threads.  On a shared machine the speed drifts by 2x within seconds, so the contenders
are timed in rounds, interleaved (the order flips every round), on ONE logits tensor (separate
copies sit in memory that is not equally fast: up to 25% apart at B = 64, measured), and each
round gives a ratio eager / default: the result is the median of those ratios with its 10th-90th
percentiles, next to each contender's median time.  Other jobs only ever add time, so the ratio of
the contenders' fastest rounds (``min``) is given too: on a loaded machine it is the steadier
estimate of the calls' own cost.  The load average before and after each thread count is recorded.
Measurements only; nothing is asserted.

    python benchmarks/cpu_default_vs_eager.py [--rounds 40] [--threads 1 2] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.logits_contenders import Case, flush_denormal, make_contender, make_inputs  # noqa: E402
from benchmarks.test_bench_logits_cpu import CASES  # noqa: E402
from focuskern.metadata import run_metadata  # noqa: E402
from focuskern.ops import focus_logits as focus_logits_module  # noqa: E402

CONTENDERS = ("focuskern_default", "focuskern_cpp", "eager_scatter_add", "checks_only")
BLOCK_S = 1e-3  # each contender runs ~1 ms per round (short: fewer preemptions inside a block)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(case: Case, rounds: int) -> dict:
    inp = make_inputs(case)
    logits = inp.logits.clone()
    fns = {name: make_contender(name, inp, logits) for name in CONTENDERS[:-1]}
    check = focus_logits_module._native_check()
    args = (logits, inp.row_offsets, inp.token_ids, inp.token_bias, inp.alpha, inp.decay, inp.step)
    fns["checks_only"] = lambda: check(*args, focus_logits_module.N_KINDS, focus_logits_module.CHECK)
    with flush_denormal(case.alpha > 0):
        for fn in fns.values():
            for _ in range(20):
                fn()
        start = time.perf_counter()
        for _ in range(10):
            fns["eager_scatter_add"]()
        n = max(1, int(BLOCK_S / ((time.perf_counter() - start) / 10)))
        times = {name: [] for name in fns}
        for r in range(rounds):
            for name in (CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]):
                fn = fns[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - start) / n * 1e6)
    ratios = [e / d for e, d in zip(times["eager_scatter_add"], times["focuskern_default"])]
    return dict(case=case.name, B=case.B, V=case.V, K=case.K, alpha=case.alpha, calls_per_round=n,
                median_us={k: round(statistics.median(v), 2) for k, v in times.items()},
                min_us={k: round(min(v), 2) for k, v in times.items()},
                ratio_of_min=round(min(times["eager_scatter_add"]) / min(times["focuskern_default"]), 3),
                ratio_eager_over_default=dict(median=round(statistics.median(ratios), 3),
                                              p10=round(percentile(ratios, 0.1), 3),
                                              p90=round(percentile(ratios, 0.9), 3)))


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# Default `focus_logits_` call vs eager `mul_` + `scatter_add_` (CPU)", "",
             f"{env['date_utc']}, {env['device']}, torch {env['torch']}, {result['rounds']} interleaved rounds "
             f"per size; command: `{result['command']}`.", "",
             "Median µs per call (fastest round in parentheses); ratio = eager / default (≥ 1: the default "
             "call is at least as fast): per round, median [10th, 90th percentile]; and of the fastest rounds. "
             "`checks only`: the default call's native argument check alone (no op), called from Python: "
             "default minus it is roughly the op's own loop.",
             ""]
    for threads, rows in result["threads"].items():
        load = result["load_average"][threads]
        lines += [f"## {threads} torch thread(s)", "",
                  f"1-minute load average {load[0]:.1f} before, {load[1]:.1f} after.", "",
                  "| case | default | `cpp`, `validate=False` | eager `scatter_add_` | checks only "
                  "| eager / default, per round | eager / default, fastest |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            m, lo, r = row["median_us"], row["min_us"], row["ratio_eager_over_default"]
            cells = [f"{m[k]:.1f} ({lo[k]:.1f})" for k in CONTENDERS]
            lines.append(f"| {row['case']} | {' | '.join(cells)} | {r['median']:.2f}× [{r['p10']:.2f}, "
                         f"{r['p90']:.2f}] | {row['ratio_of_min']:.2f}× |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="cpu_default_vs_eager")
    args = parser.parse_args(argv)
    if focus_logits_module._native_check() is None:
        raise SystemExit("focuskern._C is not built: the default CPU call it measures needs it")
    result = dict(command="python benchmarks/cpu_default_vs_eager.py " + " ".join(argv or sys.argv[1:]),
                  rounds=args.rounds, environment=run_metadata("cpu"), threads={}, load_average={})
    for threads in args.threads:
        torch.set_num_threads(threads)
        before = os.getloadavg()[0]
        rows = result["threads"][str(threads)] = []
        for case in CASES:
            rows.append(measure(case, args.rounds))
            r = rows[-1]
            print(f"threads={threads} {case.name}: {r['median_us']} eager/default {r['ratio_eager_over_default']}"
                  f" of min {r['ratio_of_min']}", flush=True)
        result["load_average"][str(threads)] = [before, os.getloadavg()[0]]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, args.name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, args.name + ".md"), "w") as f:
        f.write(markdown(result))


if __name__ == "__main__":
    main()

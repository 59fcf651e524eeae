"""``focuskern eval lost-in-middle``: the rows the command line asks for (baseline, boosts, and the
readout-based levers -- target mass on the queried key, the position calibration, target mass on the
heads selected from the readout), the run, and its files ``<out>/<name>.{json,md,png}``
(:mod:`.lost_in_middle` holds the cases and the scoring, :mod:`.lost_in_middle_readout` the readout's
view, :mod:`.head_selection` the head profiles).  ``--tables-only`` writes the table and the plot again
from an earlier run's JSON, without a model."""
from __future__ import annotations

import json
import os
import time

from ..metadata import run_metadata
from . import lost_in_middle as lim
from .groups import as_pairs, top_heads
from .head_selection import effect_table, plot_response, retrieval_response, save_profile, steering_effect
from .lost_in_middle_readout import calibration, pair_shares, plot_shares
from .models import load_model


def readout_settings(model, tok, args) -> list[lim.Setting]:
    """Target-mass and calibrated settings; the calibration comes from the readout on
    ``args.calibration_seed`` cases (written to ``<out>/<name>_readout.{json,png}``)."""
    settings = [lim.Setting(layers=lim.parse_layers(spec), scope=scope, target=p)
                for p in args.target for scope in args.scope for spec in args.layers]
    if args.select_heads:
        settings += selected_head_settings(model, tok, args)
    if not args.calibrate:
        return settings
    k = max(args.k)
    shares = pair_shares(model, tok, k, args.calibration_n, args.calibration_seed, args.ids)
    curve = calibration(shares["by_position"])
    base = os.path.join(args.out, f"{args.name}_readout")
    meta = run_metadata(args.device, k=k, n=args.calibration_n, seed=args.calibration_seed, ids=args.ids)
    with open(base + ".json", "w") as f:
        json.dump({**meta, **shares, "calibration": curve}, f, indent=1)
    plot_shares(shares, base + ".png", f"readout, k={k} {args.ids} pairs, n={args.calibration_n} per gold "
                f"position, seed {args.calibration_seed} + k (tuning cases)")
    settings += [lim.Setting(layers=lim.parse_layers(spec), calibrate=lam, calibration=curve)
                 for lam in args.calibrate for spec in args.layers]
    return settings


def selected_head_settings(model, tok, args) -> list[lim.Setting]:
    """Target mass on the top-K heads of the readout's retrieval response (``--select-heads K``), measured
    on ``args.calibration_seed`` cases (written to ``<out>/<name>_heads.{json,png}``, with the
    :func:`~.head_selection.steering_effect` of each p and K on the same cases in ``<name>_heads_effect.*``):
    one row per ``--target`` p, scope and K, besides the rows of ``--target`` on ``--layers``."""
    k = max(args.k)
    response = retrieval_response(model, tok, k, args.calibration_n, args.calibration_seed, args.ids)
    base = os.path.join(args.out, f"{args.name}_heads")
    meta = run_metadata(args.device, k=k, n=args.calibration_n, seed=args.calibration_seed, ids=args.ids,
                        selected={K: as_pairs(top_heads(response, K)) for K in args.select_heads})
    save_profile(base + ".json", response, meta)
    plot_response(response, args.select_heads, base + ".png",
                  f"retrieval response (queried key - other keys), k={k} {args.ids}, n={args.calibration_n} per "
                  f"position, seed {args.calibration_seed} + k")
    effects = {f"p={p:g} top-{K}": steering_effect(model, tok, k, args.calibration_n, args.calibration_seed, args.ids,
                                                   top_heads(response, K), p)
               for p in args.target for K in args.select_heads}
    with open(base + "_effect.json", "w") as f:
        json.dump({**meta, "effects": effects}, f, indent=1)
    with open(base + "_effect.md", "w") as f:
        f.write(f"# What target mass on the selected heads does at the query that writes the value\n\n"
                f"Tuning cases (k={k} {args.ids}, n={args.calibration_n} per gold position, seed "
                f"{args.calibration_seed} + k), without -> with focus; {meta['date_utc']}, {meta['device']}.\n")
        for name, effect in effects.items():
            f.write(f"\n## {name}\n\n{effect_table(effect)}\n")
    return [lim.Setting(scope=scope, target=p, heads=as_pairs(top_heads(response, K)))
            for p in args.target for scope in args.scope for K in args.select_heads]


def write_tables(base: str, report: dict) -> str:
    """``<base>.md`` and ``<base>.png`` from a run's JSON content ``report``; returns the table."""
    table = lim.accuracy_table(report, report["k"], report["settings"])
    with open(base + ".md", "w") as f:
        f.write(f"# Lost in the middle: key-value retrieval, accuracy (%) by gold position\n\n{table}\n\n"
                "vs baseline: difference of the mean from the baseline row in points, 95% paired bootstrap "
                "interval over the cases (10,000 resamples, seed 0).\n\n")
        f.write("\n".join(f"- {key}: {report[key]}" for key in report
                          if key not in ("settings", "cells", "examples")) + "\n")
    lim.plot(report, report["k"], report["settings"], base + ".png",
             f"{report['model']}, {report['ids']} ids, greedy, n={report['n']} per point, seed {report['seed']} "
             f"({report['device']})")
    return table


def main(args) -> int:
    """Run the evaluation (or, with ``--tables-only``, re-tabulate ``<out>/<name>.json``) and write
    ``<out>/<name>.{json,md,png}``."""
    base = os.path.join(args.out, args.name)
    if args.tables_only:
        with open(base + ".json") as f:
            print(write_tables(base, json.load(f)))
        return 0
    settings = [lim.Setting()] * (not args.skip_baseline) + [lim.Setting(beta, lim.parse_layers(spec), scope)
                                                             for scope in args.scope for spec in args.layers
                                                             for beta in args.beta]
    t0 = time.perf_counter()
    model, tok = load_model(args.model, device=args.device, attn_implementation="focus")
    os.makedirs(args.out, exist_ok=True)
    if args.target or args.calibrate or args.select_heads:
        settings += readout_settings(model, tok, args)
    print(f"k={args.k} n={args.n} seed={args.seed}; settings: " + "; ".join(s.label for s in settings))

    def checkpoint(partial: dict) -> None:
        with open(base + ".partial.json", "w") as f:
            json.dump({"args": vars(args), **partial}, f)

    results = lim.evaluate(model, tok, args.k, args.n, args.seed, settings, ids=args.ids,
                           batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, checkpoint=checkpoint)
    os.remove(base + ".partial.json")
    seconds = time.perf_counter() - t0
    report = {**run_metadata(args.device), "model": args.model or "SmolLM2-135M-Instruct (embedded .gguf)",
              "ids": args.ids, "k": args.k, "n": args.n, "seed": args.seed, "seconds": round(seconds),
              "settings": [s.label for s in settings], "note": args.note, **results}
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    table = write_tables(base, report)
    print(f"\n{table}\n\n{seconds:.0f} s; wrote {base}.{{json,md,png}}")
    return 0

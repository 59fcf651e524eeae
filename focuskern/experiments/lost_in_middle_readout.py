"""The readout's view of lost in the middle: how much attention each key-value pair gets by its position
(the U curve, measured with ``attention_readout`` -- no attention maps), and the two readout-based
levers of ``focuskern eval lost-in-middle``: target mass on the queried key and the position calibration.

Share of pair ``t`` at layer ``l``: ``mass[l, b, h, -1, t]``, the attention the last prompt query (the one
that writes the first token of the value) pays to the tokens of the pair's JSON line, averaged over heads
and cases.  Calibration (in the spirit of Hsieh et al. 2024, "Found in the Middle": attention = relevance
+ a position prior, and the prior can be measured and removed): ``c[t]`` = that share averaged over
layers, and pair ``t``'s tokens get ``lambda * log(mean_t c / c[t])`` in every layer -- what the pairs
would receive if position did not matter, measured on tuning cases, never on the reported ones.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from ..positions import entity_positions
from ..hf.readout import attention_readout
from . import lost_in_middle as lim
from .metadata import run_metadata


def pair_groups(tok, texts: list[str], pairs: list[list[tuple[str, str]]], seq_len: int,
                keys_only: bool = False) -> torch.Tensor:
    """[B, seq_len] int32: pair index ``t`` on the tokens of the ``t``-th JSON line of each row (only its
    key's tokens with ``keys_only``), -1 elsewhere (left-padded batch)."""
    lines = [[f'"{key}"' if keys_only else f'"{key}": "{value}"' for key, value in row] for row in pairs]
    groups = torch.full((len(texts), seq_len), -1, dtype=torch.int32)
    for b, (text, row) in enumerate(zip(texts, lines)):
        pos = entity_positions(tok, [text], [row], padding_side="left", per_occurrence=True)[0]
        pad = seq_len - len(tok(text)["input_ids"])
        for t, occurrences in enumerate(pos):
            groups[b, [pad + j for j in occurrences[0]]] = t
    return groups


def pair_shares(model, tok, k: int, n: int, seed: int, ids: str, batch_size: int = 10) -> dict:
    """``{"by_position": [layers, k] mean share per pair position, "gold": {label: [layers] share of the
    gold pair}}`` over ``n`` cases per gold position (the last prompt query, mean over heads and cases)."""
    from tqdm import tqdm

    cases = lim.make_cases(k, n, seed + k, ids)
    total, count, gold = 0.0, 0, {}
    bar = tqdm(total=n * len(lim.LABELS), unit="case", desc="readout", file=sys.stderr)
    for label, fraction in zip(lim.LABELS, lim.FRACTIONS):
        index = lim.gold_index(k, fraction)
        got = []
        for lo in range(0, n, batch_size):
            placed = [lim.place(pairs, index) for pairs in cases[lo:lo + batch_size]]
            keys = [pairs[index][0] for pairs in placed]
            texts = lim.prompt_texts(tok, [lim.case_prompt(p, key) for p, key in zip(placed, keys)], keys)
            inputs = tok(texts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
            groups = pair_groups(tok, texts, placed, inputs["input_ids"].shape[1])
            with torch.no_grad(), attention_readout(model, groups, k, prompt_rows="last") as readout:
                model(**inputs)
            share = readout.stacked("prompt")[:, :, :, -1].mean(2).cpu()  # [layers, B, k]
            got.append(share)
            bar.update(len(placed))
        share = torch.cat(got, 1)  # [layers, n, k]
        total, count = total + share.sum(1), count + share.shape[1]
        gold[label] = share[:, :, index].mean(1).tolist()
    bar.close()
    return {"by_position": (total / count).tolist(), "gold": gold}


def calibration(by_position: list[list[float]]) -> tuple[float, ...]:
    """``log(mean_t c / c[t])`` with ``c[t]`` the share of position ``t`` averaged over layers."""
    c = torch.tensor(by_position).mean(0).clamp_min(1e-9)
    return tuple((c.mean() / c).log().tolist())


def plot_shares(shares: dict, path: str, title: str) -> None:
    """(left) share per pair position, a few layers and the layer mean; (right) the gold pair's share
    by gold position (the U curve as the readout sees it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = torch.tensor(shares["by_position"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    pos = range(1, by.shape[1] + 1)
    for layer in range(0, by.shape[0], max(1, by.shape[0] // 5)):
        a.plot(pos, by[layer], alpha=0.5, label=f"layer {layer}")
    a.plot(pos, by.mean(0), color="k", lw=2, label="mean over layers")
    a.set_xlabel("pair position in the prompt")
    a.set_ylabel("share of the last query's attention")
    a.legend(fontsize=7)
    gold = torch.tensor([shares["gold"][label] for label in lim.LABELS])  # [5, layers]
    b.plot(lim.LABELS, gold.mean(1), marker="o", color="k", label="mean over layers")
    b.plot(lim.LABELS, gold.max(1).values, marker=".", ls="--", label="max over layers")
    b.set_xlabel("position of the gold pair")
    b.set_ylabel("share on the gold pair")
    b.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def readout_settings(model, tok, args) -> list:
    """Target-mass and calibrated settings for ``main``; the calibration comes from the readout on
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


def selected_head_settings(model, tok, args) -> list:
    """Target mass on the top-K heads of the readout's retrieval response (``--select-heads K``), measured
    on ``args.calibration_seed`` cases (written to ``<out>/<name>_heads.{json,png}``, with the
    :func:`~.head_selection.steering_effect` of each p and K on the same cases in ``<name>_heads_effect.*``):
    one row per ``--target`` p, scope and K, besides the rows of ``--target`` on ``--layers``."""
    from .head_selection import (as_pairs, effect_table, plot_response, retrieval_response, save_profile,
                                 steering_effect, top_heads)

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

"""The readout's view of lost in the middle: how much attention each key-value pair gets by its position
(the U curve, measured with ``attention_readout`` -- no attention maps), and the position calibration
derived from it (one of the readout-based levers of ``focuskern eval lost-in-middle``).

Share of pair ``t`` at layer ``l``: ``mass[l, b, h, -1, t]``, the attention the last prompt query (the one
that writes the first token of the value) pays to the tokens of the pair's JSON line, averaged over heads
and cases.  Calibration (in the spirit of Hsieh et al. 2024, "Found in the Middle": attention = relevance
+ a position prior, and the prior can be measured and removed): ``c[t]`` = that share averaged over
layers, and pair ``t``'s tokens get ``lambda * log(mean_t c / c[t])`` in every layer -- what the pairs
would receive if position did not matter, measured on tuning cases, never on the reported ones.
"""
from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from ..hf.readout import attention_readout
from . import lost_in_middle as lim
from .groups import pair_groups


def pair_shares(model, tok, k: int, n: int, seed: int, ids: str, batch_size: int = 10) -> dict:
    """``{"by_position": [layers, k] mean share per pair position, "gold": {label: [layers] share of the
    gold pair}}`` over ``n`` cases per gold position (the last prompt query, mean over heads and cases)."""
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

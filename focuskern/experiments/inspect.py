"""``focuskern inspect``: where did the model look?  Pictures from ``attention_readout`` (no attention maps).

(a) ``<name>_heads.png``: layer x head heat maps of the share of attention on the entities while
    generating (mean over the decoding steps), without and with focus (target mass ``p`` on them).
(b) ``<name>_strip.png``: the prompt's tokens coloured by the attention the generated answer paid to each
    (one group per prompt token on decoding steps, mean over layers, heads and steps).
(c) ``<name>_pairs.png``: a lost-in-the-middle case set (k=20 hex8 pairs): share per pair against its
    position (:mod:`.lost_in_middle_readout`).
(d) ``--long L``: one prefill of an L-token prompt with the readout on every layer, peak RSS and time
    against the bytes eager attention maps would need (``layers x heads x L^2`` float32, all layers
    held at once by ``output_attentions``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import time

import torch

from ..hf.attention import attention_focus
from ..hf.readout import attention_readout
from ..metadata import run_metadata
from ..positions import entity_span
from . import lost_in_middle_readout as lr
from .models import load_model
from .prompts import chat_texts

SUFFIXES = (".json", "_heads.png", "_strip.png", "_pairs.png")


def eager_map_bytes(config, L: int) -> int:
    """Bytes of ``output_attentions`` for one sequence of L tokens: layers x heads x L^2 float32."""
    return config.num_hidden_layers * config.num_attention_heads * L * L * 4


def eager_limit(config, budget: float) -> int:
    """The shortest prompt whose eager maps exceed ``budget`` bytes."""
    return math.ceil(math.sqrt(budget / (config.num_hidden_layers * config.num_attention_heads * 4)))


def generate_with_readout(model, tok, prompt: str, entities: list[str], target, max_new_tokens: int):
    """(answer, [layers, heads] mean share on the entities over decoding steps, [L] share per prompt
    token paid by the answer, tokens); ``target`` = None or a target mass on the entities."""
    texts = chat_texts(tok, [prompt])
    inputs = tok(texts, return_tensors="pt").to(model.device)
    L = inputs["input_ids"].shape[1]
    span = entity_span(tok, texts, entities, L)
    def focus():  # a fresh context manager per generation (one can be entered once)
        return attention_focus(model, target_mass=target, target_keys=span) if target else contextlib.nullcontext()

    kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    with focus(), attention_readout(model, torch.where(span, 0, -1).int(), 1, prompt_rows="last") as heads:
        out = model.generate(**inputs, **kw)
    # Per-token groups on decoding steps only (G = L: a prefill would be L x L); group 0 = the span when
    # a target is active (the op's steering group), which the strip then shows as one share.
    per_token = torch.arange(L, dtype=torch.int32)[None].clone()
    if target:
        per_token = torch.where(span, 0, per_token + 1).int()
    with focus(), attention_readout(model, per_token, L + 1, prompt_rows="none") as strip:
        model.generate(**inputs, **kw)
    share = strip.stacked("generated")[:, 0].mean((0, 1, 2))  # [L + 1]
    if target:
        share = torch.where(span[0], share[0] / span[0].sum(), share[1:])
    answer = tok.decode(out[0, L:], skip_special_tokens=True)
    grid = torch.cat([heads.stacked("prompt"), heads.stacked("generated")], dim=3)[:, 0, :, :, 0].mean(-1)
    tokens = [tok.decode([t]) for t in inputs["input_ids"][0]]
    return answer, grid, share[:L], tokens, span[0]


def plot_heads(grids: list[torch.Tensor], titles: list[str], path: str, suptitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = max(float(g.max()) for g in grids)
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 6), squeeze=False)
    for ax, g, title in zip(axes[0], grids, titles):
        im = ax.imshow(g.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="share of attention on the entities")
    fig.suptitle(suptitle, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_strip(tokens: list[str], share: torch.Tensor, span: torch.Tensor, path: str, title: str,
               width: int = 90) -> None:
    """The tokens wrapped into lines of ~``width`` characters, each on a patch coloured by its share
    (log scale); entity tokens are underlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    norm = LogNorm(vmin=max(float(share[share > 0].min()), 1e-5), vmax=float(share.max()))
    cmap = plt.get_cmap("magma_r")
    lines, col = [[]], 0
    for i, t in enumerate(tokens):
        text = t.replace("\n", "\u21b5")
        if col + len(text) > width:
            lines.append([])
            col = 0
        lines[-1].append((col, text, i))
        col += len(text) + 1
    fig, ax = plt.subplots(figsize=(14, 0.32 * len(lines) + 1.2))
    for row, line in enumerate(lines):
        for col, text, i in line:
            colour = cmap(norm(max(float(share[i]), norm.vmin)))
            ax.text(col, -row, text, fontsize=7, family="monospace", va="center",
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1.0),
                    color="white" if norm(max(float(share[i]), norm.vmin)) > 0.6 else "black",
                    fontweight="bold" if bool(span[i]) else "normal")
    ax.set_xlim(-1, width + 2)
    ax.set_ylim(-len(lines), 1)
    ax.axis("off")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.02, label="share (log)")
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def long_prompt_memory(model, tok, prompt: str, entities: list[str], L: int) -> dict:
    """One prefill of ~L tokens (the prompt repeated) with the readout of the entities on every layer."""
    unit = len(tok(prompt)["input_ids"])
    repeats = max(1, L // unit)
    text = chat_texts(tok, [" ".join([prompt] * repeats)])
    while repeats > 1 and len(tok(text)["input_ids"][0]) > L:  # whole repeats only: every entity span fits
        repeats -= 1
        text = chat_texts(tok, [" ".join([prompt] * repeats)])
    inputs = tok(text, return_tensors="pt").to(model.device)
    n = inputs["input_ids"].shape[1]
    span = entity_span(tok, text, entities, n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with torch.no_grad(), attention_readout(model, torch.where(span, 0, -1).int(), 1) as readout:
        model(**inputs, logits_to_keep=1)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tokens": n, "seconds": round(seconds, 1), "peak_rss_gib": round(rss / 2**30, 2),
            "peak_rss_before_gib": round(rss0 / 2**30, 2), "readout_bytes": readout.nbytes(),
            "eager_map_gib": round(eager_map_bytes(model.config, n) / 2**30, 1),
            "mean_share_last_query": float(readout.stacked("prompt")[:, 0, :, -1, 0].mean())}


def main(args) -> int:
    """Write ``<out>/<name>{.json,_heads.png,_strip.png[,_pairs.png]}``; existing files are kept (a
    ``ValueError`` names them) unless ``args.overwrite``."""
    base = os.path.join(args.out, args.name)
    existing = [base + s for s in SUFFIXES if os.path.exists(base + s)]
    if existing and not args.overwrite:
        raise ValueError(f"--name/--out: {existing} exist; choose another --name or --out, or pass --overwrite")
    model, tok = load_model(args.model, device=args.device, attn_implementation="focus")
    os.makedirs(args.out, exist_ok=True)
    report = {**run_metadata(args.device), "prompt": args.prompt, "entities": args.entities,
              "target": args.target, "eager_limit_tokens_24gib": eager_limit(model.config, 24 * 2**30)}
    runs = [generate_with_readout(model, tok, args.prompt, args.entities, t, args.max_new_tokens)
            for t in (None, args.target)]
    titles = ["without focus", f"target mass p={args.target:g} on the entities"]
    plot_heads([r[1] for r in runs], titles, base + "_heads.png",
               f"share of attention on {args.entities} while generating (mean over steps)")
    answer, _, share, tokens, span = runs[0]
    plot_strip(tokens, share, span, base + "_strip.png",
               "prompt tokens by the attention the answer paid to each (mean over layers, heads, "
               f"{args.max_new_tokens} steps; entities bold): " + answer[:80].replace("\n", " "))
    report["answers"] = {title: r[0] for title, r in zip(titles, runs)}
    report["share_on_entities"] = {title: float(r[1].mean()) for title, r in zip(titles, runs)}
    if args.pairs:
        shares = lr.pair_shares(model, tok, 20, args.pairs, args.seed, "hex8", batch_size=args.pairs)
        lr.plot_shares(shares, base + "_pairs.png", f"k=20 hex8 pairs, n={args.pairs} per gold position, "
                       f"seed {args.seed} + 20")
        report["pairs"] = shares
    if args.long:
        report["long"] = long_prompt_memory(model, tok, args.prompt, args.entities, args.long)
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({key: report[key] for key in report if key != "pairs"}, indent=1))
    return 0

"""Head selection from the readout: the heads whose share on a span responds
most to the span mattering, measured with ``attention_readout`` on tuning cases, then target mass on
those heads only (every other head left alone), against target mass on all heads.

Response of head ``(l, h)`` (no focus, ``mass`` of :func:`~focuskern.hf.readout.attention_readout`):

* lost in the middle (:func:`retrieval_response`): at the query that writes the value's first token,
  ``share(queried key's JSON tokens) - mean over the other keys of share(their tokens)`` -- a head that
  finds the key the question names;
* keywords (:func:`copy_response`, coverage cases, greedy answers): ``mean share on the entity spans at
  the steps whose next token starts an entity - mean share at the other steps`` -- a head that looks at
  an entity when the model is about to write it.

Both are means over tuning cases (seed 1000 + k for lost in the middle, the coverage cases' tuning half for
keywords); :func:`top_heads` keeps the ``K`` largest.  ``focuskern eval lost-in-middle|coverage|attention-keywords
--select-heads K`` use them (``attention-keywords`` reads a saved profile: ``--heads-from``).
"""
from __future__ import annotations

import contextlib
import json
import sys
import textwrap

import torch
from tqdm import tqdm

from ..hf.attention import attention_focus
from ..hf.readout import attention_readout
from ..positions import entity_span
from ..spec import FocusSpec
from . import lost_in_middle as lim
from .generation import Decoding
from .groups import as_pairs, pair_groups, top_heads
from .prompts import chat_inputs, chat_texts


def retrieval_response(model, tok, k: int, n: int, seed: int, ids: str, batch_size: int = 10) -> torch.Tensor:
    """[layers, heads] float32: the queried key's share minus the other keys' mean share at the last
    prompt query, averaged over ``n`` cases per gold position (cases of ``seed + k``)."""
    cases = lim.make_cases(k, n, seed + k, ids)
    total, count = 0.0, 0
    bar = tqdm(total=n * len(lim.LABELS), unit="case", desc="profile heads", file=sys.stderr)
    for fraction in lim.FRACTIONS:
        index = lim.gold_index(k, fraction)
        for lo in range(0, n, batch_size):
            placed = [lim.place(pairs, index) for pairs in cases[lo:lo + batch_size]]
            keys = [pairs[index][0] for pairs in placed]
            texts = lim.prompt_texts(tok, [lim.case_prompt(p, key) for p, key in zip(placed, keys)], keys)
            inputs = tok(texts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
            groups = pair_groups(tok, texts, placed, inputs["input_ids"].shape[1], keys_only=True)
            with torch.no_grad(), attention_readout(model, groups, k, prompt_rows="last") as readout:
                model(**inputs)
            share = readout.stacked("prompt")[:, :, :, -1].float().cpu()  # [layers, B, heads, k]
            others = (share.sum(-1) - share[..., index]) / (k - 1)
            total = total + (share[..., index] - others).sum(1)
            count += share.shape[1]
            bar.update(len(placed))
    bar.close()
    return total / count


def steering_effect(model, tok, k: int, n: int, seed: int, ids: str, heads: dict[int, list[int]], target: float,
                    batch_size: int = 10) -> dict:
    """What target mass ``target`` on the queried key in ``heads`` does at the query that writes the value,
    per gold position (``n`` cases of ``seed + k``), without -> with it: the selected heads' mean share on
    the queried key's tokens, every head's mean share on the gold value's tokens, and the probability of
    the value's first token.  ``{label: {"key": [base, steered], "value": [...], "p_first": [...]}}``."""
    chosen = torch.zeros(model.config.num_hidden_layers, model.config.num_attention_heads, dtype=torch.bool)
    for layer, hs in heads.items():
        chosen[layer, hs] = True
    cases = lim.make_cases(k, n, seed + k, ids)
    effect = {}
    for label, fraction in zip(lim.LABELS, lim.FRACTIONS):
        index = lim.gold_index(k, fraction)
        sums = {"key": [0.0, 0.0], "value": [0.0, 0.0], "p_first": [0.0, 0.0]}
        for lo in range(0, n, batch_size):
            placed = [lim.place(pairs, index) for pairs in cases[lo:lo + batch_size]]
            keys = [pairs[index][0] for pairs in placed]
            texts = lim.prompt_texts(tok, [lim.case_prompt(p, key) for p, key in zip(placed, keys)], keys)
            inputs = tok(texts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
            L = inputs["input_ids"].shape[1]
            line, key = pair_groups(tok, texts, placed, L), pair_groups(tok, texts, placed, L, keys_only=True)
            groups = torch.where(key == index, 0, torch.where(line == index, 1, -1)).int()
            first = torch.tensor([tok(p[index][1], add_special_tokens=False)["input_ids"][0] for p in placed])
            span = (groups == 0).to(model.device)
            for i, focus in enumerate((contextlib.nullcontext(),
                                       attention_focus(model, target_mass=target, target_keys=span, heads=heads))):
                with torch.no_grad(), focus, attention_readout(model, groups, 2, prompt_rows="last") as readout:
                    logits = model(**inputs).logits[:, -1].float().cpu()
                share = readout.stacked("prompt")[:, :, :, -1].float().cpu()  # [layers, B, heads, 2]
                sums["key"][i] += float(share[..., 0].permute(1, 0, 2)[:, chosen].mean(1).sum())
                sums["value"][i] += float(share[..., 1].mean((0, 2)).sum())
                sums["p_first"][i] += float(logits.softmax(-1).gather(1, first[:, None]).sum())
        effect[label] = {name: [v / n for v in pair] for name, pair in sums.items()}
    return effect


def effect_table(effect: dict) -> str:
    """Markdown of :func:`steering_effect`: one row per gold position."""
    lines = ["| gold position | share on the key, selected heads | share on the gold value, all heads "
             "| P(value's first token) |", "|---|---|---|---|"]
    for label, e in effect.items():
        lines.append(f"| {label} | " + " | ".join(f"{e[m][0]:.3f} → {e[m][1]:.3f}" for m in ("key", "value", "p_first"))
                     + " |")
    return "\n".join(lines)


def entity_starts(tokens: list[int], variants: list[list[tuple[int, ...]]]) -> list[bool]:
    """Per position ``t`` of ``tokens``: does some entity's token variant start there?"""
    seqs = {seq for entity in variants for seq in entity}
    return [any(tuple(tokens[t:t + len(s)]) == s for s in seqs) for t in range(len(tokens))]


def copy_response(model, tok, cases: list[dict], max_new_tokens: int, batch_size: int = 8) -> dict:
    """``{"response": [layers, heads] float32, "starts": steps that start an entity, "steps": all steps}``:
    mean share on the case's entity spans (its prompt's occurrences) at steps whose next token starts an
    entity, minus the mean at the other steps, pooled over the greedy answers of ``cases``."""
    decoding = Decoding(max_new_tokens=max_new_tokens)
    start_sum = other_sum = 0.0
    starts = others = 0
    bar = tqdm(total=len(cases), unit="case", desc="profile heads", file=sys.stderr)
    for lo in range(0, len(cases), batch_size):
        batch = cases[lo:lo + batch_size]
        prompts = [c["prompt"] for c in batch]
        inputs = chat_inputs(tok, prompts, model.device)
        L = inputs["input_ids"].shape[1]
        spans = entity_span(tok, chat_texts(tok, prompts), [c["entities"] for c in batch], L)
        groups = torch.where(spans, 0, -1).int()
        with torch.no_grad(), attention_readout(model, groups, 1, prompt_rows="last") as readout:
            out = model.generate(**inputs, max_new_tokens=decoding.max_new_tokens, do_sample=False,
                                 repetition_penalty=decoding.repetition_penalty, pad_token_id=tok.pad_token_id,
                                 no_repeat_ngram_size=decoding.no_repeat_ngram_size)[:, L:].cpu()
        share = torch.cat([readout.stacked("prompt"), readout.stacked("generated")], 3)[..., 0].float().cpu()
        steps = min(share.shape[3], out.shape[1])  # [layers, B, heads, steps]: row t predicts token t
        for b, case in enumerate(batch):
            tokens = out[b, :steps].tolist()
            live = out[b, :steps] != tok.pad_token_id
            is_start = torch.tensor(entity_starts(tokens, FocusSpec(case["entities"]).token_variants(tok)))
            start_sum = start_sum + share[:, b, :, :steps][..., is_start & live].sum(-1)
            other_sum = other_sum + share[:, b, :, :steps][..., ~is_start & live].sum(-1)
            starts += int((is_start & live).sum())
            others += int((~is_start & live).sum())
        bar.update(len(batch))
    bar.close()
    if not starts or not others:
        raise ValueError("cases: the greedy answers never (or only) start an entity; no response to measure")
    return {"response": start_sum / starts - other_sum / others, "starts": starts, "steps": starts + others}


def plot_response(response: torch.Tensor, counts: list[int], path: str, title: str) -> None:
    """Layer x head heat map of the response, the selected heads of the largest ``count`` outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(6, 8.5))
    lim_ = float(response.abs().max()) or 1.0
    im = ax.imshow(response, aspect="auto", cmap="RdBu_r", vmin=-lim_, vmax=lim_)
    colors = list(zip(sorted(counts, reverse=True), ("black", "lime", "orange")))
    for count, color in colors:
        for layer, h in as_pairs(top_heads(response, count)):
            ax.add_patch(Rectangle((h - 0.5, layer - 0.5), 1, 1, fill=False, ec=color, lw=1.5))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="response (share difference)")
    outlined = ", ".join(f"top {c} {color}" for c, color in colors)
    ax.set_title("\n".join(textwrap.wrap(title, 60)) + f"\noutlined: {outlined}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_profile(path: str, response: torch.Tensor, meta: dict) -> None:
    with open(path, "w") as f:
        json.dump({**meta, "response": response.tolist()}, f, indent=1)

"""``focuskern eval lost-in-middle``: synthetic key-value retrieval (Liu et al. 2023, §3) with and
without attention focus, and ``focuskern demo --attention`` (one case side by side).

A case is a JSON object of ``k`` random key -> value pairs (UUIDs, or 8 hex digits) and a question
asking for one key's value; the gold pair is moved to each of the positions first, 1/4, 1/2, 3/4, last (index
``round((k - 1) * f)``) with the other pairs in the same order, so the five positions of a case differ
only by where the gold pair sits.  Decoding is greedy on the chat template; a case is correct when the
gold value appears in the answer.  Focus boosts the tokens of the *queried key* wherever it occurs in
the prompt (what a user knows -- never where the answer is):
``key_bias[b, j] = beta`` on those tokens, in the chosen layers, all heads; generated keys get 0.
Two more levers (:mod:`.lost_in_middle_readout`): target mass ``p`` on the same tokens (their share of
each query's attention raised to at least ``p``), and a position calibration in the spirit of "Found in
the Middle" (Hsieh et al. 2024): every pair's tokens get ``lambda * log(mean share / share at its
position)``, the per-position shares measured once by the readout on tuning cases.
"""
from __future__ import annotations

import contextlib
import json
import random
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

from ..hf.attention import attention_focus
from ..positions import entity_positions, positions_to_key_bias
from .groups import as_map, pair_groups
from .metrics import format_difference, paired_bootstrap
from .models import load_model
from .prompts import chat_texts

FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
LABELS = ("first", "1/4", "1/2", "3/4", "last")
# Answer budget per id format: a UUID is 32 tokens of SmolLM2's tokenizer, 8 hex digits are 8; the
# answer stops earlier at its closing quote.
ANSWER_TOKENS = {"uuid": 40, "hex8": 12}
INSTRUCTION = "Extract the value corresponding to the specified key in the JSON object below."
# The assistant's reply starts with this (the model restates the key anyway; prefilling it halves the
# decode steps and leaves the value as the next thing to write).
ANSWER_PREFIX = 'The value corresponding to the key "{key}" is "'


@dataclass(frozen=True)
class Setting:
    """One row of the report: no focus (``beta`` None) or a boost ``beta`` in ``layers`` (None = all) on
    the queried key's tokens: every occurrence (``scope="all"``: the JSON data, the question, the
    answer prefix) or only the one in the JSON data (``scope="data"``)."""
    beta: Optional[float] = None
    layers: Optional[tuple[int, ...]] = None
    scope: str = "all"
    target: Optional[float] = None  # target mass on the key's tokens instead of a boost
    calibrate: Optional[float] = None  # strength lambda of the position calibration
    calibration: tuple[float, ...] = ()  # log(mean share / share) per pair position (from the readout)
    heads: tuple[tuple[int, int], ...] = ()  # (layer, head) pairs that get the target (empty: every head)

    def __post_init__(self):
        if self.scope not in ("all", "data"):
            raise ValueError(f"scope: expected 'all' or 'data', got {self.scope!r}")

    @property
    def label(self) -> str:
        if self.target is not None:
            where = f"top-{len(self.heads)} heads (readout)" if self.heads else f"layers {format_layers(self.layers)}"
            return f"target mass p={self.target:g}, {where}, {self.scope} occurrences"
        if self.calibrate is not None:
            return f"position calibration lambda={self.calibrate:g}, layers {format_layers(self.layers)}"
        if self.beta is None:
            return "baseline"
        return f"focus beta={self.beta:g}, layers {format_layers(self.layers)}, {self.scope} occurrences"


def format_layers(layers: Optional[tuple[int, ...]]) -> str:
    """``(8, 9, 10, 20)`` -> ``"8-10,20"``; None -> ``"all"``."""
    if layers is None:
        return "all"
    runs, start = [], layers[0]
    for prev, cur in zip(layers, layers[1:] + (None,)):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(runs)


def parse_layers(spec: str) -> Optional[tuple[int, ...]]:
    """``"all"`` -> None; ``"8-10,20"`` -> ``(8, 9, 10, 20)``; raises ``ValueError`` naming ``layers``."""
    if spec == "all":
        return None
    try:
        out = set()
        for part in spec.split(","):
            lo, dash, hi = part.partition("-")
            out.update(range(int(lo), int(hi if dash else lo) + 1))
    except ValueError:
        raise ValueError(f"layers: expected 'all' or ranges like '8-21,25', got {spec!r}") from None
    if not out or min(out) < 0:
        raise ValueError(f"layers: expected non-negative layer indices, got {spec!r}")
    return tuple(sorted(out))


def gold_index(k: int, fraction: float) -> int:
    return int((k - 1) * fraction + 0.5)


def make_cases(k: int, n: int, seed: int, ids: str = "uuid") -> list[list[tuple[str, str]]]:
    """``n`` cases of ``k`` (key, value) pairs; pair 0 is the gold one (moved by :func:`place`).

    ``ids="uuid"``: random UUID4 strings as in Liu et al.; ``"hex8"``: 8 random hex digits (a copy a
    135M-parameter model can make at all)."""
    if ids not in ANSWER_TOKENS:
        raise ValueError(f"ids: expected one of {sorted(ANSWER_TOKENS)}, got {ids!r}")
    rng = random.Random(seed)
    if ids == "uuid":
        new = lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))  # noqa: E731
    else:
        new = lambda: f"{rng.getrandbits(32):08x}"  # noqa: E731
    return [[(new(), new()) for _ in range(k)] for _ in range(n)]


def place(pairs: list[tuple[str, str]], index: int) -> list[tuple[str, str]]:
    """The gold pair ``pairs[0]`` moved to ``index``, the others in their order."""
    rest = pairs[1:]
    return rest[:index] + [pairs[0]] + rest[index:]


def case_prompt(pairs: list[tuple[str, str]], key: str) -> str:
    """Liu et al.'s key-value retrieval prompt (one pair per line)."""
    body = json.dumps(dict(pairs), indent=1)
    return f'{INSTRUCTION}\n\nJSON data:\n{body}\n\nKey: "{key}"\nCorresponding value:'


def key_bias(tok, texts: list[str], keys: list[str], setting: Setting, seq_len: int,
             beta: Optional[float] = None) -> torch.Tensor:
    """[B, seq_len] float32: ``beta`` (default ``setting.beta``) on the tokens of each row's key
    (left-padded batch)."""
    pos = entity_positions(tok, texts, [[key] for key in keys], padding_side="left", per_occurrence=True)
    if setting.scope == "data":  # the first occurrence is the JSON pair's; the others repeat the question
        pos = [[occurrences[:1] for occurrences in row] for row in pos]
    return positions_to_key_bias(pos, seq_len, setting.beta if beta is None else beta)


def prompt_texts(tok, prompts: list[str], keys: list[str]) -> list[str]:
    """The chat-templated prompts with the assistant's reply prefix (what the model is fed)."""
    return [t + ANSWER_PREFIX.format(key=key) for t, key in zip(chat_texts(tok, prompts), keys)]


def focus_block(model, tok, texts, keys, setting: Setting, seq_len: int, pairs=None):
    """The ``attention_focus`` block of ``setting`` for a batch (a null context for the baseline);
    ``pairs``: the placed pairs of each row (needed by the position calibration)."""
    if setting.target is not None:
        span = key_bias(tok, texts, keys, setting, seq_len, beta=1.0) != 0
        if setting.heads:
            return attention_focus(model, target_mass=setting.target, target_keys=span.to(model.device),
                                   heads=as_map(setting.heads))
        return attention_focus(model, target_mass=setting.target, target_keys=span.to(model.device),
                               layers=setting.layers)
    if setting.calibrate is not None:
        groups = pair_groups(tok, texts, pairs, seq_len)
        per_position = torch.tensor(setting.calibration) * setting.calibrate
        bias = torch.where(groups >= 0, per_position[groups.long().clamp_min(0)], 0.0)
        return attention_focus(model, bias.to(model.device), layers=setting.layers)
    if setting.beta is None:
        return contextlib.nullcontext()
    bias = key_bias(tok, texts, keys, setting, seq_len).to(model.device)
    return attention_focus(model, bias, layers=setting.layers)


def answer(model, tok, prompts: list[str], keys: list[str], setting: Setting, max_new_tokens: int,
           pairs=None) -> list[str]:
    """Greedy answers of a left-padded batch, with the setting's focus on each row's key."""
    texts = prompt_texts(tok, prompts, keys)
    inputs = tok(texts, return_tensors="pt", padding=True, padding_side="left").to(model.device)
    kw = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
              stop_strings='"', tokenizer=tok)
    with focus_block(model, tok, texts, keys, setting, inputs["input_ids"].shape[1], pairs):
        out = model.generate(**inputs, **kw)
    return tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate(model, tok, ks: list[int], n: int, seed: int, settings: list[Setting], *, ids: str = "uuid",
             batch_size: int = 10, max_new_tokens: Optional[int] = None, log=print, checkpoint=None) -> dict:
    """``{"cells": [{"k", "position", "setting", "correct": [bool] * n}], "examples": [...]}``;
    ``checkpoint(results_so_far)`` is called after every (k, position) cell (runs take hours on CPU)."""
    cells, examples = [], []
    budget = max_new_tokens or ANSWER_TOKENS[ids]
    bar = tqdm(total=len(ks) * len(LABELS) * n * len(settings), unit="answer", file=sys.stderr)
    for k in ks:
        cases = make_cases(k, n, seed + k, ids)
        for label, fraction in zip(LABELS, FRACTIONS):
            t0 = time.perf_counter()
            index = gold_index(k, fraction)
            hits = {s: [] for s in settings}
            for lo in range(0, n, batch_size):
                batch = cases[lo:lo + batch_size]
                placed = [place(pairs, index) for pairs in batch]
                prompts = [case_prompt(p, pairs[0][0]) for p, pairs in zip(placed, batch)]
                keys = [pairs[0][0] for pairs in batch]
                for s in settings:
                    answers = answer(model, tok, prompts, keys, s, budget, placed)
                    bar.update(len(batch))
                    hits[s] += [pairs[0][1] in a for pairs, a in zip(batch, answers)]
                    if lo == 0:
                        examples.append({"k": k, "position": label, "setting": s.label, "gold": batch[0][0][1],
                                         "answer": answers[0]})
            cells += [{"k": k, "position": label, "setting": s.label, "correct": hits[s]} for s in settings]
            log(f"  k={k:3d} {label:5s} " + "  ".join(f"{s.label}: {sum(hits[s])}/{n}" for s in settings)
                + f"  ({time.perf_counter() - t0:.0f} s)")
            if checkpoint is not None:
                checkpoint({"cells": cells, "examples": examples})
    bar.close()
    return {"cells": cells, "examples": examples}


def accuracies(results: dict) -> dict[tuple[int, str, str], float]:
    """``{(k, position, setting label): accuracy in %}`` of :func:`evaluate`'s cells."""
    return {(c["k"], c["position"], c["setting"]): 100 * sum(c["correct"]) / len(c["correct"])
            for c in results["cells"]}


def accuracy_table(results: dict, ks: list[int], labels: list[str], seed: int = 0) -> str:
    """Markdown: one row per (k, setting label), accuracy (%) per gold position, the mean, and the mean's
    paired difference from the ``"baseline"`` row (when there is one) in points with its 95% bootstrap
    interval over the cases (:func:`.metrics.paired_bootstrap`, seeded by ``seed``)."""
    acc = accuracies(results)
    hits = {(c["k"], c["setting"]): [] for c in results["cells"]}
    for c in results["cells"]:
        hits[c["k"], c["setting"]].append(c["correct"])
    lines = ["| k | setting | " + " | ".join(LABELS) + " | mean | vs baseline |", "|---" * (len(LABELS) + 4) + "|"]
    for k in ks:
        base = per_case_hits(hits.get((k, "baseline")))
        for label in labels:
            row = [acc[k, p, label] for p in LABELS]
            diff = None
            if base is not None and label != "baseline":
                diff = paired_bootstrap(per_case_hits(hits[k, label]), base, [len(LABELS)] * len(base), seed=seed)
            lines.append(f"| {k} | {label} | " + " | ".join(f"{a:.0f}" for a in row)
                         + f" | {sum(row) / len(row):.1f} | {format_difference(diff)} |")
    return "\n".join(lines)


def per_case_hits(positions: list[list[bool]] | None) -> list[int] | None:
    """Correct answers per case over the gold positions (``positions``: one ``correct`` list per position)."""
    return None if positions is None else [sum(case) for case in zip(*positions)]


def plot(results: dict, ks: list[int], labels: list[str], path: str, title: str) -> None:
    """Accuracy by gold position, one panel per k, one line per setting label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = accuracies(results)
    fig, axes = plt.subplots(1, len(ks), figsize=(5 * len(ks), 4), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], ks):
        for label in labels:
            ax.plot(LABELS, [acc[k, p, label] for p in LABELS], marker="o", label=label)
        ax.set_title(f"k = {k} pairs")
        ax.set_xlabel("position of the gold pair")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].set_ylim(-2, 102)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo_attention(args) -> int:
    """``focuskern demo --attention``: one case (seed 0, k = 20, gold pair in the middle) answered
    without and with focus on the queried key, side by side."""
    model, tok = load_model(args.model, device=args.device, attn_implementation="focus")
    k, beta, layers = 20, args.attention_beta, parse_layers(args.attention_layers)
    pairs = make_cases(k, 1, args.seed, args.ids)[0]
    key, value = pairs[0]
    index = gold_index(k, 0.5)
    placed = place(pairs, index)
    settings = [Setting(), Setting(beta, layers, args.attention_scope)]
    answers = [answer(model, tok, [case_prompt(placed, key)], [key], s, ANSWER_TOKENS[args.ids])[0] for s in settings]
    width = 52
    print(f"Key-value retrieval, {k} {args.ids} pairs, gold pair at position {index + 1} of {k}.")
    print(f'Question: value of key "{key}"\nGold value: {value}\n')
    print(f"{'without focus':<{width}} | with focus ({settings[1].label.removeprefix('focus ')})")
    print("-" * width + "-+-" + "-" * width)
    cols = [textwrap.wrap(ANSWER_PREFIX.format(key=key) + a, width) for a in answers]
    for i in range(max(map(len, cols))):
        left, right = (c[i] if i < len(c) else "" for c in cols)
        print(f"{left:<{width}} | {right}")

    def verdict(said: str) -> str:
        if value in said:
            return "correct"
        # Name the other pair's key or value the answer copied, if any: it shows where the model looked.
        source = [f"{what} of pair {i + 1}" for i, pair in enumerate(placed)
                  for what, id_ in zip(("key", "value"), pair) if id_ in said]
        return f"wrong ({source[0]})" if source else "wrong"

    verdicts = [verdict(a) for a in answers]
    print(f"{verdicts[0]:<{width}} | {verdicts[1]}")
    return 0

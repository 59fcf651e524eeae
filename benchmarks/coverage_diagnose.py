"""Why does the ``defaults`` policy leave an entity unsaid?  One answer per entity the answer lacks.

For every case of a split (the tune half: diagnose only where you may tune), one generation per mode
(greedy, ``--seeds``) under the seed's decoding with the defaults policy; each step records, before and
after the focus processor, the logits of the entity's start tokens (the slot table's ``first`` lists)
and which entities the state holds said.  An entity absent from the answer is classed as

* ``given up``: the state marked it said (a banned continuation gave it up) though the text lacks it;
* ``start banned``: while it was unsaid, no start token ever had a finite logit (no_repeat_ngram_size);
* ``never pushed``: a start was open but never boosted (a continuation of another entity was alive,
  or the row was never in the start's push context);
* ``pushed, out-voted``: a start was boosted at some step, the model took another token;
* ``entered, left``: a start token was written, the entity not finished and not given up.

Usage: ``PYTHONPATH=. python benchmarks/coverage_diagnose.py --cases zh --split tune [--seeds 0]``.
"""
from __future__ import annotations

import argparse
import collections
import json

import torch
from transformers import LogitsProcessor

from focuskern.experiments.cases import load_cases
from focuskern.experiments.coverage import POLICIES
from focuskern.experiments.generation import Decoding, budget_of, generate
from focuskern.experiments.metrics import entity_counts
from focuskern.experiments.models import load_model
from focuskern.experiments.prompts import chat_inputs
from focuskern.ops.layout import N_PUSH_CONTEXTS, S_


class Tap(LogitsProcessor):
    """Records a copy of the scores it sees (row 0), passes them through."""

    def __init__(self):
        self.seen = []

    def __call__(self, input_ids, scores):
        self.seen.append(scores[0].clone())
        return scores


class SaidTap(LogitsProcessor):
    """Records the focus state's said entities of row 0 after each step."""

    def __init__(self, focus):
        self.focus, self.said = focus, []

    def __call__(self, input_ids, scores):
        self.said.append(set(self.focus.state.said(0)))
        return scores


def start_tokens(state) -> dict[int, set[int]]:
    """Entity index -> every token that starts it (any push context)."""
    program = state.programs[state._row_pid[0]].program
    starts = collections.defaultdict(set)
    for row in program.slot:
        for pc in range(N_PUSH_CONTEXTS):
            lo, hi = row[S_.FIRST_LO0 + 2 * pc], row[S_.FIRST_HI0 + 2 * pc]
            for e in program.ents[lo:hi]:
                starts[int(e)].add(int(row[S_.TOKEN]))
    return starts


def diagnose(model, tok, case, decoding, seed, backend: str = "auto"):
    budget = budget_of(model, decoding.max_new_tokens)
    [focus] = POLICIES["defaults"](case["entities"], budget, tok, 1.0)
    focus.backend = backend
    before, after, said = Tap(), Tap(), SaidTap(focus)
    inputs = chat_inputs(tok, [case["prompt"]])
    out, _ = generate(model, tok, inputs, [before, focus, after, said], decoding, seed)
    row = out[0].tolist()
    text = tok.decode(out[0], skip_special_tokens=True)
    counts = entity_counts(text, case["entities"])
    starts = start_tokens(focus.state)
    verdicts = {}
    for e, entity in enumerate(case["entities"]):
        if counts[entity]:
            continue
        toks = sorted(starts.get(e, ()))
        unsaid = [i for i in range(len(before.seen)) if i == 0 or e not in said.said[i - 1]]
        finite = [i for i in unsaid if any(before.seen[i][t] > float("-inf") for t in toks)]
        boosted = [i for i in finite if any(after.seen[i][t] > before.seen[i][t] for t in toks)]
        entered = [i for i in unsaid if i < len(row) and row[i] in toks]
        if said.said and e in said.said[-1]:
            verdict = "given up"
        elif not finite:
            verdict = "start banned"
        elif entered:
            verdict = "entered, left"
        elif boosted:
            verdict = "pushed, out-voted"
        else:
            verdict = "never pushed"
        verdicts[entity] = {"verdict": verdict, "starts": [tok.decode([t]) for t in toks],
                            "steps_unsaid": len(unsaid), "steps_start_open": len(finite),
                            "steps_boosted": len(boosted)}
    return text, verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="zh")
    ap.add_argument("--split", default="tune")
    ap.add_argument("--seeds", type=int, nargs="*", default=[])
    ap.add_argument("--max-new-tokens", type=int, default=120)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--backend", default="auto", help="the focus state's backend (auto: the C++ one on a CPU)")
    ap.add_argument("--out", default=None, help="write every verdict and answer to this JSON file")
    args = ap.parse_args()
    model, tok = load_model()
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    tally, records = collections.Counter(), []
    for case in load_cases(args.split, args.cases)[:args.limit]:
        for seed in [None, *args.seeds]:
            text, verdicts = diagnose(model, tok, case, decoding, seed, args.backend)
            tally.update(v["verdict"] for v in verdicts.values())
            tally["said"] += len(case["entities"]) - len(verdicts)
            records.append({"case": case["id"], "seed": seed, "text": text, "unsaid": verdicts})
            print(case["id"], seed, json.dumps(verdicts, ensure_ascii=False), flush=True)
    print(dict(tally))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tally": dict(tally), "records": records}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()

"""Seeded fuzz focus objects (issue 21): what a client may put in ``"focus"``, each case with the field a
refusal must name (``None``: a valid focus).

:func:`generate` draws a valid focus (string entities with Unicode edge cases -- RTL, zero-width,
combining marks, emoji, CJK, digits -- and token-id entities inside the vocabulary; random valid values
of every field) and breaks at most one field of it: wrong types, nested lists, NaN/inf in every float
field, huge and negative numbers, ids at 2**31-1, 2**31, 2**32, 2**63, 2**64-1, empty, blank, enormous
and lone-surrogate strings, unknown keys, a focus that is not an object or not JSON.  Given server
``limits`` it also draws foci just over each limit (refusals naming the limit's variable).

Run as a script it is the library-level worker of ``tests/test_fuzz_focus.py`` (one process per
backend, so that a crash fails the test instead of the test run)::

    python tests/fuzz_focus.py --backend cpp --seed 1 --cases 300

It builds each case through ``focus_spec`` and a ``FocusState`` over a byte tokenizer, runs three
steps and checks: a bad case raises ``TypeError``/``ValueError`` naming its field; a good one changes no
logit outside its entity tokens and end-of-text (with ``alpha > 0`` they are all scaled by one factor
in [0, 1]), leaves a row without focus untouched, and keeps every logit finite.  Then the stateless
op's id arguments (int64 ids past int32, floats, bools, lists) must be refused by name.  It prints
``case <i>`` before each case and one JSON line of failures at the end.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass
from typing import Any, Optional

NAN, INF = float("nan"), float("inf")
EDGE_IDS = (2**31 - 1, 2**31, 2**32, 2**32 + 7, 2**40, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**31), -(2**63))
WORDS = ("healthcare", "autonomous driving", "Tokyo", "東京タワー", "人工智能", "3 billion", "1984",
         "שלום עולם", "مرحبا", "e\u0301te\u0301", "zero\u200bwidth", "a\u200db", "🚀 rocket", "👩‍👩‍👧",
         "Ünïcödé", "The quick fox", "x", "naïve café", "\u202eRTL override", "tab\tand\nnewline", "﷽")
BAD_NUMBERS = (NAN, INF, -INF, 1e300, -1e300, 10**400, 2**64 - 1, "4.0", None, True, [1.0], {"v": 1})
SHIFTS = ("bias", "continuation_bias", "force", "eos_damp", "slack")


@dataclass
class Case:
    focus: Any                 # what the client sends as "focus" (an object, or JSON text)
    bad: Optional[str] = None  # what the refusal must name; None: valid
    what: str = ""             # the mutation, for failure reports


def valid_focus(rng: random.Random, vocab: int) -> dict:
    """A valid focus: 1-6 entities, strings and token-id variant lists, and valid values for a random
    subset of the other fields."""
    entities = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.6:
            entities.append(rng.choice(WORDS))
        else:
            entities.append([[rng.randrange(vocab) for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(1, 3))])
    focus: dict = {"entities": entities}
    options = {
        "bias": lambda: rng.choice([0.0, 1.5, 4.0, -2.0, 9999.0]),
        "continuation_bias": lambda: rng.choice([None, 0.5, 8.0]),
        "alpha": lambda: rng.choice([0.0, 0.0, 0.3, 1.0]),
        "decay": lambda: rng.choice(["constant", None, {"kind": "ramp", "horizon": 5, "floor": 0.1},
                                     {"kind": "exponential", "horizon": 1e-6}, {"kind": "cutoff", "horizon": 2},
                                     {"kind": "linear", "horizon": 1e12}, {"kind": "cosine", "horizon": 3.5}]),
        "mode": lambda: rng.choice(["phrase", "tokens"]),
        "satisfy": lambda: rng.choice(["once", "never"]),
        "variants": lambda: rng.choice(["spaced", "default", "as_written"]),
        "boost_starts_in_match": lambda: rng.random() < 0.5,
        "max_new_tokens": lambda: rng.choice([None, 1, 5, 2**31 - 1]),
        "slack": lambda: rng.choice([1e-6, 2.0, 24.0, 1e4]),
        "force": lambda: rng.choice([0.0, 12.0]),
        "eos_damp": lambda: rng.choice([0.0, 10.0]),
        "eos_token_id": lambda: rng.choice([None, vocab - 1, rng.randrange(vocab)]),
    }
    for name in rng.sample(sorted(options), rng.randint(0, len(options))):
        focus[name] = options[name]()
    return focus


def _nested(rng: random.Random, depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def _bad_entity(rng: random.Random, vocab: int, huge: int) -> tuple[Any, str]:
    """One malformed entity and the mutation's description."""
    pick = rng.randrange(-3, 12)  # ids at the edges four times as often as the others
    if pick <= 0:
        t = rng.choice(EDGE_IDS + (vocab, vocab + 1))
        return ([[t]] if rng.random() < 0.5 else [[rng.randrange(vocab), t]]), f"id {t}"
    if pick == 1:
        return rng.choice(["", " ", "\t\n", "\u3000"]), "blank string"
    if pick == 2:
        return rng.choice(["\ud800", "ok\udfff", "\udc00\ud800"]), "lone surrogate"
    if pick == 3:
        return _nested(rng, rng.randint(3, 40), rng.randrange(vocab)), "nested too deep"
    if pick == 4:
        return rng.choice([3, 2.5, NAN, INF, None, True, {"text": "x"}]), "not a string or list"
    if pick == 5:
        return [[rng.choice([1.0, NAN, INF, True, "7", None])]], "non-int id"
    if pick == 6:
        return rng.choice([[], [[]], [[], [1]]]), "empty variants"
    if pick == 7:
        return ["abc"], "string variant"
    if pick == 8:
        return [[[1, 2]]], "variant of lists"
    if pick == 9:
        return [rng.randrange(vocab)], "bare id list"
    if pick == 10:
        return [[vocab - 1 + rng.choice([1, 2**20])]], "id past the vocabulary"
    return [["x" * huge]], "string inside variants"


def mutate(rng: random.Random, focus: dict, vocab: int, huge: int) -> Case:
    """``focus`` with one field broken (or the whole object), as a :class:`Case`."""
    pick = rng.randrange(15)
    f = dict(focus)
    if pick == 0:
        value = rng.choice([["x"], "not json {", "42", "null", 7, NAN, True, "[" * 3000 + "]" * 3000, ""])
        return Case(value, "focus", f"focus = {str(value)[:20]!r}")
    if pick == 1:
        key = rng.choice(["colour", "Bias", "entity", "", "decay.kind"])
        f[key] = 1
        return Case(f, "focus." + key if key else "focus.", f"unknown key {key!r}")
    if pick == 2:
        del f["entities"]
        return Case(f, "entities", "no entities")
    if pick == 3:
        f["entities"] = rng.choice(["healthcare", 5, None, {"a": 1}, [], True])
        return Case(f, "entities", f"entities = {f['entities']!r}")
    if pick in (4, 5, 14):
        entity, what = _bad_entity(rng, vocab, huge)
        ents = list(f["entities"])
        i = rng.randint(0, len(ents))
        ents.insert(i, entity)
        f["entities"] = ents
        return Case(f, f"entities[{i}]", what)
    if pick == 6:
        name = rng.choice(SHIFTS)
        f[name] = value = rng.choice(BAD_NUMBERS + (10001.0, -10001.0) + ((-1.0, 0.0, 1e-7) if name == "slack" else ()))
        if name == "continuation_bias" and value is None:
            return Case(f, None, "continuation_bias None (valid)")
        if name in ("force", "eos_damp") and value is None:
            f[name] = -1.0
        return Case(f, name, f"{name} = {str(f[name])[:20]}")
    if pick == 7:
        f["alpha"] = value = rng.choice([NAN, INF, -0.1, 1.5, True, "0.5", None, 10**400])
        return Case(f, "alpha", f"alpha = {str(value)[:20]}")
    if pick == 8:
        decay = rng.choice([
            3, [1, 2], "ramp", {"kind": "sigmoid"}, {"kind": None}, {"kind": "ramp"}, {"kind": "ramp", "span": 3},
            {"kind": "ramp", "horizon": rng.choice([NAN, INF, 0, -1, 1e-300, 1e300, 10**400, "5", None, True])},
            {"kind": "constant", "horizon": rng.choice([NAN, INF, -INF])},
            {"kind": "linear", "horizon": 5, "floor": rng.choice([NAN, INF, -0.5, 2, "0", None])}])
        f["decay"] = decay
        return Case(f, "decay", f"decay = {str(decay)[:40]}")
    if pick == 9:
        name = rng.choice(["mode", "satisfy", "variants"])
        f[name] = value = rng.choice(["", "PHRASE", "odd", 1, None, ["phrase"], NAN])
        return Case(f, name, f"{name} = {value!r}")
    if pick == 10:
        f["boost_starts_in_match"] = value = rng.choice([1, 0, "true", None, NAN])
        return Case(f, "boost_starts_in_match", f"boost_starts_in_match = {value!r}")
    if pick == 11:
        f["max_new_tokens"] = value = rng.choice([0, -1, 2**31, 2**32, 2**63, 2**64 - 1, 1.5, NAN, INF, True, "5"])
        return Case(f, "max_new_tokens", f"max_new_tokens = {value!r}")
    if pick == 12:
        value = rng.choice([-1, vocab, 2**31 - 1, 2**31, 2**32 + 7, 2**63, 2**64 - 1, 1.5, NAN, True, "2"])
        f["eos_token_id"], f["max_new_tokens"] = value, 8  # with a budget, so that end of text is used
        return Case(f, "eos_token_id", f"eos_token_id = {value!r}")
    return Case(f, None, "valid")


def over_limits(rng: random.Random, vocab: int, limits: dict) -> Case:
    """A focus just over one of the server's ``limits`` ({variable: value})."""
    name = rng.choice(sorted(limits))
    n = limits[name]
    if name == "FOCUSKERN_MAX_ENTITIES":
        return Case({"entities": [f"w{i}" for i in range(n + 1)]}, name, "entities over the limit")
    if name == "FOCUSKERN_MAX_ENTITY_CHARS":
        entity = "ab" * (n // 2 + 1) if rng.random() < 0.5 else [[rng.randrange(vocab) for _ in range(n + 1)]]
        return Case({"entities": ["ok", entity]}, name, "entity over the limit")
    return Case({"entities": ["ok"], "bias": 1.0, "mode": "phrase" + " " * n}, name, "focus over the byte limit")


def generate(rng: random.Random, n: int, vocab: int, *, limits: Optional[dict] = None, huge: int = 3000) -> list[Case]:
    """``n`` cases: about a third valid; with ``limits`` a tenth over one of them; some sent as JSON
    text (how HTTP carries them).  ``huge``: characters of the enormous strings."""
    cases = []
    for _ in range(n):
        base = valid_focus(rng, vocab)
        if rng.random() < 0.3:
            case = Case(base, None, "valid")
        elif limits and rng.random() < 0.12:
            case = over_limits(rng, vocab, limits)
        else:
            case = mutate(rng, base, vocab, huge)
            if case.bad is None and rng.random() < 0.3:  # a valid focus with an enormous entity
                case.focus["entities"] = case.focus["entities"] + ["ж" * huge]
        if isinstance(case.focus, dict) and rng.random() < 0.5:
            case.focus = json.dumps(case.focus)
        cases.append(case)
    return cases


# ---------------------------------------------------------------------- library worker
class ByteTokenizer:
    """UTF-8 bytes as token ids (0-255); end of text is ``vocab - 1``."""

    def __init__(self, vocab: int):
        self.eos_token_id = vocab - 1

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(t for t in ids if 0 <= t < 256).decode("utf-8", "replace")

    @property
    def byte_decoder(self) -> dict[str, int]:  # byte-level pieces, as GPT-2's (read by focuskern.text)
        from focuskern.text import byte_decoder
        return byte_decoder()

    def convert_ids_to_tokens(self, ids: list[int]) -> list:
        pieces = {b: c for c, b in self.byte_decoder.items()}
        return [pieces.get(t) for t in ids]


def check_case(case: Case, backend: str, vocab: int, rng: random.Random) -> Optional[str]:
    """``None`` if the library treats ``case`` right, else what went wrong."""
    import torch

    from focuskern import FocusState
    from focuskern.vllm import focus_spec

    tokenizer = ByteTokenizer(vocab)
    try:
        spec = focus_spec(case.focus)
        state = FocusState([spec, None, spec], vocab, "cpu", tokenizer, backend=backend)
    except (TypeError, ValueError) as e:
        if case.bad is None:
            return f"valid focus refused: {type(e).__name__}: {str(e)[:200]}"
        return None if case.bad in str(e) else f"refusal does not name {case.bad!r}: {str(e)[:200]}"
    except Exception as e:  # noqa: BLE001 -- anything else is a failure to report
        return f"{type(e).__name__} instead of a named refusal: {str(e)[:200]}"
    accepted = f"bad focus accepted (should name {case.bad!r}); " if case.bad is not None else ""
    try:  # a bad focus accepted still runs: whether the kernels survive it is the point
        why = _steps(state, spec, tokenizer, vocab, rng)
    except Exception as e:  # noqa: BLE001
        why = f"{type(e).__name__} in a step: {str(e)[:200]}"
    return accepted + why if accepted or why else None


def _steps(state, spec, tokenizer: ByteTokenizer, vocab: int, rng: random.Random) -> Optional[str]:
    """Three steps of a good focus; what broke, or ``""``."""
    import torch

    ids = {t for entity in spec.token_variants(tokenizer) for seq in entity for t in seq}
    ids.add(spec.eos_token_id if spec.eos_token_id is not None else tokenizer.eos_token_id)
    allowed = sorted(t for t in ids if 0 <= t < vocab)  # (a bad id accepted still reaches the kernels)
    variant = rng.choice(rng.choice(spec.token_variants(tokenizer)))
    others = torch.ones(vocab, dtype=torch.bool)
    others[allowed] = False
    last = None
    for step in range(3):
        logits = torch.randn(3, vocab) * 5
        logits[2] = logits[0]
        before = logits.clone()
        state.apply_(logits, last)
        if not torch.isfinite(logits).all():
            return f"step {step}: a logit became non-finite"
        if not torch.equal(logits[1], before[1]):
            return f"step {step}: the row without focus changed"
        if not torch.equal(logits[0], logits[2]):
            return f"step {step}: two rows with one spec and one history differ"
        x, y = before[0, others], logits[0, others]
        k = int(x.abs().argmax())
        scale = float(y[k] / x[k])
        if not (-1e-6 <= scale <= 1 + 1e-6 and torch.allclose(y, scale * x, rtol=1e-5, atol=1e-5)):
            return f"step {step}: a logit outside the entity tokens changed (scale {scale})"
        if spec.alpha == 0 and not torch.equal(x, y):
            return f"step {step}: alpha = 0 and a logit outside the entity tokens changed"
        # Mostly the tokens of one variant in order, so that continuations are pushed too.
        token = variant[step] if step < len(variant) and 0 <= variant[step] < vocab else rng.randrange(vocab)
        last = torch.tensor([token, rng.randrange(vocab), token])
    return ""


def check_op(backend: str) -> list[str]:
    """The stateless op refuses ids it cannot take, by name, and never casts them."""
    import torch

    from focuskern.ops import focus_logits_

    B, V = 2, 50
    base = dict(row_offsets=torch.tensor([0, 1, 2], dtype=torch.int32), token_ids=torch.tensor([3, 4], dtype=torch.int32),
                token_bias=torch.ones(2), alpha=torch.zeros(B), decay=torch.zeros(B, 3), step=torch.zeros(B, dtype=torch.int32))
    bad = [("token_ids", torch.tensor([3, 2**32 + 7])), ("token_ids", torch.tensor([3, 2**31 - 1], dtype=torch.int32)),
           ("token_ids", torch.tensor([3, -1], dtype=torch.int32)), ("token_ids", torch.tensor([3.0, NAN])),
           ("token_ids", torch.tensor([True, False])), ("token_ids", [3, 4]), ("row_offsets", torch.tensor([0, 1, 2])),
           ("row_offsets", torch.tensor([0, 1, 2**31 - 1], dtype=torch.int32)), ("row_offsets", [0, 1, 2]),
           ("row_offsets", torch.tensor([0.0, 1.0, NAN])), ("token_bias", torch.tensor([1.0, NAN])),
           ("step", torch.tensor([0, -1], dtype=torch.int32)), ("decay", torch.tensor([[NAN, 1.0, 0.0]] * 2))]
    failures = []
    for name, value in bad:
        logits = torch.randn(B, V)
        before = logits.clone()
        try:
            focus_logits_(logits, **{**base, name: value}, backend=backend)
            failures.append(f"op: {name}={value!r} accepted")
        except (TypeError, ValueError) as e:
            if name not in str(e) or not torch.equal(logits, before):
                failures.append(f"op: {name}={value!r}: {e} (logits changed: {not torch.equal(logits, before)})")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=300)
    args = parser.parse_args()
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    failures = []
    for i, case in enumerate(generate(rng, args.cases, args.vocab, huge=rng.choice([300, 3000]))):
        print(f"case {i}: {case.what}", flush=True)
        why = check_case(case, args.backend, args.vocab, rng)
        if why is not None:
            failures.append(f"case {i} ({case.what}; focus {str(case.focus)[:120]}): {why}")
    failures += check_op(args.backend)
    print(json.dumps({"failures": failures}), flush=True)


if __name__ == "__main__":
    sys.exit(main())

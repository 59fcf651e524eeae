"""The vLLM adapter without an engine: random BatchUpdate sequences (V1) and slot schedules (Model
Runner V2) against a dict model of the requests; the focus dictionary's validation.

Runs without vLLM (BatchUpdate and MoveDirectionality are mirrored when it is not installed)."""
import enum
import json
import random
import subprocess
import sys
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pytest
import torch

import focuskern as fk
from focuskern.decay import KIND_NAMES
from focuskern.vllm import focus_spec, spec_from_params
from focuskern.vllm import rows as rows_module
from focuskern.vllm.rows import BatchFocus
from focuskern.vllm.slots import SlotFocus
from cases import next_token, random_spec
from reference import brute_boosts

try:
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
except ImportError:
    class MoveDirectionality(enum.Enum):
        UNIDIRECTIONAL = enum.auto()
        SWAP = enum.auto()

    @dataclass(frozen=True)
    class BatchUpdate:
        batch_size: int
        removed: Sequence[int]
        added: Sequence[tuple]
        moved: Sequence[tuple]

ALPHABET = 9
VOCAB = ALPHABET + 3


@dataclass
class Params:
    """What the adapter reads of ``vllm.SamplingParams``."""
    extra_args: Optional[dict]
    max_tokens: Optional[int] = None
    eos_token_id: Optional[int] = None


@dataclass
class Request:
    spec: Optional[fk.FocusSpec]  # what the request should be steered by (None: untouched)
    output: list                  # its live output list, shared with the adapter like vLLM's
    params: Params


def as_focus(spec: fk.FocusSpec) -> dict:
    """The JSON form of a token-id spec (what a client sends)."""
    kind, horizon, floor = spec.decay.as_triple()
    return {"entities": [[list(v) for v in e] for e in spec.entities], "bias": spec.bias,
            "continuation_bias": spec.continuation_bias, "mode": spec.mode, "satisfy": spec.satisfy,
            "boost_starts_in_match": spec.boost_starts_in_match, "variants": spec.variants,
            "decay": {"kind": KIND_NAMES[int(kind)], "horizon": horizon, "floor": floor},
            "max_new_tokens": spec.max_new_tokens, "slack": spec.slack, "force": spec.force,
            "eos_damp": spec.eos_damp, "eos_token_id": spec.eos_token_id}


def new_request(rng: random.Random) -> Request:
    kind = rng.random()
    if kind < 0.25:
        return Request(None, [], Params(None if rng.random() < 0.5 else {"other": 1}))
    spec = random_spec(rng, ALPHABET)
    focus = as_focus(spec)
    if kind < 0.3:  # passes validation, does not fit the model: served unfocused
        focus["entities"].append([[VOCAB + 5]])
        spec = None
    output = []
    if rng.random() < 0.2:  # a resumed request joins with tokens already generated
        for _ in range(rng.randint(1, 6)):
            output.append(next_token(rng, spec, output, ALPHABET))
    return Request(spec, output, Params({"focus": focus}))


def random_update(rng: random.Random, rows: list) -> BatchUpdate:
    """What vLLM's InputBatch emits: removals leave holes, adds fill the lowest holes then append,
    condense moves the last rows into the remaining holes; sometimes a swap (batch reordering).
    ``removed`` lists what vLLM lists (the holes nothing refilled) or, as the interface allows, every
    removed row."""
    live = [r for r, req in enumerate(rows) if req is not None]
    removed = sorted(rng.sample(live, rng.randint(0, min(3, len(live)))), reverse=True)
    for r in removed:
        rows[r] = None
    holes = sorted(removed)
    added = []
    for _ in range(rng.randint(0, 3)):
        row = holes.pop(0) if holes else len(rows)
        if row == len(rows):
            rows.append(None)
        req = new_request(rng)
        rows[row] = req
        added.append((row, req.params, None, req.output))
    moved = []
    while holes:
        last = max(r for r, req in enumerate(rows) if req is not None) if any(rows) else -1
        hole = holes.pop(0)
        if hole >= last:
            break
        rows[hole], rows[last] = rows[last], None
        moved.append((last, hole, MoveDirectionality.UNIDIRECTIONAL))
    if rng.random() < 0.5:
        removed = [r for r in removed if r >= len(rows) or rows[r] is None]
    while rows and rows[-1] is None:
        rows.pop()
    if len(rows) > 1 and rng.random() < 0.3:
        a, b = rng.sample(range(len(rows)), 2)
        rows[a], rows[b] = rows[b], rows[a]
        moved.append((a, b, MoveDirectionality.SWAP))
    return BatchUpdate(batch_size=len(rows), removed=removed, added=added, moved=moved)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """vLLM's CPU worker serves with one torch thread; with more, each tiny launch of these tests pays
    an OpenMP fork/join (milliseconds on a busy 2-vCPU machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def expected(req: Optional[Request]) -> dict:
    return {} if req is None or req.spec is None else brute_boosts(req.spec, req.output)


def test_random_batch_update_sequences_match_a_dict_model():
    """10 000 sequences; after every update and decoding step each row's boosts and step match the
    request it holds (its own tokens only, whatever moves, swaps, holds and replays happened)."""
    rng = random.Random(random.randrange(2**31))
    for _ in range(10_000):
        focus = BatchFocus(VOCAB, "cpu")
        rows: list = []
        for _ in range(rng.randint(1, 4)):
            focus.update(random_update(rng, rows))
            for req in rows:  # a decoding step: most rows got a token, some are still prefilling
                if rng.random() < 0.8:
                    req.output.append(next_token(rng, req.spec, req.output, ALPHABET))
                if rng.random() < 0.03 and req.output:  # vLLM discarded tokens
                    del req.output[rng.randrange(len(req.output)):]
            logits = focus.apply(torch.zeros(len(rows), VOCAB))
            for r, req in enumerate(rows):
                got = {t: v for t, v in enumerate(logits[r].tolist()) if v}
                assert got == pytest.approx(expected(req), abs=1e-5), f"row {r}"
                if req.spec is not None:
                    assert int(focus.state.step[r]) == len(req.output)


def test_large_foci_are_built_off_the_step_and_catch_up(monkeypatch):
    """Every focus built off the step loop (threshold 0), each build finishing at a random later step
    (or failing: an id past the vocabulary).  Until it finishes the row is untouched; from then on its
    boosts are the dict model's and its step the request's length (the tokens generated meanwhile
    replayed), whatever moves, swaps, holds and discarded tokens happened meanwhile."""
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    rng = random.Random(seed)
    monkeypatch.setattr(rows_module, "OFF_LOOP_ENTITIES", 0)
    builds: list = []

    def build_later(self, spec):  # finished (or not) by the test, between steps
        future = Future()
        builds.append((future, spec))
        return future
    monkeypatch.setattr(rows_module._Rows, "build_later", build_later)

    for _ in range(1000):
        focus, rows = BatchFocus(VOCAB, "cpu"), []
        builds.clear()
        for _ in range(rng.randint(1, 6)):
            focus.update(random_update(rng, rows))
            for future, spec in builds:
                if not future.done() and rng.random() < 0.5:
                    try:
                        future.set_result(fk.FocusState([spec], VOCAB, "cpu"))
                    except ValueError as e:
                        future.set_exception(e)
            for req in rows:
                if rng.random() < 0.8:
                    req.output.append(next_token(rng, req.spec, req.output, ALPHABET))
                if rng.random() < 0.03 and req.output:
                    del req.output[rng.randrange(len(req.output)):]
            logits = focus.apply(torch.zeros(len(rows), VOCAB))
            for r, req in enumerate(rows):
                own = focus.own[r]
                ready = isinstance(own, fk.FocusState)
                assert ready or req is None or req.spec is None or isinstance(own, Future), f"row {r}"
                got = {t: v for t, v in enumerate(logits[r].tolist()) if v}
                assert got == pytest.approx(expected(req) if ready else {}, abs=1e-5), f"row {r}"
                if ready:
                    assert int(own.step[0]) == len(req.output)


def test_slot_schedules_match_a_dict_model():
    """Model Runner V2: requests take free slots, read their prompt in chunks (rows held), decode
    (the newest token is the model's input at position prompt_len + step), some are resumed with
    history (replayed); each step serves the scheduled slots in a random order.  Checked: every row
    whose token is kept (the last chunk of a prompt, then every decoding step)."""
    rng = random.Random(random.randrange(2**31))
    slots = 6
    for _ in range(300):
        focus = SlotFocus(slots, VOCAB, "cpu")
        live: dict[int, tuple] = {}  # slot -> (request, prompt_len, all tokens, [position read last])
        prompt_lens = torch.zeros(slots, dtype=torch.int32)
        for _ in range(12):
            for slot in [s for s in live if rng.random() < 0.15]:
                del live[slot]  # finished or preempted: V2 just frees the slot
            for slot in [s for s in range(slots) if s not in live and rng.random() < 0.4]:
                req = new_request(rng)
                prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 5))]
                tokens = prompt + req.output
                live[slot] = (req, len(prompt), tokens, [-1])
                prompt_lens[slot] = len(prompt)
                assert focus.add(slot, req.params, len(prompt), len(tokens)) == (req.spec is not None)
            focus.flush(lambda s, a, b: live[s][2][a:b])
            served = [s for s in live if rng.random() < 0.8]
            rng.shuffle(served)
            pos, input_ids = [], []
            for s in served:
                req, plen, tokens, cursor = live[s]
                if cursor[0] < len(tokens) - 1:  # a prompt (or re-read history) chunk ends here
                    cursor[0] = min(len(tokens) - 1, cursor[0] + rng.randint(1, 3))
                p = cursor[0]
                pos.append(p)
                input_ids.append(tokens[p])
            logits = torch.zeros(len(served), VOCAB)
            focus.apply(logits, torch.tensor(served, dtype=torch.int32), np.array(served, dtype=np.int64),
                        torch.tensor(input_ids), torch.tensor(pos), prompt_lens, torch.zeros(len(served), dtype=torch.int32))
            for i, s in enumerate(served):
                req, plen, tokens, cursor = live[s]
                if cursor[0] < len(tokens) - 1:
                    continue  # a chunk before the last: vLLM discards what is sampled from it
                req.output = tokens[plen:]
                got = {t: v for t, v in enumerate(logits[i].tolist()) if v}
                assert got == pytest.approx(expected(req), abs=1e-5), f"slot {s}"
                tokens.append(next_token(rng, req.spec, req.output, ALPHABET))
                cursor[0] += 1


def _row_logits(seed: int, prefix: Sequence[int]) -> torch.Tensor:
    """The logits a model gives after ``prefix``: a function of the prefix, so that a draft row and the
    sequential step at the same position see the same values; about a fifth of the ids banned (-inf),
    which makes entries give up."""
    rng = random.Random(hash((seed, tuple(prefix))))
    return torch.tensor([float("-inf") if rng.random() < 0.2 else rng.gauss(0, 1) for _ in range(VOCAB)])


def _sequential(req: Request, prompt: list, history: int, tokens: list, seed: int) -> torch.Tensor:
    """What Model Runner V2 without speculative decoding gives the row that reads ``tokens[-1]``: one
    slot, admitted with ``history`` generated tokens, decoded one position at a time from there."""
    ref = SlotFocus(1, VOCAB, "cpu")
    ref.add(0, req.params, len(prompt), len(prompt) + history)
    ref.flush(lambda s, a, b: tokens[a:b])
    for p in range(len(prompt) + history - 1, len(tokens)):
        logits = _row_logits(seed, tokens[:p + 1]).unsqueeze(0)
        ref.apply(logits, torch.zeros(1, dtype=torch.int32), np.zeros(1, dtype=np.int64), torch.tensor([tokens[p]]),
                  torch.tensor([p]), torch.tensor([len(prompt)], dtype=torch.int32), torch.zeros(1, dtype=torch.int32))
    return logits[0]


def test_draft_rows_are_steered_as_sequential_decoding():
    """Model Runner V2 with speculative decoding: each request's rows are its committed input and up to
    ``drafts`` draft tokens; the engine accepts a prefix of the drafts and a bonus token.  Every row must
    get exactly the logits sequential decoding gives at its position (bans and give-ups included);
    rows of requests without focus stay bitwise untouched."""
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    slots, drafts, steered = 3, 3, 0
    for _ in range(20):
        focus = SlotFocus(slots, VOCAB, "cpu", drafts=drafts)
        live: dict[int, tuple] = {}  # slot -> (request, prompt, history length, committed tokens)
        prompt_lens = torch.zeros(slots, dtype=torch.int32)
        for _ in range(6):
            for slot in [s for s in live if rng.random() < 0.15]:
                del live[slot]
            for slot in [s for s in range(slots) if s not in live and rng.random() < 0.5]:
                req = new_request(rng)
                prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 4))]
                live[slot] = (req, prompt, len(req.output), prompt + req.output)
                prompt_lens[slot] = len(prompt)
                focus.add(slot, req.params, len(prompt), len(prompt) + len(req.output))
            focus.flush(lambda s, a, b: live[s][3][a:b])
            served = [s for s in live if rng.random() < 0.8]
            if not served:
                continue
            rng.shuffle(served)
            rows = []  # (slot, prefix read at the row, local position)
            for s in served:
                req, prompt, history, tokens = live[s]
                decoding = len(tokens) > len(prompt) + history  # served before: row 0 is its newest token
                proposed = [next_token(rng, req.spec, tokens, ALPHABET) for _ in range(rng.randint(0, drafts))]
                for k in range(1 + len(proposed) * decoding):
                    rows.append((s, tokens + proposed[:k], k))
            logits = torch.stack([_row_logits(seed, prefix) for _, prefix, _ in rows])
            before = logits.clone()
            focus.apply(logits, torch.tensor([r[0] for r in rows], dtype=torch.int32), np.array(served, dtype=np.int64),
                        torch.tensor([r[1][-1] for r in rows]), torch.tensor([len(r[1]) - 1 for r in rows]),
                        prompt_lens, torch.tensor([r[2] for r in rows], dtype=torch.int32))
            for i, (s, prefix, k) in enumerate(rows):
                req, prompt, history, _ = live[s]
                if req.spec is None:
                    assert torch.equal(logits[i], before[i]), f"slot {s} row {k}"
                    continue
                assert torch.equal(logits[i], _sequential(req, prompt, history, prefix, seed)), f"slot {s} row {k}"
                steered += not torch.equal(logits[i], before[i])
            for s in served:  # the engine accepts a prefix of the drafts, then samples one more token
                req, prompt, history, tokens = live[s]
                proposed = [prefix for slot, prefix, _ in rows if slot == s][-1][len(tokens):]
                tokens += proposed[:rng.randint(0, len(proposed))]
                tokens.append(next_token(rng, req.spec, tokens, ALPHABET))
    assert steered > 0


@pytest.mark.parametrize("focus,error,name", [
    (["healthcare"], TypeError, "focus must be a JSON object"),
    ("healthcare", ValueError, "focus is a string but not JSON"),
    ('"healthcare"', TypeError, "focus must be a JSON object"),
    ({}, ValueError, "focus.entities is required"),
    ({"entities": ["a"], "strength": 2}, ValueError, "focus.strength"),
    ({"entities": []}, ValueError, "focus.entities"),
    ({"entities": [""]}, ValueError, r"focus.entities\[0\]"),
    ({"entities": [[[1, -2]]]}, ValueError, r"focus.entities\[0\]"),
    ({"entities": ["a"], "bias": "high"}, ValueError, "focus.bias"),
    ({"entities": ["a"], "continuation_bias": float("nan")}, ValueError, "focus.continuation_bias"),
    ({"entities": ["a"], "alpha": 2}, ValueError, "focus.alpha"),
    ({"entities": ["a"], "mode": "words"}, ValueError, "focus.mode"),
    ({"entities": ["a"], "satisfy": "twice"}, ValueError, "focus.satisfy"),
    ({"entities": ["a"], "variants": "odd"}, ValueError, "focus.variants"),
    ({"entities": ["a"], "boost_starts_in_match": "no"}, TypeError, "focus.boost_starts_in_match"),
    ({"entities": ["a"], "decay": 0.5}, TypeError, "focus.decay"),
    ({"entities": ["a"], "decay": {"kind": "sigmoid"}}, ValueError, "focus.decay.kind"),
    ({"entities": ["a"], "decay": {"kind": "ramp"}}, ValueError, "focus.decay: horizon"),
    ({"entities": ["a"], "decay": {"kind": "ramp", "horizon": 5, "floor": 2}}, ValueError, "focus.decay: floor"),
    ({"entities": ["a"], "decay": {"kind": "ramp", "horizon": "long"}}, TypeError, "focus.decay.horizon"),
    ({"entities": ["a"], "decay": {"kind": "ramp", "span": 5}}, ValueError, "focus.decay.span"),
])
def test_malformed_focus_names_the_field(focus, error, name):
    with pytest.raises(error, match=name):
        focus_spec(focus)


def test_focus_dictionary_speaks_the_spec_vocabulary():
    focus = {"entities": ["healthcare", [[5, 6], [7]]], "bias": 4, "continuation_bias": 8.0, "alpha": 0.1,
             "decay": {"kind": "ramp", "horizon": 100, "floor": 0.1}, "mode": "tokens", "satisfy": "never",
             "variants": "spaced", "boost_starts_in_match": False}
    want = fk.FocusSpec(["healthcare", [[5, 6], [7]]], bias=4, continuation_bias=8.0, alpha=0.1,
                        decay=fk.Decay.ramp(100, floor=0.1), mode="tokens", satisfy="never", variants="spaced",
                        boost_starts_in_match=False)
    assert focus_spec(focus).key() == want.key()
    assert focus_spec(json.dumps(focus)).key() == want.key()  # how vllm_xargs carries it over HTTP
    assert focus_spec({"entities": ["x"], "decay": "constant"}).decay == fk.Decay.constant()
    assert focus_spec({"entities": ["x"], "decay": {"kind": "exponential", "horizon": 50}}).decay \
        == fk.Decay.exponential(50)


def test_budget_is_the_request_max_tokens_unless_the_focus_names_one():
    focus = {"entities": [[[1, 2]]], "slack": 8, "force": 6.5, "eos_damp": 3, "eos_token_id": 4}
    assert spec_from_params(Params({"focus": focus}, max_tokens=64)).max_new_tokens == 64
    assert spec_from_params(Params({"focus": {**focus, "max_new_tokens": 20}}, max_tokens=64)).max_new_tokens == 20
    assert spec_from_params(Params({"focus": focus})).max_new_tokens is None
    spec = spec_from_params(Params({"focus": focus}, max_tokens=64, eos_token_id=2))
    assert (spec.slack, spec.force, spec.eos_damp, spec.eos_token_id) == (8, 6.5, 3, 4)
    del focus["eos_token_id"]
    assert spec_from_params(Params({"focus": focus}, max_tokens=64, eos_token_id=2)).eos_token_id == 2
    assert spec_from_params(Params({"focus": focus}, eos_token_id=2)).eos_token_id is None  # no budget


def test_importing_focuskern_does_not_import_vllm():
    code = "import sys, focuskern, focuskern.vllm, focuskern.vllm.rows, focuskern.vllm.slots; print('vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"

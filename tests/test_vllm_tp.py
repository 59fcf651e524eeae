"""Tensor parallelism: ``vllm serve --tensor-parallel-size 3`` (the model's 9 attention heads split three
ways, one worker process per rank, ``VLLM_CPU_OMP_THREADS_BIND=0|1|0`` on a 2-core machine) serves
focused and plain requests sent at once with the greedy tokens of ``--tensor-parallel-size 1``.

Each rank's worker loads the plugin and keeps its own copy of the focus state; every rank sees the same
full logits and tokens, so the steering is the same on all.  Slow (two servers, three workers on two
cores): ``make test-vllm-tp``, not in CI; its last result is in ``benchmarks/results/vllm_tp_cpu.txt``.
"""
import asyncio
import json

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from vllm_server import MODEL, ROOT, VLLMServer, count_unfocused, loaded_from  # noqa: E402

PROMPTS = {"the sea": ["whales", "sailors"], "a busy city": ["bicycles", "bakery"], "winter": ["snowflakes", "fireplace"],
           "music": ["violin", "rhythm"], "trains": ["locomotive", "timetable"], "coffee": ["espresso", "beans"]}
TOKENS = 16


async def served_tokens(server: VLLMServer) -> list[list[int]]:
    """Per prompt, plain then focused, all requests at once: the greedy token ids."""
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=900)

    async def one(topic, entities):
        body = {"return_token_ids": True}
        if entities:
            body["vllm_xargs"] = {"focus": json.dumps({"entities": entities, "bias": 8.0, "continuation_bias": 10.0,
                                                      "variants": "spaced"})}
        r = await client.completions.create(model=MODEL, prompt=f"A short story about {topic}:", max_tokens=TOKENS,
                                            temperature=0, extra_body=body)
        return r.choices[0].model_extra["token_ids"]
    try:
        return await asyncio.gather(*(one(t, e) for t, ents in PROMPTS.items() for e in (None, ents)))
    finally:
        await client.close()


def run_server(tp: int) -> tuple[list[list[int]], str, list]:
    extra = ("--tensor-parallel-size", str(tp))
    server = VLLMServer(ROOT / ".vllm-tmp" / f"test_vllm_tp{tp}.log", extra_args=extra, startup_timeout=900)
    try:
        tokens = asyncio.run(served_tokens(server))
        log = server.log_text()
    finally:
        server.stop()
    return tokens, log, loaded_from(log)


def test_tensor_parallel_3_equals_1(monkeypatch):
    if not (ROOT / MODEL / "config.json").exists():
        pytest.skip(f"{MODEL} missing: make vllm-model converts the embedded .gguf")
    one, log1, _ = run_server(1)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1|0")
    three, log3, loaded3 = run_server(3)
    assert len({prefix for prefix, _, _ in loaded3}) == 3, loaded3  # one processor per rank's worker
    for i, (a, b) in enumerate(zip(one, three)):
        assert a == b, (list(PROMPTS)[i // 2], "focused" if i % 2 else "plain", a, b)
    assert sum(one[i] != one[i + 1] for i in range(0, len(one), 2)) >= len(PROMPTS) // 2  # focus steers
    assert not count_unfocused(log1) and not count_unfocused(log3)
    print(f"TP=3 == TP=1 on {len(one)} requests ({len(PROMPTS)} plain, {len(PROMPTS)} focused, sent at once)")

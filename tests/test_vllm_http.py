"""vLLM's OpenAI-compatible server with focuskern's entry-point plugin, spoken to with the real
``openai`` client (``AsyncOpenAI``), as serving users reach focuskern.

One server for the module (``tests/vllm_server.py``: the engine core in its own process, the plugin
from its entry point, float32, ``--enforce-eager``, prefix caching on, 127.0.0.1 and a free port);
runs in ``.venv-vllm`` (``make test-vllm``), skipped where vLLM, the ``openai`` client or the
converted model is missing.  Greedy (temperature 0) throughout, so a plain
request has one right answer: the tokens it gets alone.  Every test fails if the server log says a
valid focus was served unfocused; a failing test prints the server log's tail.
"""
import asyncio
import json
import random
import re
from pathlib import Path

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from vllm_server import MODEL, ROOT, VLLMServer, count_unfocused, fresh_focus, loaded_from  # noqa: E402

README = ROOT / "README.md"
# Prompt topic -> the entities its focused requests ask for (common words the model can say).
TOPICS = {"a busy city": ["bicycles", "bakery"], "the sea": ["sailors", "whales"], "the moon": ["astronauts", "craters"],
          "winter": ["snowflakes", "fireplace"], "music": ["violin", "rhythm"], "gardening": ["tomatoes", "bees"],
          "rivers": ["salmon", "bridges"], "robots": ["sensors", "batteries"], "mountains": ["glaciers", "eagles"],
          "coffee": ["espresso", "beans"], "trains": ["locomotive", "timetable"], "volcanoes": ["lava", "magma"]}
MALFORMED = [  # focus -> what the 400 must name
    (json.dumps({"entities": ["x"], "bias": "high"}), "focus.bias"),
    ("{not json", "focus is a string but not JSON"),
    (json.dumps({"entities": ["x"], "colour": "red"}), "focus.colour"),
    (json.dumps({"bias": 2.0}), "focus.entities"),
    (json.dumps({"entities": ["x"], "decay": {"kind": "sigmoid"}}), "focus.decay.kind"),
    (json.dumps({"entities": ["x"], "variants": "odd"}), "focus.variants"),
    (json.dumps({"entities": ["x"], "boost_starts_in_match": "yes"}), "focus.boost_starts_in_match"),
    (json.dumps(["x"]), "focus must be a JSON object"),
]
TOKENS = 12


def strong(entities: list[str]) -> dict:
    return {"entities": entities, "bias": 8.0, "continuation_bias": 10.0, "variants": "spaced"}


def xargs(focus) -> dict:
    """The request body's extension: the focus as JSON text (vLLM admits only flat ``vllm_xargs``)."""
    body = {"return_token_ids": True}
    if focus is not None:
        body["vllm_xargs"] = {"focus": focus if isinstance(focus, str) else json.dumps(focus)}
    return body


def says(text: str, entities: list[str]) -> bool:
    return any(e.lower() in text.lower() for e in entities)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (ROOT / MODEL / "config.json").exists():
        pytest.skip(f"{MODEL} missing: make vllm-model converts the embedded .gguf")
    srv = VLLMServer(ROOT / ".vllm-tmp" / "test_vllm_http_server.log")
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def server_log_checked(server, request):
    """No valid focus served unfocused during the test; the log's tail shown when the test failed."""
    start = len(server.log_text())
    failed = request.session.testsfailed
    yield
    unfocused = count_unfocused(server.log_text(), start)
    if request.session.testsfailed > failed or unfocused:
        print(f"--- server log ({server.log_path}), tail ---\n{server.log_tail()}")
    assert not unfocused, unfocused[:5]


class Client:
    """``AsyncOpenAI`` calls returning ``(token ids, text, finish reason)`` per choice, greedy."""

    def __init__(self, server):
        self.api = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)

    async def complete(self, topic, focus=None, max_tokens=TOKENS, **kw):
        kw.setdefault("temperature", 0)
        r = await self.api.completions.create(model=MODEL, prompt=f"A short story about {topic}:",
                                              max_tokens=max_tokens, extra_body=xargs(focus), **kw)
        return [(c.model_extra["token_ids"], c.text, c.finish_reason) for c in r.choices]

    async def chat(self, topic, focus=None, max_tokens=TOKENS, stream=False, **kw):
        messages = [{"role": "user", "content": f"Write a few sentences about {topic}."}]
        r = await self.api.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens,
                                                   temperature=0, stream=stream, extra_body=xargs(focus), **kw)
        if not stream:
            return [(c.model_extra.get("token_ids"), c.message.content, c.finish_reason) for c in r.choices]
        parts, ids, finish = [], [], None
        async for chunk in r:
            for c in chunk.choices:
                parts.append(c.delta.content or "")
                ids += (c.model_extra or {}).get("token_ids") or []
                finish = c.finish_reason or finish
        return [(ids, "".join(parts), finish)]

    async def complete_stream(self, topic, focus=None, max_tokens=TOKENS):
        r = await self.api.completions.create(model=MODEL, prompt=f"A short story about {topic}:", stream=True,
                                              max_tokens=max_tokens, temperature=0, extra_body=xargs(focus))
        parts, ids, finish = [], [], None
        async for chunk in r:
            for c in chunk.choices:
                parts.append(c.text)
                ids += (c.model_extra or {}).get("token_ids") or []
                finish = c.finish_reason or finish
        return [(ids, "".join(parts), finish)]

    async def refused(self, focus) -> str:
        """The message of the HTTP 400 a malformed focus gets (fails the test on anything else)."""
        with pytest.raises(openai.BadRequestError) as err:
            await self.complete("a cat", focus)
        assert err.value.status_code == 400
        return err.value.message


def run(coro_fn, server):
    async def main():
        client = Client(server)
        try:
            return await coro_fn(client)
        finally:
            await client.api.close()
    return asyncio.run(main())


def test_engine_core_in_its_own_process_steers_with_this_checkout(server):
    """The plugin was loaded, from this checkout's focuskern, in the engine's worker process (vLLM's
    log prefix ``(Worker pid=...)`` or ``(EngineCore pid=...)``, not the API server's pid)."""
    loaded = loaded_from(server.log_text())
    assert loaded, server.log_tail()
    for prefix, cls, path in loaded:
        assert "pid=" in prefix and f"pid={server.proc.pid})" not in prefix, prefix
        assert cls == "FocusLogitsPlugin" and Path(path).resolve().is_relative_to(ROOT), (cls, path)


def test_readme_http_example_runs_as_shown(server):
    """The README's HTTP example (between the ``http-example`` markers) is executed as it stands, with
    only its ``localhost:8000`` pointed at this server."""
    text = README.read_text()
    block = re.search(r"<!-- http-example -->\s*```python\n(.*?)```\s*<!-- /http-example -->", text, re.S)
    assert block, "README.md lost its <!-- http-example --> block"
    code = block.group(1)
    assert "http://localhost:8000/v1" in code
    scope: dict = {}
    exec(compile(code.replace("http://localhost:8000/v1", server.base_url), "README.md:http-example", "exec"), scope)
    assert says(scope["reply"].choices[0].message.content, scope["focus"]["entities"])
    assert not says(scope["plain"].choices[0].message.content, scope["focus"]["entities"])
    assert "focus.bias" in scope["refusal"]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_streamed_and_not_focused_says_its_entities_plain_is_unchanged(server, api):
    topic, entities = "a busy city", TOPICS["a busy city"]

    async def body(c):
        call = c.complete if api == "completions" else c.chat
        stream = c.complete_stream if api == "completions" else (lambda *a, **k: c.chat(*a, stream=True, **k))
        plain_alone = await call(topic)
        got = await asyncio.gather(call(topic, strong(entities)), stream(topic, strong(entities)),
                                   call(topic), stream(topic))
        return plain_alone, got

    plain_alone, (focused, focused_streamed, plain, plain_streamed) = run(body, server)
    assert says(focused[0][1], entities), focused
    assert not says(plain_alone[0][1], entities), plain_alone
    assert focused_streamed[0][1] == focused[0][1]
    assert plain[0] == plain_alone[0]
    assert plain_streamed[0][1] == plain_alone[0][1]
    if api == "completions":  # the stream carries the token ids too
        assert focused_streamed[0][0] == focused[0][0] and plain_streamed[0][0] == plain_alone[0][0]


def test_concurrent_mixed_load(server, seed):
    """58 requests at once: 24 plain, 26 focused with distinct specs (two of 1,200 entities), 8
    malformed.  Every plain and focused one gets the tokens it gets alone, every malformed one an HTTP
    400 naming the field; nothing else fails and the server keeps serving.  The two large foci are
    built off the step loop, so where their steering starts depends on timing: they must complete (in
    the build process: the engine logs no fall-back to compiling them in its own process)."""
    rng = random.Random(seed)
    huge = fresh_focus(rng, 1200, words=tuple(TOPICS["the sea"]))
    requests = [(api, t, focus) for api in ("completions", "chat") for t in TOPICS
                for focus in (None, strong(TOPICS[t] if api == "chat" else TOPICS[t][::-1]))]
    requests += [("completions", "the sea", huge), ("chat", "the sea", huge)]

    async def body(c):
        def send(api, topic, focus):
            return (c.complete if api == "completions" else c.chat)(topic, focus)
        alone = [await send(*r) for r in requests]
        jobs = [send(*r) for r in requests] + [c.refused(focus) for focus, _ in MALFORMED]
        order = list(range(len(jobs)))
        rng.shuffle(order)
        results = dict(zip(order, await asyncio.gather(*(jobs[i] for i in order))))
        after = await send(*requests[0])
        return alone, [results[i] for i in range(len(jobs))], after

    alone, results, after = run(body, server)
    assert len(results) >= 48
    for r, solo, got in zip(requests, alone, results):
        if r[2] is huge:
            assert len(got) == 1 and got[0][2] in ("length", "stop"), got
        else:
            assert got == solo, r[:2]
    for (_, field), message in zip(MALFORMED, results[len(requests):]):
        assert field in message, (field, message)
    assert after == alone[0] and server.healthy()
    assert says(alone[1][0][1], TOPICS[requests[1][1]]), alone[1]  # the focus does steer
    assert "compiled in the engine's process" not in server.log_text()


def test_n_choices_and_stop_sequences_with_focus(server, seed):
    """``n=3`` sampled choices (vLLM refuses ``n>1`` greedy) with seed ``s``: vLLM gives choice ``i``
    the seed ``s + i``, so each choice must be the ``n=1`` request with that seed: each is steered on
    its own row (and differs from its unfocused twin).  ``stop`` at an entity: the focused text ends
    right before it, with ``finish_reason`` ``stop``."""
    topic, entities = "a busy city", TOPICS["a busy city"]
    focus = strong(entities)

    async def body(c):
        def sample(focus, n, seed):
            return c.complete(topic, focus, max_tokens=24, n=n, temperature=0.7, seed=seed)
        sampled, *singles = await asyncio.gather(sample(focus, 3, seed), *(sample(focus, 1, seed + i) for i in range(3)))
        unfocused = await sample(None, 3, seed)
        full = await asyncio.gather(c.complete(topic, focus, max_tokens=24), c.chat(topic, focus, max_tokens=24))
        stop = next(e for e in entities if e in full[0][0][1].lower())
        stops = [stop, stop.capitalize()]
        stopped = await asyncio.gather(c.complete(topic, focus, max_tokens=24, stop=stops),
                                       c.chat(topic, focus, max_tokens=24, stop=stops))
        return sampled, singles, unfocused, full, stops, stopped

    sampled, singles, unfocused, full, stops, stopped = run(body, server)
    assert sampled == [s[0] for s in singles]
    assert all(f != u for f, u in zip(sampled, unfocused)) and any(says(s[1], entities) for s in sampled), sampled
    for (_, text, finish), (_, whole, _) in zip((s[0] for s in stopped), (f[0] for f in full)):
        cuts = [i for i in map(whole.find, stops) if i >= 0]
        if cuts:  # the stop entity is in the unstopped answer: cut at its first occurrence
            assert finish == "stop" and text == whole[:min(cuts)], (stops, text, whole)
        else:  # this answer (chat or completion) never says it: nothing to stop at
            assert text == whole, (stops, text, whole)


def test_json_schema_with_focus_returns_valid_json_naming_an_entity(server):
    """``response_format`` with a JSON schema (vLLM's structured outputs: the grammar masks the logits,
    the focus biases what the mask leaves) and a focus, next to the same request without one: both
    replies are complete JSON objects of the schema; the focused story names an entity, the plain one
    does not."""
    schema = {"type": "object", "properties": {"story": {"type": "string", "maxLength": 100}},
              "required": ["story"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "story", "schema": schema}}
    entities = TOPICS["the sea"]
    # A constant push (no ramp-in): the test is about the grammar and the focus together, not the policy;
    # 80 tokens cover the schema's 100 characters, so the grammar, not the budget, ends each reply.
    focus = {"entities": entities, "bias": 14.0, "continuation_bias": 14.0, "decay": "constant"}

    async def body(c):
        return await asyncio.gather(*(c.chat("the sea as JSON", f, max_tokens=80, response_format=fmt)
                                      for f in (None, focus)))

    (plain,), (focused,) = run(body, server)
    stories = []
    for _, text, finish in (plain, focused):
        assert finish == "stop", text
        reply = json.loads(text)
        assert set(reply) == {"story"} and isinstance(reply["story"], str) and len(reply["story"]) <= 100, reply
        stories.append(reply["story"])
    assert says(stories[1], entities) and not says(stories[0], entities), stories


def test_same_prompt_focused_and_plain_side_by_side(server):
    """With prefix caching on, the same prompt plain and focused, alone and then three of each at once
    (the prompt's blocks now cached): every request gets its tokens alone; the focused ones say the
    entities, the plain ones do not."""
    topic, entities = "a busy city", TOPICS["a busy city"]

    async def body(c):
        alone = [await c.chat(topic), await c.chat(topic, strong(entities))]
        return alone, await asyncio.gather(*(c.chat(topic, strong(entities) if i % 2 else None) for i in range(6)))

    alone, both = run(body, server)
    assert both == alone * 3
    assert says(alone[1][0][1], entities) and not says(alone[0][0][1], entities), alone


def test_soak_fresh_specs_memory_settles(server, seed):
    """320 requests, 3 in 4 with a focus never seen before (40 entities, ~200 automaton nodes: the
    state's tables compact about every 20 of them), in blocks of 40 served one at a time (compaction
    with no live program when a finished request leaves) or 16 at once (with live programs); the
    plain ones equal their solo runs.  The server's resident memory after the first block (warm-up)
    grows by less than 100 MB; no focus is served unfocused (the autouse check)."""
    rng = random.Random(seed)
    topics = list(TOPICS)[:4]
    blocks, per_block, tokens = 8, 40, 6

    async def body(c):
        alone = {t: await c.complete(t, max_tokens=tokens) for t in topics}
        rss, mismatched = [], []

        async def one(i):
            topic = topics[i % len(topics)]
            if i % 4 == 3:
                if await c.complete(topic, max_tokens=tokens) != alone[topic]:
                    mismatched.append(i)
            else:
                await c.complete(topic, fresh_focus(rng), max_tokens=tokens)

        for b in range(blocks):
            ids = range(b * per_block, (b + 1) * per_block)
            if b % 2 == 0:
                for i in ids:
                    await one(i)
            else:
                gate = asyncio.Semaphore(16)

                async def gated(i):
                    async with gate:
                        await one(i)
                await asyncio.gather(*(gated(i) for i in ids))
            rss.append(server.rss_bytes())
        return rss, mismatched

    rss, mismatched = run(body, server)
    growth = (rss[-1] - rss[0]) / 2**20
    print(f"soak: {blocks * per_block} requests, server RSS after each block (MiB): "
          f"{[round(r / 2**20) for r in rss]}; growth after warm-up {growth:+.1f} MiB")
    assert not mismatched
    assert growth < 100, rss

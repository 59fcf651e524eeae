"""``vllm serve`` set-ups other than the HTTP tests' one (``tests/test_vllm_http.py``): the processor
given with ``--logits-processors`` instead of the entry-point plugin, and speculative decoding.  Each
test starts its own server (``tests/vllm_server.py``: the engine core in its own process); runs in
``.venv-vllm`` (``make test-vllm``), skipped where vLLM, the ``openai`` client or the model is missing.

Speculative decoding: vLLM gives a custom processor no row per request there (V1 does not load it at
all), so a focused request must be refused rather than served unfocused -- with an HTTP 400 naming
``focus`` when the processor comes from the entry point, and vLLM refuses to start when it is listed
in ``--logits-processors``.  Greedy throughout.
"""
import json

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

from vllm_server import MODEL, PROCESSOR_FLAG, ROOT, VLLMServer, count_unfocused, loaded_from  # noqa: E402

NGRAM = ("--speculative-config", json.dumps({"method": "ngram", "num_speculative_tokens": 3,
                                             "prompt_lookup_max": 3, "prompt_lookup_min": 2}))
FOCUS = {"entities": ["whales", "sailors"], "bias": 8.0, "continuation_bias": 10.0, "variants": "spaced"}


@pytest.fixture(autouse=True)
def model_present():
    if not (ROOT / MODEL / "config.json").exists():
        pytest.skip(f"{MODEL} missing: make vllm-model converts the embedded .gguf")


def chat(server: VLLMServer, focus=None, max_tokens: int = 16) -> str:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)
    body = {} if focus is None else {"vllm_xargs": {"focus": json.dumps(focus)}}
    r = client.chat.completions.create(model=MODEL, max_tokens=max_tokens, temperature=0, extra_body=body,
                                       messages=[{"role": "user", "content": "Write a few sentences about the sea."}])
    return r.choices[0].message.content


def says(text: str) -> bool:
    return any(e in text.lower() for e in FOCUS["entities"])


def served(extra_args: tuple[str, ...], name: str):
    server = VLLMServer(ROOT / ".vllm-tmp" / f"test_vllm_serving_{name}.log", extra_args=extra_args)
    return server


def test_logits_processors_flag_steers_in_the_engine_process():
    """``--logits-processors focuskern.vllm:FocusLogitsProcessor``: the listed class steers in the
    engine's worker process (the entry-point plugin loads too and stands aside: one steering, not two);
    the focused reply says an entity, the plain one does not."""
    server = served(PROCESSOR_FLAG, "flag")
    try:
        plain, focused = chat(server), chat(server, FOCUS)
        log = server.log_text()
    finally:
        server.stop()
    classes = sorted(cls for prefix, cls, _ in loaded_from(log) if f"pid={server.proc.pid})" not in prefix)
    assert classes == ["FocusLogitsPlugin", "FocusLogitsProcessor"], loaded_from(log)
    assert says(focused) and not says(plain), (focused, plain)
    assert not count_unfocused(log)


def test_speculative_decoding_refuses_focus_with_400_serves_plain():
    """n-gram speculative decoding with the entry-point plugin: a focused request gets an HTTP 400
    naming ``focus`` (never a reply served unfocused); plain requests are served as usual."""
    server = served(NGRAM, "ngram")
    try:
        plain = chat(server)
        with pytest.raises(openai.BadRequestError) as err:
            chat(server, FOCUS)
        again = chat(server)
        log = server.log_text()
    finally:
        server.stop()
    assert err.value.status_code == 400 and "focus" in err.value.message and "speculative" in err.value.message
    assert plain and again == plain
    assert not count_unfocused(log)


def test_speculative_decoding_with_listed_processor_refuses_to_start():
    """n-gram speculative decoding with ``--logits-processors``: the engine does not start, and says
    why (vLLM's own check)."""
    with pytest.raises(RuntimeError, match="not supported when speculative decoding is enabled"):
        served((*PROCESSOR_FLAG, *NGRAM), "ngram_flag").stop()

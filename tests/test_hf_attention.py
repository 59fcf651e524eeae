"""attn_implementation="focus" on the embedded SmolLM2-135M-Instruct (CPU): equal to SDPA without a
focus, the bias reaches prefill and every cached decoding step, left-padded batches, beams."""
import contextlib
import math

import pytest
import torch

import focuskern as fk
from focuskern.hf.attention import attention_layers
from focuskern.experiments.models import load_model
from focuskern.experiments.prompts import chat_inputs, chat_texts

pytestmark = pytest.mark.model

PROMPTS = ["Write one sentence about the sea.", "Name a colour and explain why you like it in detail."]


@pytest.fixture(scope="module")
def lm(smollm2_dir):
    return load_model(smollm2_dir, attn_implementation="focus")


@contextlib.contextmanager
def implementation(model, name):
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation("focus")


def generate(model, tok, inputs, **kw):
    out = model.generate(**inputs, do_sample=False, pad_token_id=tok.pad_token_id, **kw)
    return out[:, inputs["input_ids"].shape[1]:]


def sea_positions(tok, prompts):
    """Where "sea" is in each row of ``chat_inputs(tok, prompts)``."""
    return fk.entity_positions(tok, chat_texts(tok, prompts), ["sea"], padding_side="left")


def sea_bias(tok, inputs, beta):
    """Boost "sea" (only prompt 0 has one: prompt 1's bias is zero)."""
    return fk.positions_to_key_bias(sea_positions(tok, PROMPTS), inputs["input_ids"].shape[1], beta)


def test_focus_without_bias_equals_sdpa(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)  # left-padded
    with implementation(model, "sdpa"), torch.no_grad():
        ref_logits = model(**inputs).logits
        ref = generate(model, tok, inputs, max_new_tokens=24)
    with torch.no_grad():
        logits = model(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[real], ref_logits[real], rtol=1e-3, atol=1e-3)
    assert torch.equal(generate(model, tok, inputs, max_new_tokens=24), ref)


def test_bias_changes_its_row_only_and_survives_the_cache(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    base = generate(model, tok, inputs, max_new_tokens=16)
    bias = sea_bias(tok, inputs, 6.0)
    assert bias[0].max() == 6.0 and bias[1].abs().max() == 0.0
    with fk.attention_focus(model, bias, layers=range(4, 26)):
        cached = generate(model, tok, inputs, max_new_tokens=16)
        # Without a cache every step recomputes all keys with the grown bias: same tokens.
        uncached = generate(model, tok, inputs, max_new_tokens=16, use_cache=False)
    assert not torch.equal(cached[0], base[0])
    assert torch.equal(cached[1], base[1])
    assert torch.equal(cached, uncached)
    assert all(getattr(m, "_focuskern_attention_focus") is None for m in attention_layers(model).values())
    assert torch.equal(generate(model, tok, inputs, max_new_tokens=16), base)  # nothing left behind


def test_pasta_generated_keys_count_as_emphasized(lm):
    """pasta_focus sets generated="boost": it differs from "zero" only by the bias of generated keys."""
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS[:1])
    pasta = fk.pasta_focus(sea_positions(tok, PROMPTS[:1]), inputs["input_ids"].shape[1],
                           {layer: [0, 4, 8] for layer in range(8, 20)}, alpha=0.02)
    assert pasta["generated"] == "boost"
    outs = {}
    for mode in ("zero", "boost", -math.log(0.02)):
        with fk.attention_focus(model, **{**pasta, "generated": mode}):
            outs[mode] = generate(model, tok, inputs, max_new_tokens=20)
    assert not torch.equal(outs["zero"], outs["boost"])
    assert torch.equal(outs["boost"], outs[-math.log(0.02)])


def test_beam_search_and_return_sequences(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    kw = dict(max_new_tokens=12, num_beams=3, num_return_sequences=2)
    with implementation(model, "sdpa"):
        ref = generate(model, tok, inputs, **kw)
    assert torch.equal(generate(model, tok, inputs, **kw), ref)
    with fk.attention_focus(model, sea_bias(tok, inputs, 6.0)):
        focused = generate(model, tok, inputs, **kw)
    assert not torch.equal(focused[:2], ref[:2])  # prompt 0's two sequences move
    assert torch.equal(focused[2:], ref[2:])      # prompt 1 (zero bias) keeps its beams


def test_attention_focus_rejects_bad_input(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    bias = torch.zeros(inputs["input_ids"].shape)
    cases = [
        (dict(key_bias=bias.tolist()), TypeError, "key_bias"),
        (dict(key_bias=bias[0]), ValueError, "key_bias"),
        (dict(key_bias=bias.clone().fill_(float("nan"))), ValueError, "key_bias"),
        (dict(key_bias=bias, layers=[0], heads={1: None}), ValueError, "layers"),
        (dict(key_bias=bias, layers=[30]), ValueError, "heads"),
        (dict(key_bias=bias, heads=[9]), ValueError, "heads"),
        (dict(key_bias=bias, layers=3), TypeError, "layers"),
        (dict(key_bias=bias, generated="all"), ValueError, "generated"),
    ]
    for kwargs, exc, name in cases:
        with pytest.raises(exc, match=name), fk.attention_focus(model, **kwargs):
            pass
    with pytest.raises(ValueError, match="key_bias"), fk.attention_focus(model, torch.zeros(2, 500)):
        generate(model, tok, inputs, max_new_tokens=1)  # longer than the prompt
    with implementation(model, "sdpa"), pytest.raises(ValueError, match="model"), \
            fk.attention_focus(model, bias):
        pass

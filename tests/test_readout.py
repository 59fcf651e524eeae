"""attention_readout and attention_focus(target_mass=...) on the embedded SmolLM2-135M-Instruct (CPU):
the recorded mass equals the share read off eager attention maps, covers the prompt and every decoding
step, composes with focus (a bias moves it, a target raises it to the target), leaves outputs unchanged,
and rejects bad input by name."""
import pytest
import torch

import focuskern as fk
from focuskern.hf.attention import READOUT, attention_layers
from focuskern.experiments.models import load_model
from focuskern.experiments.prompts import chat_inputs, chat_texts

pytestmark = pytest.mark.model

PROMPTS = ["Write one sentence about the sea.", "Name a colour and explain why you like it in detail."]


@pytest.fixture(scope="module")
def lm(smollm2_dir):
    return load_model(smollm2_dir, attn_implementation="focus")


def sea_groups(tok, inputs, prompts=PROMPTS):
    """[B, L] int32: 0 on "sea" (row 0 only), 1 on every other real token, -1 on padding."""
    pos = fk.entity_positions(tok, chat_texts(tok, prompts), ["sea"], padding_side="left")
    span = fk.positions_to_key_bias(pos, inputs["input_ids"].shape[1], 1.0) != 0
    groups = torch.where(span, 0, 1)
    return torch.where(inputs["attention_mask"].bool(), groups, -1).int(), span


def eager_share(model, inputs, groups, num_groups):
    """[layers, B, H, L, G] float64 from eager attention maps (the L x L way)."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = model(**inputs, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("focus")
    onehot = torch.nn.functional.one_hot(groups.long().clamp_min(0), num_groups).double()
    onehot = onehot * (groups >= 0)[..., None]
    return torch.stack([a.double() @ onehot[:, None] for a in att])


def test_prompt_mass_equals_eager_maps(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    groups, _ = sea_groups(tok, inputs)
    with torch.no_grad(), fk.attention_readout(model, groups) as readout:
        logits = model(**inputs).logits
    want = eager_share(model, inputs, groups, 2)
    real = inputs["attention_mask"].bool()
    got = readout.stacked("prompt").double()
    assert got.shape == want.shape
    torch.testing.assert_close(got.permute(0, 1, 3, 2, 4)[:, real], want.permute(0, 1, 3, 2, 4)[:, real],
                               rtol=0, atol=2e-4)
    model.set_attn_implementation("sdpa")
    try:
        with torch.no_grad():
            ref = model(**inputs).logits
    finally:
        model.set_attn_implementation("focus")
    torch.testing.assert_close(logits[real], ref[real], rtol=1e-3, atol=1e-3)
    assert all(getattr(m, READOUT) is None for m in attention_layers(model).values())


def test_generation_records_every_step_and_output_is_unchanged(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    groups, _ = sea_groups(tok, inputs)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    base = model.generate(**inputs, **kw)
    with fk.attention_readout(model, groups, layers=[3, 20]) as readout:
        out = model.generate(**inputs, **kw)
    assert torch.equal(out, base)
    assert readout.layers == [3, 20]
    gen = readout.generated(20)
    assert gen.shape == (2, 9, 5, 2)  # 6 tokens, the last is not fed back
    assert bool((gen.sum(-1) <= 1 + 1e-5).all()) and bool((gen >= 0).all())
    assert float(gen[1, :, :, 0].abs().max()) == 0.0  # no "sea" in row 1


def test_per_token_groups_on_decode_steps_only(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    L = inputs["input_ids"].shape[1]
    groups = torch.arange(L, dtype=torch.int32).expand(2, L).clone()
    groups[~inputs["attention_mask"].bool()] = -1
    with fk.attention_readout(model, groups, layers=[5], prompt_rows="none") as readout:
        model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    gen = readout.generated(5)
    assert gen.shape == (2, 9, 3, L)
    assert float(gen[~inputs["attention_mask"].bool()[:, None, None, :].expand_as(gen)].abs().max()) == 0.0
    with pytest.raises(ValueError, match="prompt_rows"):
        readout.prompt(5)


def test_an_answer_of_one_token_has_no_generated_rows(lm):
    """max_new_tokens=1: nothing is fed back, so no decoding step is recorded -- an empty [B, Hq, 0, G]."""
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    groups, _ = sea_groups(tok, inputs)
    with fk.attention_readout(model, groups, 2, layers=[3, 4]) as readout:
        model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=tok.pad_token_id)
    assert readout.generated(3).shape == (2, 9, 0, 2)
    assert readout.stacked("generated").shape == (2, 2, 9, 0, 2)


def test_bias_and_target_move_the_recorded_share(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS[:1])
    groups, span = sea_groups(tok, inputs, PROMPTS[:1])
    with torch.no_grad(), fk.attention_readout(model, groups, layers=[10]) as natural:
        model(**inputs)
    bias = span.float() * 2.0
    with torch.no_grad(), fk.attention_focus(model, bias), fk.attention_readout(model, groups, layers=[10]) as boosted:
        model(**inputs)
    last = lambda r: r.prompt(10)[0, :, -1, 0]  # noqa: E731
    assert bool((last(boosted) > last(natural)).all())
    with torch.no_grad(), fk.attention_readout(model, groups, layers=[10]) as steered, \
            fk.attention_focus(model, target_mass=0.4, target_keys=span, layers=[10], heads=[0, 1, 2]):
        model(**inputs)
    share = steered.prompt(10)[0, :, :, 0]
    nat = natural.prompt(10)[0, :, :, 0]
    want = torch.where(nat > 0, torch.maximum(nat, torch.tensor(0.4)), nat)
    torch.testing.assert_close(share[:3], want[:3], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(share[3:], nat[3:], rtol=1e-4, atol=1e-5)


def test_bad_input(lm):
    model, tok = lm
    inputs = chat_inputs(tok, PROMPTS)
    groups, span = sea_groups(tok, inputs)
    with pytest.raises(ValueError, match="key_group"), fk.attention_readout(model, groups.float()):
        pass
    with pytest.raises(ValueError, match="key_group"), fk.attention_readout(model, groups, num_groups=1):
        pass
    with pytest.raises(ValueError, match="prompt_rows"), fk.attention_readout(model, groups, prompt_rows="x"):
        pass
    with pytest.raises(ValueError, match="layers"), fk.attention_readout(model, groups, layers=[99]):
        pass
    with pytest.raises(ValueError, match="target_mass"), fk.attention_focus(model, target_mass=1.0,
                                                                            target_keys=span):
        pass
    with pytest.raises(ValueError, match="target_keys"), fk.attention_focus(model, target_mass=0.5):
        pass
    with pytest.raises(ValueError, match="key_bias"), fk.attention_focus(model):
        pass
    other = torch.where(groups == 1, 0, 1).int()  # group 0 is not the span
    with pytest.raises(ValueError, match="key_group"), fk.attention_focus(model, target_mass=0.5, target_keys=span), \
            fk.attention_readout(model, other):
        pass
    assert all(getattr(m, READOUT) is None for m in attention_layers(model).values())

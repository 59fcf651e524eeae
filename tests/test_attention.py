"""Attention focus without the model: entity positions on the embedded tokenizer, the bias helpers,
PASTA's Eq. 2 against the kernels, and the HF glue (mask function, bias growth, dense fallback)."""
import math
import random
import types

import pytest
import torch
from transformers import AutoTokenizer
from transformers.masking_utils import sdpa_mask, sliding_window_causal_mask_function

import focuskern as fk
from focuskern.ops.dispatch import available_backends
from reference import pasta_eq2_reference
from focuskern.hf.attention import _STATE, KeyRow, LayerFocus, focus_attention_forward, focus_mask
from focuskern.ops import focus_attention
from conftest import DEVICE

TEXT = "The cat sat on the mat; another cat, Cat and concatenate."


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pieces(tok, text, positions, **kw):
    ids = tok([text], padding=True, **kw)["input_ids"][0]
    return [tok.decode([ids[p]]) for p in positions]


# --------------------------------------------------------------------------------------------------
# entity_positions and the bias helpers

def test_entity_positions_follow_offsets(tok):
    (cat, mat, dog), = fk.entity_positions(tok, TEXT, ["cat", "mat", "dog"])
    # Case-sensitive substring match: both " cat", plus the pieces of "concatenate" that overlap "cat".
    assert [p.strip() for p in pieces(tok, TEXT, cat)] == ["cat", "cat", "conc", "atenate"]
    assert [p.strip() for p in pieces(tok, TEXT, mat)] == ["mat"] and dog == []
    (words,), = fk.entity_positions(tok, TEXT, ["cat"], whole_words=True, ignore_case=True, per_occurrence=True)
    assert [pieces(tok, TEXT, occ)[0].strip() for occ in words] == ["cat", "cat", "Cat"]


def test_entity_positions_shift_with_left_padding(tok):
    texts = [TEXT, "A short cat."]
    alone = [fk.entity_positions(tok, t, ["cat"])[0][0] for t in texts]
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    left = fk.entity_positions(tok, texts, ["cat"], padding_side="left")
    right = fk.entity_positions(tok, texts, ["cat"], padding_side="right")
    for r in range(2):
        shift = max(lengths) - lengths[r]
        assert left[r][0] == [p + shift for p in alone[r]]
        assert right[r][0] == alone[r]
    ids = tok(texts, padding=True, padding_side="left")["input_ids"]
    assert [tok.decode([ids[1][p]]).strip() for p in left[1][0]] == ["cat"]


def test_entity_positions_overlapping_entities_and_occurrences(tok):
    text = "I moved from New York City to York last year."
    (both, city, york), = fk.entity_positions(tok, text, ["New York", "York City", "York"])
    shared = set(both) & set(city)  # the " York" of "New York City"
    assert shared and shared < set(york) and len(york) == 2
    assert "".join(pieces(tok, text, both)).strip() == "New York"
    assert "".join(pieces(tok, text, city)).strip() == "York City"
    assert len(fk.entity_positions(tok, text, ["York"], per_occurrence=True)[0][0]) == 2
    (aa,), = fk.entity_positions(tok, "aaaa", ["aa"], per_occurrence=True)
    assert len(aa) == 3  # overlapping occurrences, all inside the one token "aaaa"
    per_row = fk.entity_positions(tok, [text, TEXT], [["York"], ["cat", "York"]])
    assert len(per_row[0]) == 1 and per_row[1][1] == []


@pytest.mark.parametrize("texts, entities, exc, name", [
    ([], ["a"], ValueError, "texts"),
    (["a", 3], ["a"], TypeError, "texts"),
    (7, ["a"], TypeError, "texts"),
    (["a"], "a", TypeError, "entities"),
    (["a"], [1, 2], TypeError, "entities"),
    (["a", "b"], [["a"]], ValueError, "entities"),
    (["a"], ["a", ""], ValueError, "entities"),
])
def test_entity_positions_bad_input_names_the_argument(tok, texts, entities, exc, name):
    with pytest.raises(exc, match=name):
        fk.entity_positions(tok, texts, entities)


def test_positions_to_key_bias_and_pasta_helpers():
    bias = fk.positions_to_key_bias([[[1, 2], [2, 5]], [[], [0]]], 6, beta=[1.0, 3.0])
    assert bias.tolist() == [[0, 1, 3, 0, 0, 3], [3, 0, 0, 0, 0, 0]]
    assert fk.positions_to_key_bias([[4], []], 5, 2.0).tolist() == [[0, 0, 0, 0, 2], [0] * 5]
    assert torch.allclose(fk.pasta_key_bias([[[0], [3]]], 4, alpha=0.01),
                          torch.tensor([[math.log(100), 0, 0, math.log(100)]]))
    scales = fk.pasta_head_scale({2: [0, 3]}, num_layers=4, num_heads=4)
    assert list(scales) == [2] and scales[2].tolist() == [1, 0, 0, 1]
    assert fk.pasta_head_scale([1], 4, 2)[1].tolist() == [1, 1]
    kwargs = fk.pasta_focus([[1]], 3, {0: [1]}, alpha=0.5)
    assert kwargs["generated"] == "boost" and kwargs["heads"] == {0: [1]}
    with pytest.raises(ValueError, match="positions"):
        fk.positions_to_key_bias([[6]], 6)
    with pytest.raises(ValueError, match="seq_len"):
        fk.positions_to_key_bias([[0]], -1)
    with pytest.raises(ValueError, match="beta"):
        fk.positions_to_key_bias([[0]], 2, beta=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        fk.pasta_key_bias([[0]], 2, alpha=0.0)
    with pytest.raises(ValueError, match="heads"):
        fk.pasta_head_scale({4: [0]}, num_layers=4, num_heads=2)


# --------------------------------------------------------------------------------------------------
# PASTA: bias form through the kernels == post-softmax scaling and renormalization (Eq. 2)

@pytest.mark.parametrize("backend", available_backends("focus_attention", DEVICE))
@pytest.mark.parametrize("causal", [True, False])
def test_pasta_bias_form_equals_eq2(backend, causal):
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    gen = torch.Generator().manual_seed(seed)
    for B, Hq, Hkv, Lq, Lk, D in [(2, 4, 2, 7, 13, 64), (3, 6, 3, 1, 40, 64), (1, 7, 1, 16, 16, 128)]:
        q = torch.randn(B, Hq, Lq, D, generator=gen)
        k = torch.randn(B, Hkv, Lk, D, generator=gen)
        v = torch.randn(B, Hkv, Lk, D, generator=gen)
        emphasized = torch.rand(B, Lk, generator=gen) < 0.3
        key_start = torch.randint(0, Lk // 2 + 1, (B,), generator=gen, dtype=torch.int32)
        heads = sorted(random.Random(seed).sample(range(Hq), max(1, Hq // 2)))
        alpha = 10 ** -random.Random(seed).uniform(0.5, 3)
        positions = [torch.nonzero(row).flatten().tolist() for row in emphasized]
        key_bias = fk.pasta_key_bias(positions, Lk, alpha)
        head_scale = fk.pasta_head_scale({0: heads}, 1, Hq)[0]
        out = focus_attention(*(t.to(DEVICE) for t in (q, k, v, key_bias, head_scale)), causal=causal,
                              key_start=key_start.to(DEVICE), backend=backend)
        ref = pasta_eq2_reference(q, k, v, emphasized, alpha, heads, causal=causal, key_start=key_start)
        torch.testing.assert_close(out.cpu().double(), ref, rtol=0, atol=1e-5,
                                   msg=lambda m: f"seed {seed}, shape {(B, Hq, Hkv, Lq, Lk, D)}: {m}")


# --------------------------------------------------------------------------------------------------
# HF glue without the model

def test_focus_mask_returns_small_masks_when_it_can():
    assert focus_mask(2, 5, 5) is None
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    key_start = focus_mask(2, 5, 5, attention_mask=left)
    assert key_start.dtype == torch.int32 and key_start.tolist() == [2, 0]
    assert focus_mask(2, 1, 5, q_offset=4, attention_mask=left).tolist() == [2, 0]  # decode step
    right = left.flip(-1)
    for kwargs in (dict(attention_mask=right), dict(attention_mask=left, q_offset=torch.tensor(0)),
                   dict(attention_mask=left, mask_function=sliding_window_causal_mask_function(3))):
        dense = focus_mask(2, 5, 5, **kwargs)
        expected = sdpa_mask(2, 5, 5, allow_is_causal_skip=False, **kwargs)
        assert dense.dtype == torch.bool and torch.equal(dense, expected)


def test_focus_bias_grows_with_the_cache_and_follows_beams():
    key_bias = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, -1.0]])
    zero = KeyRow(key_bias, torch.zeros(2, 1))
    assert zero(2, 5).tolist() == [[0, 2, 0, 0, 0], [1, 0, -1, 0, 0]]
    beams = zero(6, 4)  # num_beams * num_return_sequences = 3: prompt p owns rows 3p .. 3p + 2
    assert torch.equal(beams, torch.tensor([[0.0, 2, 0, 0]] * 3 + [[1.0, 0, -1, 0]] * 3))
    with pytest.raises(ValueError, match="key_bias"):
        zero(2, 2)
    with pytest.raises(ValueError, match="key_bias"):
        zero(3, 5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("Lq", [1, 5])
def test_attention_function_equals_the_op(causal, Lq):
    """The attention function given key_start (op, or on CPU for Lq > 1 SDPA with the bias in a float
    mask) and given the same left padding as a dense bool mask (fallback) equals focus_attention,
    including query rows that see no key."""
    gen = torch.Generator().manual_seed(0)
    B, Hq, Hkv, Lk, D = 3, 6, 2, 9, 64
    q, k, v = (torch.randn(B, h, n, D, generator=gen) for h, n in ((Hq, Lq), (Hkv, Lk), (Hkv, Lk)))
    key_bias = torch.randn(B, Lk, generator=gen)
    head_scale = torch.tensor([1.0, 0.0, 2.0, 1.0, -0.5, 1.0])
    key_start = torch.tensor([0, 3, 6], dtype=torch.int32)
    module = types.SimpleNamespace(is_causal=causal)
    setattr(module, _STATE, LayerFocus(KeyRow(key_bias, torch.zeros(B, 1)), head_scale, None, None))
    pad = torch.arange(Lk)[None, :] >= key_start[:, None]
    if causal:
        dense = sdpa_mask(B, Lq, Lk, q_offset=Lk - Lq, attention_mask=pad, allow_is_causal_skip=False)
    else:
        dense = pad[:, None, None, :].expand(B, 1, Lq, Lk)
    expected = focus_attention(q, k, v, key_bias, head_scale, causal=causal, sm_scale=0.2,
                               key_start=key_start).transpose(1, 2)
    for mask in (key_start, dense):
        out, weights = focus_attention_forward(module, q, k, v, mask, scaling=0.2)
        assert weights is None and out.shape == (B, Lq, Hq, D) and out.is_contiguous()
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

"""FocusLogitsProcessor takes the model's end-of-text id(s) from its generation config (an int, or a
list as Qwen2.5 and Llama 3 have); no model is loaded: the entities are token-id lists."""
import pytest
import torch
from transformers import GenerationConfig

import focuskern as fk
from focuskern.hf.logits import FocusLogitsProcessor

V = 64
DAMP = 10.0


def spec(**kw):
    # Two entities (one of two tokens), a budget so that unsaid entities damp end-of-text.
    return fk.FocusSpec([[[5, 6]], [[9]]], max_new_tokens=20, eos_damp=DAMP, **kw)


def damped(proc, seed=0):
    """The ids whose logit the first step lowered by exactly eos_damp (the boosted ids only rise)."""
    gen = torch.Generator().manual_seed(seed)
    print("seed", seed)
    scores = torch.randn(2, V, generator=gen)
    before = scores.clone()
    input_ids = torch.randint(0, V, (2, 7), generator=gen)
    out = proc(input_ids, scores)
    return sorted(set(torch.nonzero((before - out - DAMP).abs() < 1e-4)[:, 1].tolist()))


@pytest.mark.parametrize("eos,expected", [(48, [48]), ([61], [61]), (torch.tensor([50, 3]), [3, 50]),
                                          ([40, 41], [40, 41])],
                         ids=["int", "list-of-one", "tensor", "list"])
def test_generation_config_eos_fills_specs_without_one(eos, expected):
    config = GenerationConfig(eos_token_id=eos)
    assert damped(FocusLogitsProcessor(spec(), generation_config=config)) == expected


def test_the_spec_eos_wins_and_none_leaves_it():
    config = GenerationConfig(eos_token_id=[40, 41])
    assert damped(FocusLogitsProcessor(spec(eos_token_id=33), generation_config=config)) == [33]
    assert damped(FocusLogitsProcessor(spec(eos_token_id=33), generation_config=GenerationConfig())) == [33]
    # Per-prompt specs: None rows stay None, the others are filled.
    proc = FocusLogitsProcessor([spec(), None], generation_config=GenerationConfig(eos_token_id=[40, 41]))
    assert proc.specs[1] is None and proc.specs[0].eos_token_id == [40, 41]


def test_bad_generation_config_is_named():
    with pytest.raises(TypeError, match="generation_config"):
        FocusLogitsProcessor(spec(), generation_config=[40, 41])
    with pytest.raises(ValueError, match="eos_token_id"):
        FocusLogitsProcessor(spec(), generation_config=GenerationConfig(eos_token_id=[40, -2]))

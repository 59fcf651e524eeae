"""HF drop-in on the real embedded model (SmolLM2-135M-Instruct, CPU)."""
import pytest
import torch
from transformers import LogitsProcessorList

import focuskern as fk

from focuskern.hf.logits import FocusLogitsProcessor
from focuskern.experiments.models import load_model
from focuskern.experiments.generation import budget_of
from focuskern.experiments.prompts import SEED_KEYWORDS, SEED_PROMPT, chat_inputs, keyword_counts
from reference import brute_boosts

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def lm(smollm2_dir):
    torch.manual_seed(0)
    return load_model(smollm2_dir)


def generate(model, tok, prompts, proc=None, **kw):
    inputs = chat_inputs(tok, prompts)
    kw.setdefault("do_sample", False)
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([proc] if proc else []),
                         pad_token_id=tok.pad_token_id, **kw)
    return out[:, inputs["input_ids"].shape[1]:]


def test_greedy_phrase_focus_covers_more_keywords(lm):
    model, tok = lm
    kw = dict(max_new_tokens=200, repetition_penalty=1.05, no_repeat_ngram_size=2)
    base = tok.decode(generate(model, tok, [SEED_PROMPT], **kw)[0], skip_special_tokens=True)
    spec = fk.FocusSpec(SEED_KEYWORDS, **budget_of(model, kw["max_new_tokens"]))
    focused = tok.decode(generate(model, tok, [SEED_PROMPT], FocusLogitsProcessor(spec, tok), **kw)[0],
                         skip_special_tokens=True)
    covered = lambda text: sum(c > 0 for c in keyword_counts(text, SEED_KEYWORDS).values())  # noqa: E731
    assert covered(focused) > covered(base), (base, focused)


def test_batch_with_different_specs_and_left_padding(lm):
    """Row 0 is focused, row 1 is not; row 1 must equal its unbatched baseline token for token."""
    model, tok = lm
    prompts = ["Write one sentence about the sea.", "Name a colour and explain why you like it in detail."]
    # A constant push with the text policy's forms: "fixed" (legacy "default" forms) also pushes the
    # unspaced "light" mid-sentence, which glues onto words, and with only the longest start token
    # pushed a +6 no longer wins within 30 tokens here (+10 does).
    spec = fk.FocusSpec(["lighthouse"], bias=10.0, decay=fk.Decay.constant())
    proc = FocusLogitsProcessor([spec, None], tok)
    batched = generate(model, tok, prompts, proc, max_new_tokens=30)
    assert "lighthouse" in tok.decode(batched[0], skip_special_tokens=True).lower()
    alone = generate(model, tok, prompts, None, max_new_tokens=30)
    assert torch.equal(batched[1], alone[1])


def test_beam_search_rows_follow_their_parents(lm):
    model, tok = lm
    spec = fk.FocusSpec.fixed(["lighthouse keeper"], bias=6.0, continuation_bias=8.0, variants="spaced")
    proc = FocusLogitsProcessor(spec, tok)
    out = generate(model, tok, ["Tell me a short story about the sea."], proc, max_new_tokens=40, num_beams=2)
    text = tok.decode(out[0], skip_special_tokens=True).lower()
    assert "lighthouse keeper" in text, text
    # After the reorderings, every beam's automaton must describe that beam's own tokens.
    boosts = proc.state.boosts()
    for row in range(len(proc.state)):
        gen = proc.generated[row].tolist()
        assert boosts[row] == pytest.approx(brute_boosts(spec, gen, tok), abs=1e-5), f"beam {row}: {gen}"
        assert int(proc.state.step[row]) == len(gen)


def test_num_return_sequences_sampling(lm):
    model, tok = lm
    proc = FocusLogitsProcessor([fk.FocusSpec.fixed(["ocean"], bias=8.0), None], tok)
    torch.manual_seed(1)
    out = generate(model, tok, ["Say something about nature.", "Count to five."], proc,
                   max_new_tokens=20, do_sample=True, num_return_sequences=2)
    texts = [tok.decode(o, skip_special_tokens=True).lower() for o in out]
    assert all("ocean" in t for t in texts[:2]), texts
    assert len(proc.state) == 4 and proc.state.spec(2) is None and proc.state.spec(3) is None


def test_processor_rejects_bad_specs(lm):
    _, tok = lm
    with pytest.raises(TypeError, match="spec_or_specs"):
        FocusLogitsProcessor(["healthcare"], tok)
    with pytest.raises(ValueError, match="tokenizer"):
        FocusLogitsProcessor(fk.FocusSpec(["healthcare"]), None)

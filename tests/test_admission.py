"""Issue 21: token ids checked as Python ints before any narrowing, and what vLLM admission refuses
(``focuskern.vllm.admission``; no vLLM needed)."""
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

import focuskern as fk
from focuskern.vllm.admission import LIMIT_DEFAULTS, MAX_MESSAGE, Limits, ModelFacts, admit

ROOT = Path(__file__).resolve().parents[1]
V = 1000


@dataclass
class Params:
    extra_args: Optional[dict]
    max_tokens: Optional[int] = None
    eos_token_id: Optional[int] = None


class CharTokenizer:
    """One token per character (code point modulo ``V``); a zero-width space tokenizes to nothing."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) % V for c in text if c != "\u200b"]


@pytest.mark.parametrize("token", [2**31, 2**32, 2**32 + 7, 2**40, 2**63, 2**64 - 1, 10**30, -1, -(2**31)])
def test_ids_outside_int32_are_refused_by_the_spec(token):
    with pytest.raises(ValueError, match=r"entities\[1\]: token id .* is outside \[0, 2\*\*31\)"):
        fk.FocusSpec([[[3]], [[5, token]]])


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("token", [V, 2**31 - 1])
def test_ids_past_the_vocabulary_are_refused_at_build(token, backend):
    if fk.backends()[backend] != "available":
        pytest.skip(fk.backends()[backend])
    with pytest.raises(ValueError, match=rf"entities\[0\]: token id {token} is outside \[0, vocab_size={V}\)"):
        fk.FocusState([fk.FocusSpec([[[token]]])], V, "cpu", backend=backend)


def test_cpp_backend_with_a_2_31_entity_does_not_crash():
    """The reproduction of issue 21 (a segmentation fault before), in a subprocess."""
    code = ("import focuskern as fk\n"
            "try:\n    fk.FocusState([fk.FocusSpec([[[2**31]]])], 100, 'cpu', backend='cpp')\n"
            "except ValueError as e:\n    print('refused:', e)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0 and "refused: entities[0]: token id 2147483648" in run.stdout, run.stderr[-2000:]


@pytest.mark.parametrize("field,value", [("bias", 1e300), ("bias", 10**400), ("continuation_bias", -1e5),
                                         ("force", math.inf), ("eos_damp", 2e4), ("slack", 1e-9),
                                         ("max_new_tokens", 2**31), ("alpha", True)])
def test_numbers_that_float32_cannot_carry_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        fk.FocusSpec(["x"], **{field: value})


@pytest.mark.parametrize("decay", [dict(kind=1, horizon=1e-300), dict(kind=0, horizon=math.nan),
                                   dict(kind=math.nan), dict(kind=math.inf), dict(kind=2, horizon=10**400)])
def test_decay_refuses_what_the_kernels_cannot_divide_by(decay):
    with pytest.raises(ValueError, match="decay"):
        fk.Decay(**decay)


def test_lone_surrogate_is_refused_by_name():
    with pytest.raises(ValueError, match=r"entities\[1\] is not valid Unicode"):
        fk.FocusSpec(["ok", "a\ud800"])


def limits(**kw) -> Limits:
    return Limits(**{**dict(entities=5, entity_chars=10, focus_bytes=400), **kw})


@pytest.mark.parametrize("focus,name", [
    ({"entities": [f"w{i}" for i in range(6)]}, "FOCUSKERN_MAX_ENTITIES=5"),
    ({"entities": ["ok", "x" * 11]}, r"entities\[1\]: 11 characters .* FOCUSKERN_MAX_ENTITY_CHARS=10"),
    ({"entities": [[[1] * 6, [2] * 5]]}, r"entities\[0\]: 11 .* FOCUSKERN_MAX_ENTITY_CHARS=10"),
    ({"entities": ["ok"], "mode": "phrase" + " " * 400}, "FOCUSKERN_MAX_FOCUS_BYTES=400"),
])
@pytest.mark.parametrize("as_text", [False, True])
def test_limits_are_refused_by_name(focus, name, as_text):
    params = Params({"focus": json.dumps(focus) if as_text else focus})
    with pytest.raises(ValueError, match="^focus.*" + name):
        admit(params, limits(), None)
    if "mode" not in focus:  # within the spec: refused for the limit only
        assert admit(params, Limits(None, None, None), None) is not None


def test_limits_at_the_bound_pass_and_zero_disables(monkeypatch):
    assert admit(Params({"focus": {"entities": ["x" * 10] * 5}}), limits(), None) is not None
    monkeypatch.setenv("FOCUSKERN_MAX_ENTITIES", "0")
    monkeypatch.setenv("FOCUSKERN_MAX_ENTITY_CHARS", " 7 ")
    assert Limits.from_env() == Limits(None, 7, LIMIT_DEFAULTS["FOCUSKERN_MAX_FOCUS_BYTES"])
    monkeypatch.setenv("FOCUSKERN_MAX_FOCUS_BYTES", "1MB")
    with pytest.raises(ValueError, match="FOCUSKERN_MAX_FOCUS_BYTES"):
        Limits.from_env()


@pytest.mark.parametrize("focus,name", [
    ({"entities": ["ok", [[3, V]]]}, r"entities\[1\]: token id 1000 is outside \[0, vocab_size=1000\)"),
    ({"entities": ["ok", "\u200b\u200b"], "variants": "as_written"}, r"entities\[1\] .* tokenizes to nothing"),
    ({"entities": ["ok"], "eos_token_id": 2**63}, "eos_token_id 9223372036854775808 is outside"),
    ({"entities": [[[2**64 - 1]]]}, r"entities\[0\]: token id 18446744073709551615 is outside \[0, 2\*\*31\)"),
    ('{"entities": [[[' + "1" * 5000 + "]]]}", "focus is a string but not JSON"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
], ids=["id-past-vocab", "tokenizes-to-nothing", "eos-past-vocab", "id-2**64-1", "5000-digits", "deep-json"])
def test_what_the_engine_would_fail_on_is_refused_at_admission(focus, name):
    model = ModelFacts(V, CharTokenizer())
    with pytest.raises(ValueError, match="^focus.*" + name if not name.startswith("focus") else "^" + name):
        admit(Params({"focus": focus}), Limits(None, None, None), model)


def test_strings_need_a_tokenizer_and_messages_are_clipped():
    with pytest.raises(ValueError, match="tokenizer"):
        admit(Params({"focus": {"entities": ["word"]}}), Limits(None, None, None), ModelFacts(V, None))
    with pytest.raises(ValueError) as err:
        admit(Params({"focus": {"entities": [[["x" * 5000]]]}}), Limits(None, None, None), None)
    assert str(err.value).startswith("focus.entities[0]") and len(str(err.value)) <= MAX_MESSAGE + 4


def test_admitted_focus_is_the_engine_spec():
    params = Params({"focus": json.dumps({"entities": ["東京", [[7, 8]]], "bias": 2.0})}, max_tokens=20, eos_token_id=5)
    spec = admit(params, Limits.from_env({}), ModelFacts(V, CharTokenizer()))
    assert spec.key() == fk.FocusSpec(["東京", [[7, 8]]], bias=2.0, max_new_tokens=20, eos_token_id=5).key()
    assert admit(Params(None), Limits.from_env({}), None) is None

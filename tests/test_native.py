"""The csrc/ extension: its op schemas equal the Python ones, backends() explains a missing build, and
``auto`` picks ``cpp`` for CPU tensors when it is built (parity is in test_focus_logits/state)."""
import sys

import pytest
import torch

import focuskern
from focuskern.ops import dispatch as _backends
from focuskern.ops.focus_logits import FOCUS_LOGITS_SCHEMA
from focuskern.ops.focus_state import FOCUS_STATE_SCHEMA

BUILT = focuskern.backends()["cpp"] == "available"
needs_ext = pytest.mark.skipif(not BUILT, reason="focuskern._C is not built")


@needs_ext
@pytest.mark.parametrize("family,schema", [("focus_logits", FOCUS_LOGITS_SCHEMA), ("focus_state", FOCUS_STATE_SCHEMA)])
@pytest.mark.parametrize("backend", ["cpp", "cuda"])
def test_native_schema_equals_python_schema(family, schema, backend):
    import focuskern.ops.native  # noqa: F401 - registers the fakes

    name = f"focuskern::{family}_{backend}_"
    native = getattr(torch.ops.focuskern, f"{family}_{backend}_").default._schema
    assert str(native) == str(torch._C.parse_schema(name + schema))


@needs_ext
def test_auto_prefers_cpp_on_cpu(monkeypatch):
    monkeypatch.delenv("FOCUSKERN_BACKEND", raising=False)
    cpu = torch.device("cpu")
    assert _backends.resolve("auto", cpu, "focus_logits") == "cpp"
    assert _backends.resolve("auto", cpu, "focus_state") == "cpp"
    assert _backends.resolve("auto", cpu, "focus_attention") == "torch"  # no native attention
    with pytest.raises(ValueError, match="^backend: 'cpp' needs CPU tensors"):
        _backends.resolve("cpp", torch.device("cuda"), "focus_logits")
    with pytest.raises(ValueError, match="^backend: focus_attention has no 'cpp' implementation"):
        _backends.resolve("cpp", cpu, "focus_attention")


def test_missing_extension_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "focuskern._C", None)  # import of focuskern._C now fails
    monkeypatch.delattr(focuskern, "_C", raising=False)
    monkeypatch.delenv("FOCUSKERN_BACKEND", raising=False)
    _backends.extension.cache_clear()
    try:
        status = focuskern.backends()
        assert "focuskern._C is not built" in status["cpp"] and "focuskern._C is not built" in status["cuda"]
        assert _backends.resolve("auto", torch.device("cpu"), "focus_logits") == "torch"
        with pytest.raises(ValueError, match="^backend: 'cpp' is not available: focuskern._C is not built"):
            _backends.resolve("cpp", torch.device("cpu"), "focus_logits")
    finally:
        _backends.extension.cache_clear()


@needs_ext
def test_cpp_leaves_untouched_rows_bitwise_unchanged():
    V = 1000
    logits = torch.randn(3, V)
    before = logits.clone()
    row_offsets = torch.tensor([0, 2, 2, 3], dtype=torch.int32)
    ids = torch.tensor([5, 5, 7], dtype=torch.int32)
    bias = torch.tensor([1.0, 2.0, float("-inf")])
    alpha = torch.zeros(3)
    decay = torch.tensor([[0.0, 1.0, 0.0]] * 3)
    step = torch.zeros(3, dtype=torch.int32)
    focuskern.ops.focus_logits_(logits, row_offsets, ids, bias, alpha, decay, step, backend="cpp")
    changed = torch.zeros_like(logits, dtype=torch.bool)
    changed[0, 5] = changed[2, 7] = True
    assert torch.equal(logits[~changed], before[~changed])
    # Duplicated ids add up entry by entry, in row order: (x + 1) + 2, exactly (x + 3 can round differently).
    assert logits[0, 5] == (before[0, 5] + 1.0) + 2.0 and logits[2, 7] == float("-inf")

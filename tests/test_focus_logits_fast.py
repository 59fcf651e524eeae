"""The default CPU call of focus_logits_ (checks and the cpp op in one native call, no dispatcher) and
the cpp kernel's column tiles (blended rows cut across threads when there are few rows): both must
give what the dispatcher path and the PyTorch reference give, and leave the dispatcher's duties
(version counter, inference mode, FOCUSKERN_BACKEND, dispatch modes) as they were."""
import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import focuskern
from focuskern.ops import focus_logits_
from focuskern.ops import focus_logits as focus_logits_module

pytestmark = pytest.mark.skipif(focuskern.backends()["cpp"] != "available", reason="focuskern._C is not built")

TILE = 16384  # kBlendTile in csrc/focus_cpu.cpp


def case(B, V, seed, dtype=torch.float32, pad=0):
    """Logits (rows padded by ``pad`` columns: strided) and arguments with duplicated ids and bans
    around the tile edges; rows alternate between blending and not."""
    print("seed", seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, V + pad, generator=gen) * 4).to(dtype)[:, :V]
    edges = [i for k in range(1, V // TILE + 1) for i in (k * TILE - 1, k * TILE)] + [0, V - 1]
    rows = [[rng.choice(edges) if rng.random() < 0.5 else rng.randrange(V) for _ in range(rng.randrange(0, 9))]
            for _ in range(B)]
    rows[0] += rows[0][:1]  # a duplicated id (they add up)
    ids = [i for row in rows for i in row]
    row_offsets = torch.tensor([0] + [sum(len(r) for r in rows[:b + 1]) for b in range(B)], dtype=torch.int32)
    bias = torch.tensor([rng.choice([1.5, -2.0, float("-inf")]) for _ in ids], dtype=torch.float32)
    alpha = torch.tensor([0.0 if b % 2 else rng.uniform(0.1, 0.9) for b in range(B)])
    decay = torch.tensor([[float(b % 6), 7.0, 0.2] for b in range(B)])
    step = torch.tensor([rng.randrange(12) for _ in range(B)], dtype=torch.int32)
    return logits, (row_offsets, torch.tensor(ids, dtype=torch.int32), bias, alpha, decay, step)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B", [1, 3, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_call_matches_dispatcher_and_reference(threads, B, dtype):
    V = 2 * TILE + 1001  # three tiles, the last one short
    logits, args = case(B, V, seed=B * 10 + threads, dtype=dtype, pad=3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = focus_logits_(logits.clone(), *args)
        dispatched = focus_logits_(logits.clone(), *args, backend="cpp", validate=False)
        torch.set_num_threads(1)
        one_thread = focus_logits_(logits.clone(), *args, backend="cpp", validate=False)
    finally:
        torch.set_num_threads(before)
    reference = focus_logits_(logits.clone(), *args, backend="torch")
    assert torch.equal(fast, dispatched) and torch.equal(fast, one_thread)  # tiles or rows: the same bits
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(fast.float(), reference.float(), rtol=tol, atol=tol)


def test_default_call_bumps_the_version_and_works_in_inference_mode():
    logits, args = case(2, 3000, seed=1)
    version = logits._version
    focus_logits_(logits, *args)
    assert logits._version > version
    with torch.inference_mode():
        inference = logits.clone()
        focus_logits_(inference, *args)
    assert torch.equal(inference, focus_logits_(logits.clone(), *args))
    outside = focus_logits_(inference.clone(), *args, backend="cpp", validate=False)  # the dispatcher's way
    assert torch.equal(focus_logits_(inference, *args), outside)


def test_forced_backend_and_dispatch_modes_take_the_dispatcher(monkeypatch):
    logits, args = case(2, 3000, seed=2)
    resolved = []
    real = focus_logits_module._resolved
    monkeypatch.setattr(focus_logits_module, "_resolved", lambda *a: resolved.append(a[0]) or real(*a))
    monkeypatch.delenv("FOCUSKERN_BACKEND", raising=False)
    focus_logits_(logits.clone(), *args)
    assert resolved == []  # the native call did it all
    monkeypatch.setenv("FOCUSKERN_BACKEND", "torch")
    forced = focus_logits_(logits.clone(), *args)
    assert resolved == ["auto"]
    assert torch.allclose(forced, focus_logits_(logits.clone(), *args, backend="torch"))
    monkeypatch.delenv("FOCUSKERN_BACKEND")

    class Seen(TorchDispatchMode):
        ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Seen():
        focus_logits_(logits.clone(), *args)
    assert any("focus_logits_cpp_" in op for op in Seen.ops), Seen.ops


def formula(logits, row_offsets, ids, bias, alpha, decay, step):
    """The op entry by entry in float32, as the docstring writes it, for kinds 0 and 4 (whose strengths
    float32 gives exactly): the blend rounded to the logits' dtype, then each entry in order."""
    out = logits.clone()
    for r in range(out.shape[0]):
        kind, horizon, floor = decay[r]
        f = 1.0 if kind == 0 or step[r] < horizon else 0.0
        s = floor + (1 - floor) * f  # float32 0-d tensors
        scale = 1 - s * alpha[r]
        if scale != 1:
            out[r] = (out[r].float() * scale).to(out.dtype)
        for j in range(row_offsets[r], row_offsets[r + 1]):
            term = bias[j] if bias[j] == float("-inf") else s * bias[j]
            out[r, ids[j]] = (out[r, ids[j]].float() + term).to(out.dtype)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "column-major", "every-other-column"])
@pytest.mark.parametrize("blend", [False, True])
@pytest.mark.parametrize("validate", [True, False])
def test_entry_paths_equal_the_formula_bitwise(dtype, layout, blend, validate):
    """The cpp entry loop's variants -- s = 1 (b added as is), 0 < s < 1 (s * b), s = 0 (only bans
    land), ids checked (default call) or not (validate=False), unit or other column strides -- give
    the formula's bits; B = 67 crosses the 64-row chunk of the precomputed strengths."""
    B, V = 67, 1001
    x = (torch.randn(B, V) * 4).to(dtype)
    logits = {"contiguous": x.clone(), "column-major": x.t().contiguous().t(),
              "every-other-column": torch.zeros(B, 2 * V, dtype=dtype)[:, ::2].copy_(x)}[layout]
    counts = [random.randrange(2, 9)] + [random.randrange(0, 9) for _ in range(B - 1)]
    ids = [random.choice([0, V - 1, random.randrange(V)]) for _ in range(sum(counts))]
    ids[1] = ids[0]  # a duplicated id: the entries add up in order
    row_offsets = torch.tensor([0] + [sum(counts[:r + 1]) for r in range(B)], dtype=torch.int32)
    bias = torch.tensor([random.choice([1.5, -2.0, 0.1, float("-inf")]) for _ in ids])
    # (kind, horizon, floor): s = 1 (kind 0, or kind 4 before its horizon), 0.25, 0.6 or 0 after it.
    decay = torch.tensor([random.choice([[0.0, 0.0, 0.3], [4.0, 5.0, 0.25], [4.0, 5.0, 0.6], [4.0, 5.0, 0.0]])
                          for _ in range(B)])
    step = torch.randint(0, 10, (B,), dtype=torch.int32)
    alpha = torch.rand(B) * (torch.rand(B) < 0.5) if blend else torch.zeros(B)
    args = (row_offsets, torch.tensor(ids, dtype=torch.int32), bias, alpha, decay, step)
    expected = formula(x, *args)
    focus_logits_(logits, *args, backend="auto" if validate else "cpp", validate=validate)
    assert torch.equal(logits, expected)

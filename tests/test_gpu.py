"""GPU-only checks (skipped without CUDA): parity at real sizes, torch.compile and CUDA-graph replay.

A kernel is judged as flash-attention's tests judge theirs: its largest error against a float64 (or,
for FocusState, float32) reference may be at most twice that of the PyTorch reference computed in the
same precision, plus a tiny epsilon -- a fixed ``atol`` would let a dropped term pass wherever the
outputs are small."""
import pytest
import torch

import focuskern as fk
from focuskern.ops.dispatch import available_backends
from focuskern.ops import focus_logits_
from conftest import TOLERANCES
from cases import random_case
from cases import random_spec
from reference import focus_logits_f64

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
FAST = ("triton", "cuda")  # checked against the torch reference on the same device


def fast_backends(family):
    return [b for b in available_backends(family, CUDA) if b in FAST]


def assert_as_close_as_torch(got, torch_same_precision, exact, factor=2.0, eps=1e-6):
    """``max|got - exact| <= factor * max|torch_same_precision - exact| + eps * max|exact|`` over finite
    entries of ``exact`` (a float64/float32 reference); infinite entries must match exactly."""
    exact = exact.to(got.device, torch.float64)
    finite = torch.isfinite(exact)
    for name, t in (("kernel", got), ("torch reference", torch_same_precision)):
        assert torch.equal(t.double()[~finite], exact[~finite]), f"{name}: infinite entries differ"
    err = (got.double() - exact)[finite].abs().max().item() if finite.any() else 0.0
    ref_err = (torch_same_precision.double() - exact)[finite].abs().max().item() if finite.any() else 0.0
    scale = exact[finite].abs().max().item() if finite.any() else 0.0
    assert err <= factor * ref_err + eps * scale, (
        f"kernel error {err:.3g} > {factor} x same-precision torch error {ref_err:.3g} + {eps * scale:.3g}")


@pytest.mark.parametrize("backend", fast_backends("focus_logits"))
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("B,V,K", [(1, 151936, 256), (64, 151936, 256), (256, 49152, 16), (8, 32007, 2000)])
def test_logits_kernel_matches_torch_at_real_sizes(backend, dtype, B, V, K):
    logits, args = random_case(B, V, max_k=K, dtype=dtype)
    got, want = logits.clone(), logits.clone()
    focus_logits_(got, *args, backend=backend)
    focus_logits_(want, *args, backend="torch")
    exact = focus_logits_f64(logits.cpu(), *(a.cpu() for a in args))
    assert_as_close_as_torch(got, want, exact)


def _state_pair(backend, B, V, alpha, extra=()):
    import random
    rng = random.Random(0)
    specs = [random_spec(rng, 3000, alpha=alpha) if r % 5 else None for r in range(B)]
    return [fk.FocusState(specs, V, "cuda", backend=b) for b in (backend, "torch", *extra)]


@pytest.mark.parametrize("backend", fast_backends("focus_state"))
@pytest.mark.parametrize("B,alpha", [(1, 0.3), (64, 0.0), (64, 0.3)])
def test_state_kernel_matches_torch_at_real_sizes(backend, B, alpha):
    V = 151936
    fast, ref, ref32 = _state_pair(backend, B, V, alpha, extra=("torch",))
    for _ in range(20):
        tokens = torch.randint(0, 3003, (B,), device="cuda")
        x = torch.randn(B, V, device="cuda", dtype=torch.bfloat16)
        got, want, exact = x.clone(), x.clone(), x.float()
        fast.apply_(got, tokens)
        ref.apply_(want, tokens)
        ref32.apply_(exact, tokens)  # the same step in float32: the high-precision reference
        assert_as_close_as_torch(got, want, exact)
        assert torch.equal(fast._rows.node, ref._rows.node) and torch.equal(fast._rows.sat, ref._rows.sat)


@pytest.mark.parametrize("backend", fast_backends("focus_state") + ["torch"])
def test_compile_fullgraph_and_cuda_graph_replay(backend):
    B, V = 8, 49152
    logits, args = random_case(B, V, dtype=torch.bfloat16)
    compiled = torch.compile(lambda x: focus_logits_(x, *args, backend=backend, validate=False), fullgraph=True)
    got, want = logits.clone(), logits.clone()
    compiled(got)
    focus_logits_(want, *args, backend="torch")
    assert_as_close_as_torch(got, want, focus_logits_f64(logits.cpu(), *(a.cpu() for a in args)))

    fast, ref = _state_pair(backend, B, V, 0.3)
    static_x = torch.zeros(B, V, device="cuda")
    static_t = torch.zeros(B, dtype=torch.long, device="cuda")
    fast.apply_(static_x.clone(), static_t)  # warm-up: compile/import outside the capture
    ref.apply_(static_x.clone(), static_t)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fast.apply_(static_x, static_t)
    for _ in range(5):
        tokens = torch.randint(0, 3003, (B,), device="cuda")
        x = torch.randn(B, V, device="cuda")
        static_x.copy_(x)
        static_t.copy_(tokens)
        graph.replay()
        want = x.clone()
        ref.apply_(want, tokens)
        torch.testing.assert_close(static_x, want, rtol=1e-5, atol=1e-5)
    cstep = torch.compile(lambda x, t: fast.apply_(x, t), fullgraph=True)
    x = torch.randn(B, V, device="cuda")
    tokens = torch.randint(0, 3003, (B,), device="cuda")
    got, want = x.clone(), x.clone()
    cstep(got, tokens)
    ref.apply_(want, tokens)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

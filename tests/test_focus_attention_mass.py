"""focus_attention with key groups: the readout (``return_mass``) and target-mass steering, every backend
against float64 math written from the contract (tests/reference.py): GQA, causal offsets, left padding,
groups absent from a row, mu = 0, capped delta, all dtypes, strided views of every tensor argument; the
split running sums equal a second pass with the same delta; bad inputs name the argument; tracing."""
import random

import pytest
import torch

from focuskern.ops import focus_attention
from focuskern.ops.dispatch import available_backends
from conftest import DEVICE, TOLERANCES
from reference import assert_close_to_f64, attention_mass_f64

BACKENDS = available_backends("focus_attention", DEVICE)
MASS_ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view (every other element of a twice-as-wide last dim)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device) if t.dim() else t
    if not t.dim():
        return t
    wide[..., ::2] = t
    return wide[..., ::2]


def make_case(rng: random.Random, B, Hq, Hkv, Lq, Lk, D, dtype, *, num_groups, target=True, cap=20.0,
              absent_rows=True, view=False):
    """Random inputs; row 0 has no key of group 0 when ``absent_rows`` (mu = 0 there), target masses include
    0 (head left alone) and values under/over the natural share."""
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    q = torch.randn(B, Hq, Lq, D, generator=gen)
    k = torch.randn(B, Hkv, Lk, D, generator=gen) * 1.5
    v = torch.randn(B, Hkv, Lk, D, generator=gen)
    kb = torch.randn(B, Lk, generator=gen) * 2
    hs = torch.rand(Hq, generator=gen) * 2 - 0.5
    ks = torch.randint(0, Lk + 1, (B,), generator=gen, dtype=torch.int32)
    ks[0] = min(int(ks[0]), Lk // 3)
    kg = torch.randint(-1, num_groups, (B, Lk), generator=gen, dtype=torch.int32)
    if absent_rows and B > 1:
        kg[1][kg[1] == 0] = -1  # group 0 absent from row 1: mu = 0, no steering
    tm = None
    if target:
        tm = torch.rand(Hq, generator=gen) * 0.98
        tm[0] = 0.0
        if Hq > 2:
            tm[1] = 0.95
    args = dict(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), key_bias=kb, head_scale=hs, key_start=ks,
                key_group=kg, target_mass=tm)
    args = {n: None if t is None else t.to(DEVICE) for n, t in args.items()}
    if view:
        args = {n: None if t is None else strided(t) for n, t in args.items()}
    return args, dict(num_groups=num_groups, max_target_bias=cap)


def check(backend, args, opts, causal, note):
    out, mass = focus_attention(**args, **opts, causal=causal, return_mass=True, backend=backend)
    q = args["q"]
    assert out.shape == q.shape and out.dtype == q.dtype
    assert mass.shape == (*q.shape[:3], opts["num_groups"]) and mass.dtype == torch.float32
    want, mag, want_mass = attention_mass_f64(**args, **opts, causal=causal)
    rtol, atol = TOLERANCES[q.dtype]
    try:
        assert_close_to_f64(out, want, mag, rtol, atol)
        err = (mass.detach().cpu().double() - want_mass).abs().max() if mass.numel() else 0.0
        assert err <= MASS_ATOL[q.dtype], f"mass error {float(err):.3g}"
    except AssertionError as e:
        raise AssertionError(f"{note}: {e}") from None
    plain = focus_attention(**{n: t for n, t in args.items() if n not in ("key_group", "target_mass")},
                            causal=causal, backend=backend)
    if args["target_mass"] is None:  # groups without a target change nothing in the output
        assert_close_to_f64(plain, want, mag, rtol, atol)
    return out, mass


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("draw", range(6))
def test_parity_random(backend, draw, seed):
    rng = random.Random(seed)
    Hkv = rng.choice([1, 2])
    shape = dict(B=rng.choice([1, 2, 3]), Hq=Hkv * rng.choice([1, 3]), Hkv=Hkv, Lq=rng.choice([1, 2, 7, 17]),
                 Lk=rng.choice([1, 9, 33, 70]), D=rng.choice([16, 24]),
                 dtype=rng.choice(list(TOLERANCES)))
    shape["Lq"] = min(shape["Lq"], shape["Lk"]) if rng.random() < 0.5 else shape["Lq"]
    groups = rng.choice([1, 3, shape["Lk"]])
    args, opts = make_case(rng, **shape, num_groups=groups, target=rng.random() < 0.7,
                           cap=rng.choice([20.0, 0.5]), view=rng.random() < 0.5)
    check(backend, args, opts, rng.random() < 0.7, f"draw {draw} {shape} groups={groups}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
def test_strided_views_every_argument(backend, dtype, seed):
    args, opts = make_case(random.Random(seed), 2, 4, 2, 5, 23, 16, dtype, num_groups=4, view=True)
    assert all(t is None or not t.is_contiguous() for t in args.values())
    check(backend, args, opts, True, "strided")


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_reaches_exactly_the_target(backend, seed):
    """Steered share of group 0 = max(mu, p) (no cap), decode and prefill; mu = 0 rows unchanged."""
    rng = random.Random(seed)
    for Lq in (1, 6):
        args, opts = make_case(rng, 2, 3, 1, Lq, 40, 16, torch.float32, num_groups=2, cap=50.0)
        args["target_mass"] = torch.tensor([0.0, 0.6, 0.99], device=DEVICE)
        natural = focus_attention(**{**args, "target_mass": None}, **opts, return_mass=True, backend=backend)[1]
        steered = focus_attention(**args, **opts, return_mass=True, backend=backend)[1]
        mu = natural[..., 0]
        want = torch.maximum(mu, args["target_mass"].view(1, 3, 1)).where(mu > 0, 0.0)
        want[:, 0] = mu[:, 0]  # p = 0: head left alone
        torch.testing.assert_close(steered[..., 0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_capped_delta_equals_a_second_pass(backend, seed):
    """The one-pass output with a capped delta equals plain attention with delta added to group 0's keys."""
    args, opts = make_case(random.Random(seed), 1, 2, 1, 3, 30, 16, torch.float32, num_groups=2, cap=0.3,
                           absent_rows=False)
    args["target_mass"] = torch.tensor([0.999, 0.999], device=DEVICE)
    args["head_scale"] = None
    args["key_start"] = None
    args["key_group"] = (torch.arange(30, device=DEVICE) >= 4).int()[None]  # group 0: keys 0-3
    out, mass = focus_attention(**args, **opts, return_mass=True, backend=backend)
    bias = args["key_bias"] + 0.3 * (args["key_group"] == 0).float()
    second = focus_attention(args["q"], args["k"], args["v"], bias, backend=backend)
    # the cap binds wherever mu < sigmoid(logit(0.999) - 0.3) ~ 0.9986
    natural = focus_attention(**{**args, "target_mass": None}, **opts, return_mass=True, backend=backend)[1]
    assert bool((natural[..., 0] < 0.99).all())
    torch.testing.assert_close(out, second, rtol=1e-5, atol=1e-5)
    assert bool((mass[..., 0] < 0.999).all())


def _good():
    args, opts = make_case(random.Random(0), 2, 2, 1, 3, 5, 16, torch.float32, num_groups=2)
    return {**args, **opts, "return_mass": True}


BAD = [
    (dict(key_group=None), "key_group", ValueError),
    (dict(num_groups=None), "num_groups", TypeError),
    (dict(num_groups=0), "num_groups", ValueError),
    (dict(num_groups=True), "num_groups", TypeError),
    (dict(key_group=torch.zeros(2, 5, dtype=torch.int64)), "key_group", TypeError),
    (dict(key_group=torch.zeros(2, 4, dtype=torch.int32)), "key_group", ValueError),
    (dict(key_group=torch.full((2, 5), 2, dtype=torch.int32)), "key_group", ValueError),
    (dict(key_group=torch.full((2, 5), -2, dtype=torch.int32)), "key_group", ValueError),
    (dict(target_mass=torch.ones(2)), "target_mass", ValueError),
    (dict(target_mass=torch.full((2,), -0.1)), "target_mass", ValueError),
    (dict(target_mass=torch.full((2,), float("nan"))), "target_mass", ValueError),
    (dict(target_mass=torch.zeros(3)), "target_mass", ValueError),
    (dict(target_mass=torch.zeros(2, dtype=torch.float64)), "target_mass", TypeError),
    (dict(max_target_bias=-1.0), "max_target_bias", ValueError),
    (dict(max_target_bias=float("inf")), "max_target_bias", ValueError),
    (dict(max_target_bias="3"), "max_target_bias", TypeError),
    (dict(return_mass=1), "return_mass", TypeError),
]


@pytest.mark.parametrize("change,name,exc", BAD, ids=[f"{n}-{i}" for i, (_, n, _) in enumerate(BAD)])
def test_bad_input_names_the_argument(change, name, exc):
    args = _good()
    args.update({n: t.to(DEVICE) if isinstance(t, torch.Tensor) else t for n, t in change.items()})
    before = {n: t.clone() for n, t in args.items() if isinstance(t, torch.Tensor)}
    with pytest.raises(exc, match=f"^{name}"):
        focus_attention(**args)
    for n, t in before.items():
        assert torch.allclose(args[n], t, rtol=0, atol=0, equal_nan=True), f"{n} was modified"


def test_num_groups_without_key_group():
    args = _good()
    args.update(key_group=None, return_mass=False, target_mass=None)
    with pytest.raises(ValueError, match="^num_groups"):
        focus_attention(**args)


@pytest.mark.parametrize("backend", BACKENDS)
def test_registered_op_and_compile(backend):
    args, opts = make_case(random.Random(1), 2, 2, 1, 3, 9, 16, torch.float32, num_groups=3)
    focus_attention(**args, **opts, backend=backend)
    op = getattr(torch.ops.focuskern, f"focus_attention_{backend}_mass")
    a = args
    torch.library.opcheck(op, (a["q"], a["k"], a["v"], a["key_bias"], a["head_scale"], a["key_start"], True,
                               0.25, a["key_group"], 3, True, a["target_mass"], 20.0),
                          test_utils=("test_schema", "test_faketensor"))
    if backend != "torch":
        return
    fn = lambda q: focus_attention(q, a["k"], a["v"], key_group=a["key_group"], num_groups=3,  # noqa: E731
                                   return_mass=True, target_mass=a["target_mass"], backend="torch",
                                   validate=False)
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(a["q"]), fn(a["q"])):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton backend not available")
@pytest.mark.parametrize("reg_groups", [64, 1])
@pytest.mark.parametrize("Lq", [1, 4])
def test_triton_paths(monkeypatch, reg_groups, Lq, seed):
    """Both readouts (register sums; score-only pass when G > MAX_REG_GROUPS) and decode with forced
    KV splits (grouped calls run unsplit, so the split sums need no merge)."""
    from focuskern.ops import focus_attention_triton

    monkeypatch.setattr(focus_attention_triton, "MAX_REG_GROUPS", reg_groups)
    monkeypatch.setattr(focus_attention_triton, "FORCE_KV_SPLITS", 3)
    args, opts = make_case(random.Random(seed), 2, 4, 2, Lq, 150, 16, torch.float16, num_groups=5)
    check("triton", args, opts, True, f"MAX_REG_GROUPS={reg_groups} Lq={Lq}")


@pytest.mark.skipif("triton" not in BACKENDS, reason="triton backend not available")
def test_gpu_benchmark_contenders_smoke():
    """benchmarks/gpu_attention.py's readout/target contenders run (tiny CPU tensors, interpreter) and
    the readout's output equals the plain call's."""
    import argparse
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from benchmarks.gpu_attention import Bench

    args = argparse.Namespace(contenders=["focus", "focus_readout", "focus_target"], warmup_ms=1, rep_ms=1,
                              dtype="float32")
    q, k, v = torch.randn(1, 4, 3, 16), torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)
    bias = torch.zeros(1, 40)
    bias[0, ::7] = 2.0
    fns = Bench(args).contenders(q, k, v, bias, causal=True)
    outs = {name: fn() for name, fn in fns.items()}
    torch.testing.assert_close(outs["focus_readout"], outs["focus"], rtol=1e-5, atol=1e-5)
    assert outs["focus_target"].shape == q.shape

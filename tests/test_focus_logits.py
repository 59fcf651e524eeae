"""Parity of every focus_logits_ backend with float64 math, plus input validation."""
import math

import pytest
import torch

import focuskern
from focuskern.ops.dispatch import available_backends
from focuskern.ops import focus_logits_
from focuskern.ops import focus_logits as focus_logits_module
from conftest import DEVICE, TOLERANCES
from cases import random_case
from reference import assert_close_to_f64, focus_logits_f64

BACKENDS = available_backends("focus_logits", DEVICE)
DTYPES = list(TOLERANCES)


def check_against_f64(logits, args, backend, dtype):
    cpu = [a.cpu() for a in args]
    expected = focus_logits_f64(logits.cpu(), *cpu)
    row_offsets, ids, bias, *rest = cpu
    magnitude = focus_logits_f64(logits.cpu().abs(), row_offsets, ids, bias.abs().nan_to_num(posinf=0.0), *rest)
    out = logits.clone() if logits.is_contiguous() else logits
    result = focus_logits_(out, *args, backend=backend)
    assert result is out
    assert_close_to_f64(out, expected, magnitude, *TOLERANCES[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,V", [(1, 49152), (3, 32007), (6, 257)])
def test_parity_with_float64(backend, dtype, B, V):
    logits, args = random_case(B, V, dtype=dtype)
    check_against_f64(logits, args, backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parity_qwen_vocab_and_strided_rows(backend):
    logits, args = random_case(2, 151936, dtype=torch.bfloat16, row_stride_pad=9)
    parent = logits.as_strided((2, 151936 + 9), (logits.stride(0), 1))
    before = parent[:, 151936:].clone()
    check_against_f64(logits, args, backend, torch.bfloat16)
    assert torch.equal(parent[:, 151936:], before), "padding columns past V were written"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_alpha_zero_touches_only_listed_entries(backend, dtype):
    logits, args = random_case(5, 4099, dtype=dtype, blend=False)
    row_offsets, ids = args[0].cpu(), args[1].cpu()
    listed = torch.zeros(logits.shape, dtype=torch.bool)
    for r in range(5):
        listed[r, ids[row_offsets[r]:row_offsets[r + 1]].long()] = True
    out = logits.clone()
    focus_logits_(out, *args, backend=backend)
    assert torch.equal(out.cpu()[~listed], logits.cpu()[~listed])
    check_against_f64(logits, args, backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_parts(backend):
    logits, args = random_case(4, 1000, max_k=0)
    assert args[1].numel() == 0
    check_against_f64(logits, args, backend, torch.float32)
    empty = torch.empty(0, 1000, device=DEVICE)
    zero_rows = [torch.zeros(1, dtype=torch.int32, device=DEVICE), args[1], args[2][:0],
                 torch.zeros(0, device=DEVICE), torch.zeros(0, 3, device=DEVICE),
                 torch.zeros(0, dtype=torch.int32, device=DEVICE)]
    assert focus_logits_(empty, *zero_rows, backend=backend).shape == (0, 1000)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unchecked_ids_outside_vocab_are_skipped(backend):
    """validate=False trusts the arguments, but an id outside [0, V) is skipped, never written (issue 21):
    the result equals the case without those entries and the columns past V stay untouched."""
    V = 37
    parent = torch.randn(2, V + 4, device=DEVICE)
    logits = parent[:, :V]
    ids = [-1, 5, V, -2**31, 2**31 - 1, 5, V + 1, 36]
    inside = [0 <= i < V for i in ids]
    bias = torch.randn(len(ids), device=DEVICE)
    args = dict(alpha=torch.tensor([0.0, 0.5], device=DEVICE), decay=torch.zeros(2, 3, device=DEVICE),
                step=torch.zeros(2, dtype=torch.int32, device=DEVICE))
    ro = torch.tensor([0, 4, len(ids)], dtype=torch.int32, device=DEVICE)
    kept_ro = torch.tensor([0, sum(inside[:4]), sum(inside)], dtype=torch.int32, device=DEVICE)
    kept = [i for i, ok in zip(ids, inside) if ok]
    expected = logits.clone()
    focus_logits_(expected, kept_ro, torch.tensor(kept, dtype=torch.int32, device=DEVICE),
                  bias[torch.tensor(inside, device=DEVICE)], **args, backend=backend)
    past = parent[:, V:].clone()
    focus_logits_(logits, ro, torch.tensor(ids, dtype=torch.int32, device=DEVICE), bias, **args,
                  backend=backend, validate=False)
    assert torch.equal(logits, expected)
    assert torch.equal(parent[:, V:], past), "an id past V wrote into the next columns"


@pytest.mark.parametrize("backend", BACKENDS)
def test_ban_survives_zero_strength(backend):
    """A -inf entry bans its token even when the schedule has switched the push off (s = 0)."""
    logits = torch.zeros(1, 64, device=DEVICE)
    ro = torch.tensor([0, 3], dtype=torch.int32, device=DEVICE)
    ids = torch.tensor([7, 9, 9], dtype=torch.int32, device=DEVICE)
    bias = torch.tensor([-math.inf, 2.0, 3.0], device=DEVICE)
    cutoff_passed = torch.tensor([[4.0, 5.0, 0.0]], device=DEVICE)
    focus_logits_(logits, ro, ids, bias, torch.zeros(1, device=DEVICE), cutoff_passed,
                  torch.tensor([5], dtype=torch.int32, device=DEVICE), backend=backend)
    assert logits[0, 7] == -math.inf
    assert logits[0, 9] == 0.0
    focus_logits_(logits, ro, ids, bias, torch.zeros(1, device=DEVICE), cutoff_passed,
                  torch.tensor([0], dtype=torch.int32, device=DEVICE), backend=backend)
    assert logits[0, 9] == 5.0  # duplicates add up


def good_args(B=2, V=50):
    logits = torch.randn(B, V, device=DEVICE)
    ro = torch.tensor([0, 2, 3], dtype=torch.int32, device=DEVICE)
    ids = torch.tensor([1, 2, 3], dtype=torch.int32, device=DEVICE)
    bias = torch.ones(3, device=DEVICE)
    alpha = torch.zeros(B, device=DEVICE)
    decay = torch.tensor([[0.0, 0.0, 1.0], [1.0, 10.0, 0.0]], device=DEVICE)
    step = torch.zeros(B, dtype=torch.int32, device=DEVICE)
    return dict(logits=logits, row_offsets=ro, token_ids=ids, token_bias=bias, alpha=alpha, decay=decay, step=step)


def _set(name, fn):
    return lambda a: a.__setitem__(name, fn(a[name]))


def _patch_value(name, index, value):
    def patch(a):
        t = a[name].clone()
        t[index] = value
        a[name] = t
    return patch


BAD_INPUTS = [
    ("logits", TypeError, _set("logits", lambda t: t.to(torch.float64))),
    ("logits", ValueError, _set("logits", lambda t: t[0])),
    ("logits", TypeError, _set("logits", lambda t: t.tolist())),
    ("logits", ValueError, _set("logits", lambda t: t[:1].expand(t.shape))),
    ("token_ids", TypeError, _set("token_ids", lambda t: t.long())),
    ("token_ids", ValueError, _patch_value("token_ids", 0, 50)),
    ("token_ids", ValueError, _patch_value("token_ids", 1, -1)),
    ("token_bias", ValueError, _patch_value("token_bias", 0, math.nan)),
    ("token_bias", ValueError, _patch_value("token_bias", 2, math.inf)),
    ("token_bias", ValueError, _set("token_bias", lambda t: t[:2])),
    ("token_bias", TypeError, _set("token_bias", lambda t: t.half())),
    ("row_offsets", ValueError, _set("row_offsets", lambda t: t.flip(0))),
    ("row_offsets", ValueError, _patch_value("row_offsets", 1, 4)),
    ("row_offsets", ValueError, _set("row_offsets", lambda t: t[:2])),
    ("alpha", ValueError, _patch_value("alpha", 0, 1.5)),
    ("alpha", ValueError, _patch_value("alpha", 1, -0.1)),
    ("decay", ValueError, _patch_value("decay", (0, 0), 6.0)),
    ("decay", ValueError, _patch_value("decay", (0, 0), 1.5)),
    ("decay", ValueError, _patch_value("decay", (1, 1), 0.0)),
    ("decay", ValueError, _patch_value("decay", (1, 2), 1.5)),
    ("step", ValueError, _patch_value("step", 0, -3)),
    ("step", TypeError, _set("step", lambda t: t.float())),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("native", [True, False], ids=["native-check", "python-check"])
@pytest.mark.parametrize("name,error,patch", BAD_INPUTS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_names_argument_and_leaves_logits(name, error, patch, native, backend, monkeypatch):
    """Both validation paths (the one-pass native check on CPU and the ATen checks) name the argument."""
    if not native:
        monkeypatch.setattr(focus_logits_module, "_native_check", lambda: None)
    args = good_args()
    patch(args)
    for key in ARG_NAMES[1:]:  # strided views must be checked on what they show, not their storage
        if key != name and isinstance(args[key], torch.Tensor):
            args[key] = next(iter(strided_views(args[key]).values()))
    logits = args["logits"]
    before = logits.clone() if isinstance(logits, torch.Tensor) else None
    with pytest.raises(error, match=name):
        focus_logits_(**args, backend=backend)
    if before is not None:
        assert torch.equal(logits, before)


def test_device_mismatch_is_named():
    if DEVICE.type == "cpu":
        pytest.skip("needs a second device")
    args = good_args()
    args["alpha"] = args["alpha"].cpu()
    with pytest.raises(ValueError, match="alpha"):
        focus_logits_(**args)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend"):
        focus_logits_(**good_args(), backend="nope")


ARG_NAMES = ("row_offsets", "token_ids", "token_bias", "alpha", "decay", "step")


def strided_views(t):
    """Non-contiguous views equal to ``t``: every other element of a wider buffer, a transposed
    (column-major) copy for 2-D tensors, and a stride-0 broadcast when all rows are equal."""
    wide = torch.full((*t.shape[:-1], 2 * t.shape[-1] + 1), 7, dtype=t.dtype, device=t.device)[..., 1::2]
    views = {"every-other": wide.copy_(t)}
    if t.dim() == 2:
        views["transposed"] = t.t().contiguous().t()
    if t.shape[0] > 1:
        views["broadcast"] = t[:1].expand(t.shape)  # compared with its own .contiguous() copy
    return views


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ("logits",) + ARG_NAMES)
def test_strided_arguments_match_contiguous_copies(backend, name):
    """Any strides of any argument give bitwise the result of the ``.contiguous()`` copies."""
    logits, args = random_case(5, 3001, dtype=torch.bfloat16)
    named = dict(zip(ARG_NAMES, args))
    if name == "logits":
        views = {"row-strided": random_case(5, 3001, row_stride_pad=5)[0].copy_(logits),
                 "column-major": logits.t().contiguous().t(),
                 "every-other-column": torch.zeros(5, 6002, dtype=logits.dtype, device=DEVICE)[:, ::2].copy_(logits)}
    else:
        views = strided_views(named[name])
        if name in ("row_offsets", "token_ids", "token_bias"):
            views.pop("broadcast", None)  # a broadcast CSR is no CSR; the other views cover these
    for layout, view in views.items():
        assert not view.is_contiguous() or view.numel() < 2, layout  # one element has no strides to test
        base = dict(named, **({} if name == "logits" else {name: view.contiguous()}))
        strided = dict(named, **({} if name == "logits" else {name: view}))
        expected = (view if name == "logits" else logits).contiguous().clone()
        got = view if name == "logits" else logits.clone()
        focus_logits_(expected, **base, backend=backend)
        focus_logits_(got, **strided, backend=backend)
        assert torch.equal(got.contiguous(), expected), f"{name} {layout} differs from its contiguous copy"

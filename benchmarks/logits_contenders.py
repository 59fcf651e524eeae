"""Cases and contenders shared by the logits benchmarks (CPU pytest-benchmark and the GPU script).

A *case* is one decoding step of a batch: ``B`` rows of ``V`` logits, ``K`` boosted token ids per
row (random, unique within a row), every bias ``+3.0`` (the seed article's hard boost), a constant
decay (strength 1) and one ``alpha`` for all rows.  A *contender* is a zero-argument callable that
applies one step to its own logits tensor.

The in-place contenders are timed by calling them over and over on the same tensor: the bias then
piles up (x + 3, x + 6, ...) and with ``alpha > 0`` the logits shrink towards 0.  That changes the
values, not the work done, so it does not matter for timing (on CPU, call
``torch.set_flush_denormal(True)`` around blended cases: tiny logits would otherwise become
denormals, which x86 multiplies far more slowly).

Nothing here touches CUDA at import time.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from focuskern.ops.dispatch import available_backends
from focuskern.ops import focus_logits_

BIAS = 3.0
HISTORY = 8  # length of the input_ids handed to the HF processors

# name -> what it is (shown in the README, the JSON and benchmark extra_info)
DESCRIPTIONS = {
    "focuskern_default": "focuskern focus_logits_(...) as documented: backend=\"auto\", validate=True "
                         "(CPU: argument checks in the cpp op's one pass; CUDA: one host sync for the checks)",
    "focuskern_torch": 'focuskern focus_logits_(..., backend="torch", validate=False): the PyTorch reference '
                       "(decay, CSR rows, duplicate-id segment sum, blend, index_put), as a custom op",
    "focuskern_triton": 'focuskern focus_logits_(..., backend="triton", validate=False): one fused Triton launch',
    "focuskern_cpp": 'focuskern focus_logits_(..., backend="cpp", validate=False): the C++ op from csrc/ '
                     "(OpenMP over rows, one pass per row)",
    "focuskern_cuda": 'focuskern focus_logits_(..., backend="cuda", validate=False): the CUDA op from csrc/ '
                      "(one launch, no Python launcher)",
    "seed000_naive": "seed 000's KeywordBiasLogitsProcessor: scores[:, token_ids] += 3.0 with ONE id set "
                     "(K ids) shared by every row; no blend, no decay",
    "hf_sequence_bias": "transformers.SequenceBiasLogitsProcessor({(id,): 3.0 for K ids}) called as "
                        "proc(input_ids[B, 8], scores): ONE shared id set; builds a dense [B, V] bias and "
                        "returns scores + bias (out of place)",
    "eager_blend": "eager PyTorch, per-row: logits.mul_(scale[:, None]); "
                   "logits.index_put_((rows, ids), vals, accumulate=True) (rows/ids/vals precomputed)",
    "eager_scatter_add": "eager PyTorch, the leanest per-row form: (logits.mul_(scale[:, None]) if alpha > 0); "
                         "logits.scatter_add_(1, ids[B, K], vals[B, K]) (needs K ids in every row; ids/vals "
                         "precomputed)",
    "vllm_v1_index_add": "vLLM V1 LogitBiasLogitsProcessor.apply: logits[(rows_i32, ids_i32)] += bias "
                         "(advanced-index gather, add, scatter); no blend, no decay",
    "dense_bias": "dense [B, V] bias built every step: bias = zeros(B, V); bias[rows, ids] = vals; "
                  "(logits.mul_(scale[:, None]) if alpha > 0); logits += bias",
    "empty_triton": "reference: launch of an empty Triton kernel (launch overhead floor)",
    "copy": "reference: dst.copy_(src) of a [B, V] tensor (device-to-device bandwidth)",
}

# Contenders that compute the same thing as focus_logits_ for the case; the others solve the
# easier problem (no blend, one shared id set) and are only listed where alpha = 0.
BLEND_CONTENDERS = ("focuskern_torch", "eager_blend", "eager_scatter_add", "dense_bias")
ALPHA0_CONTENDERS = ("focuskern_torch", "seed000_naive", "hf_sequence_bias", "eager_blend", "eager_scatter_add",
                     "vllm_v1_index_add", "dense_bias")


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "not installed"
    return triton.__version__


@contextmanager
def flush_denormal(enabled: bool = True):
    """Flush denormals to zero inside the block (repeated blending shrinks logits towards 0, and x86
    multiplies denormals much more slowly, which would time the data, not the op)."""
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass(frozen=True)
class Case:
    B: int
    V: int
    K: int
    alpha: float = 0.0

    @property
    def name(self) -> str:
        return f"B={self.B} V={self.V} K={self.K} alpha={self.alpha:g}"

    @property
    def slug(self) -> str:
        return f"B{self.B}-V{self.V}-K{self.K}-a{self.alpha:g}"

    def contenders(self, device: str = "cpu") -> tuple[str, ...]:
        """Contenders of this case on ``device``: the focuskern kernel backends available there first."""
        names = BLEND_CONTENDERS if self.alpha else ALPHA0_CONTENDERS
        kernels = [b for b in available_backends("focus_logits", torch.device(device)) if b != "torch"]
        if device == "cpu":
            kernels = [b for b in kernels if b != "triton"]  # the interpreter is not a CPU backend
        return ("focuskern_default",) + tuple(f"focuskern_{b}" for b in kernels) + names

    def bytes_touched(self, elem_size: int) -> int:
        """Bytes a minimal kernel must move: the listed entries only, or the whole [B, V] for a blend."""
        if self.alpha:
            return 2 * self.B * self.V * elem_size
        return self.B * self.K * (2 * elem_size + 8)  # read + write the logit, read id + bias (4 + 4)


class KeywordBiasLogitsProcessor:
    """Seed 000's processor, verbatim apart from the missing HF base class."""

    def __init__(self, token_ids: torch.Tensor, bias: float = 3.0):
        self.token_ids = token_ids
        self.bias = bias

    def __call__(self, input_ids, scores):
        scores[:, self.token_ids] += self.bias
        return scores


@dataclass
class Inputs:
    """Every tensor the contenders need for one case, on one device."""

    case: Case
    logits: torch.Tensor  # pristine [B, V]; contenders work on clones
    row_offsets: torch.Tensor
    token_ids: torch.Tensor
    token_bias: torch.Tensor
    alpha: torch.Tensor
    decay: torch.Tensor
    step: torch.Tensor
    rows: torch.Tensor  # [nnz] int64 row of each entry
    ids: torch.Tensor  # [nnz] int64
    rows32: torch.Tensor
    ids32: torch.Tensor
    scale: torch.Tensor  # [B] float32, 1 - strength * alpha
    vals: torch.Tensor  # [nnz] logits dtype, strength * bias
    shared_ids: torch.Tensor  # [K] int64: row 0's ids, the one id set of the HF-style processors
    input_ids: torch.Tensor  # [B, HISTORY] int64


def random_unique_ids(B: int, V: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """[B, K] int64, K distinct random ids in [0, V) per row (rows are independent)."""
    return torch.multinomial(torch.ones(B, V), K, replacement=False, generator=gen)


def make_inputs(case: Case, device="cpu", dtype=torch.float32, seed: int = 0,
                logits: torch.Tensor | None = None) -> Inputs:
    """Build a case's tensors on the CPU (deterministic for ``seed``) and move them to ``device``."""
    B, V, K = case.B, case.V, case.K
    gen = torch.Generator().manual_seed(seed * 1_000_003 + B * 7919 + V * 31 + K)
    if logits is None:
        logits = (torch.randn(B, V, generator=gen) * 4).to(dtype)
    ids = random_unique_ids(B, V, K, gen)  # [B, K]
    row_offsets = torch.arange(0, B * K + 1, K, dtype=torch.int32)
    token_ids = ids.reshape(-1).to(torch.int32)
    token_bias = torch.full((B * K,), BIAS, dtype=torch.float32)
    alpha = torch.full((B,), float(case.alpha), dtype=torch.float32)
    decay = torch.tensor([[0.0, 0.0, 1.0]]).repeat(B, 1)  # kind 0 = constant, strength 1
    step = torch.zeros(B, dtype=torch.int32)
    rows = torch.arange(B).repeat_interleave(K)
    strength = 1.0
    scale = 1.0 - strength * alpha
    vals = (strength * token_bias).to(dtype)
    input_ids = torch.randint(0, V, (B, HISTORY), generator=gen)
    t = dict(logits=logits, row_offsets=row_offsets, token_ids=token_ids, token_bias=token_bias,
             alpha=alpha, decay=decay, step=step, rows=rows, ids=token_ids.long(),
             rows32=rows.to(torch.int32), ids32=token_ids, scale=scale, vals=vals,
             shared_ids=ids[0].clone(), input_ids=input_ids)
    return Inputs(case=case, **{k: v.to(device) for k, v in t.items()})


def make_contender(name: str, inp: Inputs, logits: torch.Tensor) -> Callable[[], object]:
    """A zero-argument callable applying contender ``name`` once to ``logits`` (in place if it can)."""
    B, V = logits.shape
    fk_args = (inp.row_offsets, inp.token_ids, inp.token_bias, inp.alpha, inp.decay, inp.step)
    blend = bool(inp.case.alpha)

    if name == "focuskern_default":
        return lambda: focus_logits_(logits, *fk_args)

    if name.startswith("focuskern_"):
        backend = name.removeprefix("focuskern_")
        return lambda: focus_logits_(logits, *fk_args, backend=backend, validate=False)

    if name == "seed000_naive":
        proc = KeywordBiasLogitsProcessor(inp.shared_ids, BIAS)
        return lambda: proc(inp.input_ids, logits)

    if name == "hf_sequence_bias":
        from transformers import SequenceBiasLogitsProcessor

        proc = SequenceBiasLogitsProcessor(sequence_bias={(int(i),): BIAS for i in inp.shared_ids.tolist()})
        proc(inp.input_ids, logits)  # first call prepares its [V] bias vector (setup, not per step)
        return lambda: proc(inp.input_ids, logits)  # out of place: returns a new [B, V] tensor

    if name == "eager_blend":
        scale_col = inp.scale.to(logits.dtype).unsqueeze(1)
        index = (inp.rows, inp.ids)

        def eager_blend():
            logits.mul_(scale_col)
            logits.index_put_(index, inp.vals, accumulate=True)

        return eager_blend

    if name == "eager_scatter_add":
        scale_col = inp.scale.to(logits.dtype).unsqueeze(1)
        ids2d, vals2d = inp.ids.view(B, -1), inp.vals.view(B, -1)

        def eager_scatter_add():
            if blend:
                logits.mul_(scale_col)
            logits.scatter_add_(1, ids2d, vals2d)

        return eager_scatter_add

    if name == "vllm_v1_index_add":
        logits_slice = (inp.rows32, inp.ids32)
        bias_tensor = inp.vals

        def vllm_v1_index_add():
            logits[logits_slice] += bias_tensor

        return vllm_v1_index_add

    if name == "dense_bias":
        scale_col = inp.scale.to(logits.dtype).unsqueeze(1)
        index = (inp.rows, inp.ids)

        def dense_bias():
            bias = torch.zeros(B, V, dtype=logits.dtype, device=logits.device)
            bias[index] = inp.vals
            if blend:
                logits.mul_(scale_col)
            logits.add_(bias)

        return dense_bias

    raise ValueError(f"unknown contender {name!r}")


def check_agreement(inp: Inputs, names: tuple[str, ...] | None = None) -> None:
    """One step of every contender from the same logits must agree (shared-id-set ones among themselves).

    A correctness guard for the benchmark itself (are the contenders doing the same work?), not a
    timing assertion.  Raises ``AssertionError`` naming the first contender that disagrees.
    """
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[inp.logits.dtype]

    def one_step(name: str) -> torch.Tensor:
        x = inp.logits.clone()
        out = make_contender(name, inp, x)()
        return out if name == "hf_sequence_bias" else x  # the HF processor works out of place

    names = inp.case.contenders() if names is None else names
    per_row = [n for n in names if n not in ("seed000_naive", "hf_sequence_bias")]
    ref = one_step(per_row[0])
    for name in per_row[1:]:
        got = one_step(name)
        assert torch.allclose(got.float(), ref.float(), rtol=tol, atol=tol), f"{name} disagrees with {per_row[0]}"
    if "seed000_naive" in names and "hf_sequence_bias" in names:
        seed = one_step("seed000_naive")
        hf = one_step("hf_sequence_bias")
        assert torch.allclose(hf.float(), seed.float(), rtol=tol, atol=tol), "hf_sequence_bias != seed000_naive"

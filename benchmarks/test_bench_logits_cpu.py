"""CPU timings of focus_logits_ (the default call, and each backend) against the ways people bias logits today.

Measurements only: nothing here asserts anything about time.  One benchmark group per case, so
pytest-benchmark compares the contenders of a case side by side::

    python -m pytest benchmarks -q --benchmark-only --benchmark-columns=median,iqr,ops

Cases: B in {1, 8, 64} x V in {49152, 151936} x K in {16, 256} boosted ids per row (random, unique
within a row), fp32 logits, alpha = 0; plus alpha = 0.3 for V = 151936, K = 256 (the blended rows
then rewrite every logit, and only the contenders that compute the same blend take part).
The contenders are described in benchmarks/README.md and ``logits_contenders.DESCRIPTIONS``.

Each contender is applied over and over to its own copy of the logits, in place (the bias piles
up, and with alpha > 0 the logits shrink towards 0): the values change, the work does not.
"""
from __future__ import annotations

import functools
import time

import pytest

from .logits_contenders import DESCRIPTIONS, Case, check_agreement, flush_denormal, make_contender, make_inputs

SIZES = [(B, V, K) for B in (1, 8, 64) for V in (49152, 151936) for K in (16, 256)]
CASES = [Case(B, V, K, 0.0) for B, V, K in SIZES] + [Case(B, 151936, 256, 0.3) for B in (1, 8, 64)]


def _params():
    for case in CASES:
        for name in case.contenders():
            yield pytest.param(case, name, id=f"{case.slug}-{name}", marks=pytest.mark.benchmark(group=case.name))


@functools.lru_cache(maxsize=1)  # parameters run case by case: one case's tensors alive at a time
def case_inputs(case: Case):
    inp = make_inputs(case)
    check_agreement(inp)  # same work? (a correctness guard on the contenders, not on timing)
    return inp


def warm_up(fn, min_calls: int = 3, budget_s: float = 0.05) -> None:
    """First calls pay one-off costs (op registration, allocator, caches): keep them out of the rounds."""
    start = time.perf_counter()
    for i in range(100):
        fn()
        if i + 1 >= min_calls and time.perf_counter() - start > budget_s:
            break


@pytest.mark.parametrize("case,contender", list(_params()))
def test_focus_logits_cpu(bench, case: Case, contender: str):
    inp = case_inputs(case)
    logits = inp.logits.clone()
    fn = make_contender(contender, inp, logits)
    bench.extra_info.update(
        case=case.name, contender=contender, description=DESCRIPTIONS[contender],
        dtype=str(logits.dtype).removeprefix("torch."), nnz=case.B * case.K,
        bytes_touched=case.bytes_touched(logits.element_size()),
    )
    with flush_denormal(case.alpha > 0):
        warm_up(fn)
        bench(fn)

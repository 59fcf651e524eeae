"""CPU timings of one ``FocusState.apply_`` step (automaton advance + bias/blend/decay) per backend.

Measurements only.  Each row of the batch follows its own spec: 5 entities x 4 variants of 1-4
token ids drawn from V (about 20 first tokens and 40 continuations per row), phrase mode,
satisfy="once" with tokens that never complete an entity (so the work stays the same step after
step), and a linear decay; ``policy="budget"`` adds the budget policy (200-token budget: urgency,
end-of-text damping, the satisfied-set popcount), ``"fixed"`` has none.  Cases: B in {1, 8, 64},
V = 151936, alpha in {0, 0.3}; fp32 logits::

    python -m pytest benchmarks/test_bench_state_cpu.py -q --benchmark-only --benchmark-columns=median,iqr
"""
from __future__ import annotations

import random

import pytest
import torch

import focuskern as fk
from focuskern.ops.dispatch import available_backends

from .logits_contenders import flush_denormal
from .test_bench_logits_cpu import warm_up

V = 151936
CASES = [(B, alpha) for alpha in (0.0, 0.3) for B in (1, 8, 64)]
BACKENDS = [b for b in available_backends("focus_state", torch.device("cpu")) if b != "triton"]


POLICIES = {"fixed": {}, "budget": {"max_new_tokens": 200, "eos_token_id": 2}}


def row_spec(rng: random.Random, alpha: float, policy: str = "fixed") -> fk.FocusSpec:
    entities = [[[rng.randrange(1, V) for _ in range(rng.randint(1, 4))] for _ in range(4)] for _ in range(5)]
    return fk.FocusSpec(entities, bias=3.0, alpha=alpha, decay=fk.Decay.linear(1000, floor=0.1), **POLICIES[policy])


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B,alpha", CASES, ids=[f"B{B}-a{a:g}" for B, a in CASES])
def test_focus_state_apply_cpu(bench, B, alpha, backend, policy):
    rng = random.Random(B)
    state = fk.FocusState([row_spec(rng, alpha, policy) for _ in range(B)], V, "cpu", backend=backend)
    logits = torch.randn(B, V) * 4
    last = torch.zeros(B, dtype=torch.long)  # id 0 is in no entity: the automata stay at their root
    bench.group = f"FocusState.apply_ B={B} V={V} alpha={alpha:g}"
    bench.extra_info.update(case=bench.group, contender=f"focuskern_{backend}_{policy}", backend=backend,
                            dtype="float32", policy=policy)
    with flush_denormal(alpha > 0):
        warm_up(lambda: state.apply_(logits, last))
        bench(state.apply_, logits, last)

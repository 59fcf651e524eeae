"""torch.compile(fullgraph=True) traces the public ops without graph breaks (CPU: torch backend through
aot_eager; the Triton backend is compiled in the GPU tests, the interpreter cannot be traced)."""
import pytest
import torch

import focuskern as fk
from focuskern.ops import focus_logits_
from focuskern.ops.dispatch import available_backends
from cases import random_case

CPU = torch.device("cpu")


def traceable_cpu_backends(family):
    return [b for b in available_backends(family, CPU) if b != "triton"]


@pytest.mark.parametrize("backend", traceable_cpu_backends("focus_logits"))
def test_focus_logits_compiles_fullgraph(backend):
    logits, args = random_case(4, 3001)
    args = [a.cpu() for a in args]
    logits = logits.cpu()
    compiled = torch.compile(lambda x: focus_logits_(x, *args, backend=backend, validate=False),
                             fullgraph=True, backend="aot_eager")
    got, want = logits.clone(), logits.clone()
    compiled(got)
    focus_logits_(want, *args, backend=backend)
    assert torch.equal(got, want)


@pytest.mark.parametrize("backend", traceable_cpu_backends("focus_state"))
def test_focus_state_apply_compiles_fullgraph(backend):
    spec = fk.FocusSpec([[(1, 2)], [(3,)]], bias=2.0, alpha=0.2, decay=fk.Decay.linear(10))
    traced = fk.FocusState([spec, None, spec], 500, "cpu", backend=backend)
    eager = fk.FocusState([spec, None, spec], 500, "cpu", backend=backend)
    step = torch.compile(lambda x, t: traced.apply_(x, t), fullgraph=True, backend="aot_eager")
    for tokens in ([1, 0, 3], [2, 0, 1], [3, 0, 2]):
        x = torch.randn(3, 500)
        got, want = x.clone(), x.clone()
        step(got, torch.tensor(tokens))
        eager.apply_(want, torch.tensor(tokens))
        assert torch.equal(got, want)
    assert torch.equal(traced.step, eager.step) and torch.equal(traced._rows.node, eager._rows.node)

"""torch.compile(fullgraph=True) traces the public ops without graph breaks (CPU: torch backend through
aot_eager; the Triton backend is compiled in the GPU tests, the interpreter cannot be traced)."""
import torch

import focuskern as fk
from focuskern.ops import focus_logits_
from test_focus_logits import random_case


def test_focus_logits_compiles_fullgraph():
    logits, args = random_case(4, 3001)
    compiled = torch.compile(lambda x: focus_logits_(x, *args, backend="torch", validate=False),
                             fullgraph=True, backend="aot_eager")
    got, want = logits.clone(), logits.clone()
    compiled(got)
    focus_logits_(want, *args, backend="torch")
    assert torch.equal(got, want)


def test_focus_state_apply_compiles_fullgraph():
    spec = fk.FocusSpec([[(1, 2)], [(3,)]], bias=2.0, alpha=0.2, decay=fk.Decay.linear(10))
    traced = fk.FocusState([spec, None, spec], 500, "cpu", backend="torch")
    eager = fk.FocusState([spec, None, spec], 500, "cpu", backend="torch")
    step = torch.compile(lambda x, t: traced.apply_(x, t), fullgraph=True, backend="aot_eager")
    for tokens in ([1, 0, 3], [2, 0, 1], [3, 0, 2]):
        x = torch.randn(3, 500)
        got, want = x.clone(), x.clone()
        step(got, torch.tensor(tokens))
        eager.apply_(want, torch.tensor(tokens))
        assert torch.equal(got, want)
    assert torch.equal(traced.step, eager.step) and torch.equal(traced._rows.node, eager._rows.node)

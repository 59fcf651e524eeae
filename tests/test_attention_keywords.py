"""``focuskern eval attention-keywords``: argument checks and rows (no model)."""
import math

import pytest
import torch

from focuskern.__main__ import build_parser
from focuskern.experiments.attention_keywords import check_targets, rows_of


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, math.nan, "0.1"])
def test_target_mass_outside_0_1_is_rejected(bad):
    with pytest.raises(ValueError, match="target mass"):
        check_targets([bad])


def test_rows_and_cli():
    response = torch.zeros(30, 9)
    response[21, 4] = 1.0
    rows = rows_of(check_targets([0.03, 0.1]), 0.1, response, [1])
    assert [(a and (a.target, a.heads), logits) for _, a, logits in rows] == [
        (None, False), ((0.03, None), False), ((0.1, None), False), ((0.03, {21: [4]}), False),
        ((0.1, {21: [4]}), False), (None, True), ((0.1, {21: [4]}), True)]
    assert [label for label, _, _ in rows][-1] == "logits + attention p=0.1 (top-1 heads)"
    assert rows_of([0.1], 0.1)[-1][1].heads is None
    args = build_parser().parse_args(["eval", "attention-keywords"])
    assert (args.samples, args.both, args.target) == (5, 0.1, [])

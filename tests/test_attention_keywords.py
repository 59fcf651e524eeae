"""``focuskern eval attention-keywords``: argument checks and rows (no model)."""
import math

import pytest

from focuskern.__main__ import build_parser
from focuskern.experiments.attention_keywords import check_targets, rows_of


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, math.nan, "0.1"])
def test_target_mass_outside_0_1_is_rejected(bad):
    with pytest.raises(ValueError, match="target mass"):
        check_targets([bad])


def test_rows_and_cli():
    rows = rows_of(check_targets([0.03, 0.1]), 0.1)
    assert [(p, logits) for _, p, logits in rows] == [(None, False), (0.03, False), (0.1, False),
                                                      (None, True), (0.1, True)]
    args = build_parser().parse_args(["eval", "attention-keywords"])
    assert (args.samples, args.both, args.target) == (5, 0.1, [])

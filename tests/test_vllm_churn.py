"""The HTTP soak's request stream (``tests/test_vllm_http.py``), replayed in process through the vLLM
adapter's :class:`~focuskern.vllm.rows.BatchFocus` with the ``BatchUpdate`` s vLLM would send, to see
what the server cannot show: the focus state's program tables compact, both while requests are live
and when the last focused request has just left, and stay bounded.

Runs without vLLM (the adapter test's ``BatchUpdate`` mirror); needs the model's tokenizer (the
converted folder, else the embedded ``.gguf``'s).
"""
import random
from types import SimpleNamespace

import pytest

from focuskern.programs import MIN_DEAD_NODES
from focuskern.vllm.rows import BatchFocus
from test_vllm_adapter import BatchUpdate, one_torch_thread  # noqa: F401  (fixture)
from vllm_server import MODEL, ROOT, UNFOCUSED, fresh_focus


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    if (ROOT / MODEL / "config.json").exists():
        return AutoTokenizer.from_pretrained(ROOT / MODEL)
    from focuskern.experiments.models import DEFAULT_GGUF, default_model_dir
    return AutoTokenizer.from_pretrained(default_model_dir(), gguf_file=DEFAULT_GGUF)


def test_soak_stream_compacts_with_and_without_live_programs_and_stays_bounded(tokenizer, seed, caplog):
    """320 requests, 3 in 4 with a fresh 40-entity focus, in blocks of 40: one at a time (each request
    enters row 0 and leaves) or 16 rows at once (a finished request leaves a hole that the next one
    fills).  After every update the node table holds at most the live programs' nodes plus
    ``max(live, MIN_DEAD_NODES)`` dead ones."""
    rng = random.Random(seed)
    batch = BatchFocus(tokenizer.vocab_size, "cpu", tokenizer)
    programs = batch.state.programs
    compactions = []  # live programs after each compaction
    compact = programs.compact_if_worth_it

    def counting_compact():
        remap = compact()
        if remap is not None:
            compactions.append(len(remap))
        return remap

    programs.compact_if_worth_it = counting_compact
    rows: list = []  # request index per row (None: a hole)
    peak = 0

    def params(i):
        return SimpleNamespace(extra_args=None if i % 4 == 3 else {"focus": fresh_focus(rng)})

    def update(removed=(), added=()):
        nonlocal peak
        for row in removed:
            rows[row] = None
        for row, i in added:  # into a hole, or appended
            if row < len(rows):
                rows[row] = i
            else:
                rows.append(i)
        while rows and rows[-1] is None:
            rows.pop()
        batch.update(BatchUpdate(len(rows), list(removed), [(row, params(i), [], []) for row, i in added], []))
        live = sum(e.program.n_nodes for e in programs.entries if e.refs > 0)
        nodes = programs.tables.node.shape[0]
        assert nodes <= live + max(live, MIN_DEAD_NODES), (nodes, live)
        peak = max(peak, nodes)

    for block in range(8):
        ids = list(range(block * 40, (block + 1) * 40))
        if block % 2 == 0:
            for i in ids:
                update(added=[(0, i)])
                update(removed=[0])
            continue
        for row, i in enumerate(ids[:16]):
            update(added=[(row, i)])
        for i in ids[16:] + [None] * 16:  # a random request finishes; the next one takes its row
            row = rng.choice([r for r, x in enumerate(rows) if x is not None])
            update(removed=[row], added=[] if i is None else [(row, i)])
    print(f"compactions: {len(compactions)}, live programs at each: {compactions}; peak node rows {peak}")
    assert compactions.count(0) >= 2 and sum(n > 0 for n in compactions) >= 2, compactions
    assert not rows and batch.state.programs.tables.node.shape[0] <= MIN_DEAD_NODES
    assert not [r.getMessage() for r in caplog.records if UNFOCUSED in r.getMessage()]

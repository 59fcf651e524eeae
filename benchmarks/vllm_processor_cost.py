"""What focuskern's vLLM adapter costs per request and per step, timed in process (a measurement, not a
test): the HTTP benchmark (``vllm_http.py``) cannot resolve a few percent on a shared machine.

``BatchFocus`` with the model's tokenizer, ``--rows`` rows admitted at once with fresh recommended
specs (``vllm_throughput.focus_of``: parse the JSON, tokenize, compile), then ``--steps`` steps of
``apply`` on ``[rows, vocab]`` float32 logits, one torch thread.  Writes
``benchmarks/results/vllm_processor_cost_cpu.json``.

    .venv-vllm/bin/python benchmarks/vllm_processor_cost.py
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_vllm_adapter import BatchUpdate  # noqa: E402  (vLLM's, or its mirror)
from vllm_server import MODEL, ROOT  # noqa: E402

from focuskern.metadata import run_metadata  # noqa: E402
from focuskern.vllm.rows import BatchFocus  # noqa: E402
from vllm_throughput import TOPICS, focus_of  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(ROOT / MODEL)
    entities = list(TOPICS.values())
    admit_ms, step_ms = [], []
    for repeat in range(args.repeats):
        batch = BatchFocus(tokenizer.vocab_size, "cpu", tokenizer)
        outputs = [[] for _ in range(args.rows)]
        added = [(r, SimpleNamespace(extra_args={"focus": json.dumps(focus_of(entities[r % len(entities)],
                                                                             repeat * args.rows + r))}), [], outputs[r])
                 for r in range(args.rows)]
        start = time.perf_counter()
        batch.update(BatchUpdate(args.rows, [], added, []))
        admit_ms.append(1e3 * (time.perf_counter() - start) / args.rows)
        logits = torch.zeros(args.rows, tokenizer.vocab_size)
        start = time.perf_counter()
        for step in range(args.steps):
            for out in outputs:
                out.append(100 + step)
            batch.apply(logits)
        step_ms.append(1e3 * (time.perf_counter() - start) / args.steps)
    result = {"what": "focuskern vLLM adapter cost in process: admitting a fresh spec, one apply step",
              "metadata": run_metadata("cpu", backend=batch.state.backend),
              "settings": vars(args) | {"model": MODEL, "spec": "focus_of (recommended, 3 entities)"},
              "admit_ms_per_request": sorted(admit_ms), "apply_ms_per_step": sorted(step_ms)}
    out = Path(__file__).parent / "results" / "vllm_processor_cost_cpu.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"admit a fresh spec: {min(admit_ms):.2f}-{max(admit_ms):.2f} ms; one step of {args.rows} focused rows: "
          f"{min(step_ms):.3f}-{max(step_ms):.3f} ms ({args.repeats} repeats, {result['metadata']['backend']}); "
          f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

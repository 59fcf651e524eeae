#!/usr/bin/env python
"""Compile time of string entities under text tracking (issue 22): ``FocusState([spec], V, "cpu",
tokenizer=tok)`` with N = 1k / 10k / 100k entities, the embedded SmolLM2 tokenizer (V = 49152).

* Entities: 1-3 random words drawn from the vocabulary's space-prefixed alphabetic tokens (seed 0),
  every tenth one Chinese (2-4 characters from a fixed list).
* The tokenizer's :class:`~focuskern.text.TokenTable` and vocabulary index are built once per tokenizer
  (cached); their build time is reported apart (``vocabulary_s``), then each N is timed with the cache
  warm: the whole ``FocusState`` constructor (forms, compile, tables), best of ``--repeat`` runs, in
  wall-clock seconds and in this process's CPU seconds (``time.process_time``: less sensitive to other
  jobs on a shared host), and the peak resident memory of the process so far (``ru_maxrss``).

Writes ``text_compile_cpu.{json,md}`` to ``benchmarks/results/``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CJK = "人工智能医疗自动驾驶大模型客服教育金融数据安全城市交通能源环境"


def entities(tok, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [w[1:] for w in tok.convert_ids_to_tokens(list(range(len(tok)))) if w.startswith("Ġ") and w[1:].isalpha()]
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append("".join(rng.choice(CJK) for _ in range(rng.randint(2, 4))))
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 300000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    import focuskern as fk
    from focuskern.experiments.models import DEFAULT_GGUF, default_model_dir
    from focuskern.text import token_table

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    tok = AutoTokenizer.from_pretrained(default_model_dir(), gguf_file=DEFAULT_GGUF)
    t0 = time.perf_counter()
    token_table(tok, len(tok)).index  # noqa: B018 - built once per tokenizer, cached
    vocabulary_s = time.perf_counter() - t0
    rows = []
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for n in args.sizes:
        spec = fk.FocusSpec(entities(tok, n, 0))
        times, cpu = [], []
        for _ in range(args.repeat):
            state = None  # the previous run's tables are freed first
            t, c = time.perf_counter(), time.process_time()
            state = fk.FocusState([spec], len(tok), "cpu", tokenizer=tok, backend="cpp")
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        program = state.programs[0].program
        rows.append({"entities": n, "compile_s": min(times), "runs_s": times, "cpu_s": min(cpu),
                     "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "nodes": program.n_nodes,
                     "slots": program.n_slots, "closure": int(program.closure.shape[0]), "ents": int(len(program.ents))})
        print(rows[-1], flush=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} CPU, {platform.processor() or 'unknown'}, shared 2-vCPU host",
            "command": "python benchmarks/text_compile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "tokenizer": "SmolLM2-135M-Instruct (embedded), V=49152", "vocabulary_s": vocabulary_s,
            "load_average_1min": [load_before, os.getloadavg()[0]],
            "native_compile": getattr(fk.ops.dispatch.extension()[0], "build_automaton", None) is not None,
            "peak_rss_before_mib": rss_before}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "text_compile_cpu.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = [f"# Text-tracking compile time ({meta['date']})", "",
             f"Machine: {meta['machine']}; 1-minute load average {load_before:.1f} before, "
             f"{meta['load_average_1min'][1]:.1f} after (other jobs share the 2 vCPUs: times are upper bounds).",
             f"Command: `{meta['command']}`.", f"Tokenizer: {meta['tokenizer']}; "
             f"its token table and vocabulary index (built once per tokenizer, cached): {vocabulary_s:.2f} s.",
             f"Automaton compiled by {'the C++ extension (csrc/compile_cpu.cpp)' if meta['native_compile'] else 'numpy'}; "
             f"peak RSS before the builds {rss_before:.0f} MiB.", "",
             "| entities | FocusState build (s, best of runs) | CPU s (best) | peak RSS so far (MiB) | nodes | slots "
             "| closure entries | list entries |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['entities']} | {r['compile_s']:.3f} | {r['cpu_s']:.3f} | {r['peak_rss_mib']:.0f} | {r['nodes']} "
              f"| {r['slots']} | {r['closure']} | {r['ents']} |" for r in rows]
    (RESULTS / "text_compile_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

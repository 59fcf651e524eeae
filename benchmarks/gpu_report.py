#!/usr/bin/env python
"""One command for a GPU machine (``make gpu-report``): build, test, benchmark, write one report.

Stages, in order, each a subprocess with its own time box (and all of them within ``--budget-s``,
default 460 s, so that the report is written within 8 minutes on an H100/H200):

1. ``build``: ``pip install --no-deps --no-build-isolation -e .`` with ``FOCUSKERN_CUDA_ARCHS`` set to
   the local GPU's compute capability (builds ``focuskern._C`` with the CUDA backend);
2. ``backends``: ``python -m focuskern backends`` (what is available, and why not);
3. ``pytest_gpu``: ``pytest tests -m gpu``;
4. ``logits``: ``benchmarks/gpu_logits.py`` (focus_logits_ backends vs vLLM V1 index-add, copy, launch);
5. ``state``: ``benchmarks/gpu_state.py`` (one FocusState.apply_ step per backend);
6. ``attention``: ``benchmarks/gpu_attention.py`` (focus_attention vs SDPA, FlexAttention);
7. ``generate``: ``benchmarks/gpu_generate.py`` (HF generate, Llama-3-8B- and Qwen2.5-7B-shaped random
   models: tokens/s with/without the processor, ``"focus"`` vs ``"sdpa"`` at long prompts).

A stage that fails or runs out of time is recorded (status, exit code, the tail of its output) and
the report goes on.  Writes ``gpu_report_<device>.json`` (run metadata, every stage, every stage's
own JSON) and ``gpu_report_<device>.md`` (summary tables) to ``$GPU_REPORT_DIR`` (default
``benchmarks/results/``).  ``--smoke`` runs the same stages on the CPU with tiny sizes (no build: the
in-place extension is used; the attention benchmark has no CPU mode and is skipped), in under two
minutes: CI runs it so that this script cannot rot.  Needs no internet, no gguf, no model files.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from focuskern.metadata import run_metadata  # noqa: E402

TAIL_CHARS = 4000


def stages(py: str, out: Path, smoke: bool, cuda_archs: str | None) -> list[dict]:
    """Every stage: name, argv, time box (s), extra environment, its JSON output, or a skip reason."""
    bench = lambda name: [py, str(ROOT / "benchmarks" / name)]  # noqa: E731
    logits_sizes = (["--cpu-smoke", "--batch", "1", "2", "--vocab", "4096", "--k", "4"] if smoke else
                    ["--warmup-ms", "10", "--rep-ms", "50", "--host-budget-s", "0.1"])
    attention_sizes = ["--prefill", "4096", "16384", "--decode", "16384", "131072", "--decode-batch", "1", "64",
                       "--warmup-ms", "10", "--rep-ms", "50"]
    return [
        dict(name="build", box=200, argv=[py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", "."],
             env={"FOCUSKERN_CUDA_ARCHS": cuda_archs or ""},
             skip="smoke: the in-place extension is used (a CPU build takes minutes)" if smoke else None),
        dict(name="backends", box=30, argv=[py, "-m", "focuskern", "backends"]),
        dict(name="pytest_gpu", box=150, argv=[py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"] +
             (["tests/test_gpu.py", "tests/test_focus_attention.py"] if smoke else ["tests"])),
        dict(name="logits", box=90, argv=bench("gpu_logits.py") + logits_sizes, json=out / "gpu_logits.json"),
        dict(name="state", box=45, argv=bench("gpu_state.py") + (["--cpu-smoke"] if smoke else []),
             json=out / "gpu_state.json"),
        dict(name="attention", box=100, argv=bench("gpu_attention.py") + attention_sizes,
             json=out / "gpu_attention.json",
             skip="smoke: gpu_attention.py has no CPU mode" if smoke else None),
        dict(name="generate", box=150, argv=bench("gpu_generate.py") + (["--smoke"] if smoke else []),
             json=out / "gpu_generate.json"),
    ]


def run_stage(stage: dict, timeout: float) -> dict:
    """Run one stage in its own process group (a time-out kills the whole group)."""
    argv = list(stage["argv"]) + (["--out", str(stage["json"])] if "json" in stage else [])
    record = {"name": stage["name"], "command": " ".join(argv), "timeout_s": round(timeout, 1)}
    if stage.get("skip"):
        return {**record, "status": "skipped", "reason": stage["skip"], "seconds": 0.0}
    env = {**os.environ, **stage.get("env", {})}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = "timeout"
    record.update(status=status, returncode=proc.returncode, seconds=round(time.perf_counter() - start, 1),
                  output_tail=(output or "")[-TAIL_CHARS:])
    if "json" in stage and Path(stage["json"]).exists():
        record["result_file"] = Path(stage["json"]).name
        record["result"] = json.loads(Path(stage["json"]).read_text())
    print(f"[gpu-report] {stage['name']}: {status} in {record['seconds']} s", flush=True)
    return record


def pytest_counts(tail: str) -> str:
    found = re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", tail)
    return ", ".join(f"{n} {what}" for n, what in found) or "-"


def markdown(report: dict) -> str:
    meta = report["run_metadata"]
    lines = [f"# GPU report: {meta['device']}", "",
             f"{meta['date_utc']}; torch {meta.get('torch', '?')}, triton {meta.get('triton', '?')}, "
             f"transformers {meta.get('transformers', '?')}; command `{meta['command']}`"
             + (" (**smoke run on the CPU: numbers meaningless**)" if report["smoke"] else ""), "",
             "| stage | status | seconds | note |", "| --- | --- | --- | --- |"]
    for s in report["stages"]:
        note = s.get("reason", "")
        if s["name"] == "pytest_gpu" and "output_tail" in s:
            note = pytest_counts(s["output_tail"].splitlines()[-1] if s["output_tail"] else "")
        elif s["status"] in ("failed", "timeout"):
            note = (s.get("output_tail") or "").strip().splitlines()[-1:][0][:120] if s.get("output_tail") else ""
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']} | {note.replace('|', '/')} |")
    by_name = {s["name"]: s.get("result") for s in report["stages"]}
    state = by_name.get("state")
    if state:
        lines += ["", "## FocusState.apply_ (µs per step)", "", "| B | α | backend | device µs | host µs |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['B']} | {r['alpha']:g} | {r['backend']} | {r['device_us']} | {r['host_us']} |"
                  for r in state["results"]]
    generate = by_name.get("generate")
    for name, entry in (generate or {}).get("models", {}).items():
        lines += ["", f"## HF generate, {name} ({entry['config']}, {entry['layers']} layers, random weights)", "",
                  "| B | tokens/s plain | tokens/s with processor | overhead % |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['batch']} | {r['tokens_per_s_plain']} | {r['tokens_per_s_focus']} | {r['overhead_pct']} |"
                  for r in entry["processor"]]
        lines += ["", "| prompt | new tokens | s (sdpa) | s (focus, biased) | focus / sdpa |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['prompt']} | {r['new_tokens']} | {r['seconds_sdpa']} | {r['seconds_focus']} | {r['focus_over_sdpa']} |"
                  for r in entry["attention"]]
    for name in ("logits", "attention"):
        if by_name.get(name):
            lines += ["", f"{name}: full results in `{name}` of the JSON report (and `gpu_{name}.json`)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, no build (tests the script)")
    p.add_argument("--budget-s", type=float, default=None, help="all stages together (default 460; smoke 110)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("GPU_REPORT_DIR") or ROOT / "benchmarks" / "results"))
    p.add_argument("--only", nargs="+", default=None, help="run only these stages")
    args = p.parse_args(argv)
    import torch

    budget = args.budget_s or (110.0 if args.smoke else 460.0)
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("[gpu-report] no CUDA device visible: the GPU stages will fail and be recorded", flush=True)
    archs = "{}.{}".format(*torch.cuda.get_device_capability()) if cuda else None
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / ("gpu_report_parts_smoke" if args.smoke else "gpu_report_parts")
    work.mkdir(exist_ok=True)
    deadline = time.perf_counter() + budget
    records = []
    for stage in stages(sys.executable, work, args.smoke, archs):
        if args.only and stage["name"] not in args.only:
            continue
        left = deadline - time.perf_counter()
        if left < 5:
            records.append({"name": stage["name"], "status": "skipped", "seconds": 0.0,
                            "reason": f"no time left of the {budget:.0f} s budget"})
            continue
        records.append(run_stage(stage, min(stage["box"], left)))
    device = "cuda" if cuda else "cpu"
    report = {"run_metadata": run_metadata(device, cuda_archs=archs, budget_s=budget), "smoke": args.smoke,
              "stages": records}
    stem = "gpu_report_smoke" if args.smoke else "gpu_report_" + re.sub(r"[^a-z0-9]+", "-", report["run_metadata"]["device"].lower()).strip("-")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(f"[gpu-report] wrote {args.out / stem}.json and .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""One command for a GPU machine (``make gpu-report``): check, build, compile, test, benchmark, report.

First the prerequisites are listed and checked (Python, a CUDA build of torch with a visible device,
Triton not interpreted, nvcc and pip for the build, pytest, transformers); without a CUDA device nothing
runs (exit 2).  Then the stages, in order, each a subprocess with its own time box (and all of them
within ``--budget-s``, default 460 s, so that the report is written within 8 minutes on an H100/H200):

0. ``gpu_compile``: ``benchmarks/gpu_compile.py --quick --arch <this GPU> --no-cuda`` (this machine's
   Triton and ptxas: registers, spills, shared memory; it also fills Triton's cache for the stages below);
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
the report goes on; the exit status is 1 when any stage failed, timed out, lacked a prerequisite or
found no time left.  Writes ``gpu_report_<device>.json`` (run metadata, prerequisites, every stage,
every stage's own JSON) and ``gpu_report_<device>.md`` (a table per stage, and the measured times
beside the floors predicted by ``benchmarks/gpu_prediction.py``; ``benchmarks/gpu_report_md.py``) to
``$GPU_REPORT_DIR`` (default ``benchmarks/results/``).  ``--smoke`` runs the same stages on the CPU with tiny sizes (no build: the
in-place extension is used; the attention benchmark has no CPU mode and is skipped), in under three
minutes: CI runs it so that this script cannot rot.  Needs no internet, no gguf, no model files.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import gpu_sizes  # noqa: E402
from focuskern.metadata import run_metadata  # noqa: E402
from gpu_report_md import markdown  # noqa: E402

TAIL_CHARS = 4000


def stages(py: str, out: Path, smoke: bool, cuda_archs: str | None) -> list[dict]:
    """Every stage: name, argv, time box (s), extra environment, the prerequisites it needs, its JSON
    output, or a skip reason (smoke runs skip by design)."""
    bench = lambda name, json_name: [py, str(ROOT / "benchmarks" / name), "--out", str(out / json_name)]  # noqa: E731
    logits_sizes = ["--cpu-smoke", "--batch", "1", "2", "--vocab", "4096", "--k", "4"] if smoke else gpu_sizes.LOGITS
    arch = (cuda_archs or "9.0").replace(".", "")
    return [
        dict(name="gpu_compile", box=90, needs=("triton",), json=out / "gpu-compile" / "kernels.json",
             argv=[py, str(ROOT / "benchmarks" / "gpu_compile.py"), "--out", str(out / "gpu-compile"), "--no-cuda"]
             + (["--only", "focus_logits", "--arch", "90", "--jobs", "1"] if smoke else ["--quick", "--arch", arch])),
        dict(name="build", box=200, needs=("pip", "nvcc"),
             argv=[py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", "."],
             env={"FOCUSKERN_CUDA_ARCHS": cuda_archs or ""},
             skip="smoke: the in-place extension is used (a CPU build takes minutes)" if smoke else None),
        dict(name="backends", box=30, needs=(), argv=[py, "-m", "focuskern", "backends"]),
        dict(name="pytest_gpu", box=150, needs=("pytest",),
             argv=[py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
             + (["tests/test_gpu.py", "tests/test_focus_attention.py"] if smoke else ["tests"])),
        dict(name="logits", box=90, needs=("triton",), argv=bench("gpu_logits.py", "gpu_logits.json") + logits_sizes,
             json=out / "gpu_logits.json"),
        dict(name="state", box=45, needs=(), json=out / "gpu_state.json",
             argv=bench("gpu_state.py", "gpu_state.json") + (["--cpu-smoke"] if smoke else gpu_sizes.STATE)),
        dict(name="attention", box=100, needs=("triton",), json=out / "gpu_attention.json",
             argv=bench("gpu_attention.py", "gpu_attention.json") + gpu_sizes.ATTENTION,
             skip="smoke: gpu_attention.py has no CPU mode" if smoke else None),
        dict(name="generate", box=150, needs=("transformers",), json=out / "gpu_generate.json",
             argv=bench("gpu_generate.py", "gpu_generate.json") + (["--smoke"] if smoke else gpu_sizes.GENERATE)),
    ]


def prerequisites(smoke: bool) -> list[dict]:
    """What the stages need, checked here: name, ok, detail (version or why not)."""
    import torch

    def module(name):
        spec = importlib.util.find_spec(name)
        return (spec is not None, getattr(__import__(name), "__version__", "installed") if spec else "not installed")

    cuda = torch.cuda.is_available()
    checks = [("python", True, sys.version.split()[0] + f" ({os.path.basename(sys.executable)})"),
              ("torch_cuda", bool(torch.version.cuda) and cuda or smoke,
               f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (CPU build)'}, "
               + (torch.cuda.get_device_name() if cuda else "no CUDA device visible")),
              ("triton", *module("triton")),
              ("pip", *module("pip")), ("pytest", *module("pytest")), ("transformers", *module("transformers")),
              ("nvcc", shutil.which("nvcc") is not None or smoke, shutil.which("nvcc") or "not on PATH")]
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        checks[2] = ("triton", False, "TRITON_INTERPRET is set: unset it on a GPU machine")
    return [{"name": n, "ok": bool(ok), "detail": str(detail)} for n, ok, detail in checks]


def run_stage(stage: dict, timeout: float, missing: list[str]) -> dict:
    """Run one stage in its own process group (a time-out kills the whole group)."""
    record = {"name": stage["name"], "command": " ".join(stage["argv"]).replace(str(ROOT) + "/", ""),
              "timeout_s": round(timeout, 1)}
    if stage.get("skip"):
        return {**record, "status": "skipped", "reason": stage["skip"], "seconds": 0.0}
    if missing:
        return {**record, "status": "missing-prerequisite", "reason": "missing: " + ", ".join(missing), "seconds": 0.0}
    env = {**os.environ, **stage.get("env", {})}
    start = time.perf_counter()
    proc = subprocess.Popen(stage["argv"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, no build (tests the script)")
    p.add_argument("--budget-s", type=float, default=None, help="all stages together (default 460; smoke 180)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("GPU_REPORT_DIR") or ROOT / "benchmarks" / "results"))
    p.add_argument("--only", nargs="+", default=None, help="run only these stages")
    args = p.parse_args(argv)
    import torch

    budget = args.budget_s or (180.0 if args.smoke else 460.0)
    prereqs = prerequisites(args.smoke)
    ok = {c["name"]: c["ok"] for c in prereqs}
    for c in prereqs:
        print(f"[gpu-report] prerequisite {c['name']:12} {'ok' if c['ok'] else 'MISSING'}  {c['detail']}", flush=True)
    cuda = torch.cuda.is_available() and not args.smoke
    archs = "{}.{}".format(*torch.cuda.get_device_capability()) if cuda else None
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / ("gpu_report_parts_smoke" if args.smoke else "gpu_report_parts")
    work.mkdir(exist_ok=True)
    deadline = time.perf_counter() + budget
    records = []
    for stage in stages(sys.executable, work, args.smoke, archs) if ok["torch_cuda"] else []:
        if args.only and stage["name"] not in args.only:
            continue
        left = deadline - time.perf_counter()
        if left < 5 and not stage.get("skip"):
            records.append({"name": stage["name"], "status": "no-time", "seconds": 0.0,
                            "reason": f"no time left of the {budget:.0f} s budget"})
            continue
        records.append(run_stage(stage, min(stage["box"], left), [n for n in stage["needs"] if not ok[n]]))
    device = "cuda" if cuda else "cpu"
    report = {"run_metadata": run_metadata(device, cuda_archs=archs, budget_s=budget), "smoke": args.smoke,
              "prerequisites": prereqs, "stages": records}
    stem = "gpu_report_smoke" if args.smoke else "gpu_report_" + re.sub(r"[^a-z0-9]+", "-", report["run_metadata"]["device"].lower()).strip("-")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(f"[gpu-report] wrote {args.out / stem}.json and .md", flush=True)
    if not ok["torch_cuda"]:
        print("[gpu-report] no CUDA device (or a CPU build of torch): nothing was run", flush=True)
        return 2
    bad = [r["name"] for r in records if r["status"] not in ("ok", "skipped")]
    if bad:
        print(f"[gpu-report] not ok: {', '.join(bad)}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

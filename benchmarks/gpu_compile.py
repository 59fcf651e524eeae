#!/usr/bin/env python
"""Compile every GPU kernel for real GPU targets without a GPU, and check its resources (``make gpu-compile``).

* Triton: every configuration the launchers can pick on each arch (``focuskern/ops/triton_configs.py``:
  each launcher's ``compile_launches(arch)``, specialized by Triton's own binder) compiled with
  ``triton.compile`` for ``sm_80``, ``sm_90`` and ``sm_100`` (where the ``ptxas`` bundled with Triton
  supports it); registers, spills and stack from the ``ptxas -v`` log Triton's compiler writes, shared
  memory from the compiled kernel's metadata (dynamic) plus the log's static ``smem``.
* CUDA: ``csrc/*.cu`` with ``nvcc -arch=sm_<arch> -Xptxas -v`` against the installed torch's headers
  (skipped with a note where ``nvcc`` is missing).

Writes ``kernels.json`` and ``kernels.md`` (one row per kernel x configuration x arch) to ``--out``
(default ``build/gpu-compile``) and exits 1 on any compile error, any register spill, or shared memory
above the architecture's per-block limit.  Every configuration compiled is one ``backend="auto"`` can
launch (the Triton backend is auto's first choice on CUDA; the CUDA extension runs where Triton is
missing), so no spill is allowed anywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from focuskern.metadata import command_line  # noqa: E402
# Largest shared memory one block may use (opt-in), bytes: A100, H100/H200, B200.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}
ARCHS = (80, 90, 100)
LOG_RE = {
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "registers": re.compile(r"Used (\d+) registers"),
    "static_shared": re.compile(r"(\d+) bytes smem"),
}


def parse_ptxas(text: str) -> dict:
    """Resources of one function from its ``ptxas -v`` lines (0 where a field is not printed)."""
    return {key: int(m.group(1)) if (m := rx.search(text)) else 0 for key, rx in LOG_RE.items()}


def config_text(kwargs: dict) -> str:
    """Constexprs and options of a launch, compactly: ``BLOCK_M=64 CAUSAL !SPLIT w4 s3``."""
    parts = []
    for key, value in kwargs.items():
        if key in ("num_warps", "num_stages"):
            continue
        parts.append((key if value else "!" + key) if isinstance(value, bool) else f"{key}={value}")
    parts += [f"w{kwargs.get('num_warps', 4)}", f"s{kwargs.get('num_stages', 3)}"]
    return " ".join(parts)


def supported_archs(wanted) -> tuple[list[int], dict]:
    """The archs whose ``ptxas`` (the one Triton uses for each) accepts a trivial PTX, and notes."""
    from triton.backends.nvidia.compiler import get_ptxas

    ok, notes = [], {}
    for arch in wanted:
        suffix = "a" if arch >= 90 else ""
        ptx = f".version 8.7\n.target sm_{arch}{suffix}\n.address_size 64\n"
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "probe.ptx").write_text(ptx)
            run = subprocess.run([get_ptxas(arch).path, f"--gpu-name=sm_{arch}{suffix}", "probe.ptx", "-o", "probe.o"],
                                 cwd=tmp, capture_output=True, text=True)
        if run.returncode == 0:
            ok.append(arch)
        else:
            notes[arch] = f"bundled ptxas does not support sm_{arch}{suffix}: {run.stderr.strip()[:200]}"
    return ok, notes


_JOBS: list = []


def quick_keep(family: str, label: str, launch) -> bool:
    """``--quick``: every launch but attention's float16 ones (the layouts of bfloat16) and its calls
    other than ``bias`` (split-KV and merge) and ``mass`` (the most accumulators); ``mass-many`` and
    ``readout-many`` (the score-only pass, with and without a target) at D = 128 only."""
    if family != "focus_attention":
        return True
    call = label.rsplit(" ", 1)[-1]
    return (not label.startswith("float16") and (call in ("bias", "mass") or (call in ("mass-many", "readout-many") and " D=128 " in label)))


def _init_worker(archs, only, quick, match) -> None:
    """Each worker enumerates the same deduplicated job list (kernels cannot be pickled)."""
    from triton import knobs

    knobs.nvidia.dump_ptxas_log = True  # Triton prints the ptxas -v log: captured per compile
    knobs.compilation.always_compile = True  # a cached kernel would print no log
    _JOBS[:] = enumerate_jobs(archs, only, quick, match)


def enumerate_jobs(archs, only, quick, match=None) -> list[tuple]:
    """(arch, op, label, launch) per distinct compiled binary, in enumeration order; ``match``: only the
    launches whose ``"<op> <label>"`` the regular expression finds."""
    from focuskern.ops import triton_configs as tc

    jobs, seen = [], set()
    for arch in archs:  # each launcher's configurations for this arch (its tiles may differ per arch)
        for family, label, launch in tc.launches(arch):
            if (only and family not in only) or (quick and not quick_keep(family, label, launch)) \
                    or (match and not re.search(match, f"{family} {label}")):
                continue
            key = (arch, tc.compile_key(launch, arch))
            if key not in seen:
                seen.add(key)
                jobs.append((arch, family, label, launch))
    return jobs


def compile_job(index: int) -> dict:
    from focuskern.ops import triton_configs as tc

    arch, family, label, launch = _JOBS[index]
    row = {"source": "triton", "op": family, "kernel": tc.kernel_name(launch), "label": label,
           "config": config_text(launch.kwargs), "arch": f"sm_{arch}"}
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            compiled = tc.compile_launch(launch, arch)
    except Exception as exc:  # a compile error is a result (the row), reported and failed on at the end
        row["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
        return row
    res = parse_ptxas(log.getvalue())
    row["shared"] = compiled.metadata.shared + res.pop("static_shared")
    row.update(res, seconds=round(time.perf_counter() - start, 2))
    return row


def compile_triton(archs, only, quick: bool, jobs: int, match=None) -> list[dict]:
    n = len(enumerate_jobs(archs, only, quick, match))
    ctx = multiprocessing.get_context("spawn")
    rows = []
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(archs, only, quick, match)) as pool:
        for i, row in enumerate(pool.imap(compile_job, range(n), chunksize=1)):
            rows.append(row)
            if "error" in row or row.get("spill_stores"):
                print(f"[gpu-compile] {row['kernel']} {row['label']} {row['arch']}: "
                      f"{row.get('error', '').splitlines()[0] if 'error' in row else 'spills'}", flush=True)
            if (i + 1) % 50 == 0:
                print(f"[gpu-compile] {i + 1}/{n} Triton compiles", flush=True)
    return rows


def compile_cuda(archs, out: Path) -> tuple[list[dict], list[str]]:
    """``nvcc -Xptxas -v`` of every ``csrc/*.cu`` for all ``archs`` at once; one row per kernel and arch.
    The CPU torch wheel lacks one generated CUDA header: a stub is written (as ``make check-cuda`` did)."""
    import shutil
    import sysconfig

    import torch.utils.cpp_extension as ext

    if shutil.which("nvcc") is None:
        return [], ["nvcc not found: csrc/*.cu not compiled"]
    generated, compat = out / "generated", out / "compat"
    subprocess.run([sys.executable, str(ROOT / "focuskern/ops/layout.py"), str(generated)], check=True,
                   stdout=subprocess.DEVNULL)
    (compat / "c10/cuda/impl").mkdir(parents=True, exist_ok=True)
    (compat / "c10/cuda/impl/cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [f"-I{p}" for p in (compat, generated, *ext.include_paths(), sysconfig.get_paths()["include"])]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    rows, notes = [], []
    for src in sorted((ROOT / "csrc").glob("*.cu")):
        cmd = ["nvcc", "-c", str(src), "-o", str(out / f"{src.stem}.o"), "-std=c++20", "-O3", "--expt-relaxed-constexpr",
               *gencode, "-DFOCUSKERN_WITH_CUDA=1", *includes, "-diag-suppress", "3306",
               "-Xcompiler", "-Wno-c++20-extensions", "-Xptxas", "-v"]
        start = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        rel = src.relative_to(ROOT).as_posix()
        if run.returncode != 0:
            rows.append({"source": "cuda", "op": rel, "kernel": src.name, "label": "", "config": "", "arch": "all",
                         "error": (run.stderr or run.stdout)[-2000:]})
            continue
        seconds = round(time.perf_counter() - start, 1)
        notes.append(f"nvcc {rel} ({', '.join(f'sm_{a}' for a in archs)}): {seconds} s")
        chunks = re.split(r"ptxas info\s*: Compiling entry function '([^']+)' for '(sm_\d+a?)'", run.stderr)
        mangled = chunks[1::3]
        names = {}
        if shutil.which("c++filt"):
            filt = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True).stdout
            names = dict(zip(mangled, filt.splitlines()))
        for name, arch, text in zip(mangled, chunks[2::3], chunks[3::3]):
            res = parse_ptxas(text)
            res["shared"] = res.pop("static_shared")
            rows.append({"source": "cuda", "op": rel, "kernel": names.get(name, name),
                         "label": "", "config": "", "arch": arch.rstrip("a"), **res})
    return rows, notes


def failures(rows: list[dict], allowed_spills: frozenset = frozenset()) -> list[str]:
    """Why each failing row fails: a compile error, spills (unless :func:`allowed` lets them through: a
    known spill, listed by :func:`known_spills` instead), or shared memory above the arch's limit."""
    out = []
    for r in rows:
        where = f"{r['kernel']} [{r['label'] or r['op']}] {r['arch']}"
        if "error" in r:
            out.append(f"{where}: compile error: {r['error'].strip().splitlines()[-1][:200]}")
            continue
        if (r["spill_stores"] or r["spill_loads"]) and not allowed(r, allowed_spills):
            out.append(f"{where}: spills {r['spill_stores']} B stores / {r['spill_loads']} B loads ({r['config']})")
        limit = SHARED_LIMIT.get(int(r["arch"].removeprefix("sm_")))
        if limit is not None and r["shared"] > limit:
            out.append(f"{where}: shared memory {r['shared']} B > {limit} B ({r['config']})")
    return out


def allowed(row: dict, allowed_spills: frozenset) -> bool:
    """Does an ``--allow-spills`` pattern find ``"<kernel> <label>"`` of ``row`` (a kernel name, or a
    regular expression naming configurations, e.g. ``'_focus_attention_kernel float32 D=256 .* mass'``)?"""
    return any(re.search(p, f"{row['kernel']} {row['label']}") for p in allowed_spills)


def known_spills(rows: list[dict], allowed_spills: frozenset) -> list[str]:
    """The spills ``--allow-spills`` lets through, one line per build (they stay on record)."""
    return [f"{r['kernel']} [{r['label'] or r['op']}] {r['arch']}: known spill {r['spill_stores']} B stores / "
            f"{r['spill_loads']} B loads" for r in rows
            if "error" not in r and allowed(r, allowed_spills) and (r["spill_stores"] or r["spill_loads"])]


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [f"# GPU compile: {len(rows)} kernel builds", "", f"{report['date_utc']}; {report['versions']}; "
             f"`{report['command']}`; {report['seconds']} s", ""]
    lines += [f"- {n}" for n in report["notes"]]
    lines += ["", f"**{len(report['failures'])} failures**" + ("" if not report["failures"] else ":"), ""]
    lines += [f"- {f}" for f in report["failures"]]
    lines += ["", "## Per kernel and arch", "", "| kernel | arch | builds | registers (max) | spills | stack (max B) | "
              "shared (max B) | limit B |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["kernel"], r["arch"]), []).append(r)
    for (kernel, arch), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        spills = sum(1 for r in ok if r["spill_stores"] or r["spill_loads"])
        limit = SHARED_LIMIT.get(int(arch.removeprefix("sm_"))) if arch.startswith("sm_") else None
        lines.append(f"| {kernel} | {arch} | {len(rs)}{f' ({len(rs) - len(ok)} errors)' if len(ok) < len(rs) else ''} | "
                     f"{max((r['registers'] for r in ok), default='-')} | {spills} | {max((r['stack'] for r in ok), default='-')} | "
                     f"{max((r['shared'] for r in ok), default='-')} | {limit or '-'} |")
    lines += ["", "## Every build", "", "| kernel | configuration | constexprs, warps (w), stages (s) | arch | registers | "
              "spill stores / loads B | stack B | shared B |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['kernel']} | {r['label']} | {r['config']} | {r['arch']} | error | | | |")
        else:
            lines.append(f"| {r['kernel']} | {r['label']} | {r['config']} | {r['arch']} | {r['registers']} | "
                         f"{r['spill_stores']} / {r['spill_loads']} | {r['stack']} | {r['shared']} |")
    return "\n".join(lines) + "\n"


def versions() -> str:
    import torch
    import triton
    from triton.backends.nvidia.compiler import get_ptxas_version

    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1:] \
        if __import__("shutil").which("nvcc") else ["no nvcc"]
    ptxas = get_ptxas_version().strip().splitlines()[-1]
    return f"torch {torch.__version__}, triton {triton.__version__}, triton's ptxas {ptxas}, nvcc {nvcc[0]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities (default 80 90 100)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-compile")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel Triton compiles")
    p.add_argument("--only", nargs="+", default=None, help="only these ops (e.g. focus_logits), no .cu")
    p.add_argument("--quick", action="store_true", help="a subset of the attention configurations (see quick_keep)")
    p.add_argument("--match", metavar="REGEX", help="only the launches whose '<op> <label>' matches (no .cu), e.g. "
                   "'focus_attention float32 D=256'")
    p.add_argument("--no-cuda", action="store_true", help="skip csrc/*.cu")
    p.add_argument("--cuda-only", action="store_true", help="only csrc/*.cu (make check-cuda)")
    p.add_argument("--allow-spills", nargs="+", default=[], metavar="KERNEL",
                   help="kernels (or regular expressions over '<kernel> <label>') whose spills are recorded as known "
                        "(notes) instead of failing the run")
    args = p.parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("TRITON_INTERPRET", None)  # kernels must be JIT functions, not interpreted ones
    archs, notes = supported_archs(args.arch)
    notes = [f"sm_{a}: {why}" for a, why in notes.items()]
    allowed = frozenset(args.allow_spills)
    rows = [] if args.cuda_only else compile_triton(archs, args.only, args.quick, args.jobs, args.match)
    if not args.only and not args.match and not args.no_cuda:
        cuda_rows, cuda_notes = compile_cuda(args.arch, args.out)
        rows += cuda_rows
        notes += cuda_notes
    notes += known_spills(rows, allowed)
    report = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "versions": versions(),
              "command": command_line(),
              "archs": [f"sm_{a}" for a in archs], "shared_limit_bytes": {f"sm_{a}": v for a, v in SHARED_LIMIT.items()},
              "seconds": round(time.perf_counter() - start, 1), "notes": notes, "failures": failures(rows, allowed), "rows": rows}
    (args.out / "kernels.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "kernels.md").write_text(markdown(report))
    print(f"[gpu-compile] {len(rows)} builds in {report['seconds']} s, {len(report['failures'])} failures; "
          f"wrote {args.out / 'kernels.md'}", flush=True)
    for f in report["failures"]:
        print(f"[gpu-compile] FAIL {f}", flush=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

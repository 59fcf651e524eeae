"""The markdown of ``make gpu-report`` (``benchmarks/gpu_report.py``): the prerequisites, a row per stage,
a table per stage's results, and the measured times beside the floors of ``benchmarks/gpu_prediction.py``."""
from __future__ import annotations

import re

import gpu_prediction

# op -> (list in the stage's JSON, the rows that are the focuskern kernel, time field, to µs)
KERNEL_ROWS = {"logits": ("results", {"contender": "focuskern_triton"}, "device_us", 1.0),
               "state": ("results", {"backend": "triton"}, "device_us", 1.0),
               "attention": ("rows", {}, "ms", 1e3)}


def pytest_counts(tail: str) -> str:
    found = re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", tail)
    return ", ".join(f"{n} {what}" for n, what in found) or "-"


def table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + \
        ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]


def stage_note(s: dict) -> str:
    tail = (s.get("output_tail") or "").strip()
    if s["name"] == "pytest_gpu" and tail:
        return pytest_counts(tail.splitlines()[-1])
    if s["status"] in ("failed", "timeout") and tail:
        return tail.splitlines()[-1][:160]
    return s.get("reason", "")


def compile_section(result: dict) -> list[str]:
    rows = {}
    for r in result["rows"]:
        e = rows.setdefault((r["kernel"], r["arch"]), [0, 0, 0, 0, 0])
        e[0] += 1
        if "error" in r:
            e[1] += 1
            continue
        e[2] = max(e[2], r["registers"])
        e[3] += bool(r["spill_stores"] or r["spill_loads"])
        e[4] = max(e[4], r["shared"])
    lines = ["", "## gpu_compile: every kernel built for this GPU", "", result["versions"], ""]
    lines += table(["kernel", "arch", "builds", "errors", "max registers", "builds that spill", "max shared B"],
                   [[k, a, *v] for (k, a), v in rows.items()])
    return lines + [f"- {f}" for f in result["failures"][:20]]


def result_sections(by_name: dict) -> list[str]:
    lines = []
    if by_name.get("gpu_compile"):
        lines += compile_section(by_name["gpu_compile"])
    logits = by_name.get("logits")
    if logits:
        names = ("focuskern_triton", "focuskern_cuda", "vllm_v1_index_add", "copy", "empty_triton")
        cases: dict = {}
        for r in logits["results"]:
            cases.setdefault((r["B"], r["V"], r["K"], r["alpha"]), {})[r["contender"]] = r["device_us"]
        lines += ["", "## logits: focus_logits_ (device µs)", ""]
        lines += table(["B", "V", "K", "α", *names], [[*k, *(t.get(n, "-") for n in names)] for k, t in cases.items()])
    if by_name.get("state"):
        lines += ["", "## state: FocusState.apply_ (µs per step)", ""]
        lines += table(["B", "α", "backend", "device µs", "host µs"],
                       [[r["B"], f"{r['alpha']:g}", r["backend"], r["device_us"], r["host_us"]]
                        for r in by_name["state"]["results"]])
    attention = by_name.get("attention")
    if attention:
        cases = {}
        for r in attention["rows"]:
            cases.setdefault((r["kind"], r["B"], r["Lq"], r["Lk"]), {})[r["contender"]] = r.get("ms", r.get("error", "skipped"))
        names = sorted({c for t in cases.values() for c in t})
        lines += ["", f"## attention: focus_attention and others (ms; copy {attention.get('copy_gbps')} GB/s)", ""]
        lines += table(["kind", "B", "Lq", "Lk", *names], [[*k, *(t.get(n, "-") for n in names)] for k, t in cases.items()])
    for name, entry in (by_name.get("generate") or {}).get("models", {}).items():
        lines += ["", f"## generate: HF generate, {name} ({entry['config']}, {entry['layers']} layers, random weights)", ""]
        lines += table(["B", "tokens/s plain", "tokens/s with processor", "overhead %"],
                       [[r["batch"], r["tokens_per_s_plain"], r["tokens_per_s_focus"], r["overhead_pct"]]
                        for r in entry["processor"]])
        lines += [""] + table(["prompt", "new tokens", "s (sdpa)", "s (focus, biased)", "focus / sdpa"],
                              [[r["prompt"], r["new_tokens"], r["seconds_sdpa"], r["seconds_focus"], r["focus_over_sdpa"]]
                               for r in entry["attention"]])
    return lines


def generate_us(w, result: dict) -> float | None:
    """A generate work's measured µs: per decode step (plain), the processor's share of a step, or the
    whole long-prompt call (with focus attention)."""
    entry = result.get("models", {}).get(w.match["model"])
    if not entry:
        return None
    if w.match["column"] == "long":
        return next((r["seconds_focus"] * 1e6 for r in entry["attention"] if r["prompt"] == w.match["prompt"]), None)
    r = next((r for r in entry["processor"] if r["batch"] == w.match["batch"]), None)
    if r is None:
        return None
    plain = w.per / r["tokens_per_s_plain"] * 1e6
    return plain if w.match["column"] == "plain" else w.per / r["tokens_per_s_focus"] * 1e6 - plain


def measured(works, by_name: dict) -> dict:
    """Work case -> measured µs of the focuskern kernel in the stage results."""
    out = {}
    for w in works:
        result = by_name.get(w.op)
        if not result:
            continue
        if w.op == "generate":
            value = generate_us(w, result)
        else:
            key, kernel, field, scale = KERNEL_ROWS[w.op]
            want = {**w.match, **kernel}
            value = next((r[field] * scale for r in result.get(key, [])
                          if field in r and all(r.get(k) == v for k, v in want.items())), None)
        if value is not None:
            out[w.case] = value
    return out


def markdown(report: dict) -> str:
    meta = report["run_metadata"]
    lines = [f"# GPU report: {meta['device']}", "",
             f"{meta['date_utc']}; torch {meta.get('torch', '?')}, triton {meta.get('triton', '?')}, "
             f"transformers {meta.get('transformers', '?')}; command `{meta['command']}`"
             + (" (**smoke run on the CPU: numbers meaningless**)" if report["smoke"] else ""), "",
             "## Prerequisites", ""]
    lines += table(["prerequisite", "ok", "detail"], [[c["name"], "ok" if c["ok"] else "**missing**", c["detail"]]
                                                      for c in report["prerequisites"]])
    lines += ["", "## Stages", ""]
    lines += table(["stage", "status", "seconds", "note"],
                   [[s["name"], s["status"], s["seconds"], stage_note(s)] for s in report["stages"]])
    by_name = {s["name"]: s.get("result") for s in report["stages"]}
    lines += result_sections(by_name)
    device = "H200" if "H200" in meta["device"] else "H100 SXM"
    works = gpu_prediction.predictions()
    lines += ["", f"## Measured against the predicted floors ({device}; docs/gpu-prediction.md)", "",
              "Measured: the focuskern Triton kernel's device time (logits, state), the contender's (attention), "
              "a decode step or the processor's share of it (generate).", ""]
    lines += gpu_prediction.table(works, (device,), measured(works, by_name))
    return "\n".join(lines) + "\n"

"""Where the slow plain requests of ``vllm_isolation.py --trace`` lost their time: the stall trace of
the server's processes (``benchmarks/stall_trace/sitecustomize.py``: garbage collections of 2 ms or
more, and watchdog wake-ups 30 ms or more late, per process) lined up with the rounds and requests.

Per kind of round: each process's stalls and collections (count, total ms), and for the kind's slowest
plain requests (at or above its 95th percentile) the stall time that fell inside them, per process.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

SLOW_QUANTILE = 95


def read_trace(folder: Path) -> list[dict]:
    """Every event of the trace, each with ``process``: ``api_server``, ``engine`` (vLLM's engine core),
    ``worker`` (its model runner, where focuskern's processor runs), ``build`` or the process's name; and per traced process a ``kind: "process"`` entry at ``t = 0`` (so that a process
    with no event inside the rounds is still listed)."""
    events = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        argv, comm = " ".join(lines[0]["argv"]), lines[-1].get("comm", "")
        process = ("build" if "focuskern.vllm.build" in argv else "api_server" if "api_server" in argv
                   else "engine" if "EngineCor" in comm else "worker" if "Worker" in comm else comm)
        events += [{"t": 0.0, "kind": "process", "process": process}] + [{**e, "process": process} for e in lines[1:]]
    return events


def _tally(processes: list[str], events: list[dict]) -> dict:
    out = {p: {"stalls": 0, "stall_ms": 0.0, "gcs": 0, "gc_ms": 0.0, "gc_gen2": 0} for p in processes}
    for e in events:
        row = out[e["process"]]
        if e["kind"] == "stall":
            row["stalls"] += 1
            row["stall_ms"] += e["ms"]
        else:
            row["gcs"] += 1
            row["gc_ms"] += e["ms"]
            row["gc_gen2"] += e["gen"] == 2
    return out


def attribute(rounds: list[dict], events: list[dict], kinds: tuple[str, ...]) -> dict:
    """Per kind: ``events`` (the tally of every event inside its rounds), ``rounds_s`` (their length),
    ``slow`` (requests at or above the kind's 95th percentile: ``requests``, their mean ``latency_s``
    and, per process, the mean stall ms that ended inside them)."""
    out = {}
    processes = sorted({e["process"] for e in events if e["kind"] == "process"})
    for kind in kinds:
        mine = [r for r in rounds if r["kind"] == kind]
        inside = [e for e in events for r in mine if r["t0"] <= e["t"] <= r["t1"]]
        spans = [s for r in mine for s in r["plain_spans"]]
        cut = statistics.quantiles([s[1] for s in spans], n=100, method="inclusive")[SLOW_QUANTILE - 1]
        slow = [s for s in spans if s[1] >= cut]
        per_process: dict = {}
        for start, seconds in slow:
            for e in inside:
                if e["kind"] == "stall" and start <= e["t"] <= start + seconds:
                    per_process[e["process"]] = per_process.get(e["process"], 0.0) + e["ms"] / len(slow)
        out[kind] = {"events": _tally(processes, inside), "rounds_s": sum(r["t1"] - r["t0"] for r in mine),
                     "slow": {"requests": len(slow), "latency_s": statistics.mean(s[1] for s in slow),
                              "stall_ms_inside": per_process}}
    return out


def markdown(stalls: dict) -> list[str]:
    lines = ["## Stall trace", "",
             "Per kind of round, per server process: watchdog stalls of 30 ms or more (the process held the GIL "
             "or got no CPU) and garbage collections of 2 ms or more, totals over the kind's rounds; then the "
             "stall time inside the slowest plain requests (at or above the kind's p95), mean per request. "
             "The build process compiles at idle CPU priority: its stalls are its waits for a CPU, by design; "
             "a stall of the API server or the engine is one every request in flight waits for.", "",
             "| rounds | seconds | process | stalls (total ms) | collections (total ms, gen 2) |",
             "| --- | --- | --- | --- | --- |"]
    for kind, k in stalls.items():
        for process, t in sorted(k["events"].items()):
            lines.append(f"| {kind} | {k['rounds_s']:.0f} | {process} | {t['stalls']} ({t['stall_ms']:.0f}) | "
                         f"{t['gcs']} ({t['gc_ms']:.0f}, {t['gc_gen2']}) |")
    lines += ["", "| rounds | slow requests | mean latency (s) | stall ms inside, per process |", "| --- | --- | --- | --- |"]
    for kind, k in stalls.items():
        s = k["slow"]
        inside = ", ".join(f"{p} {ms:.0f}" for p, ms in sorted(s["stall_ms_inside"].items())) or "none"
        lines.append(f"| {kind} | {s['requests']} | {s['latency_s']:.3f} | {inside} |")
    return lines + [""]

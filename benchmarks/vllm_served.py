"""What the benchmarks through vLLM's OpenAI server share (``vllm_http.py``, ``vllm_isolation.py``):
their ``--dtype`` and ``--name`` arguments; start the server (``tests/vllm_server.py``, the Makefile's
vLLM settings unless the environment has them), run a measurement with an ``openai`` client, stop the
server, save the result."""
from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Awaitable, Callable, Optional

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the server helper the tests use
from vllm_server import MODEL, ROOT, SERVER_ENV, VLLM_ENV, VLLMServer, count_unfocused  # noqa: E402

from focuskern.metadata import run_metadata  # noqa: E402

RESULTS = Path(__file__).parent / "results"
Measure = Callable[[VLLMServer, openai.AsyncOpenAI, argparse.Namespace], Awaitable[list]]


def benchmark_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first paragraph, with ``--dtype`` and ``--name`` (default ``name``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--name", default=name, help="results file name (benchmarks/results/NAME.{json,md})")
    return parser


def run_benchmark(args: argparse.Namespace, what: str, measure: Measure, settings: dict,
                  summarize: Callable[[list], dict], markdown: Callable[[dict], str],
                  server_env: Optional[dict] = None) -> int:
    """Start a server, await ``measure(server, client, args)`` (its rounds), stop the server, save the
    result (:func:`save`): ``what``, ``metadata`` (with the machine's 1-minute load averages before and
    after), ``settings`` (the server's arguments and environment added), ``summarize(rounds)``, the
    server's RSS at start and end (``server_rss_mib``), the lines of its log where a focus was served
    unfocused (``unfocused_log_lines``), the rounds; ``markdown(result)`` is the ``.md``.  ``server_env``:
    more environment variables for the server."""
    os.environ.update({k: os.environ.get(k, v) for k, v in VLLM_ENV.items()})
    load_before = os.getloadavg()[0]
    server = VLLMServer(ROOT / ".vllm-tmp" / f"{args.name}_server.log", extra_args=("--dtype", args.dtype),
                        env=server_env)
    try:
        rss_start = server.rss_bytes()
        rounds = asyncio.run(_with_client(server, measure, args))
        rss = {"start": rss_start / 2**20, "end": server.rss_bytes() / 2**20}
        unfocused = len(count_unfocused(server.log_text()))
    finally:
        server.stop()
    env = {k: SERVER_ENV.get(k) for k in ("OMP_NUM_THREADS", "VLLM_CPU_KVCACHE_SPACE", "VLLM_ENABLE_V1_MULTIPROCESSING")}
    result = {"what": what,
              "metadata": run_metadata("cpu", openai=importlib.metadata.version("openai"),
                                       load_average_1min={"before": load_before, "after": os.getloadavg()[0]}),
              "settings": {"model": MODEL, "dtype": args.dtype, **settings, "server_args": list(VLLMServer.ARGS),
                           "env": env},
              "summary": summarize(rounds), "server_rss_mib": rss, "unfocused_log_lines": unfocused, "rounds": rounds}
    save(args.name, result, markdown(result))
    return 0


async def _with_client(server: VLLMServer, measure: Measure, args: argparse.Namespace) -> list:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=900)
    try:
        return await measure(server, client, args)
    finally:
        await client.close()


def save(name: str, result: dict, text: str) -> None:
    """``benchmarks/results/<name>.json`` (``result``) and ``.md`` (``text``, also printed)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)

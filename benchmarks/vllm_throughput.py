"""vLLM CPU throughput with and without ``focuskern.vllm.FocusLogitsProcessor`` (a measurement, not a test).

16 concurrent requests (different prompts), greedy, ``ignore_eos`` so that every round generates exactly
the same number of tokens; throughput = generated tokens / wall time of one ``LLM.generate`` call
(prefill included).  Two engine configurations, each in a fresh process, interleaved over ``--repeats``:

* ``vllm``: vLLM alone (focuskern's entry-point plugin is not loaded);
* ``focus``: ``logits_processors=[FocusLogitsProcessor]``; its rounds alternate between the 16 requests
  unfocused and the same 16 focused (recommended spec, each request its own entities, and new specs
  every round, so every round tokenizes and compiles 16 automata as fresh traffic would).

The headline overhead compares focused with unfocused rounds of the same engine, paired in time, which
cancels most of the drift of a shared machine; the time spent inside the processor's hooks
(``update_state``, ``apply``) is recorded too: vLLM's CPU path is synchronous, so it is the cost added
to the steps.  Writes ``benchmarks/results/vllm_cpu_throughput.json``.

    make bench-vllm      # or: python benchmarks/vllm_throughput.py --model build/smollm2-135m-instruct
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from focuskern.metadata import run_metadata

CONFIGS = ("vllm", "focus")
TOPICS = {  # prompt topic -> the entities its focused request asks for
    "the future of artificial intelligence": ["healthcare", "autonomous driving", "customer service"],
    "the sea": ["sailors", "whales", "lighthouse"],
    "a busy city": ["bicycles", "bakery", "subway"],
    "the moon": ["astronauts", "craters", "tides"],
    "baking bread": ["sourdough", "oven", "flour"],
    "winter": ["snowflakes", "fireplace", "skating"],
    "music": ["violin", "rhythm", "concert"],
    "gardening": ["tomatoes", "compost", "bees"],
    "rivers": ["salmon", "bridges", "delta"],
    "robots": ["sensors", "factories", "batteries"],
    "mountains": ["glaciers", "climbers", "eagles"],
    "libraries": ["librarians", "archives", "silence"],
    "football": ["goalkeeper", "stadium", "penalty"],
    "coffee": ["espresso", "beans", "Ethiopia"],
    "trains": ["locomotive", "stations", "timetable"],
    "volcanoes": ["lava", "magma", "Iceland"],
}


def focus_of(entities: list[str], fresh: int = 0) -> dict:
    """focuskern's default spec for one request (the engine fills in the request's max_tokens);
    ``fresh`` varies the bias by a negligible amount so that the spec is new to the engine (its automaton
    is compiled again)."""
    return {"entities": entities, "bias": 4.0 + 1e-4 * fresh}


class HookTimer:
    """Wraps a processor's ``update_state`` and ``apply`` and adds up the time spent in each."""

    HOOKS = ("update_state", "apply")

    def __init__(self, processor):
        self.seconds = dict.fromkeys(self.HOOKS, 0.0)
        for name in self.HOOKS:
            setattr(processor, name, self._timed(name, getattr(processor, name)))

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.HOOKS, 0.0)

    def _timed(self, name, hook):
        def timed(*args):
            start = time.perf_counter()
            try:
                return hook(*args)
            finally:
                self.seconds[name] += time.perf_counter() - start
        return timed


def run_config(name: str, args) -> dict:
    """One engine, a warm-up, ``args.rounds`` timed rounds (``focus``: pairs of rounds, unfocused then
    focused); returns the measurements."""
    from vllm import LLM, SamplingParams, TokensPrompt
    from vllm.v1.sample import logits_processor as v1_logits_processor

    from focuskern.vllm import FocusLogitsPlugin, FocusLogitsProcessor

    if name == "vllm":  # vLLM as if focuskern were not installed: no entry-point plugins
        v1_logits_processor._load_logitsprocs_plugins = lambda: []
    llm = LLM(model=args.model, dtype=args.dtype, max_model_len=1024, enforce_eager=True, seed=0,
              logits_processors=[FocusLogitsProcessor] if name == "focus" else None)
    runner = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner
    plugins = sorted(type(p).__name__ + (" (inert)" if getattr(p, "inert", False) else "")
                     for p in runner.input_batch.logitsprocs.all if isinstance(p, (FocusLogitsProcessor, FocusLogitsPlugin)))
    listed = [p for p in runner.input_batch.logitsprocs.all if type(p) is FocusLogitsProcessor]
    timer = HookTimer(listed[0]) if listed else None
    tokenizer = llm.get_tokenizer()
    prompts = [TokensPrompt(prompt_token_ids=tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Write about {topic}."}], add_generation_prompt=True, tokenize=True,
        return_dict=False)) for topic in TOPICS]
    # Warm-up, focused where the processor is listed (its first launch loads the kernels once).
    warm = SamplingParams(max_tokens=8, temperature=0,
                          extra_args={"focus": focus_of(["warm-up"], -1)} if name == "focus" else None)
    llm.generate(prompts, [warm] * len(prompts), use_tqdm=False)
    schedule = [False] * args.rounds if name == "vllm" else [False, True] * args.rounds
    rounds = []
    for fresh, focused in enumerate(schedule):
        params = [SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True,
                                 extra_args={"focus": focus_of(entities, fresh)} if focused else None)
                  for entities in TOPICS.values()]
        if timer:
            timer.reset()
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        wall = time.perf_counter() - start
        texts = [o.outputs[0].text.lower() for o in outs]
        rounds.append({"focused": focused, "tokens": sum(len(o.outputs[0].token_ids) for o in outs),
                       "seconds": wall, "processor_seconds": dict(timer.seconds) if timer else None,
                       "requests_mentioning_an_entity": sum(any(e.lower() in t for e in ents)
                                                            for t, ents in zip(texts, TOPICS.values()))})
        rounds[-1]["tokens_per_s"] = rounds[-1]["tokens"] / wall
    return {"config": name, "plugins": plugins, "rounds": rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model folder (make vllm-model)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tokens", type=int, default=128, help="generated tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (focus: pairs) per engine")
    parser.add_argument("--repeats", type=int, default=3, help="engines per configuration, interleaved")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vllm_cpu_throughput.json"))
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run_config(args.child, args)), flush=True)
        return 0

    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for repeat in range(args.repeats):
        for name in CONFIGS:
            cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--dtype", args.dtype,
                   "--tokens", str(args.tokens), "--rounds", str(args.rounds)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not lines:
                sys.stderr.write(out.stderr[-4000:])
                raise SystemExit(f"{name}: the benchmark process failed (exit {out.returncode})")
            runs[name].append(json.loads(lines[-1][len("RESULT "):]))
            print(f"repeat {repeat} {name:6s} " + " ".join(f"{r['tokens_per_s']:.1f}{'f' if r['focused'] else ''}"
                                                     for r in runs[name][-1]["rounds"]) + " tokens/s", flush=True)

    def rounds(config, focused):
        return [r for e in runs[config] for r in e["rounds"] if r["focused"] == focused]

    def tps(rows):
        values = [r["tokens_per_s"] for r in rows]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    focused = rounds("focus", True)
    pairs = [1.0 - f["tokens_per_s"] / u["tokens_per_s"] for e in runs["focus"]
             for u, f in zip(e["rounds"][0::2], e["rounds"][1::2])]
    summary = {
        "vllm_alone_tokens_per_s": tps(rounds("vllm", False)),
        "unfocused_tokens_per_s": tps(rounds("focus", False)),
        "focused_tokens_per_s": tps(focused),
        "overhead_paired": {"median": statistics.median(pairs), "min": min(pairs), "max": max(pairs)},
        "overhead_vs_vllm_alone": 1.0 - tps(focused)["median"] / tps(rounds("vllm", False))["median"],
        "processor_share_focused": {hook: statistics.median(r["processor_seconds"][hook] / r["seconds"]
                                                            for r in focused) for hook in HookTimer.HOOKS},
        "processor_share_unfocused": {hook: statistics.median(r["processor_seconds"][hook] / r["seconds"]
                                                              for r in rounds("focus", False))
                                      for hook in HookTimer.HOOKS},
        "requests_mentioning_an_entity": {"unfocused": statistics.median(r["requests_mentioning_an_entity"]
                                                                         for r in rounds("focus", False)),
                                          "focused": statistics.median(r["requests_mentioning_an_entity"]
                                                                       for r in focused)},
        "plugins": {name: runs[name][-1]["plugins"] for name in CONFIGS},
    }
    result = {
        "what": "vLLM CPU throughput, 16 concurrent greedy requests, ignore_eos, with/without focus",
        **run_metadata("cpu"),
        "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "VLLM_CPU_KVCACHE_SPACE",
                                                        "VLLM_ENABLE_V1_MULTIPROCESSING")},
        "settings": {"model": args.model, "dtype": args.dtype, "requests": len(TOPICS),
                     "tokens_per_request": args.tokens, "rounds_per_engine": args.rounds,
                     "engines_per_config": args.repeats, "max_model_len": 1024, "enforce_eager": True},
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for label, key in (("vLLM alone", "vllm_alone_tokens_per_s"), ("unfocused", "unfocused_tokens_per_s"),
                       ("focused", "focused_tokens_per_s")):
        t = summary[key]
        print(f"{label:11s} {t['median']:7.1f} tokens/s (min {t['min']:.1f}, max {t['max']:.1f})")
    o, share = summary["overhead_paired"], summary["processor_share_focused"]
    print(f"overhead, focused vs unfocused rounds (paired): median {100 * o['median']:+.2f}% "
          f"(min {100 * o['min']:+.2f}%, max {100 * o['max']:+.2f}%); vs vLLM alone "
          f"{100 * summary['overhead_vs_vllm_alone']:+.2f}%")
    print(f"time inside the processor, focused rounds: update_state {100 * share['update_state']:.2f}%, "
          f"apply {100 * share['apply']:.2f}%; requests mentioning an entity "
          f"{summary['requests_mentioning_an_entity']['unfocused']:g} -> "
          f"{summary['requests_mentioning_an_entity']['focused']:g} of {len(TOPICS)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

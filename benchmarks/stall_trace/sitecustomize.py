"""Stall tracing for ``benchmarks/vllm_isolation.py --trace``.  With this folder on ``PYTHONPATH``,
Python imports this file at the start of every process (vLLM's API server, its engine core, focuskern's
build process); where ``FOCUSKERN_STALL_TRACE`` names a folder, each process appends to
``<folder>/<pid>.jsonl``:

* ``gc``: every garbage collection of 2 ms or more (generation, duration);
* ``stall``: a watchdog thread asks to wake every 10 ms; a wake-up 30 ms or more late means the process
  held the GIL that long without letting another thread run (C code, the collector) or was given no CPU.

Times are wall-clock (``time.time()``), so that the benchmark can line them up with its slow requests.
Each event carries the process's name (``/proc/self/comm``); the file starts with its command line.  A forked child
(vLLM may fork its engine core) gets its own watchdog and file.
"""
import gc
import json
import os
import threading
import time

TRACE_DIR = os.environ.get("FOCUSKERN_STALL_TRACE")
GC_MIN_S, TICK_S, STALL_MIN_S = 0.002, 0.010, 0.030
_gc_start = [0.0]


def _write(event: dict) -> None:
    with open("/proc/self/comm") as comm:
        event["comm"] = comm.read().strip()  # vLLM names its processes once they run (VLLM::EngineCore)
    with open(os.path.join(TRACE_DIR, f"{os.getpid()}.jsonl"), "a") as f:
        if f.tell() == 0:
            with open("/proc/self/cmdline", "rb") as cmd:
                f.write(json.dumps({"argv": cmd.read().decode(errors="replace").split("\0")[:4]}) + "\n")
        f.write(json.dumps(event) + "\n")


def _on_gc(phase: str, info: dict) -> None:
    now = time.perf_counter()
    if phase == "start":
        _gc_start[0] = now
    elif now - _gc_start[0] >= GC_MIN_S:
        _write({"t": time.time(), "kind": "gc", "ms": 1e3 * (now - _gc_start[0]), "gen": info["generation"]})


def _watch() -> None:
    last = time.perf_counter()
    while True:
        time.sleep(TICK_S)
        now = time.perf_counter()
        if now - last - TICK_S >= STALL_MIN_S:
            _write({"t": time.time(), "kind": "stall", "ms": 1e3 * (now - last - TICK_S)})
        last = now


def _start_watchdog() -> None:
    threading.Thread(target=_watch, name="stall-trace", daemon=True).start()


if TRACE_DIR:
    gc.callbacks.append(_on_gc)
    _start_watchdog()
    os.register_at_fork(after_in_child=_start_watchdog)
